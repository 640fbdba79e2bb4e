/* tokenizer_load: source tokenizer files -> the stored form (mfile_tokenizer).
 *
 *   llama2.c tokenizer.bin: int32 max_token_length, then (float score, int32 len, bytes)
 *       records to the end of the file. Type "llama2c-bpe"; no piece kinds (derived from the
 *       text when the tokenizer is built).
 *   SentencePiece tokenizer.model: the ModelProto protobuf, read with a small wire-format
 *       reader: pieces (field 1: piece 1, score 2, type 3), TrainerSpec (field 2: model_type 3,
 *       unk/bos/eos ids 40..42) and NormalizerSpec (field 3: name 1, add_dummy_prefix 3,
 *       remove_extra_whitespaces 4). Type "sentencepiece-bpe".
 *   tiktoken rank file: "base64 rank" lines. Meta's Llama 3 file (128000 ranks) gets the 256
 *       special tokens and the split pattern of Meta's release. Type "byte-bpe", no merges
 *       (merge by the rank of the concatenated bytes; score = -rank).
 *   Hugging Face tokenizer.json, model.type BPE: with byte_fallback, SentencePiece-style (the
 *       merge rank acts as the score: a piece scores minus the rank of the first merge that
 *       makes it); with a ByteLevel pre-tokenizer, "byte-bpe" with the merges as id pairs and
 *       the Split regex (or GPT-2's, for ByteLevel use_regex) as the pattern. */
#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gguf.h"
#include "jsonstrict.h"
#include "tokenizer.h"
#include "util.h"

#define LLAMA3_PATTERN                                                                          \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| "                  \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"
#define GPT2_PATTERN                                                                            \
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+"
#define LLAMA3_N_RANKS 128000
#define LLAMA3_N_SPECIAL 256

/* ---- building pieces ---- */

/* pieces collected by id before they are packed into an mfile_tokenizer */
typedef struct {
    int n;              /* ids 0 .. n-1 */
    char **text;        /* (n) malloc'd piece bytes, NULL: a hole */
    int *len;           /* (n) */
    float *scores;      /* (n) */
    unsigned char *kinds; /* (n) */
} piece_list;

static void pieces_init(piece_list *p, int n) {
    p->n = n;
    p->text = xcalloc((size_t)n, sizeof *p->text);
    p->len = xcalloc((size_t)n, sizeof *p->len);
    p->scores = xcalloc((size_t)n, sizeof *p->scores);
    p->kinds = xcalloc((size_t)n, 1);
}

static void pieces_set(piece_list *p, int id, const char *s, size_t len, unsigned char kind) {
    free(p->text[id]);
    p->text[id] = xmalloc(len + 1);
    memcpy(p->text[id], s, len);
    p->text[id][len] = '\0';
    p->len[id] = (int)len;
    p->kinds[id] = kind;
}

/* packs p into out (type and the other fields are the caller's) and frees p */
static void pieces_pack(piece_list *p, mfile_tokenizer *out) {
    int64_t total = 0;
    for (int i = 0; i < p->n; i++) total += p->len[i];
    out->n = p->n;
    out->bytes = xmalloc((size_t)total + 1);
    out->offsets = xmalloc(((size_t)p->n + 1) * sizeof *out->offsets);
    out->scores = p->scores;
    out->kinds = p->kinds;
    int64_t off = 0;
    out->max_token_length = 0;
    for (int i = 0; i < p->n; i++) {
        out->offsets[i] = off;
        if (!p->text[i]) out->kinds[i] = MFILE_PIECE_UNUSED;
        if (p->len[i]) memcpy(out->bytes + off, p->text[i], (size_t)p->len[i]);
        off += p->len[i];
        if (p->len[i] > out->max_token_length) out->max_token_length = p->len[i];
        free(p->text[i]);
    }
    out->offsets[p->n] = off;
    free(p->text);
    free(p->len);
    memset(p, 0, sizeof *p);
}

/* the defaults of the optional fields (docs/FORMAT.md) */
static void stored_defaults(mfile_tokenizer *t, const char *type) {
    memset(t, 0, sizeof *t);
    snprintf(t->type, sizeof t->type, "%s", type);
    t->bos_id = t->eos_id = -1;
    t->add_dummy_prefix = 1;
}

/* id of the piece whose bytes are text (first one), -1 when none */
static int find_piece(const mfile_tokenizer *t, const char *text) {
    size_t len = strlen(text);
    for (int i = 0; i < t->n; i++)
        if ((size_t)(t->offsets[i + 1] - t->offsets[i]) == len &&
            memcmp(t->bytes + t->offsets[i], text, len) == 0)
            return i;
    return -1;
}

/* ---- llama2.c tokenizer.bin ---- */

static int32_t read_i32(const char *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void load_llama2c_buf(mfile_tokenizer *out, const char *buf, size_t size, const char *path) {
    if (size < 4) die("tokenizer '%s': %zu bytes, too short for the header", path, size);
    int32_t max_len = read_i32(buf);
    if (max_len < 0) die("tokenizer '%s': negative max_token_length %d", path, (int)max_len);

    /* pass 1: validate the records and count pieces and bytes */
    int64_t n = 0, total = 0, longest = 0;
    size_t pos = 4;
    while (pos < size) {
        if (size - pos < 8)
            die("tokenizer '%s': truncated record for piece %lld at byte %zu", path, (long long)n,
                pos);
        int32_t len = read_i32(buf + pos + 4);
        if (len < 0) die("tokenizer '%s': negative length for piece %lld", path, (long long)n);
        if ((size_t)len > size - pos - 8)
            die("tokenizer '%s': truncated record for piece %lld at byte %zu", path, (long long)n,
                pos);
        pos += 8 + (size_t)len;
        total += len;
        if (len > longest) longest = len;
        if (++n > INT32_MAX) die("tokenizer '%s': too many pieces", path);
    }
    if (n == 0) die("tokenizer '%s': no pieces", path);

    /* pass 2: fill */
    stored_defaults(out, "llama2c-bpe");
    out->n = (int)n;
    /* the header is advisory: keep it unless a piece is longer */
    out->max_token_length = longest > max_len ? (int)longest : (int)max_len;
    out->bytes = xmalloc((size_t)total + 1);
    out->offsets = xmalloc(((size_t)n + 1) * sizeof *out->offsets);
    out->scores = xmalloc((size_t)n * sizeof *out->scores);
    pos = 4;
    int64_t off = 0;
    for (int i = 0; i < out->n; i++) {
        memcpy(&out->scores[i], buf + pos, 4);
        int32_t len = read_i32(buf + pos + 4);
        memcpy(out->bytes + off, buf + pos + 8, (size_t)len);
        out->offsets[i] = off;
        off += len;
        pos += 8 + (size_t)len;
    }
    out->offsets[n] = off;
    /* llama2.c's exporter writes SentencePiece's <s> and </s> as "\n<s>\n" and "\n</s>\n" */
    out->bos_id = find_piece(out, "\n<s>\n");
    if (out->bos_id < 0) out->bos_id = find_piece(out, "<s>");
    out->eos_id = find_piece(out, "\n</s>\n");
    if (out->eos_id < 0) out->eos_id = find_piece(out, "</s>");
}

void tok_load_llama2c(mfile_tokenizer *out, const char *path) {
    size_t size;
    char *buf = util_read_file(path, &size);
    load_llama2c_buf(out, buf, size, path);
    free(buf);
}

/* ---- SentencePiece tokenizer.model: a protobuf wire-format reader ---- */

typedef struct {
    const unsigned char *p, *end;
} pb_reader;

typedef struct {
    uint32_t field;
    int wire;           /* 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32 */
    uint64_t value;     /* varint and fixed values */
    pb_reader sub;      /* length-delimited: the bytes */
} pb_field;

static int pb_varint(pb_reader *r, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end) return 0;
        unsigned char c = *r->p++;
        *v |= (uint64_t)(c & 0x7f) << shift;
        if (!(c & 0x80)) return 1;
    }
    return 0;
}

/* reads the next field; 1 on success, 0 at the end, -1 when malformed */
static int pb_next(pb_reader *r, pb_field *f) {
    if (r->p >= r->end) return 0;
    uint64_t tag;
    if (!pb_varint(r, &tag) || (tag >> 3) == 0 || (tag >> 3) > UINT32_MAX) return -1;
    f->field = (uint32_t)(tag >> 3);
    f->wire = (int)(tag & 7);
    switch (f->wire) {
    case 0:
        return pb_varint(r, &f->value) ? 1 : -1;
    case 1:
    case 5: {
        size_t n = f->wire == 1 ? 8 : 4;
        if ((size_t)(r->end - r->p) < n) return -1;
        f->value = 0;
        for (size_t i = 0; i < n; i++) f->value |= (uint64_t)r->p[i] << (8 * i);
        r->p += n;
        return 1;
    }
    case 2: {
        uint64_t len;
        if (!pb_varint(r, &len) || len > (uint64_t)(r->end - r->p)) return -1;
        f->sub.p = r->p;
        f->sub.end = r->p + len;
        r->p += len;
        return 1;
    }
    default:
        return -1; /* groups (3, 4) are not used by SentencePiece; 6, 7 do not exist */
    }
}

typedef struct {
    int model_type;             /* TrainerSpec.model_type: 1 unigram (the default), 2 BPE */
    int bos_id, eos_id;
    int add_dummy_prefix, remove_extra_whitespaces;
    char normalizer[64];
} sp_specs;

/* parses a ModelProto; NULL on success (out filled), else why it is not one (out untouched) */
static const char *sp_parse(const unsigned char *data, size_t size, mfile_tokenizer *out,
                            sp_specs *specs) {
    memset(specs, 0, sizeof *specs);
    specs->model_type = 1;
    specs->bos_id = 1, specs->eos_id = 2;
    specs->add_dummy_prefix = 1, specs->remove_extra_whitespaces = 1; /* proto defaults */
    /* pass 1: count pieces and bytes, read the specs */
    pb_reader r = {data, data + size};
    pb_field f;
    int rc;
    int64_t n = 0, total = 0;
    while ((rc = pb_next(&r, &f)) == 1) {
        if (f.field == 1) {
            if (f.wire != 2) return "a piece is not a message";
            pb_reader pr = f.sub;
            pb_field pf;
            int has_piece = 0, prc;
            while ((prc = pb_next(&pr, &pf)) == 1) {
                if (pf.field == 1) {
                    if (pf.wire != 2) return "a piece's text is not a string";
                    total += pf.sub.end - pf.sub.p;
                    has_piece = 1;
                } else if ((pf.field == 2 && pf.wire != 5) || (pf.field == 3 && pf.wire != 0)) {
                    return "a piece's score or type has the wrong wire type";
                }
            }
            if (prc < 0 || !has_piece) return "a malformed piece";
            if (++n > INT32_MAX) return "too many pieces";
        } else if (f.field == 2 && f.wire == 2) { /* TrainerSpec */
            pb_reader tr = f.sub;
            pb_field tf;
            int trc;
            while ((trc = pb_next(&tr, &tf)) == 1) {
                if (tf.wire != 0) continue;
                if (tf.field == 3) specs->model_type = (int)tf.value;
                else if (tf.field == 41) specs->bos_id = (int)(int32_t)tf.value;
                else if (tf.field == 42) specs->eos_id = (int)(int32_t)tf.value;
            }
            if (trc < 0) return "a malformed trainer spec";
        } else if (f.field == 3 && f.wire == 2) { /* NormalizerSpec */
            pb_reader nr = f.sub;
            pb_field nf;
            int nrc;
            while ((nrc = pb_next(&nr, &nf)) == 1) {
                if (nf.field == 1 && nf.wire == 2)
                    snprintf(specs->normalizer, sizeof specs->normalizer, "%.*s",
                             (int)(nf.sub.end - nf.sub.p), (const char *)nf.sub.p);
                else if (nf.field == 3 && nf.wire == 0) specs->add_dummy_prefix = nf.value != 0;
                else if (nf.field == 4 && nf.wire == 0) specs->remove_extra_whitespaces = nf.value != 0;
            }
            if (nrc < 0) return "a malformed normalizer spec";
        } else if (f.field > 5) {
            return "a field ModelProto does not have";
        }
    }
    if (rc < 0) return "malformed protobuf";
    if (n == 0) return "no pieces";

    /* pass 2: fill */
    stored_defaults(out, "sentencepiece-bpe");
    out->n = (int)n;
    out->bytes = xmalloc((size_t)total + 1);
    out->offsets = xmalloc(((size_t)n + 1) * sizeof *out->offsets);
    out->scores = xmalloc((size_t)n * sizeof *out->scores);
    out->kinds = xmalloc((size_t)n);
    r = (pb_reader){data, data + size};
    int64_t off = 0;
    int i = 0;
    while (pb_next(&r, &f) == 1) {
        if (f.field != 1) continue;
        pb_reader pr = f.sub;
        pb_field pf;
        float score = 0;
        int type = 1; /* NORMAL */
        out->offsets[i] = off;
        while (pb_next(&pr, &pf) == 1) {
            if (pf.field == 1) {
                size_t len = (size_t)(pf.sub.end - pf.sub.p);
                memcpy(out->bytes + off, pf.sub.p, len);
                off += (int64_t)len;
                if ((int)len > out->max_token_length) out->max_token_length = (int)len;
            } else if (pf.field == 2) {
                uint32_t bits = (uint32_t)pf.value;
                memcpy(&score, &bits, 4);
            } else if (pf.field == 3) {
                type = (int)pf.value;
            }
        }
        out->scores[i] = score;
        out->kinds[i] = type >= 1 && type <= 6 ? (unsigned char)(type - 1) : MFILE_PIECE_UNUSED;
        i++;
    }
    out->offsets[n] = off;
    return NULL;
}

static void load_sentencepiece_buf(mfile_tokenizer *out, const char *buf, size_t size,
                                   const char *path) {
    sp_specs specs;
    const char *why = sp_parse((const unsigned char *)buf, size, out, &specs);
    if (why) die("tokenizer '%s': not a SentencePiece model (%s)", path, why);
    if (specs.model_type != 2) {
        mfile_tokenizer_free(out);
        die("tokenizer '%s': SentencePiece model type %d is not supported (only BPE, 2)", path,
            specs.model_type);
    }
    if (specs.normalizer[0] && strcmp(specs.normalizer, "identity") != 0) {
        mfile_tokenizer_free(out);
        die("tokenizer '%s': SentencePiece normaliser '%s' is not supported (only identity)",
            path, specs.normalizer);
    }
    out->add_dummy_prefix = specs.add_dummy_prefix;
    out->remove_extra_whitespaces = specs.remove_extra_whitespaces;
    out->bos_id = specs.bos_id >= 0 && specs.bos_id < out->n ? specs.bos_id : -1;
    out->eos_id = specs.eos_id >= 0 && specs.eos_id < out->n ? specs.eos_id : -1;
}

void tok_load_sentencepiece(mfile_tokenizer *out, const char *path) {
    size_t size;
    char *buf = util_read_file(path, &size);
    load_sentencepiece_buf(out, buf, size, path);
    free(buf);
}

/* ---- tiktoken rank file ---- */

static int base64_value(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* decodes s[0..len) (standard alphabet, '=' padding) into out; returns the bytes, -1 when
 * malformed */
static int base64_decode(const char *s, size_t len, char *out) {
    while (len > 0 && s[len - 1] == '=') len--;
    if (len % 4 == 1) return -1;
    uint32_t acc = 0;
    int bits = 0, n = 0;
    for (size_t i = 0; i < len; i++) {
        int v = base64_value((unsigned char)s[i]);
        if (v < 0) return -1;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[n++] = (char)((acc >> bits) & 0xff);
        }
    }
    return n;
}

/* 1 when the buffer starts like a tiktoken file: "base64 digits\n" */
static int looks_like_tiktoken(const char *buf, size_t size) {
    size_t i = 0;
    while (i < size && (base64_value((unsigned char)buf[i]) >= 0 || buf[i] == '=')) i++;
    if (i == 0 || i >= size || buf[i] != ' ') return 0;
    size_t d = ++i;
    while (i < size && buf[i] >= '0' && buf[i] <= '9') i++;
    return i > d && i < size && (buf[i] == '\n' || buf[i] == '\r');
}

/* Meta's Llama 3 special tokens (ids 128000 + i), as in the 3.1 release */
static void llama3_special_name(int i, char *out, size_t cap) {
    static const char *const named[] = {
        "<|begin_of_text|>", "<|end_of_text|>", NULL, NULL, "<|finetune_right_pad_id|>", NULL,
        "<|start_header_id|>", "<|end_header_id|>", "<|eom_id|>", "<|eot_id|>", "<|python_tag|>"};
    const int n_named = (int)(sizeof named / sizeof named[0]);
    if (i < n_named && named[i]) {
        snprintf(out, cap, "%s", named[i]);
        return;
    }
    /* the reserved ones are numbered in order over the remaining slots */
    int reserved = 0;
    for (int j = 0; j < i && j < n_named; j++) reserved += named[j] == NULL;
    if (i >= n_named) reserved += i - n_named;
    snprintf(out, cap, "<|reserved_special_token_%d|>", reserved);
}

/* walks the non-empty lines of a buffer */
typedef struct {
    const char *buf;
    size_t size, next;
} line_cursor;

/* the next non-empty line: 1 with [*start, *end) the line, a trailing CR dropped; 0 at the end */
static int line_next(line_cursor *c, size_t *start, size_t *end) {
    while (c->next < c->size) {
        size_t p = c->next;
        const char *nl = memchr(c->buf + p, '\n', c->size - p);
        size_t stop = nl ? (size_t)(nl - c->buf) : c->size, le = stop;
        if (le > p && c->buf[le - 1] == '\r') le--;
        c->next = stop + 1;
        if (le > p) {
            *start = p;
            *end = le;
            return 1;
        }
    }
    return 0;
}

/* the decimal rank in [s, end): digits only, below INT32_MAX - LLAMA3_N_SPECIAL; -1 otherwise. Reads
 * no byte past end (strtoll would look for the end of the whole remaining file: quadratic under
 * ASan's strict string checks) */
static int64_t parse_rank(const char *s, const char *end) {
    int64_t v = 0;
    if (s >= end) return -1;
    for (; s < end; s++) {
        if (*s < '0' || *s > '9') return -1;
        v = v * 10 + (*s - '0');
        if (v >= INT32_MAX - LLAMA3_N_SPECIAL) return -1;
    }
    return v;
}

static void load_tiktoken_buf(mfile_tokenizer *out, const char *buf, size_t size, const char *path) {
    /* pass 1: the largest rank */
    int64_t max_rank = -1, lines = 0;
    line_cursor lc = {buf, size, 0};
    for (size_t pos, le; line_next(&lc, &pos, &le);) {
        lines++;
        const char *sp = memchr(buf + pos, ' ', le - pos);
        if (!sp) die("tokenizer '%s': line %lld is not 'base64 rank'", path, (long long)lines);
        int64_t rank = parse_rank(sp + 1, buf + le);
        if (rank < 0) die("tokenizer '%s': line %lld has a bad rank", path, (long long)lines);
        if (rank > max_rank) max_rank = rank;
    }
    if (lines == 0) die("tokenizer '%s': no ranks", path);
    if (max_rank + 1 != LLAMA3_N_RANKS || lines != LLAMA3_N_RANKS)
        die("tokenizer '%s': a tiktoken file of %lld ranks; only Meta's Llama 3 file (%d ranks) "
            "is recognised, since the special tokens and the split pattern are not in the file",
            path, (long long)lines, LLAMA3_N_RANKS);

    /* pass 2: the pieces, then the special tokens */
    piece_list p;
    pieces_init(&p, LLAMA3_N_RANKS + LLAMA3_N_SPECIAL);
    char tok[256];
    lines = 0;
    lc.next = 0;
    for (size_t pos, le; line_next(&lc, &pos, &le);) {
        lines++;
        const char *sp = memchr(buf + pos, ' ', le - pos);
        int rank = (int)parse_rank(sp + 1, buf + le); /* checked in pass 1 */
        size_t b64 = (size_t)(sp - (buf + pos));
        int len = b64 <= 4 * (sizeof tok / 3) ? base64_decode(buf + pos, b64, tok) : -1;
        if (len <= 0) die("tokenizer '%s': line %lld has a bad base64 token", path, (long long)lines);
        if (p.text[rank]) die("tokenizer '%s': rank %d appears twice", path, rank);
        pieces_set(&p, rank, tok, (size_t)len, MFILE_PIECE_NORMAL);
        p.scores[rank] = -(float)rank;
    }
    for (int i = 0; i < LLAMA3_N_SPECIAL; i++) {
        llama3_special_name(i, tok, sizeof tok);
        pieces_set(&p, LLAMA3_N_RANKS + i, tok, strlen(tok), MFILE_PIECE_CONTROL);
    }
    stored_defaults(out, "byte-bpe");
    pieces_pack(&p, out);
    out->add_dummy_prefix = 0;
    out->pattern = xstrdup(LLAMA3_PATTERN);
    out->bos_id = LLAMA3_N_RANKS;     /* <|begin_of_text|> */
    out->eos_id = LLAMA3_N_RANKS + 1; /* <|end_of_text|> */
    snprintf(out->chat_template, sizeof out->chat_template, "llama3");
}

void tok_load_tiktoken(mfile_tokenizer *out, const char *path) {
    size_t size;
    char *buf = util_read_file(path, &size);
    load_tiktoken_buf(out, buf, size, path);
    free(buf);
}

/* ---- Hugging Face tokenizer.json ---- */

/* GPT-2's byte-level alphabet: byte b is written as the code point byte_to_cp(b) */
static int byte_to_cp(int b) {
    if ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff)) return b;
    int k = 0; /* the others, in order, take 256, 257, ... */
    for (int c = 0; c < b; c++)
        if (!((c >= '!' && c <= '~') || (c >= 0xa1 && c <= 0xac) || (c >= 0xae && c <= 0xff))) k++;
    return 256 + k;
}

/* decodes one UTF-8 code point at s (well-formed: cJSON's strings); returns its length */
static int utf8_decode(const unsigned char *s, uint32_t *cp) {
    if (s[0] < 0x80) return *cp = s[0], 1;
    if ((s[0] & 0xe0) == 0xc0 && s[1]) return *cp = (uint32_t)(s[0] & 0x1f) << 6 | (s[1] & 0x3f), 2;
    if ((s[0] & 0xf0) == 0xe0 && s[1] && s[2])
        return *cp = (uint32_t)(s[0] & 0x0f) << 12 | (uint32_t)(s[1] & 0x3f) << 6 | (s[2] & 0x3f), 3;
    if ((s[0] & 0xf8) == 0xf0 && s[1] && s[2] && s[3])
        return *cp = (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3f) << 12 |
                     (uint32_t)(s[2] & 0x3f) << 6 | (s[3] & 0x3f), 4;
    *cp = 0xfffd;
    return 1;
}

/* a string -> id map over the vocabulary's keys (pointers into the cJSON tree) */
typedef struct {
    const char **key;
    int *id;
    uint32_t mask;
} str_map;

static uint32_t str_hash(const char *s, size_t len) {
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static void map_init(str_map *m, int n) {
    size_t cap = 16;
    while (cap < 2 * (size_t)n) cap *= 2;
    m->key = xcalloc(cap, sizeof *m->key);
    m->id = xmalloc(cap * sizeof *m->id);
    m->mask = (uint32_t)(cap - 1);
}

static void map_put(str_map *m, const char *key, int id) {
    for (uint32_t h = str_hash(key, strlen(key)) & m->mask;; h = (h + 1) & m->mask) {
        if (!m->key[h]) {
            m->key[h] = key;
            m->id[h] = id;
            return;
        }
        if (strcmp(m->key[h], key) == 0) return;
    }
}

static int map_get(const str_map *m, const char *key, size_t len) {
    for (uint32_t h = str_hash(key, len) & m->mask;; h = (h + 1) & m->mask) {
        if (!m->key[h]) return -1;
        if (strlen(m->key[h]) == len && memcmp(m->key[h], key, len) == 0) return m->id[h];
    }
}

static void map_free(str_map *m) {
    free(m->key);
    free(m->id);
}

/* what the pre-tokenizer (and normaliser) of a tokenizer.json ask for */
typedef struct {
    int byte_level;       /* a ByteLevel pre-tokenizer */
    int add_prefix_space; /* ByteLevel / Metaspace */
    int metaspace;
    char *pattern;        /* malloc'd split regex */
    char why[256];        /* set when something is not supported */
} hf_pretok;

static const char *json_str(const cJSON *obj, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(it) ? it->valuestring : NULL;
}

static int json_true(const cJSON *obj, const char *key, int def) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsBool(it) ? cJSON_IsTrue(it) : def;
}

static void set_pattern(hf_pretok *p, char *pattern) {
    if (p->pattern) {
        free(pattern);
        snprintf(p->why, sizeof p->why, "more than one split pattern");
        return;
    }
    p->pattern = pattern;
}

static void parse_pretok(const cJSON *node, hf_pretok *p) {
    if (!node || cJSON_IsNull(node) || p->why[0]) return;
    const char *type = json_str(node, "type");
    if (!type) {
        snprintf(p->why, sizeof p->why, "a pre-tokenizer without a type");
    } else if (!strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(node, "pretokenizers")) parse_pretok(it, p);
    } else if (!strcmp(type, "ByteLevel")) {
        p->byte_level = 1;
        p->add_prefix_space = json_true(node, "add_prefix_space", 0);
        if (json_true(node, "use_regex", 1)) set_pattern(p, xstrdup(GPT2_PATTERN));
    } else if (!strcmp(type, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(node, "pattern");
        const char *re = json_str(pat, "Regex"), *lit = json_str(pat, "String");
        const char *behavior = json_str(node, "behavior");
        if (!re && !lit) {
            snprintf(p->why, sizeof p->why, "a Split pre-tokenizer without a pattern");
        } else if (!behavior || strcmp(behavior, "Isolated") != 0 || json_true(node, "invert", 0)) {
            snprintf(p->why, sizeof p->why, "Split behavior '%s'%s (only Isolated)",
                     behavior ? behavior : "?", json_true(node, "invert", 0) ? " inverted" : "");
        } else if (re) {
            set_pattern(p, xstrdup(re));
        } else if (strstr(lit, "\\E")) {
            snprintf(p->why, sizeof p->why, "a Split string containing \\E");
        } else {
            size_t n = strlen(lit) + 5;
            char *q = xmalloc(n);
            snprintf(q, n, "\\Q%s\\E", lit);
            set_pattern(p, q);
        }
    } else if (!strcmp(type, "Metaspace")) {
        p->metaspace = 1;
        const char *scheme = json_str(node, "prepend_scheme");
        p->add_prefix_space = scheme ? strcmp(scheme, "never") != 0 : json_true(node, "add_prefix_space", 1);
    } else {
        snprintf(p->why, sizeof p->why, "pre-tokenizer '%s'", type);
    }
}

/* SentencePiece-style normaliser: Prepend("▁") and Replace(" ", "▁") are what it does anyway;
 * returns 0 with why set on anything else */
static int parse_sp_normalizer(const cJSON *node, int *prepend, char *why, size_t cap) {
    if (!node || cJSON_IsNull(node)) return 1;
    const char *type = json_str(node, "type");
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(node, "normalizers"))
            if (!parse_sp_normalizer(it, prepend, why, cap)) return 0;
        return 1;
    }
    if (type && !strcmp(type, "Prepend")) {
        const char *s = json_str(node, "prepend");
        if (s && !strcmp(s, "\xe2\x96\x81")) {
            *prepend = 1;
            return 1;
        }
    }
    if (type && !strcmp(type, "Replace")) {
        const char *s = json_str(cJSON_GetObjectItemCaseSensitive(node, "pattern"), "String");
        const char *c = json_str(node, "content");
        if (s && c && !strcmp(s, " ") && !strcmp(c, "\xe2\x96\x81")) return 1;
    }
    snprintf(why, cap, "normaliser '%s'", type ? type : "?");
    return 0;
}

/* the id of the first SpecialToken of post_processor's "single" template (the BOS it adds) */
static int hf_post_bos(const cJSON *root, const piece_list *p) {
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    const char *type = json_str(pp, "type");
    if (type && !strcmp(type, "Sequence")) {
        const cJSON *it;
        cJSON_ArrayForEach(it, cJSON_GetObjectItemCaseSensitive(pp, "processors")) {
            type = json_str(it, "type");
            if (type && !strcmp(type, "TemplateProcessing")) {
                pp = it;
                break;
            }
        }
    }
    if (!type || strcmp(type, "TemplateProcessing") != 0) return -1;
    const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(pp, "single"), 0);
    const char *name = json_str(cJSON_GetObjectItemCaseSensitive(first, "SpecialToken"), "id");
    if (!name) return -1;
    for (int i = 0; i < p->n; i++)
        if (p->text[i] && p->kinds[i] == MFILE_PIECE_CONTROL && !strcmp(p->text[i], name)) return i;
    return -1;
}

int tok_load_hf_json(mfile_tokenizer *out, const char *path, char *why, size_t why_cap) {
    cJSON *root = json_read_object(path);
    int ok = 0;
    hf_pretok pre = {0};
    piece_list p = {0};
    str_map map = {0};
    int32_t *merges = NULL;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const char *mtype = json_str(model, "type");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *mlist = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const char *unk = json_str(model, "unk_token");
    int byte_fallback = json_true(model, "byte_fallback", 0);
    int n_vocab = cJSON_GetArraySize(vocab);
    parse_pretok(cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), &pre);
    if (!mtype || strcmp(mtype, "BPE") != 0) {
        snprintf(why, why_cap, "model type '%s' (only BPE)", mtype ? mtype : "?");
        goto done;
    }
    if (!cJSON_IsObject(vocab) || n_vocab == 0) {
        snprintf(why, why_cap, "an empty vocabulary");
        goto done;
    }
    if ((json_str(model, "continuing_subword_prefix") && *json_str(model, "continuing_subword_prefix")) ||
        (json_str(model, "end_of_word_suffix") && *json_str(model, "end_of_word_suffix"))) {
        snprintf(why, why_cap, "subword prefixes or suffixes (WordPiece-style BPE)");
        goto done;
    }
    if (pre.why[0]) {
        snprintf(why, why_cap, "%s", pre.why);
        goto done;
    }
    int byte_level = pre.byte_level;
    if (!byte_level && !byte_fallback) {
        snprintf(why, why_cap, "a BPE with neither byte_fallback nor a ByteLevel pre-tokenizer");
        goto done;
    }
    int prepend = 0;
    const cJSON *norm = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    if (byte_level) {
        const char *nt = json_str(norm, "type");
        if (nt && !strcmp(nt, "NFC")) {
            warning("'%s': the NFC normaliser is not applied (text is encoded as given)", path);
        } else if (norm && !cJSON_IsNull(norm)) {
            snprintf(why, why_cap, "normaliser '%s' with a byte-level model", nt ? nt : "?");
            goto done;
        }
    } else if (!parse_sp_normalizer(norm, &prepend, why, why_cap)) {
        goto done;
    }

    /* the id space: the vocabulary and the added tokens */
    /* ids are bounded before the id space is allocated: below CONFIG_MAX_VOCAB, and no more
     * holes than entries (plus a margin), so a file of three entries cannot claim id 2^24 */
    int n = 0, entries = 0;
    const cJSON *it;
    int64_t v;
    cJSON_ArrayForEach(it, vocab) {
        if (!json_get_int(it, 0, CONFIG_MAX_VOCAB - 1, &v))
            die("'%s': vocabulary entry '%s' has no valid id (an integer in [0, %d))", path,
                it->string, CONFIG_MAX_VOCAB);
        if (v + 1 > n) n = (int)v + 1;
        entries++;
    }
    cJSON_ArrayForEach(it, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, "id");
        if (!json_get_int(id, 0, CONFIG_MAX_VOCAB - 1, &v) || !json_str(it, "content"))
            die("'%s': an added token without a valid id or content", path);
        if (v + 1 > n) n = (int)v + 1;
        entries++;
    }
    if (n > 2 * entries + 65536)
        die("'%s': ids go up to %d for %d tokens (more holes than tokens)", path, n - 1, entries);
    pieces_init(&p, n);
    map_init(&map, n_vocab);
    int cp_to_byte[324];
    for (int c = 0; c < 324; c++) cp_to_byte[c] = -1;
    for (int b = 0; b < 256; b++) cp_to_byte[byte_to_cp(b)] = b;
    char *buf = NULL;
    size_t buf_cap = 0;
    cJSON_ArrayForEach(it, vocab) {
        int id = it->valueint;
        const char *key = it->string;
        size_t klen = strlen(key);
        if (p.text[id]) die("'%s': id %d appears twice in the vocabulary", path, id);
        map_put(&map, key, id);
        if (!byte_level) {
            unsigned char byte;
            unsigned char kind = MFILE_PIECE_NORMAL;
            if (klen == 6 && !memcmp(key, "<0x", 3) && key[5] == '>' &&
                sscanf(key + 3, "%2hhx", &byte) == 1)
                kind = MFILE_PIECE_BYTE;
            else if (unk && !strcmp(key, unk))
                kind = MFILE_PIECE_UNKNOWN;
            pieces_set(&p, id, key, klen, kind);
            continue;
        }
        if (klen + 1 > buf_cap) {
            buf_cap = 2 * (klen + 1);
            buf = xrealloc(buf, buf_cap);
        }
        size_t bl = 0;
        for (size_t i = 0; i < klen;) {
            uint32_t cp;
            i += (size_t)utf8_decode((const unsigned char *)key + i, &cp);
            if (cp >= 324 || cp_to_byte[cp] < 0)
                die("'%s': vocabulary entry '%s' is not in the byte-level alphabet", path, key);
            buf[bl++] = (char)cp_to_byte[cp];
        }
        pieces_set(&p, id, buf, bl, MFILE_PIECE_NORMAL);
    }
    free(buf);
    cJSON_ArrayForEach(it, added) {
        int id = cJSON_GetObjectItemCaseSensitive(it, "id")->valueint;
        const char *content = json_str(it, "content");
        unsigned char kind = json_true(it, "special", 0) ? MFILE_PIECE_CONTROL : MFILE_PIECE_USER;
        if (unk && !strcmp(content, unk)) kind = MFILE_PIECE_UNKNOWN;
        pieces_set(&p, id, content, strlen(content), kind);
    }

    /* merges: "a b" strings or [a, b] pairs */
    int n_merges = cJSON_GetArraySize(mlist);
    if (byte_level) merges = xmalloc(((size_t)n_merges + 1) * 2 * sizeof *merges);
    else
        for (int i = 0; i < n; i++) p.scores[i] = -1e30f; /* made by no merge: last */
    char *cat = NULL;
    size_t cat_cap = 0;
    int r = 0;
    cJSON_ArrayForEach(it, mlist) {
        const char *a, *b;
        size_t la, lb;
        if (cJSON_IsString(it)) {
            a = it->valuestring;
            const char *sp = strchr(a, ' ');
            if (!sp || strchr(sp + 1, ' ')) die("'%s': merge %d is not 'left right'", path, r);
            la = (size_t)(sp - a);
            b = sp + 1;
        } else if (cJSON_IsArray(it) && cJSON_GetArraySize(it) == 2 &&
                   cJSON_IsString(cJSON_GetArrayItem(it, 0)) && cJSON_IsString(cJSON_GetArrayItem(it, 1))) {
            a = cJSON_GetArrayItem(it, 0)->valuestring;
            b = cJSON_GetArrayItem(it, 1)->valuestring;
            la = strlen(a);
        } else {
            die("'%s': merge %d is neither a string nor a pair of strings", path, r);
        }
        lb = strlen(b);
        if (la + lb > cat_cap) {
            cat_cap = 2 * (la + lb) + 16;
            cat = xrealloc(cat, cat_cap);
        }
        memcpy(cat, a, la);
        memcpy(cat + la, b, lb);
        int ia = map_get(&map, a, la), ib = map_get(&map, b, lb), ic = map_get(&map, cat, la + lb);
        if (ia < 0 || ib < 0 || ic < 0)
            die("'%s': merge %d ('%.*s' '%s') names a token that is not in the vocabulary", path, r,
                (int)la, a, b);
        if (byte_level) {
            merges[2 * r] = ia;
            merges[2 * r + 1] = ib;
        }
        if (p.scores[ic] < -(float)r || (byte_level && p.scores[ic] == 0)) p.scores[ic] = -(float)r;
        r++;
    }
    free(cat);

    stored_defaults(out, byte_level ? "byte-bpe" : "sentencepiece-bpe");
    out->bos_id = hf_post_bos(root, &p);
    pieces_pack(&p, out);
    if (byte_level) {
        out->merges = merges;
        out->n_merges = n_merges;
        merges = NULL;
        out->pattern = pre.pattern;
        pre.pattern = NULL;
        out->add_dummy_prefix = pre.add_prefix_space;
        out->ignore_merges = json_true(model, "ignore_merges", 0);
    } else {
        out->add_dummy_prefix = prepend || (pre.metaspace && pre.add_prefix_space);
        if (out->bos_id < 0) out->bos_id = find_piece(out, "<s>");
        out->eos_id = find_piece(out, "</s>");
    }
    ok = 1;
done:
    if (!ok && p.text) {
        for (int i = 0; i < p.n; i++) free(p.text[i]);
        free(p.text);
        free(p.len);
        free(p.scores);
        free(p.kinds);
    }
    free(merges);
    free(pre.pattern);
    map_free(&map);
    cJSON_Delete(root);
    return ok;
}

/* ---- any file, by content ---- */

void tok_load_file(mfile_tokenizer *out, const char *path) {
    size_t size;
    char *buf = util_read_file(path, &size);
    size_t i = 0;
    while (i < size && (buf[i] == ' ' || buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\t')) i++;
    if (i < size && buf[i] == '{') {
        free(buf);
        char why[512] = "";
        if (!tok_load_hf_json(out, path, why, sizeof why))
            die("tokenizer '%s': not supported: %s", path, why);
        return;
    }
    if (looks_like_tiktoken(buf, size)) {
        load_tiktoken_buf(out, buf, size, path);
    } else {
        sp_specs specs;
        /* a llama2.c file is not a valid ModelProto (its float scores break the wire format),
         * so a successful parse decides */
        if (size >= 2 && (unsigned char)buf[0] == 0x0a &&
            sp_parse((const unsigned char *)buf, size, out, &specs) == NULL) {
            mfile_tokenizer_free(out);
            load_sentencepiece_buf(out, buf, size, path);
        } else {
            load_llama2c_buf(out, buf, size, path);
        }
    }
    free(buf);
}

/* ---- tokenizer_config.json, chat templates, padding ---- */

const char *tok_detect_chat_template(const char *jinja) {
    if (!jinja) return NULL;
    if (strstr(jinja, "<|start_header_id|>") && strstr(jinja, "<|end_header_id|>") &&
        strstr(jinja, "<|eot_id|>"))
        return "llama3";
    if (strstr(jinja, "<|im_start|>") && strstr(jinja, "<|im_end|>")) return "chatml";
    if (strstr(jinja, "[INST]") && strstr(jinja, "[/INST]") && strstr(jinja, "<<SYS>>"))
        return "llama2";
    return NULL;
}

/* a token named in tokenizer_config.json: "text" or {"content": "text", ...} */
static const char *config_token(const cJSON *root, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(root, key);
    if (cJSON_IsString(it)) return it->valuestring;
    return json_str(it, "content");
}

int tok_apply_hf_config(mfile_tokenizer *t, const char *path) {
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISREG(st.st_mode)) return 0;
    cJSON *root = json_read_object(path);
    const cJSON *ct = cJSON_GetObjectItemCaseSensitive(root, "chat_template");
    const char *jinja = cJSON_IsString(ct) ? ct->valuestring : NULL;
    if (cJSON_IsArray(ct)) { /* [{"name": ..., "template": ...}]: the default one */
        const cJSON *it;
        cJSON_ArrayForEach(it, ct) {
            const char *name = json_str(it, "name");
            if (!jinja || (name && !strcmp(name, "default"))) jinja = json_str(it, "template");
        }
    }
    const char *name = tok_detect_chat_template(jinja);
    if (name) snprintf(t->chat_template, sizeof t->chat_template, "%s", name);
    else if (jinja) warning("'%s': the chat template is not one of llama2, llama3, chatml; none stored", path);
    const char *bos = config_token(root, "bos_token"), *eos = config_token(root, "eos_token");
    int id;
    if (bos && (id = find_piece(t, bos)) >= 0) t->bos_id = id;
    if (eos && (id = find_piece(t, eos)) >= 0) t->eos_id = id;
    /* a tokenizer that adds no BOS (Qwen2: "bos_token": null; or "add_bos_token": false) */
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(root, "bos_token");
    if ((b && cJSON_IsNull(b)) || cJSON_IsFalse(cJSON_GetObjectItemCaseSensitive(root, "add_bos_token")))
        t->bos_id = -1;
    cJSON_Delete(root);
    return 1;
}

void tok_fit_vocab(mfile_tokenizer *t, int vocab_size, const char *path) {
    if (t->n > vocab_size)
        die("'%s': tokenizer has %d pieces, the model's vocab_size is %d", path, t->n, vocab_size);
    if (t->n == vocab_size) return;
    int old = t->n;
    if (!t->kinds) /* llama2.c pieces: their ids are the model's, no holes to fill */
        die("'%s': tokenizer has %d pieces, the model's vocab_size is %d", path, old, vocab_size);
    t->offsets = xrealloc(t->offsets, ((size_t)vocab_size + 1) * sizeof *t->offsets);
    t->scores = xrealloc(t->scores, (size_t)vocab_size * sizeof *t->scores);
    t->kinds = xrealloc(t->kinds, (size_t)vocab_size);
    for (int i = old; i < vocab_size; i++) {
        t->offsets[i + 1] = t->offsets[old];
        t->scores[i] = 0;
        t->kinds[i] = MFILE_PIECE_UNUSED;
    }
    t->n = vocab_size;
}

/* ---- a Hugging Face model directory ---- */

static char *join(const char *dir, const char *name) {
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

static int is_file(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

int tok_load_hf_dir(mfile_tokenizer *out, const char *dir, char *why, size_t why_cap) {
    char *json = join(dir, "tokenizer.json"), *model = join(dir, "tokenizer.model");
    char *config = join(dir, "tokenizer_config.json"), *jinja = join(dir, "chat_template.jinja");
    int ok = 0;
    if (is_file(json) && tok_load_hf_json(out, json, why, why_cap)) {
        ok = 1;
    } else if (is_file(model)) { /* alone, or beside a tokenizer.json this code cannot use */
        tok_load_file(out, model);
        ok = 1;
    } else if (!is_file(json)) {
        snprintf(why, why_cap, "no tokenizer.json or tokenizer.model");
    } else {
        char reason[512];
        snprintf(reason, sizeof reason, "'%s': %s", json, why);
        snprintf(why, why_cap, "%s", reason);
    }
    if (ok) {
        tok_apply_hf_config(out, config);
        if (!out->chat_template[0] && is_file(jinja)) { /* newer exports keep it apart */
            char *text = util_read_file(jinja, NULL);
            const char *name = tok_detect_chat_template(text);
            if (name) snprintf(out->chat_template, sizeof out->chat_template, "%s", name);
            free(text);
        }
    }
    free(json);
    free(model);
    free(config);
    free(jinja);
    return ok;
}

/* ---- GGUF tokenizer.ggml.* ---- */

#define QWEN2_PATTERN                                                                           \
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| "                       \
    "?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"

/* an optional boolean / integer key of the tokenizer; def when absent */
static int64_t gguf_opt_int(const gguf_file *g, const char *key, int64_t def) {
    const gguf_kv *kv = gguf_find(g, key);
    return kv ? gguf_int(g, kv) : def;
}

/* an array key of the tokenizer with n elements (of strings when want_str), or NULL when absent */
static const gguf_kv *gguf_tok_array(const gguf_file *g, const char *key, int want_str, uint64_t n) {
    const gguf_kv *kv = gguf_find(g, key);
    if (!kv) return NULL;
    int numeric = kv->elem != GGUF_STRING && kv->elem != GGUF_BOOL;
    if (kv->type != GGUF_ARRAY || (want_str ? kv->elem != GGUF_STRING : !numeric))
        die("'%s': key '%s' must be an array of %s", g->path, key, want_str ? "strings" : "numbers");
    if (n && kv->n != n)
        die("'%s': key '%s' has %" PRIu64 " elements, tokenizer.ggml.tokens %" PRIu64, g->path, key,
            kv->n, n);
    return kv;
}

int tok_load_gguf(mfile_tokenizer *out, const gguf_file *g, char *why, size_t why_cap) {
    const gguf_kv *mk = gguf_find(g, "tokenizer.ggml.model");
    if (!mk) {
        snprintf(why, why_cap, "no tokenizer.ggml.model");
        return 0;
    }
    char *model = gguf_strdup(g, mk);
    int byte_level = !strcmp(model, "gpt2");
    if (!byte_level && strcmp(model, "llama") != 0) {
        snprintf(why, why_cap, "tokenizer model '%s' (llama and gpt2 are supported)", model);
        free(model);
        return 0;
    }
    free(model);
    const char *pattern = NULL;
    int ignore_merges = 0;
    if (byte_level) {
        const gguf_kv *pk = gguf_find(g, "tokenizer.ggml.pre");
        char *pre = pk ? gguf_strdup(g, pk) : xstrdup("default");
        if (!strcmp(pre, "default") || !strcmp(pre, "gpt2") || !strcmp(pre, "gpt-2")) {
            pattern = GPT2_PATTERN;
        } else if (!strcmp(pre, "llama3") || !strcmp(pre, "llama-bpe") || !strcmp(pre, "llama-v3")) {
            pattern = LLAMA3_PATTERN;
            ignore_merges = 1;
        } else if (!strcmp(pre, "qwen2")) {
            pattern = QWEN2_PATTERN;
        } else {
            snprintf(why, why_cap, "pre-tokenizer '%s' (default, gpt2, llama-bpe and qwen2 are supported)", pre);
            free(pre);
            return 0;
        }
        free(pre);
    }
    const gguf_kv *tokens = gguf_tok_array(g, "tokenizer.ggml.tokens", 1, 0);
    if (!tokens || tokens->n == 0 || tokens->n >= INT32_MAX / 2)
        die("'%s': tokenizer.ggml.tokens is missing, empty or too long", g->path);
    const int n = (int)tokens->n;
    const gguf_kv *scores = gguf_tok_array(g, "tokenizer.ggml.scores", 0, tokens->n);
    const gguf_kv *types = gguf_tok_array(g, "tokenizer.ggml.token_type", 0, tokens->n);
    const gguf_kv *mlist = byte_level ? gguf_tok_array(g, "tokenizer.ggml.merges", 1, 0) : NULL;
    if (byte_level && !mlist) die("'%s': a gpt2 tokenizer without tokenizer.ggml.merges", g->path);

    piece_list p;
    pieces_init(&p, n);
    str_map map = {0};
    int cp_to_byte[324];
    for (int c = 0; c < 324; c++) cp_to_byte[c] = -1;
    for (int b = 0; b < 256; b++) cp_to_byte[byte_to_cp(b)] = b;
    char **keys = byte_level ? xcalloc((size_t)n, sizeof *keys) : NULL; /* NUL-terminated tokens */
    if (byte_level) map_init(&map, n);
    char *buf = NULL;
    size_t buf_cap = 0;
    for (int i = 0; i < n; i++) {
        uint64_t len;
        const char *s = gguf_arr_str(tokens, (uint64_t)i, &len);
        int type = types ? (int)gguf_arr_num(types, (uint64_t)i) : 1;
        /* GGUF token types: 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte */
        unsigned char kind = type >= 1 && type <= 6 ? (unsigned char)(type - 1) : MFILE_PIECE_NORMAL;
        if (scores) p.scores[i] = (float)gguf_arr_num(scores, (uint64_t)i);
        if (!byte_level || kind == MFILE_PIECE_CONTROL || kind == MFILE_PIECE_USER ||
            kind == MFILE_PIECE_UNKNOWN) {
            pieces_set(&p, i, s, (size_t)len, kind);
        } else { /* byte-level alphabet -> raw bytes */
            if (len + 1 > buf_cap) {
                buf_cap = 2 * ((size_t)len + 1);
                buf = xrealloc(buf, buf_cap);
            }
            memcpy(buf, s, (size_t)len);
            buf[len] = 0;
            size_t bl = 0;
            for (size_t k = 0; k < len;) {
                uint32_t cp;
                k += (size_t)utf8_decode((const unsigned char *)buf + k, &cp);
                if (cp >= 324 || cp_to_byte[cp] < 0)
                    die("'%s': token %d ('%s') is not in the byte-level alphabet", g->path, i, buf);
                buf[bl++] = (char)cp_to_byte[cp];
            }
            pieces_set(&p, i, buf, bl, kind);
        }
        if (byte_level) {
            keys[i] = xmalloc((size_t)len + 1);
            memcpy(keys[i], s, (size_t)len);
            keys[i][len] = 0;
            map_put(&map, keys[i], i);
        }
    }
    free(buf);
    int32_t *merges = NULL;
    int n_merges = 0;
    if (byte_level) {
        if (mlist->n >= INT32_MAX / 2) die("'%s': tokenizer.ggml.merges is too long", g->path);
        n_merges = (int)mlist->n;
        merges = xmalloc(((size_t)n_merges + 1) * 2 * sizeof *merges);
        char *cat = NULL;
        size_t cat_cap = 0;
        for (int r = 0; r < n_merges; r++) {
            uint64_t len;
            const char *m = gguf_arr_str(mlist, (uint64_t)r, &len);
            const char *sp = memchr(m, ' ', (size_t)len);
            if (!sp || memchr(sp + 1, ' ', (size_t)(m + len - sp - 1)))
                die("'%s': merge %d is not 'left right'", g->path, r);
            size_t la = (size_t)(sp - m), lb = (size_t)len - la - 1;
            if (la + lb + 1 > cat_cap) {
                cat_cap = 2 * (la + lb) + 16;
                cat = xrealloc(cat, cat_cap);
            }
            memcpy(cat, m, la);
            memcpy(cat + la, sp + 1, lb);
            int ia = map_get(&map, m, la), ib = map_get(&map, sp + 1, lb), ic = map_get(&map, cat, la + lb);
            if (ia < 0 || ib < 0 || ic < 0)
                die("'%s': merge %d ('%.*s') names a token that is not in the vocabulary", g->path, r,
                    (int)len, m);
            merges[2 * r] = ia;
            merges[2 * r + 1] = ib;
            if (p.scores[ic] < -(float)r || p.scores[ic] == 0) p.scores[ic] = -(float)r;
        }
        free(cat);
        for (int i = 0; i < n; i++) free(keys[i]);
        free(keys);
        map_free(&map);
    }

    stored_defaults(out, byte_level ? "byte-bpe" : "sentencepiece-bpe");
    pieces_pack(&p, out);
    out->merges = merges;
    out->n_merges = n_merges;
    if (pattern) out->pattern = xstrdup(pattern);
    out->ignore_merges = ignore_merges;
    out->add_dummy_prefix = (int)gguf_opt_int(g, "tokenizer.ggml.add_space_prefix", !byte_level);
    out->remove_extra_whitespaces = (int)gguf_opt_int(g, "tokenizer.ggml.remove_extra_whitespaces", 0);
    int64_t bos = gguf_opt_int(g, "tokenizer.ggml.bos_token_id", -1);
    int64_t eos = gguf_opt_int(g, "tokenizer.ggml.eos_token_id", -1);
    if (bos >= n || eos >= n || bos < -1 || eos < -1)
        die("'%s': tokenizer.ggml.bos_token_id / eos_token_id outside the %d tokens", g->path, n);
    out->bos_id = gguf_opt_int(g, "tokenizer.ggml.add_bos_token", !byte_level) ? (int)bos : -1;
    out->eos_id = (int)eos;
    const gguf_kv *ct = gguf_find(g, "tokenizer.chat_template");
    if (ct) {
        char *jinja = gguf_strdup(g, ct);
        const char *name = tok_detect_chat_template(jinja);
        if (name) snprintf(out->chat_template, sizeof out->chat_template, "%s", name);
        else warning("'%s': the chat template is not one of llama2, llama3, chatml; none stored", g->path);
        free(jinja);
    }
    return 1;
}
