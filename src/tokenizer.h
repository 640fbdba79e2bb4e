/* tokenizer: SentencePiece-style BPE (llama2.c tokenizer.bin and the model file's copy):
 * merges by score, byte fallback <0xNN>, the dummy-prefix/leading-space rule. No MPI. */
#ifndef MPILLAMA_TOKENIZER_H
#define MPILLAMA_TOKENIZER_H

#include "mfile.h"

typedef struct tokenizer tokenizer;

/* reads a llama2.c tokenizer.bin (the file does not record its size: pieces are read to EOF).
 * Dies with a one-line message naming the path on a missing or corrupt file. */
void tok_load_llama2c(mfile_tokenizer *out, const char *path);
/* builds the runtime tokenizer from stored pieces (copies what it needs; t may be freed after).
 * Pieces may store the space as ' ' (llama2.c) or as U+2581 (SentencePiece). Dies on a type
 * other than "llama2c-bpe" or on inconsistent offsets. */
tokenizer *tok_init(const mfile_tokenizer *t);
/* frees t; NULL is a no-op */
void tok_free(tokenizer *t);
/* number of pieces, ids are 0 .. tok_vocab_size(t) - 1 */
int tok_vocab_size(const tokenizer *t);
/* encodes text; adds bos_id first when bos_id >= 0. Writes at most max_ids ids and returns the
 * number the text needs (may exceed max_ids: the caller then reports the prompt too long).
 * As SentencePiece: a dummy-prefix space before non-empty text (empty text gives only BOS),
 * U+2581 in the text read as a space, each malformed UTF-8 byte read as U+FFFD, characters
 * outside the vocabulary as <0xNN> byte tokens. Dies on text over 64 MiB. */
int tok_encode(const tokenizer *t, const char *text, int bos_id, int *ids, int max_ids);
/* decodes ids into a malloc'd NUL-terminated string. prev is the token before ids[0]
 * (-1 if none): after BOS the leading space of the first piece is dropped, as SentencePiece does.
 * Byte tokens are reassembled; incomplete UTF-8 at the end is kept as is. Ids out of range and
 * control tokens (BOS, EOS) decode to "", <unk> to " \u2047 ", the byte token <0x00> to "". */
char *tok_decode(const tokenizer *t, int prev, const int *ids, int n, int bos_id);

#endif
