/* chat: renders a conversation in a model's chat format, as text or straight to token ids.
 *
 * Templates (names as stored in the model file's tokenizer/chat_template):
 *   "llama2"  Meta's Llama 2 chat: an optional first system message is folded into the first
 *             user message as "<<SYS>>\n{system}\n<</SYS>>\n\n{user}"; then each exchange is
 *             "<s>[INST] {user} [/INST] {assistant} </s>" and a final user message
 *             "<s>[INST] {user} [/INST]". Roles after the system message must alternate
 *             user/assistant starting with user. add_generation_prompt changes nothing (the
 *             text after [/INST] is the assistant's already).
 *   "llama3"  "<|begin_of_text|>" then per message "<|start_header_id|>{role}<|end_header_id|>
 *             \n\n{content}<|eot_id|>"; the generation prompt is
 *             "<|start_header_id|>assistant<|end_header_id|>\n\n".
 *   "chatml"  per message "<|im_start|>{role}\n{content}<|im_end|>\n"; the generation prompt is
 *             "<|im_start|>assistant\n". No BOS, no default system message.
 * llama2 and llama3 strip ASCII whitespace around each content (Meta's code and the Hugging
 * Face templates do); chatml keeps content as given.
 *
 * BOS and special tokens: the rendered text holds every special token of the format, BOS
 * included where the format has one (llama2: "<s>" before each [INST]; llama3:
 * "<|begin_of_text|>"; chatml: none). So rendered text is encoded with
 *     tok_encode_ex(t, text, chat_template_adds_bos(name) ? -1 : bos_id, TOK_ALLOW_SPECIAL, ...)
 * chat_encode gives the same ids without the detour through text, and safely: special-token
 * text inside a message stays text there (with the rendered text, a user who writes
 * "<|eot_id|>" gets the real token). Prefer chat_encode for requests. */
#ifndef MPILLAMA_CHAT_H
#define MPILLAMA_CHAT_H

#include <stddef.h>

#include "tokenizer.h"

typedef struct {
    const char *role;    /* "system", "user", "assistant" (llama3 and chatml take any) */
    const char *content; /* NULL reads as "" */
} chat_message;

/* 1 when name is a template this module renders */
int chat_template_known(const char *name);
/* 1 when the template writes BOS itself (llama2, llama3), 0 when not (chatml) */
int chat_template_adds_bos(const char *name);

/* the conversation as text (malloc'd); NULL on an unknown template or messages the template
 * cannot take (chat_render_checked says why) */
char *chat_render(const char *template_name, const chat_message *msgs, int n,
                  int add_generation_prompt);
char *chat_render_checked(const char *template_name, const chat_message *msgs, int n,
                          int add_generation_prompt, char *why, size_t why_cap);

/* the conversation as ids: the template's special tokens by id, each message's text encoded
 * without special tokens (SentencePiece-style: a dummy prefix before each run of text, as
 * Meta's code encodes each turn). bos_id is written first when the template has no BOS of its
 * own (chatml; -1: none); templates with one take it from the tokenizer. Writes at most max_ids
 * and returns the number needed, or -1 with why set (unknown template, bad roles, a special
 * token of the template missing from the vocabulary). */
int chat_encode(const tokenizer *t, const char *template_name, const chat_message *msgs, int n,
                int add_generation_prompt, int bos_id, int *ids, int max_ids, char *why,
                size_t why_cap);

/* the ids that end an assistant turn in this template and that the tokenizer has (llama2:
 * </s>; llama3: <|eot_id|>, <|eom_id|>, <|end_of_text|>; chatml: <|im_end|>, <|endoftext|>);
 * returns how many, at most cap written */
int chat_stop_ids(const tokenizer *t, const char *template_name, int *ids, int cap);

#endif
