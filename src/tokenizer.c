/* tokenizer: SentencePiece-style BPE over a llama2.c vocabulary.
 *
 * Encoding reproduces SentencePiece's BPE model with the Llama 2 normaliser settings (identity
 * rule, add_dummy_prefix, no whitespace squeezing, byte fallback):
 *   1. normalise: a space is prepended (non-empty text only), U+2581 in the text becomes a
 *      space, and every byte that does not start a well-formed UTF-8 sequence becomes U+FFFD;
 *   2. split into code points, then repeatedly merge the adjacent pair whose concatenation is
 *      a piece of highest score (ties: leftmost pair first), using a linked list of symbols
 *      and a max-heap of candidate pairs, so that the cost is O(n log n) in the text length;
 *   3. a final symbol that is not a piece is emitted as its bytes' <0xNN> tokens.
 * When no piece has a space after a non-space byte (true of the Llama 2 and llama2.c
 * vocabularies), no merge can cross the start of a run of spaces, and step 2 runs on each such
 * word separately: the same result, with heaps small enough to stay in cache.
 * The llama2.c exporter stores SentencePiece's space symbol U+2581 as a plain ' '; tok_init
 * accepts either form and keeps ' '. */
#include "tokenizer.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

#define TOK_TYPE_LLAMA2C "llama2c-bpe"
#define TOK_MAX_TEXT ((size_t)INT32_MAX / 32) /* bytes tok_encode accepts (64 MiB) */

/* kinds of pieces: only NORMAL pieces take part in merges (SentencePiece keeps control,
 * unknown and byte pieces out of its merge table) */
enum piece_kind { PIECE_NORMAL, PIECE_BYTE, PIECE_CONTROL, PIECE_UNKNOWN };

struct tokenizer {
    int n;                /* vocabulary size */
    char *bytes;          /* (offsets[n]) pieces concatenated, U+2581 stored as ' ' */
    int64_t *offsets;     /* (n + 1) piece i is bytes[offsets[i] .. offsets[i+1]) */
    float *scores;        /* (n) merge priority, higher merges first */
    unsigned char *kind;  /* (n) enum piece_kind */
    unsigned char *byte_value; /* (n) for PIECE_BYTE: the byte it stands for */
    int32_t *table;       /* (table_mask + 1) open-addressing hash of NORMAL pieces: id, -1 empty */
    uint32_t table_mask;
    int byte_ids[256];    /* id of <0xNN>, -1 when the vocabulary lacks it */
    int has_byte_fallback; /* all 256 byte pieces present */
    int unk_id;           /* id of <unk> (0 when the vocabulary has none) */
    int split_at_spaces;  /* no piece has a space after another byte than a space, so no merge
                           * crosses the start of a space run: encode works run by run */
    char byte_chars[256]; /* byte_chars[b] == b: decode points into it for byte pieces */
};

/* ---- loading llama2.c's tokenizer.bin ---- */

static int32_t read_i32(const char *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return v;
}

void tok_load_llama2c(mfile_tokenizer *out, const char *path) {
    size_t size;
    char *buf = util_read_file(path, &size);
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
    memset(out, 0, sizeof *out);
    snprintf(out->type, sizeof out->type, "%s", TOK_TYPE_LLAMA2C);
    out->n = (int)n;
    /* the header is advisory: keep it unless a piece is longer */
    out->max_token_length = longest > max_len ? (int)longest : (int)max_len;
    out->bytes = xmalloc((size_t)total);
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
    free(buf);
}

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

/* ---- building the runtime tokenizer ---- */

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* classifies a piece; for a byte piece "<0xNN>" stores the byte in *byte */
static enum piece_kind classify_piece(const char *s, size_t len, unsigned char *byte) {
    if (len == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>') {
        int hi = hex_value(s[3]), lo = hex_value(s[4]);
        if (hi >= 0 && lo >= 0) {
            *byte = (unsigned char)(hi * 16 + lo);
            return PIECE_BYTE;
        }
    }
    /* control pieces as SentencePiece names them, and as llama2.c's exporter rewrites them */
    static const char *const controls[] = {"<s>", "</s>", "\n<s>\n", "\n</s>\n"};
    for (size_t i = 0; i < sizeof controls / sizeof controls[0]; i++)
        if (len == strlen(controls[i]) && memcmp(s, controls[i], len) == 0) return PIECE_CONTROL;
    if (len == 5 && memcmp(s, "<unk>", 5) == 0) return PIECE_UNKNOWN;
    return PIECE_NORMAL;
}

tokenizer *tok_init(const mfile_tokenizer *m) {
    if (strcmp(m->type, TOK_TYPE_LLAMA2C) != 0)
        die("tokenizer: unsupported type '%.32s' (expected '%s')", m->type, TOK_TYPE_LLAMA2C);
    if (m->n <= 0) die("tokenizer: %d pieces", m->n);
    if (m->offsets[0] != 0) die("tokenizer: offsets do not start at 0");
    for (int i = 0; i < m->n; i++)
        if (m->offsets[i + 1] < m->offsets[i]) die("tokenizer: offsets decrease at piece %d", i);

    tokenizer *t = xcalloc(1, sizeof *t);
    t->n = m->n;
    /* copy the pieces, turning U+2581 (e2 96 81) into ' ' */
    t->bytes = xmalloc((size_t)m->offsets[m->n]);
    t->offsets = xmalloc(((size_t)m->n + 1) * sizeof *t->offsets);
    int64_t off = 0;
    for (int i = 0; i < m->n; i++) {
        t->offsets[i] = off;
        for (int64_t j = m->offsets[i]; j < m->offsets[i + 1]; j++) {
            if (j + 2 < m->offsets[i + 1] && memcmp(m->bytes + j, "\xe2\x96\x81", 3) == 0) {
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
    t->split_at_spaces = 1;
    for (int i = 0; i < t->n; i++) {
        unsigned char byte = 0;
        enum piece_kind k = classify_piece(piece_ptr(t, i), piece_len(t, i), &byte);
        t->kind[i] = (unsigned char)k;
        if (k == PIECE_NORMAL) {
            table_insert(t, i);
            const char *p = piece_ptr(t, i);
            for (size_t j = 1; j < piece_len(t, i); j++)
                if (p[j] == ' ' && p[j - 1] != ' ') t->split_at_spaces = 0;
        } else if (k == PIECE_BYTE) {
            t->byte_value[i] = byte;
            if (t->byte_ids[byte] < 0) t->byte_ids[byte] = i;
        } else if (k == PIECE_UNKNOWN && t->unk_id < 0) {
            t->unk_id = i;
        }
    }
    if (t->unk_id < 0) t->unk_id = 0;
    t->has_byte_fallback = 1;
    for (int b = 0; b < 256; b++)
        if (t->byte_ids[b] < 0) t->has_byte_fallback = 0;
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
    free(t);
}

int tok_vocab_size(const tokenizer *t) { return t->n; }

/* ---- encoding ---- */

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

/* SentencePiece normalisation (see the top of the file) into a malloc'd buffer; *len gets its
 * length. text must be non-empty. */
static char *normalize(const char *text, size_t *len) {
    size_t in_len = strlen(text);
    /* keeps every count below (symbols, heap entries <= 9 * in_len + 3) well inside an int */
    if (in_len > TOK_MAX_TEXT) die("tokenizer: text of %zu bytes is too long", in_len);
    char *out = xmalloc(3 * in_len + 1); /* a malformed byte grows into 3 */
    size_t n = 0;
    out[n++] = ' '; /* the dummy prefix */
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < in_len;) {
        int cl = utf8_char_len(s + i, in_len - i);
        if (cl == 0) {
            memcpy(out + n, "\xef\xbf\xbd", 3); /* U+FFFD for one malformed byte */
            n += 3;
            i += 1;
        } else if (cl == 3 && memcmp(s + i, "\xe2\x96\x81", 3) == 0) {
            out[n++] = ' '; /* U+2581 is SentencePiece's own space symbol */
            i += 3;
        } else {
            memcpy(out + n, s + i, (size_t)cl);
            n += (size_t)cl;
            i += (size_t)cl;
        }
    }
    *len = n;
    return out;
}

/* a run of text: a code point at first, grown by merges; len 0 once merged into its left */
typedef struct {
    int start, len;
    int prev, next; /* neighbouring live symbols, -1 at the ends */
} symbol;

/* a candidate merge of symbols left and right (adjacent when pushed), len = their total */
typedef struct {
    float score;
    int left, right, len;
} merge;

typedef struct {
    merge *items; /* (cap) binary max-heap by (score desc, left asc) */
    int n, cap;
} merge_heap;

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

/* pushes the merge of symbols left and right when their concatenation is a piece */
static void try_merge(const tokenizer *t, const char *buf, const symbol *sym, int left, int right,
                      merge_heap *h) {
    if (left < 0 || right < 0) return;
    int len = sym[left].len + sym[right].len;
    int id = table_find(t, buf + sym[left].start, (size_t)len);
    if (id < 0) return;
    heap_push(h, (merge){t->scores[id], left, right, len});
}

/* appends id when there is room; counts it always */
static void emit(int id, int *ids, int max_ids, int *count) {
    if (*count < max_ids) ids[*count] = id;
    (*count)++;
}

/* runs the BPE merges over symbols [first, end), which no merge can cross: links them into a
 * list, then merges the best pair until none is a piece. heap is empty on entry and exit. */
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
        l->next = r->next;
        if (r->next >= 0) sym[r->next].prev = m.left;
        r->len = 0;
        try_merge(t, buf, sym, l->prev, m.left, heap);
        try_merge(t, buf, sym, m.left, l->next, heap);
    }
}

/* emits the ids of the merged symbols listed from first: a piece, else its bytes' tokens */
static void emit_symbols(const tokenizer *t, const char *buf, const symbol *sym, int first,
                         int *ids, int max_ids, int *count) {
    for (int i = first; i >= 0; i = sym[i].next) {
        int id = table_find(t, buf + sym[i].start, (size_t)sym[i].len);
        if (id >= 0) {
            emit(id, ids, max_ids, count);
        } else if (t->has_byte_fallback) {
            for (int j = 0; j < sym[i].len; j++)
                emit(t->byte_ids[(unsigned char)buf[sym[i].start + j]], ids, max_ids, count);
        } else {
            emit(t->unk_id, ids, max_ids, count); /* SentencePiece: one <unk> per symbol */
        }
    }
}

int tok_encode(const tokenizer *t, const char *text, int bos_id, int *ids, int max_ids) {
    if (!text) die("tok_encode: text is NULL");
    int count = 0;
    if (bos_id >= 0) emit(bos_id, ids, max_ids, &count);
    if (text[0] == '\0') return count; /* SentencePiece adds no dummy prefix to empty text */

    size_t len;
    char *buf = normalize(text, &len);
    symbol *sym = xmalloc(len * sizeof *sym);
    int nsym = 0;
    for (size_t i = 0; i < len;) {
        /* normalize() left only well-formed UTF-8 */
        int cl = utf8_char_len((const unsigned char *)buf + i, len - i);
        sym[nsym++] = (symbol){(int)i, cl, -1, -1};
        i += (size_t)cl;
    }
    /* the same result as one pass over the whole text, with small heaps that stay in cache */
    merge_heap heap = {0};
    for (int first = 0; first < nsym;) {
        int end = nsym;
        if (t->split_at_spaces) {
            end = first + 1;
            while (end < nsym && !(buf[sym[end].start] == ' ' && buf[sym[end].start - 1] != ' '))
                end++;
        }
        merge_symbols(t, buf, sym, first, end, &heap);
        emit_symbols(t, buf, sym, first, ids, max_ids, &count);
        first = end;
    }
    free(heap.items);
    free(sym);
    free(buf);
    return count;
}

/* ---- decoding ---- */

/* the text of token id following token prev, as a slice into the tokenizer */
static const char *piece_text(const tokenizer *t, int prev, int id, int bos_id, size_t *len) {
    if (id < 0 || id >= t->n) {
        *len = 0;
        return "";
    }
    switch ((enum piece_kind)t->kind[id]) {
    case PIECE_CONTROL:
        *len = 0;
        return "";
    case PIECE_UNKNOWN:
        *len = 5;
        return " \xe2\x81\x87 "; /* " ⁇ ", SentencePiece's surface for <unk> */
    case PIECE_BYTE: {
        unsigned char b = t->byte_value[id];
        *len = b != 0; /* a NUL byte cannot live in a C string: dropped */
        return &t->byte_chars[b];
    }
    case PIECE_NORMAL:
        break;
    }
    const char *s = piece_ptr(t, id);
    *len = piece_len(t, id);
    if (bos_id >= 0 && prev == bos_id && *len > 0 && s[0] == ' ') {
        s++;
        (*len)--;
    }
    return s;
}

char *tok_decode(const tokenizer *t, int prev, const int *ids, int n, int bos_id) {
    size_t total = 0, len;
    for (int i = 0; i < n; i++) {
        piece_text(t, i ? ids[i - 1] : prev, ids[i], bos_id, &len);
        total += len;
    }
    char *out = xmalloc(total + 1), *p = out;
    for (int i = 0; i < n; i++) {
        const char *s = piece_text(t, i ? ids[i - 1] : prev, ids[i], bos_id, &len);
        memcpy(p, s, len);
        p += len;
    }
    *p = '\0';
    return out;
}
