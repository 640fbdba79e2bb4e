/* fuzz_tokenizer_file: tokenizer data from a file (llama2.c tokenizer.bin, SentencePiece
 * tokenizer.model, tiktoken ranks, Hugging Face tokenizer.json: tok_load_file detects which),
 * then tok_init, one encoding and one decoding. A bad file dies (caught here); a file that
 * loads must build a tokenizer whose ids stay in its vocabulary. */
#include <stdlib.h>

#include "fuzz.h"
#include "tokenizer.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_temp_file(data, size, ".tok");
    mfile_tokenizer m;
    tokenizer *t = NULL;
    FUZZ_GUARDED(tok_load_file(&m, path); t = tok_init(&m));
    if (fuzz_died) return 0; /* leaks what the loader held: the fuzzer runs with -detect_leaks=0 */
    int ids[64];
    volatile int n = 0;
    FUZZ_GUARDED(n = tok_encode_ex(t, "Hello <s> world \xe2\x96\x81\xf0\x9f\xa6\x99 \xff", tok_bos_id(t),
                                   TOK_ALLOW_SPECIAL, ids, 64));
    if (!fuzz_died) {
        if (n > 64) n = 64;
        int at = tok_first_bad_id(t, ids, n);
        if (at >= 0) fuzz_fail("encoding wrote id %d, outside the vocabulary of %d", ids[at], tok_vocab_size(t));
        free(tok_decode(t, -1, ids, n, tok_bos_id(t)));
    }
    tok_free(t);
    mfile_tokenizer_free(&m);
    return 0;
}
