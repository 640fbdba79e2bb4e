/* tokenizer: the runtime side (tok_init, encoding, decoding). The loaders of source files are
 * in tokenizer_load.c.
 *
 * SentencePiece-style ("llama2c-bpe", "sentencepiece-bpe") encoding reproduces SentencePiece's
 * BPE model with the Llama 2 normaliser settings (identity rule, add_dummy_prefix, byte
 * fallback; whitespace squeezing when the model asks for it):
 *   1. normalise: a space is prepended (non-empty text only), U+2581 in the text becomes a
 *      space, and every byte that does not start a well-formed UTF-8 sequence becomes U+FFFD;
 *   2. split into code points (a user-defined piece is one frozen symbol), then repeatedly
 *      merge the adjacent pair whose concatenation is a piece of highest score (ties: leftmost
 *      pair first), using a linked list of symbols and a max-heap of candidate pairs, so that
 *      the cost is O(n log n) in the text length;
 *   3. a final symbol that is not a piece is emitted as its bytes' <0xNN> tokens.
 * When no piece has a space after a non-space byte (true of the Llama 2 and llama2.c
 * vocabularies), no merge can cross the start of a run of spaces, and step 2 runs on each such
 * word separately: the same result, with heaps small enough to stay in cache.
 * The llama2.c exporter stores SentencePiece's space symbol U+2581 as a plain ' '; tok_init
 * accepts either form and keeps ' '.
 *
 * Byte-level ("byte-bpe") encoding: the split pattern (PCRE2 with UTF, UCP and
 * MATCH_INVALID_UTF, JIT-compiled) cuts the text into chunks; text the pattern leaves between
 * matches (malformed UTF-8, or characters a pattern does not cover) is a chunk too, as Hugging
 * Face's Split(behavior Isolated) keeps it, so that no byte is lost. A chunk that is a piece is
 * taken whole (tiktoken; Hugging Face with ignore_merges); otherwise its bytes are merged by the
 * same heap, by lowest rank: of the pair (tokenizer.json merges) or of the concatenated bytes
 * (tiktoken, where a piece's rank is -score). */
#include "tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define TOK_MAX_TEXT ((size_t)INT32_MAX / 32) /* bytes tok_encode accepts (64 MiB) */

enum tok_mode { MODE_SENTENCEPIECE, MODE_BYTE };

/* a special token: matched whole in the text (user-defined always, the others only with
 * TOK_ALLOW_SPECIAL) */
typedef struct {
    const char *text; /* into tokenizer.bytes (llama2.c's "\n<s>\n" read as "<s>") */
    int len, id;
    unsigned char kind;
} special;

struct tokenizer {
    int n;                /* vocabulary size */
    enum tok_mode mode;
    char type[32];
    char chat_template[32];
    int bos_id, eos_id;
    int add_dummy_prefix, remove_extra_ws, ignore_merges;
    char *bytes;          /* (offsets[n]) pieces concatenated, U+2581 stored as ' ' (SentencePiece) */
    int64_t *offsets;     /* (n + 1) piece i is bytes[offsets[i] .. offsets[i+1]) */
    float *scores;        /* (n) merge priority, higher merges first */
    unsigned char *kind;  /* (n) MFILE_PIECE_* */
    unsigned char *byte_value; /* (n) for MFILE_PIECE_BYTE: the byte it stands for */
    int32_t *table;       /* (table_mask + 1) open-addressing hash of NORMAL pieces: id, -1 empty */
    uint32_t table_mask;
    int byte_ids[256];    /* SentencePiece: id of <0xNN>; byte-level: of the one-byte piece; -1 */
    int has_byte_fallback; /* all 256 byte pieces present */
    int unk_id;           /* id of <unk> (0 when the vocabulary has none) */
    int split_at_spaces;  /* no piece has a space after another byte than a space, so no merge
                           * crosses the start of a space run: encode works run by run */
    char byte_chars[256]; /* byte_chars[b] == b: decode points into it for byte pieces */
    /* pair merges (byte-level from tokenizer.json): key (left << 32 | right) -> rank, result */
    uint64_t *pair_key;   /* (pair_mask + 1), UINT64_MAX empty */
    int32_t *pair_rank, *pair_id;
    uint32_t pair_mask;
    int n_merges;
    /* special tokens, sorted by first byte, then longest first */
    special *specials;
    int n_specials;
    int special_start[257]; /* specials starting with byte b: [special_start[b], special_start[b+1]) */
    unsigned char special_mask[256]; /* bit 1: a control/unknown one starts with b, bit 2: a user one */
    pcre2_code *re;       /* byte-level split pattern, NULL: the whole text is one chunk */
};

/* ---- hash table of mergeable pieces ---- */

static uint32_t hash_bytes(const char *s, size_t len) {
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < len; i++) h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static const char *piece_ptr(const tokenizer *t, int id) { return t->bytes + t->offsets[id]; }
static size_t piece_len(const tokenizer *t, int id) {
    return (size_t)(t->offsets[id + 1] - t->offsets[id]);
}

/* id of the NORMAL piece equal to s[0..len), or -1 */
static int table_find(const tokenizer *t, const char *s, size_t len) {
    for (uint32_t h = hash_bytes(s, len) & t->table_mask;; h = (h + 1) & t->table_mask) {
        int id = t->table[h];
        if (id < 0) return -1;
        if (piece_len(t, id) == len && memcmp(piece_ptr(t, id), s, len) == 0) return id;
    }
}

/* inserts id unless an equal piece is already there (the lower id wins, as in SentencePiece) */
static void table_insert(tokenizer *t, int id) {
    const char *s = piece_ptr(t, id);
    size_t len = piece_len(t, id);
    for (uint32_t h = hash_bytes(s, len) & t->table_mask;; h = (h + 1) & t->table_mask) {
        int other = t->table[h];
        if (other < 0) {
            t->table[h] = id;
            return;
        }
        if (piece_len(t, other) == len && memcmp(piece_ptr(t, other), s, len) == 0) return;
    }
}

/* ---- pair merges ---- */

static uint32_t hash_pair(uint64_t key) {
    key ^= key >> 33;
    key *= 0xff51afd7ed558ccdull;
    key ^= key >> 33;
    return (uint32_t)key;
}

/* 1 with the merge's rank and result when the pair (left, right) merges */
static int pair_find(const tokenizer *t, int left, int right, int *rank, int *id) {
    uint64_t key = (uint64_t)(uint32_t)left << 32 | (uint32_t)right;
    for (uint32_t h = hash_pair(key) & t->pair_mask;; h = (h + 1) & t->pair_mask) {
        if (t->pair_key[h] == UINT64_MAX) return 0;
        if (t->pair_key[h] == key) {
            *rank = t->pair_rank[h];
            *id = t->pair_id[h];
            return 1;
        }
    }
}

/* builds the pair table from merges (n_merges rows of left, right; the first of equal pairs
 * wins). Each merge must make a NORMAL piece. */
static void build_pairs(tokenizer *t, const int32_t *merges, int n_merges) {
    size_t cap = 16;
    while (cap < 2 * (size_t)n_merges) cap *= 2;
    t->pair_key = xmalloc(cap * sizeof *t->pair_key);
    memset(t->pair_key, 0xff, cap * sizeof *t->pair_key);
    t->pair_rank = xmalloc(cap * sizeof *t->pair_rank);
    t->pair_id = xmalloc(cap * sizeof *t->pair_id);
    t->pair_mask = (uint32_t)(cap - 1);
    t->n_merges = n_merges;
    char *buf = NULL;
    size_t buf_cap = 0;
    for (int r = 0; r < n_merges; r++) {
        int a = merges[2 * r], b = merges[2 * r + 1];
        if (a < 0 || a >= t->n || b < 0 || b >= t->n)
            die("tokenizer: merge %d names id %d, outside the vocabulary of %d", r,
                a < 0 || a >= t->n ? a : b, t->n);
        size_t la = piece_len(t, a), lb = piece_len(t, b);
        if (la + lb > buf_cap) {
            buf_cap = 2 * (la + lb);
            buf = xrealloc(buf, buf_cap);
        }
        memcpy(buf, piece_ptr(t, a), la);
        memcpy(buf + la, piece_ptr(t, b), lb);
        int id = table_find(t, buf, la + lb);
        if (id < 0) die("tokenizer: merge %d (%d, %d) makes no piece of the vocabulary", r, a, b);
        uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
        for (uint32_t h = hash_pair(key) & t->pair_mask;; h = (h + 1) & t->pair_mask) {
            if (t->pair_key[h] == key) break;
            if (t->pair_key[h] == UINT64_MAX) {
                t->pair_key[h] = key;
                t->pair_rank[h] = r;
                t->pair_id[h] = id;
                break;
            }
        }
    }
    free(buf);
}

/* ---- building the runtime tokenizer ---- */

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* 1 with the byte in *byte when s[0..len) is a byte piece "<0xNN>" */
static int parse_byte_piece(const char *s, size_t len, unsigned char *byte) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return 0;
    int hi = hex_value(s[3]), lo = hex_value(s[4]);
    if (hi < 0 || lo < 0) return 0;
    *byte = (unsigned char)(hi * 16 + lo);
    return 1;
}

/* classifies a llama2.c piece (that format has no piece types) */
static unsigned char classify_piece(const char *s, size_t len) {
    unsigned char byte;
    if (parse_byte_piece(s, len, &byte)) return MFILE_PIECE_BYTE;
    /* control pieces as SentencePiece names them, and as llama2.c's exporter rewrites them */
    static const char *const controls[] = {"<s>", "</s>", "\n<s>\n", "\n</s>\n"};
    for (size_t i = 0; i < sizeof controls / sizeof controls[0]; i++)
        if (len == strlen(controls[i]) && memcmp(s, controls[i], len) == 0) return MFILE_PIECE_CONTROL;
    if (len == 5 && memcmp(s, "<unk>", 5) == 0) return MFILE_PIECE_UNKNOWN;
    return MFILE_PIECE_NORMAL;
}

/* the text a special piece is written as: llama2.c's "\n<s>\n" is "<s>" */
static const char *special_text(const char *s, size_t len, size_t *out_len) {
    if (len > 2 && s[0] == '\n' && s[1] == '<' && s[len - 2] == '>' && s[len - 1] == '\n') {
        *out_len = len - 2;
        return s + 1;
    }
    *out_len = len;
    return s;
}

static int special_cmp(const void *pa, const void *pb) {
    const special *a = pa, *b = pb;
    unsigned char fa = (unsigned char)a->text[0], fb = (unsigned char)b->text[0];
    if (fa != fb) return fa < fb ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->id - b->id;
}

static void build_specials(tokenizer *t) {
    t->specials = xmalloc(((size_t)t->n + 1) * sizeof *t->specials);
    for (int i = 0; i < t->n; i++) {
        unsigned char k = t->kind[i];
        if (k != MFILE_PIECE_CONTROL && k != MFILE_PIECE_UNKNOWN && k != MFILE_PIECE_USER) continue;
        size_t len;
        const char *s = special_text(piece_ptr(t, i), piece_len(t, i), &len);
        if (len == 0) continue;
        t->specials[t->n_specials++] = (special){s, (int)len, i, k};
        t->special_mask[(unsigned char)s[0]] |= k == MFILE_PIECE_USER ? 2 : 1;
    }
    qsort(t->specials, (size_t)t->n_specials, sizeof *t->specials, special_cmp);
    int j = 0;
    for (int b = 0; b < 256; b++) {
        t->special_start[b] = j;
        while (j < t->n_specials && (unsigned char)t->specials[j].text[0] == b) j++;
    }
    t->special_start[256] = j;
}

/* the special matched at s[0..avail) (longest first) whose kind mask allows, or NULL */
static const special *match_special(const tokenizer *t, const char *s, size_t avail, int mask) {
    unsigned char b = (unsigned char)s[0];
    if (!(t->special_mask[b] & mask)) return NULL;
    for (int i = t->special_start[b]; i < t->special_start[b + 1]; i++) {
        const special *sp = &t->specials[i];
        int bit = sp->kind == MFILE_PIECE_USER ? 2 : 1;
        if ((bit & mask) && (size_t)sp->len <= avail && memcmp(s, sp->text, (size_t)sp->len) == 0)
            return sp;
    }
    return NULL;
}

static void compile_pattern(tokenizer *t, const char *pattern) {
    int err;
    PCRE2_SIZE at;
    t->re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED,
                          PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &at, NULL);
    if (!t->re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        die("tokenizer: split pattern rejected by PCRE2 at offset %zu: %s", (size_t)at, (char *)msg);
    }
    pcre2_jit_compile(t->re, PCRE2_JIT_COMPLETE); /* when JIT is missing, the interpreter runs */
}

tokenizer *tok_init(const mfile_tokenizer *m) {
    enum tok_mode mode;
    if (strcmp(m->type, "llama2c-bpe") == 0 || strcmp(m->type, "sentencepiece-bpe") == 0)
        mode = MODE_SENTENCEPIECE;
    else if (strcmp(m->type, "byte-bpe") == 0)
        mode = MODE_BYTE;
    else
        die("tokenizer: unsupported type '%.32s' (expected llama2c-bpe, sentencepiece-bpe or "
            "byte-bpe)", m->type);
    if (m->n <= 0) die("tokenizer: %d pieces", m->n);
    if (m->offsets[0] != 0) die("tokenizer: offsets do not start at 0");
    for (int i = 0; i < m->n; i++)
        if (m->offsets[i + 1] < m->offsets[i]) die("tokenizer: offsets decrease at piece %d", i);
    if (m->n_merges < 0 || (m->n_merges > 0 && !m->merges)) die("tokenizer: bad merges");

    tokenizer *t = xcalloc(1, sizeof *t);
    t->n = m->n;
    t->mode = mode;
    snprintf(t->type, sizeof t->type, "%s", m->type);
    snprintf(t->chat_template, sizeof t->chat_template, "%s", m->chat_template);
    t->add_dummy_prefix = m->add_dummy_prefix;
    t->remove_extra_ws = m->remove_extra_whitespaces;
    t->ignore_merges = m->ignore_merges;
    /* copy the pieces; SentencePiece-style: U+2581 (e2 96 81) becomes ' ' */
    t->bytes = xmalloc((size_t)m->offsets[m->n] + 1);
    t->offsets = xmalloc(((size_t)m->n + 1) * sizeof *t->offsets);
    int64_t off = 0;
    for (int i = 0; i < m->n; i++) {
        t->offsets[i] = off;
        for (int64_t j = m->offsets[i]; j < m->offsets[i + 1]; j++) {
            if (mode == MODE_SENTENCEPIECE && j + 2 < m->offsets[i + 1] &&
                memcmp(m->bytes + j, "\xe2\x96\x81", 3) == 0) {
                t->bytes[off++] = ' ';
                j += 2;
            } else {
                t->bytes[off++] = m->bytes[j];
            }
        }
    }
    t->offsets[m->n] = off;
    t->scores = xmalloc((size_t)m->n * sizeof *t->scores);
    memcpy(t->scores, m->scores, (size_t)m->n * sizeof *t->scores);

    t->kind = xmalloc((size_t)m->n);
    t->byte_value = xcalloc((size_t)m->n, 1);
    for (int b = 0; b < 256; b++) {
        t->byte_ids[b] = -1;
        t->byte_chars[b] = (char)b;
    }
    size_t cap = 16;
    while (cap < 2 * (size_t)m->n) cap *= 2;
    t->table = xmalloc(cap * sizeof *t->table);
    memset(t->table, 0xff, cap * sizeof *t->table); /* all -1 */
    t->table_mask = (uint32_t)(cap - 1);
    t->unk_id = -1;
    t->split_at_spaces = mode == MODE_SENTENCEPIECE;
    for (int i = 0; i < t->n; i++) {
        const char *p = piece_ptr(t, i);
        size_t len = piece_len(t, i);
        unsigned char k = m->kinds ? m->kinds[i] : classify_piece(p, len);
        if (k > MFILE_PIECE_BYTE) die("tokenizer: piece %d has an unknown kind %d", i, k);
        if (k == MFILE_PIECE_BYTE && (mode == MODE_BYTE || !parse_byte_piece(p, len, &t->byte_value[i])))
            die("tokenizer: piece %d is a byte piece but not a SentencePiece-style <0xNN>", i);
        if (k == MFILE_PIECE_NORMAL && len == 0) k = MFILE_PIECE_UNUSED;
        t->kind[i] = k;
        if (k == MFILE_PIECE_NORMAL) {
            table_insert(t, i);
            for (size_t j = 1; j < len; j++)
                if (p[j] == ' ' && p[j - 1] != ' ') t->split_at_spaces = 0;
        } else if (k == MFILE_PIECE_BYTE) {
            if (t->byte_ids[t->byte_value[i]] < 0) t->byte_ids[t->byte_value[i]] = i;
        } else if (k == MFILE_PIECE_UNKNOWN && t->unk_id < 0) {
            t->unk_id = i;
        }
    }
    if (t->unk_id < 0) t->unk_id = 0;
    if (mode == MODE_BYTE) {
        for (int b = 0; b < 256; b++) {
            char c = (char)b;
            t->byte_ids[b] = table_find(t, &c, 1);
            if (t->byte_ids[b] < 0)
                die("tokenizer: byte-level vocabulary lacks the one-byte piece 0x%02x", b);
        }
        if (m->n_merges > 0) build_pairs(t, m->merges, m->n_merges);
        if (m->pattern && m->pattern[0]) compile_pattern(t, m->pattern);
    }
    t->has_byte_fallback = 1;
    for (int b = 0; b < 256; b++)
        if (t->byte_ids[b] < 0) t->has_byte_fallback = 0;
    build_specials(t);
    t->bos_id = m->bos_id;
    t->eos_id = m->eos_id;
    if (mode == MODE_SENTENCEPIECE) { /* files of the first layout do not name them */
        if (t->bos_id < 0) t->bos_id = tok_special_id(t, "<s>");
        if (t->eos_id < 0) t->eos_id = tok_special_id(t, "</s>");
    }
    if (t->bos_id >= t->n || t->eos_id >= t->n)
        die("tokenizer: bos_id %d or eos_id %d is outside the vocabulary of %d", t->bos_id,
            t->eos_id, t->n);
    return t;
}

void tok_free(tokenizer *t) {
    if (!t) return;
    free(t->bytes);
    free(t->offsets);
    free(t->scores);
    free(t->kind);
    free(t->byte_value);
    free(t->table);
    free(t->pair_key);
    free(t->pair_rank);
    free(t->pair_id);
    free(t->specials);
    if (t->re) pcre2_code_free(t->re);
    free(t);
}

int tok_vocab_size(const tokenizer *t) { return t->n; }
const char *tok_type(const tokenizer *t) { return t->type; }
int tok_bos_id(const tokenizer *t) { return t->bos_id; }
int tok_eos_id(const tokenizer *t) { return t->eos_id; }
const char *tok_chat_template(const tokenizer *t) { return t->chat_template; }

int tok_special_id(const tokenizer *t, const char *text) {
    size_t len = strlen(text);
    if (len == 0) return -1;
    unsigned char b = (unsigned char)text[0];
    for (int i = t->special_start[b]; i < t->special_start[b + 1]; i++)
        if ((size_t)t->specials[i].len == len && memcmp(t->specials[i].text, text, len) == 0)
            return t->specials[i].id;
    return -1;
}

/* ---- encoding: shared parts ---- */

/* length of the well-formed UTF-8 sequence at s[0..avail), or 0 when malformed (overlong
 * forms, surrogates and code points above U+10FFFF included), as SentencePiece decides */
static int utf8_char_len(const unsigned char *s, size_t avail) {
    unsigned c = s[0];
    if (c < 0x80) return 1;
    int len;
    uint32_t cp, min;
    if ((c & 0xe0) == 0xc0) {
        len = 2, cp = c & 0x1f, min = 0x80;
    } else if ((c & 0xf0) == 0xe0) {
        len = 3, cp = c & 0x0f, min = 0x800;
    } else if ((c & 0xf8) == 0xf0) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (avail < (size_t)len) return 0;
    for (int i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (s[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000)) return 0;
    return len;
}

/* a run of text: a code point or a byte at first, grown by merges; len 0 once merged into its
 * left neighbour */
typedef struct {
    int start, len;
    int prev, next; /* neighbouring live symbols, -1 at the ends */
    int id;         /* its piece; -1 none; -2 not looked up yet */
    int frozen;     /* a user-defined piece: never merges */
} symbol;

/* a candidate merge of symbols left and right (adjacent when pushed), len = their total */
typedef struct {
    float score;
    int left, right, len, id;
} merge;

typedef struct {
    merge *items; /* (cap) binary max-heap by (score desc, left asc) */
    int n, cap;
} merge_heap;

/* scratch of one tok_encode call */
typedef struct {
    const tokenizer *t;
    int *ids, max_ids, count;
    symbol *sym;
    size_t sym_cap;
    merge_heap heap;
    char *norm; /* SentencePiece: the normalised run */
    size_t norm_cap;
    pcre2_match_data *md;
    int failed;   /* the split pattern gave up on the text (a PCRE2 limit) */
} enc_state;

static int merge_before(const merge *a, const merge *b) {
    return a->score > b->score || (a->score == b->score && a->left < b->left);
}

static void heap_push(merge_heap *h, merge m) {
    if (h->n == h->cap) {
        h->cap = h->cap ? 2 * h->cap : 64;
        h->items = xrealloc(h->items, (size_t)h->cap * sizeof *h->items);
    }
    int i = h->n++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!merge_before(&m, &h->items[p])) break;
        h->items[i] = h->items[p];
        i = p;
    }
    h->items[i] = m;
}

static merge heap_pop(merge_heap *h) {
    merge top = h->items[0], last = h->items[--h->n];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && merge_before(&h->items[c + 1], &h->items[c])) c++;
        if (!merge_before(&h->items[c], &last)) break;
        h->items[i] = h->items[c];
        i = c;
    }
    h->items[i] = last;
    return top;
}

/* pushes the merge of symbols left and right when it is one: their pair is a merge (pair
 * table) or their concatenation a piece (by score) */
static void try_merge(const tokenizer *t, const char *buf, const symbol *sym, int left, int right,
                      merge_heap *h) {
    if (left < 0 || right < 0 || sym[left].frozen || sym[right].frozen) return;
    int len = sym[left].len + sym[right].len;
    if (t->pair_key) {
        int rank, id;
        if (pair_find(t, sym[left].id, sym[right].id, &rank, &id))
            heap_push(h, (merge){-(float)rank, left, right, len, id});
        return;
    }
    int id = table_find(t, buf + sym[left].start, (size_t)len);
    if (id >= 0) heap_push(h, (merge){t->scores[id], left, right, len, id});
}

/* appends id when there is room; counts it always */
static void emit(enc_state *st, int id) {
    if (st->count < st->max_ids) st->ids[st->count] = id;
    st->count++;
}

static void reserve_symbols(enc_state *st, size_t n) {
    if (n > st->sym_cap) {
        st->sym_cap = n > 2 * st->sym_cap ? n : 2 * st->sym_cap;
        st->sym = xrealloc(st->sym, st->sym_cap * sizeof *st->sym);
    }
}

/* runs the BPE merges over symbols [first, end), which no merge can cross: links them into a
 * list, then merges the best pair until none is left. heap is empty on entry and exit. */
static void merge_symbols(const tokenizer *t, const char *buf, symbol *sym, int first, int end,
                          merge_heap *heap) {
    for (int i = first; i < end; i++) {
        sym[i].prev = i > first ? i - 1 : -1;
        sym[i].next = i + 1 < end ? i + 1 : -1;
    }
    for (int i = first; i + 1 < end; i++) try_merge(t, buf, sym, i, i + 1, heap);
    while (heap->n > 0) {
        merge m = heap_pop(heap);
        symbol *l = &sym[m.left], *r = &sym[m.right];
        /* stale: one side has merged since (a symbol's length changes with every merge) */
        if (l->len == 0 || r->len == 0 || l->len + r->len != m.len) continue;
        l->len = m.len;
        l->id = m.id;
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = m.left;
        r->len = 0;
        try_merge(t, buf, sym, l->prev, m.left, heap);
        try_merge(t, buf, sym, m.left, l->next, heap);
    }
}

/* ---- encoding: SentencePiece-style ---- */

/* SentencePiece normalisation of s[0..len) (see the top of the file) into st->norm; returns
 * its length (0: nothing to encode) */
static size_t sp_normalize(const tokenizer *t, const char *s_in, size_t in_len, enc_state *st) {
    size_t need = 3 * in_len + 2; /* a malformed byte grows into 3 */
    if (need > st->norm_cap) {
        st->norm_cap = need;
        st->norm = xrealloc(st->norm, need);
    }
    const unsigned char *s = (const unsigned char *)s_in;
    char *out = st->norm;
    size_t n = 0, i = 0;
    if (t->remove_extra_ws) {
        while (i < in_len && s[i] == ' ') i++;
        if (i == in_len) return 0; /* only spaces: SentencePiece gives nothing */
    }
    if (t->add_dummy_prefix) out[n++] = ' ';
    while (i < in_len) {
        int cl = utf8_char_len(s + i, in_len - i);
        if (cl == 0) {
            memcpy(out + n, "\xef\xbf\xbd", 3); /* U+FFFD for one malformed byte */
            n += 3;
            i += 1;
            continue;
        }
        int space = s[i] == ' ' || (cl == 3 && memcmp(s + i, "\xe2\x96\x81", 3) == 0);
        if (space) {
            /* U+2581 is SentencePiece's own space symbol; squeezing keeps one of a run */
            if (!(t->remove_extra_ws && n > 0 && out[n - 1] == ' ')) out[n++] = ' ';
        } else {
            memcpy(out + n, s + i, (size_t)cl);
            n += (size_t)cl;
        }
        i += (size_t)cl;
    }
    if (t->remove_extra_ws)
        while (n > 0 && out[n - 1] == ' ') n--;
    return n;
}

/* emits the merged symbols listed from first: a piece, else its bytes' tokens */
static void sp_emit_symbols(enc_state *st, const char *buf, symbol *sym, int first) {
    const tokenizer *t = st->t;
    for (int i = first; i >= 0; i = sym[i].next) {
        int id = sym[i].id;
        if (id == -2) id = table_find(t, buf + sym[i].start, (size_t)sym[i].len);
        if (id >= 0) {
            emit(st, id);
        } else if (t->has_byte_fallback) {
            for (int j = 0; j < sym[i].len; j++)
                emit(st, t->byte_ids[(unsigned char)buf[sym[i].start + j]]);
        } else {
            emit(st, t->unk_id); /* SentencePiece: one <unk> per symbol */
        }
    }
}

static void sp_encode_run(enc_state *st, const char *text, size_t len) {
    const tokenizer *t = st->t;
    size_t nlen = sp_normalize(t, text, len, st);
    if (nlen == 0) return;
    const char *buf = st->norm;
    reserve_symbols(st, nlen);
    symbol *sym = st->sym;
    int nsym = 0;
    for (size_t i = 0; i < nlen;) {
        const special *user = match_special(t, buf + i, nlen - i, 2);
        if (user) { /* SentencePiece matches user-defined pieces whole in the normalised text */
            sym[nsym++] = (symbol){(int)i, user->len, -1, -1, user->id, 1};
            i += (size_t)user->len;
            continue;
        }
        /* sp_normalize left only well-formed UTF-8 */
        int cl = utf8_char_len((const unsigned char *)buf + i, nlen - i);
        sym[nsym++] = (symbol){(int)i, cl, -1, -1, -2, 0};
        i += (size_t)cl;
    }
    /* the same result as one pass over the whole text, with small heaps that stay in cache */
    for (int first = 0; first < nsym;) {
        int end = nsym;
        if (t->split_at_spaces) {
            end = first + 1;
            while (end < nsym && !(buf[sym[end].start] == ' ' && buf[sym[end].start - 1] != ' '))
                end++;
        }
        merge_symbols(t, buf, sym, first, end, &st->heap);
        sp_emit_symbols(st, buf, sym, first);
        first = end;
    }
}

/* ---- encoding: byte-level ---- */

/* encodes one chunk of a pre-tokenised run */
static void byte_encode_chunk(enc_state *st, const char *s, size_t len) {
    const tokenizer *t = st->t;
    if (len == 0) return;
    if (len == 1) {
        emit(st, t->byte_ids[(unsigned char)s[0]]);
        return;
    }
    if (!t->pair_key || t->ignore_merges) { /* a chunk that is a piece is taken whole */
        int id = table_find(t, s, len);
        if (id >= 0) {
            emit(st, id);
            return;
        }
    }
    reserve_symbols(st, len);
    symbol *sym = st->sym;
    for (size_t i = 0; i < len; i++)
        sym[i] = (symbol){(int)i, 1, -1, -1, t->byte_ids[(unsigned char)s[i]], 0};
    merge_symbols(t, s, sym, 0, (int)len, &st->heap);
    for (int i = 0; i >= 0; i = sym[i].next) {
        if (sym[i].id >= 0) {
            emit(st, sym[i].id);
        } else { /* cannot happen: every merge result is a piece */
            for (int j = 0; j < sym[i].len; j++) emit(st, t->byte_ids[(unsigned char)s[sym[i].start + j]]);
        }
    }
}

/* length of the character at s[0..avail) for stepping over it: 1 for a malformed byte */
static size_t char_step(const char *s, size_t avail) {
    int cl = utf8_char_len((const unsigned char *)s, avail);
    return cl > 0 ? (size_t)cl : 1;
}

/* splits s[0..len) by the pattern and encodes each chunk */
static void byte_split_run(enc_state *st, const char *s, size_t len) {
    const tokenizer *t = st->t;
    if (!t->re) {
        byte_encode_chunk(st, s, len);
        return;
    }
    if (!st->md) st->md = pcre2_match_data_create_from_pattern(t->re, NULL);
    size_t gap = 0, from = 0; /* text in [gap, match start) is left between matches */
    while (from < len) {
        int rc = pcre2_match(t->re, (PCRE2_SPTR)s, len, from, 0, st->md, NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) { /* a match, depth or JIT stack limit on a pathological text: this text fails, not the job */
            st->failed = 1;
            return;
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(st->md);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) { /* an empty match: the character there goes with the text between */
            from = ms + char_step(s + ms, len - ms);
            continue;
        }
        byte_encode_chunk(st, s + gap, ms - gap);
        byte_encode_chunk(st, s + ms, me - ms);
        gap = from = me;
    }
    byte_encode_chunk(st, s + gap, len - gap);
}

static void byte_encode_run(enc_state *st, const char *s, size_t len) {
    if (!st->t->add_dummy_prefix || s[0] == ' ') {
        byte_split_run(st, s, len);
        return;
    }
    /* ByteLevel's add_prefix_space: a space before a run that does not start with one */
    char *spaced = xmalloc(len + 1);
    spaced[0] = ' ';
    memcpy(spaced + 1, s, len);
    byte_split_run(st, spaced, len + 1);
    free(spaced);
}

/* ---- encoding: the entry point ---- */

static void encode_run(enc_state *st, const char *s, size_t len) {
    if (len == 0 || st->failed) return;
    if (st->t->mode == MODE_SENTENCEPIECE) sp_encode_run(st, s, len);
    else byte_encode_run(st, s, len);
}

int tok_encode_ex(const tokenizer *t, const char *text, int bos_id, unsigned flags, int *ids,
                  int max_ids) {
    if (!text) die("tok_encode: text is NULL");
    size_t len = strlen(text);
    /* keeps every count below (symbols, heap entries <= 9 * len + 3) well inside an int */
    if (len > TOK_MAX_TEXT) die("tokenizer: text of %zu bytes is too long", len);
    enc_state st = {.t = t, .ids = ids, .max_ids = max_ids};
    if (bos_id >= 0) emit(&st, bos_id);
    /* specials cut the text into runs: control ones when allowed; user-defined ones always,
     * except in SentencePiece-style text where they are symbols of the normalised run */
    int mask = (flags & TOK_ALLOW_SPECIAL ? 1 : 0) | (t->mode == MODE_BYTE ? 2 : 0);
    size_t run = 0;
    if (mask && t->n_specials > 0) {
        for (size_t i = 0; i < len;) {
            const special *sp = match_special(t, text + i, len - i, mask);
            if (!sp) {
                i++;
                continue;
            }
            encode_run(&st, text + run, i - run);
            emit(&st, sp->id);
            i += (size_t)sp->len;
            run = i;
        }
    }
    encode_run(&st, text + run, len - run);
    free(st.sym);
    free(st.heap.items);
    free(st.norm);
    if (st.md) pcre2_match_data_free(st.md);
    return st.failed ? -1 : st.count;
}

int tok_encode(const tokenizer *t, const char *text, int bos_id, int *ids, int max_ids) {
    return tok_encode_ex(t, text, bos_id, 0, ids, max_ids);
}

/* ---- decoding ---- */

/* the text of token id following token prev, as a slice into the tokenizer */
static const char *piece_text(const tokenizer *t, int prev, int id, int bos_id, unsigned flags,
                              size_t *len) {
    *len = 0;
    if (id < 0 || id >= t->n) return "";
    const char *s = piece_ptr(t, id);
    switch (t->kind[id]) {
    case MFILE_PIECE_CONTROL:
        if (flags & TOK_DECODE_SPECIAL) return special_text(s, piece_len(t, id), len);
        return "";
    case MFILE_PIECE_UNUSED:
        return "";
    case MFILE_PIECE_UNKNOWN:
        if (t->mode == MODE_BYTE) return (flags & TOK_DECODE_SPECIAL) ? special_text(s, piece_len(t, id), len) : "";
        *len = 5;
        return " \xe2\x81\x87 "; /* " ⁇ ", SentencePiece's surface for <unk> */
    case MFILE_PIECE_BYTE:
        *len = 1;
        return &t->byte_chars[t->byte_value[id]];
    default: /* NORMAL, USER */
        break;
    }
    *len = piece_len(t, id);
    if (t->mode == MODE_SENTENCEPIECE && t->add_dummy_prefix && bos_id >= 0 && prev == bos_id &&
        *len > 0 && s[0] == ' ') {
        s++;
        (*len)--;
    }
    return s;
}

/* copies s[0..len) to out without NUL bytes (they cannot live in a C string); returns the end */
static char *copy_text(char *out, const char *s, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (s[i]) *out++ = s[i];
    return out;
}

int tok_first_bad_id(const tokenizer *t, const int *ids, int n) {
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->n) return i;
    return -1;
}

char *tok_decode(const tokenizer *t, int prev, const int *ids, int n, int bos_id) {
    if (tok_first_bad_id(t, ids, n) >= 0) return NULL;
    size_t total = 0, len;
    for (int i = 0; i < n; i++) {
        piece_text(t, i ? ids[i - 1] : prev, ids[i], bos_id, 0, &len);
        total += len;
    }
    char *out = xmalloc(total + 1), *p = out;
    for (int i = 0; i < n; i++) {
        const char *s = piece_text(t, i ? ids[i - 1] : prev, ids[i], bos_id, 0, &len);
        p = copy_text(p, s, len);
    }
    *p = '\0';
    return out;
}

/* ---- streaming decoding ---- */

void tok_decoder_init(tok_decoder *d, const tokenizer *t, int prev, int bos_id, unsigned flags) {
    memset(d, 0, sizeof *d);
    d->t = t;
    d->prev = prev;
    d->bos_id = bos_id;
    d->flags = flags;
}

void tok_decoder_free(tok_decoder *d) {
    free(d->out);
    d->out = NULL;
    d->cap = 0;
}

static char *put_replacement(char *o) {
    memcpy(o, "\xef\xbf\xbd", 3);
    return o + 3;
}

/* the byte range a continuation byte may take after lead byte c as the second byte of a
 * well-formed sequence (Unicode table 3-7); later continuation bytes are 80..BF */
static void second_byte_range(unsigned char c, unsigned char *lo, unsigned char *hi) {
    *lo = 0x80, *hi = 0xbf;
    if (c == 0xe0) *lo = 0xa0;
    else if (c == 0xed) *hi = 0x9f;
    else if (c == 0xf0) *lo = 0x90;
    else if (c == 0xf4) *hi = 0x8f;
}

/* feeds one byte; writes whole characters (or U+FFFD) at o; returns the new end */
static char *utf8_feed(tok_decoder *d, unsigned char c, char *o) {
    if (d->n_pending > 0) {
        unsigned char lo = 0x80, hi = 0xbf;
        if (d->n_pending == 1) second_byte_range(d->pending[0], &lo, &hi);
        if (c >= lo && c <= hi) {
            d->pending[d->n_pending++] = c;
            if (d->n_pending == d->need) {
                memcpy(o, d->pending, (size_t)d->need);
                o += d->need;
                d->n_pending = 0;
            }
            return o;
        }
        o = put_replacement(o); /* a maximal subpart that cannot complete */
        d->n_pending = 0;
    }
    if (c < 0x80) {
        if (c) *o++ = (char)c; /* a NUL byte cannot live in a C string */
    } else if (c >= 0xc2 && c <= 0xf4) {
        d->pending[0] = c;
        d->n_pending = 1;
        d->need = c < 0xe0 ? 2 : c < 0xf0 ? 3 : 4;
    } else {
        o = put_replacement(o); /* a continuation byte alone, C0, C1 or F5..FF */
    }
    return o;
}

static void decoder_reserve(tok_decoder *d, size_t need) {
    if (need + 1 > d->cap) {
        d->cap = 2 * (need + 1);
        d->out = xrealloc(d->out, d->cap);
    }
}

const char *tok_decoder_push(tok_decoder *d, int id, size_t *len) {
    *len = 0;
    if (id < 0 || id >= d->t->n) return NULL;
    size_t plen;
    const char *s = piece_text(d->t, d->prev, id, d->bos_id, d->flags, &plen);
    d->prev = id;
    decoder_reserve(d, 3 * (plen + 4)); /* each byte gives at most U+FFFD plus itself */
    char *o = d->out;
    for (size_t i = 0; i < plen; i++) o = utf8_feed(d, (unsigned char)s[i], o);
    *o = '\0';
    *len = (size_t)(o - d->out);
    return d->out;
}

const char *tok_decoder_flush(tok_decoder *d, size_t *len) {
    decoder_reserve(d, 3);
    char *o = d->out;
    if (d->n_pending > 0) o = put_replacement(o);
    d->n_pending = 0;
    *o = '\0';
    *len = (size_t)(o - d->out);
    return d->out;
}
