/* tokenizer: the BPE tokenizers of the Llama family behind one API. No MPI.
 *
 *   "llama2c-bpe", "sentencepiece-bpe": SentencePiece-style BPE (Llama 2, Mistral, TinyLlama,
 *       llama2.c): the text is normalised (spaces to U+2581, a dummy-prefix space), split into
 *       code points, merged by piece score; characters outside the vocabulary become <0xNN>
 *       byte tokens.
 *   "byte-bpe": byte-level BPE (Llama 3, Qwen2, GPT-2): the text is split by a PCRE2 pattern
 *       (UTF + UCP) into chunks, each chunk's bytes merged by rank: by the pair merges of a
 *       Hugging Face tokenizer.json, or (tiktoken) by the rank of the concatenated bytes.
 *
 * Loaders turn source files into the stored form (mfile_tokenizer, docs/FORMAT.md); tok_init
 * builds the runtime tokenizer from it. */
#ifndef MPILLAMA_TOKENIZER_H
#define MPILLAMA_TOKENIZER_H

#include <stddef.h>

#include "mfile.h"
#include "gguf.h"

typedef struct tokenizer tokenizer;

/* ---- loading source files (each dies with a one-line message naming the path on a missing,
 * corrupt or unsupported file; the result is freed with mfile_tokenizer_free) ---- */

/* a llama2.c tokenizer.bin (the file does not record its size: pieces are read to EOF) */
void tok_load_llama2c(mfile_tokenizer *out, const char *path);
/* a SentencePiece tokenizer.model (the ModelProto protobuf; BPE models only) */
void tok_load_sentencepiece(mfile_tokenizer *out, const char *path);
/* a tiktoken rank file ("base64 rank" lines); only Meta's Llama 3 file (128000 ranks) is
 * recognised, since the special tokens and the split pattern are not in the file */
void tok_load_tiktoken(mfile_tokenizer *out, const char *path);
/* a Hugging Face tokenizer.json (model.type BPE: with byte_fallback, SentencePiece-style; with
 * a ByteLevel pre-tokenizer, byte-bpe). Returns 1 when loaded; 0 with the reason in why when
 * the file describes a tokenizer this code does not implement; dies on a malformed file. */
int tok_load_hf_json(mfile_tokenizer *out, const char *path, char *why, size_t why_cap);
/* a GGUF file's tokenizer.ggml.* keys: model "llama" (SentencePiece-style: tokens, scores,
 * token types) or "gpt2" (byte-level BPE with merges and the split pattern named by
 * tokenizer.ggml.pre: default/gpt2, llama-bpe, qwen2); BOS (when add_bos_token), EOS, the chat
 * template's name. Returns 1 when loaded; 0 with the reason in why when the file has no
 * tokenizer this code implements; dies on a malformed one. */
int tok_load_gguf(mfile_tokenizer *out, const gguf_file *g, char *why, size_t why_cap);
/* any of the four, detected from the content */
void tok_load_file(mfile_tokenizer *out, const char *path);
/* a Hugging Face model directory: tokenizer.json, else (or when that one is not supported)
 * tokenizer.model; then tokenizer_config.json (and chat_template.jinja) for the chat template
 * and BOS/EOS. Returns 1 when loaded; 0 with the reason in why when the directory has no
 * tokenizer this code can use. */
int tok_load_hf_dir(mfile_tokenizer *out, const char *dir, char *why, size_t why_cap);
/* reads a Hugging Face tokenizer_config.json: the chat template's name (when recognised)
 * and bos_token / eos_token (when they name pieces) replace those of t; "bos_token": null or
 * "add_bos_token": false leave it without BOS. Returns 1 when the file was there. */
int tok_apply_hf_config(mfile_tokenizer *t, const char *path);
/* the chat template name ("llama2", "llama3", "chatml") a Jinja chat template implements,
 * recognised by its markers; NULL when none is */
const char *tok_detect_chat_template(const char *jinja);
/* pads t with unused pieces up to vocab_size ids (Hugging Face models often round the
 * embedding up); dies naming path when t has more pieces than vocab_size */
void tok_fit_vocab(mfile_tokenizer *t, int vocab_size, const char *path);

/* ---- the runtime tokenizer ---- */

/* builds the runtime tokenizer from stored pieces (copies what it needs; m may be freed
 * after). Pieces may store the space as ' ' (llama2.c) or as U+2581 (SentencePiece). Dies on
 * an unknown type, inconsistent offsets, bad merges or a split pattern PCRE2 rejects. */
tokenizer *tok_init(const mfile_tokenizer *m);
/* frees t; NULL is a no-op */
void tok_free(tokenizer *t);
/* number of pieces, ids are 0 .. tok_vocab_size(t) - 1 */
int tok_vocab_size(const tokenizer *t);
/* the stored type ("llama2c-bpe", "sentencepiece-bpe", "byte-bpe") */
const char *tok_type(const tokenizer *t);
/* BOS and EOS as the tokenizer file gives them, -1 when none */
int tok_bos_id(const tokenizer *t);
int tok_eos_id(const tokenizer *t);
/* the chat template the file carries ("llama2", "llama3", "chatml"), "" when none */
const char *tok_chat_template(const tokenizer *t);
/* the id of the special (control, unknown or user-defined) token written as text, e.g.
 * "<|eot_id|>" or "<s>" (also for llama2.c's "\n<s>\n"); -1 when there is none */
int tok_special_id(const tokenizer *t, const char *text);

/* tok_encode_ex flags */
#define TOK_ALLOW_SPECIAL 1u /* special tokens written in the text ("<|eot_id|>", "<s>") are
                              * encoded as their ids; without it they are ordinary text */

/* encodes text; adds bos_id first when bos_id >= 0. Writes at most max_ids ids and returns the
 * number the text needs (may exceed max_ids: the caller then reports the prompt too long).
 * SentencePiece-style: a dummy-prefix space before each non-empty run of text (empty text
 * gives only BOS), U+2581 in the text read as a space, each malformed UTF-8 byte read as
 * U+FFFD, characters outside the vocabulary as <0xNN> byte tokens. Byte-level: lossless for
 * any bytes (malformed UTF-8 included); with add_dummy_prefix (ByteLevel's add_prefix_space)
 * a space before each run that does not start with one. With TOK_ALLOW_SPECIAL the text is first cut at the
 * special tokens it contains (longest match first), and each run between them is encoded on
 * its own. User-defined pieces are always matched. Dies on text over 64 MiB. Returns -1 when
 * the split pattern gives up on the text (PCRE2's match, depth or JIT stack limit): that text
 * cannot be encoded. */
int tok_encode_ex(const tokenizer *t, const char *text, int bos_id, unsigned flags, int *ids,
                  int max_ids);
/* tok_encode_ex without flags: special tokens in the text are ordinary text */
int tok_encode(const tokenizer *t, const char *text, int bos_id, int *ids, int max_ids);

/* decodes ids into a malloc'd NUL-terminated string. prev is the token before ids[0]
 * (-1 if none): after BOS the leading space of the first piece is dropped, as SentencePiece does.
 * Byte tokens are reassembled; incomplete UTF-8 is kept as is (byte-level: decode(encode(x))
 * gives x back for any x). Unused ids and control tokens (BOS, EOS) decode to "", <unk> to
 * " \u2047 ", a NUL byte to "". Returns NULL when an id is outside [0, vocab size) (an
 * error for the caller to report: tok_first_bad_id finds it). */
char *tok_decode(const tokenizer *t, int prev, const int *ids, int n, int bos_id);
/* the index of the first id outside [0, vocab size), -1 when all are in range */
int tok_first_bad_id(const tokenizer *t, const int *ids, int n);

/* ---- streaming decoding: text that is always whole, valid UTF-8 ---- */

/* tok_decoder_init flags */
#define TOK_DECODE_SPECIAL 1u /* control tokens decode to their text ("<|eot_id|>") */

typedef struct {
    const tokenizer *t;
    int prev, bos_id;
    unsigned flags;
    unsigned char pending[4]; /* the start of a UTF-8 sequence that may still complete */
    int n_pending, need;      /* bytes held; bytes the sequence has in all */
    char *out;                /* (cap) the text returned by the last call */
    size_t cap;
} tok_decoder;

/* starts a decoder; prev is the token before the first one pushed (-1: none; the last prompt
 * token when decoding a completion), bos_id as in tok_decode */
void tok_decoder_init(tok_decoder *d, const tokenizer *t, int prev, int bos_id, unsigned flags);
/* adds one token; returns the text it completes (NUL-terminated, *len bytes, possibly empty),
 * owned by the decoder and valid until the next call. Bytes of a UTF-8 sequence that a later
 * token may complete are held back; a malformed sequence becomes U+FFFD (one per maximal
 * subpart, as the Unicode standard recommends). An id outside the vocabulary returns NULL
 * and leaves the decoder as it was. */
const char *tok_decoder_push(tok_decoder *d, int id, size_t *len);
/* the end of the sequence: a held, incomplete UTF-8 sequence becomes U+FFFD */
const char *tok_decoder_flush(tok_decoder *d, size_t *len);
void tok_decoder_free(tok_decoder *d);

#endif
