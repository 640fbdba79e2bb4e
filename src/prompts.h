/* prompts: reads the prompt file (rank 0). JSONL (one object a line: custom_id, and prompt text,
 * prompt_ids or chat messages) or plain text (one prompt a line, custom_id = line number). A JSONL
 * line may also be an OpenAI Batch API request ({"custom_id", "method": "POST", "url":
 * "/v1/chat/completions" | "/v1/completions", "body": {...}}), detected per line; its body maps to
 * the same fields. A bad line becomes an item with an error, so the rest of the file still runs. */
#ifndef MPILLAMA_PROMPTS_H
#define MPILLAMA_PROMPTS_H

#include <stddef.h>
#include <stdint.h>

/* what kind of request a line is, and so which record format answers it */
typedef enum { PROMPTS_NATIVE, PROMPTS_CHAT, PROMPTS_COMPLETIONS } prompts_api;
#define PROMPTS_TOP_MAX 20 /* top alternatives per token's log-prob at most (vLLM's limit) */
#define PROMPTS_N_MAX 64   /* completions per request at most */

typedef struct {
    char *custom_id;   /* never NULL: the line number when the line gave none */
    int line;          /* 1-based line in the file */
    uint64_t hash;     /* FNV-1a of the line's bytes (without its line end): the request's identity */
    char *text;        /* prompt text, or NULL */
    char **roles;      /* (n_messages) chat "messages": role and content of each, or NULL */
    char **contents;
    int n_messages;
    int *ids;          /* (n_ids) prompt_ids as given, or NULL */
    int n_ids;
    char *error;       /* malformed line: why (then text and ids are NULL) */
    prompts_api api;   /* native, or an OpenAI line's url */
    char *model_name;  /* an OpenAI body's "model" (echoed in its record), or NULL */
    int n;             /* completions of the prompt (n; 0 read as 1) */
    int logprobs;      /* log-probs of the completion tokens with this many top alternatives (0 = the
                        * chosen token's only); -1: none */
    /* per-request overrides of the command line: < 0 (ints) or NaN (floats) when absent */
    int max_tokens;
    float temperature;
    int top_k;
    float top_p;
    float min_p;
    float repetition_penalty;
    float frequency_penalty;
    float presence_penalty;
    int ignore_eos;    /* -1 absent, 0, 1 */
    long long seed;
    int has_seed;
    char **stop;       /* (n_stop) stop strings, or NULL */
    int n_stop;
    int *stop_token_ids; /* (n_stop_ids) */
    int n_stop_ids;
} prompt_item;

/* sets the defaults of it for line lineno (custom_id = the line number, absent overrides) */
void prompts_item_defaults(prompt_item *it, int lineno);
/* parses one JSONL line line[0..len) into it, whose defaults (prompts_item_defaults) the caller
 * has set: strictly (one JSON object, nothing after it, no key
 * twice, integers without a fraction); a bad line sets it->error naming the field */
void prompts_parse_json(prompt_item *it, const char *line, size_t len);

/* reads every prompt; dies naming the path when it cannot be read. Returns the count. */
int prompts_read(const char *path, prompt_item **items);
void prompts_free(prompt_item *items, int n);

#endif
