/* fuzz_tokenizer: encoding and decoding with the real tokenizers of ../shared (tok512.bin:
 * llama2.c BPE; llama2/tokenizer.model: SentencePiece; llama3/tokenizer.model: tiktoken
 * byte-level BPE with its PCRE2 split pattern). The first byte picks the tokenizer and the
 * mode, the rest is the text (or, in decode mode, the ids as little-endian int16 pairs).
 * Invariants: the count asked for equals the ids written; every id is in the vocabulary;
 * byte-level decoding gives the text back; the streaming decoder returns whole UTF-8 only,
 * and NULL exactly for an id outside the vocabulary. Without ../shared it does nothing. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "tokenizer.h"
#include "util.h"

static tokenizer *toks[3];
static int n_toks;

static void load(const char *dir, const char *rel) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, rel);
    FILE *f = fopen(path, "rb");
    if (!f) return;
    fclose(f);
    mfile_tokenizer m;
    tok_load_file(&m, path);
    toks[n_toks++] = tok_init(&m);
    mfile_tokenizer_free(&m);
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *dir = fuzz_shared_dir();
    if (dir) {
        load(dir, "models/tok512.bin");
        load(dir, "tokenizers/llama2/tokenizer.model");
        load(dir, "tokenizers/llama3/tokenizer.model");
    }
    if (n_toks == 0) fprintf(stderr, "fuzz_tokenizer: no tokenizer in ../shared: nothing to fuzz\n");
    return 0;
}

static int utf8_whole(const char *s, size_t n) {
    for (size_t i = 0; i < n;) {
        unsigned char c = (unsigned char)s[i];
        int k = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
        if (!k || i + (size_t)k > n) return 0;
        for (int j = 1; j < k; j++)
            if (((unsigned char)s[i + (size_t)j] & 0xc0) != 0x80) return 0;
        i += (size_t)k;
    }
    return 1;
}

static void check_stream(const tokenizer *t, const int *ids, int n) {
    tok_decoder d;
    tok_decoder_init(&d, t, -1, tok_bos_id(t), TOK_DECODE_SPECIAL);
    for (int i = 0; i <= n; i++) {
        size_t len = 0;
        const char *s = i < n ? tok_decoder_push(&d, ids[i], &len) : tok_decoder_flush(&d, &len);
        int bad = i < n && (ids[i] < 0 || ids[i] >= tok_vocab_size(t));
        if ((s == NULL) != bad) fuzz_fail("streaming decoder: id %d gave %s", ids[i], s ? "text" : "NULL");
        if (s && (strlen(s) != len || !utf8_whole(s, len))) fuzz_fail("streaming decoder: a piece that is not whole UTF-8");
    }
    tok_decoder_free(&d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (n_toks == 0 || size == 0) return 0;
    const tokenizer *t = toks[data[0] % n_toks];
    const unsigned mode = data[0] >> 2;
    data++, size--;
    const int V = tok_vocab_size(t);
    if (mode & 1) { /* decode: ids near and beyond the vocabulary's ends */
        int n = (int)(size / 2);
        int *ids = xmalloc(sizeof(int) * (size_t)(n + 1));
        for (int i = 0; i < n; i++) {
            int v = data[2 * i] | data[2 * i + 1] << 8;
            ids[i] = (mode & 2) ? v % (V + 8) - 4 : (int)(((long)v * V) >> 16);
        }
        char *text = tok_decode(t, -1, ids, n, tok_bos_id(t));
        if ((text == NULL) != (tok_first_bad_id(t, ids, n) >= 0)) fuzz_fail("tok_decode: NULL does not match an out-of-range id");
        free(text);
        check_stream(t, ids, n);
        free(ids);
        return 0;
    }
    char *text = fuzz_strndup(data, size);
    unsigned flags = (mode & 2) ? TOK_ALLOW_SPECIAL : 0;
    int bos = (mode & 4) ? tok_bos_id(t) : -1;
    volatile int n = 0;
    int m = 0, *ids = NULL;
    FUZZ_GUARDED(n = tok_encode_ex(t, text, bos, flags, NULL, 0));
    if (fuzz_died) { /* only the PCRE2 match limit may stop an encoding */
        free(text);
        return 0;
    }
    ids = xmalloc(sizeof(int) * (size_t)(n + 1));
    m = tok_encode_ex(t, text, bos, flags, ids, n);
    if (m != n) fuzz_fail("the count asked for (%d) differs from the ids written (%d)", n, m);
    int at = tok_first_bad_id(t, ids, n);
    if (at >= 0) fuzz_fail("encoding wrote id %d, outside the vocabulary of %d", ids[at], V);
    if (!strcmp(tok_type(t), "byte-bpe") && !flags && bos < 0) {
        char *back = tok_decode(t, -1, ids, n, -1);
        if (!back || strcmp(back, text) != 0) fuzz_fail("byte-level decode(encode(x)) != x");
        free(back);
    }
    check_stream(t, ids, n);
    free(ids);
    free(text);
    return 0;
}
