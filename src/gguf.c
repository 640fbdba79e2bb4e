#include "gguf.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

#define GGUF_MAX_KEY 65535          /* the format's limit on key length */
#define GGUF_MAX_NUMEL (INT64_C(1) << 48)

/* ---------------------------------------------------------------- types */

static const struct {
    int type;
    const char *name;
    int block;    /* elements per block */
    int bytes;    /* bytes per block */
} ggml_types[] = {
    {GGML_F32, "F32", 1, 4},        {GGML_F16, "F16", 1, 2},      {GGML_BF16, "BF16", 1, 2},
    {GGML_Q8_0, "Q8_0", 32, 34},    {GGML_Q4_0, "Q4_0", 32, 18},  {GGML_Q4_K, "Q4_K", 256, 144},
    {GGML_Q5_K, "Q5_K", 256, 176},  {GGML_Q6_K, "Q6_K", 256, 210},
};
#define N_GGML_TYPES (sizeof ggml_types / sizeof ggml_types[0])

/* names of the ggml types this reader refuses, for the message */
static const char *ggml_other_name(uint32_t t) {
    static const char *const names[] = {"F32", "F16", "Q4_0", "Q4_1", "Q4_2", "Q4_3", "Q5_0", "Q5_1",
                                        "Q8_0", "Q8_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "Q8_K",
                                        "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S", "IQ4_NL", "IQ3_S",
                                        "IQ2_S", "IQ4_XS", "I8", "I16", "I32", "I64", "F64", "IQ1_M",
                                        "BF16"};
    return t < sizeof names / sizeof names[0] ? names[t] : "unknown";
}

static int type_index(uint32_t t) {
    for (size_t i = 0; i < N_GGML_TYPES; i++)
        if ((uint32_t)ggml_types[i].type == t) return (int)i;
    return -1;
}

const char *gguf_type_name(ggml_type t) {
    int i = type_index((uint32_t)t);
    return i < 0 ? "?" : ggml_types[i].name;
}

/* ---------------------------------------------------------------- a bounds-checked cursor */

typedef struct {
    const gguf_file *g;
    size_t pos;
    const char *what; /* what is being read, for messages */
} cursor;

#define BAD(g, ...) die_prefixed((g)->path, __VA_ARGS__)

static void die_prefixed(const char *path, const char *fmt, ...) __attribute__((format(printf, 2, 3), noreturn));
static void die_prefixed(const char *path, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    die("'%s': %s", path, msg);
}

/* the next n bytes, or dies: the file ends inside what is being read */
static const unsigned char *take(cursor *c, uint64_t n) {
    if (n > c->g->size - c->pos)
        BAD(c->g, "GGUF file ends inside %s (truncated? %zu bytes, %" PRIu64 " more needed at byte %zu)",
            c->what, c->g->size, n, c->pos);
    const unsigned char *p = c->g->map + c->pos;
    c->pos += (size_t)n;
    return p;
}

static uint32_t rd_u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd_u64(const unsigned char *p) { return (uint64_t)rd_u32(p) | (uint64_t)rd_u32(p + 4) << 32; }
static uint32_t take_u32(cursor *c) { return rd_u32(take(c, 4)); }
static uint64_t take_u64(cursor *c) { return rd_u64(take(c, 8)); }

/* a string: returns its bytes, length in *len */
static const unsigned char *take_str(cursor *c, uint64_t *len) {
    *len = take_u64(c);
    return take(c, *len);
}

/* bytes of one scalar of type t; 0 for strings and arrays, -1 for an unknown type */
static int scalar_size(uint32_t t) {
    switch (t) {
    case GGUF_UINT8: case GGUF_INT8: case GGUF_BOOL: return 1;
    case GGUF_UINT16: case GGUF_INT16: return 2;
    case GGUF_UINT32: case GGUF_INT32: case GGUF_FLOAT32: return 4;
    case GGUF_UINT64: case GGUF_INT64: case GGUF_FLOAT64: return 8;
    case GGUF_STRING: case GGUF_ARRAY: return 0;
    default: return -1;
    }
}

/* ---------------------------------------------------------------- parsing */

int gguf_is_gguf(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    char m[4];
    int ok = fread(m, 1, 4, f) == 4 && memcmp(m, "GGUF", 4) == 0;
    fclose(f);
    return ok;
}

/* copies a name into the names store (sized beforehand by the caller's bound: the map size) */
static const char *keep_name(gguf_file *g, size_t *used, const unsigned char *s, uint64_t len) {
    char *d = g->names + *used;
    memcpy(d, s, (size_t)len);
    d[len] = 0;
    *used += (size_t)len + 1;
    return d;
}

static void parse_value(gguf_file *g, cursor *c, gguf_kv *kv) {
    kv->val = g->map + c->pos;
    int sz = scalar_size(kv->type);
    if (sz < 0) BAD(g, "key '%s' has unknown value type %u", kv->key, (unsigned)kv->type);
    if (sz > 0) {
        take(c, (uint64_t)sz);
    } else if (kv->type == GGUF_STRING) {
        uint64_t len;
        take_str(c, &len);
    } else {
        kv->elem = (gguf_type)take_u32(c);
        kv->n = take_u64(c);
        int es = scalar_size(kv->elem);
        if (es < 0) BAD(g, "key '%s' is an array of unknown type %u", kv->key, (unsigned)kv->elem);
        if (kv->elem == GGUF_ARRAY) BAD(g, "key '%s' is an array of arrays (not supported)", kv->key);
        kv->data = g->map + c->pos;
        uint64_t left = g->size - c->pos;
        if (es > 0) {
            if (kv->n > left / (uint64_t)es)
                BAD(g, "key '%s' holds %" PRIu64 " elements of %d bytes, more than the file's %" PRIu64
                    " remaining bytes (truncated or corrupt)", kv->key, kv->n, es, left);
            take(c, kv->n * (uint64_t)es);
        } else { /* strings: each at least its 8-byte length */
            if (kv->n > left / 8)
                BAD(g, "key '%s' holds %" PRIu64 " strings, more than the file's %" PRIu64
                    " remaining bytes can hold (truncated or corrupt)", kv->key, kv->n, left);
            kv->str_off = xmalloc((size_t)(kv->n + 1) * sizeof *kv->str_off);
            size_t start = c->pos;
            for (uint64_t i = 0; i < kv->n; i++) {
                kv->str_off[i] = c->pos - start;
                uint64_t len;
                take_str(c, &len);
            }
            kv->str_off[kv->n] = c->pos - start;
        }
    }
}

void gguf_open(gguf_file *g, const char *path) {
    memset(g, 0, sizeof *g);
    g->path = xstrdup(path);
    int fd = open(path, O_RDONLY);
    if (fd < 0) die_errno("cannot open '%s'", path);
    struct stat st;
    if (fstat(fd, &st) != 0) die_errno("cannot stat '%s'", path);
    g->size = (size_t)st.st_size;
    if (g->size < 24) BAD(g, "too short for a GGUF file (%zu bytes)", g->size);
    g->map = mmap(NULL, g->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (g->map == MAP_FAILED) die_errno("cannot map '%s'", path);
    close(fd);

    cursor c = {g, 0, "the header"};
    if (memcmp(take(&c, 4), "GGUF", 4) != 0) BAD(g, "not a GGUF file (no GGUF magic)");
    g->version = take_u32(&c);
    if (g->version != 2 && g->version != 3)
        BAD(g, "GGUF version %u is not supported (2 and 3 are%s)", (unsigned)g->version,
            g->version > 0xffff ? "; a big-endian file?" : "");
    uint64_t nt = take_u64(&c), nkv = take_u64(&c);
    /* each key/value needs at least 8 + 4 + 1 bytes, each tensor info 8 + 4 + 8 + 4 + 8 */
    if (nkv > (g->size - c.pos) / 13 || nt > (g->size - c.pos) / 32)
        BAD(g, "header claims %" PRIu64 " keys and %" PRIu64 " tensors, more than a file of %zu "
            "bytes can hold (truncated or corrupt)", nkv, nt, g->size);
    g->n_kv = (int64_t)nkv;
    g->n_tensors = (int64_t)nt;
    g->kv = xcalloc((size_t)nkv + 1, sizeof *g->kv);
    g->tensors = xcalloc((size_t)nt + 1, sizeof *g->tensors);
    g->names = xmalloc(g->size + 1); /* every name is a part of the file: never more */
    size_t used = 0;
    g->alignment = 32;

    for (uint64_t i = 0; i < nkv; i++) {
        gguf_kv *kv = &g->kv[i];
        c.what = "a metadata key";
        uint64_t len;
        const unsigned char *k = take_str(&c, &len);
        if (len == 0 || len > GGUF_MAX_KEY || memchr(k, 0, (size_t)len))
            BAD(g, "metadata key %" PRIu64 " has a bad name (length %" PRIu64 ")", i, len);
        kv->key = keep_name(g, &used, k, len);
        for (uint64_t j = 0; j < i; j++)
            if (strcmp(g->kv[j].key, kv->key) == 0) BAD(g, "metadata key '%s' appears twice", kv->key);
        c.what = kv->key;
        kv->type = (gguf_type)take_u32(&c);
        parse_value(g, &c, kv);
    }
    const gguf_kv *al = gguf_find(g, "general.alignment");
    if (al) {
        int64_t a = gguf_int(g, al);
        if (a <= 0 || a > (1 << 20) || (a & (a - 1)))
            BAD(g, "general.alignment %" PRId64 " is not a power of two up to 1 MiB", a);
        g->alignment = (uint64_t)a;
    }

    uint64_t *offs = xcalloc((size_t)nt + 1, sizeof *offs);
    for (uint64_t i = 0; i < nt; i++) {
        gguf_tensor *t = &g->tensors[i];
        c.what = "a tensor name";
        uint64_t len;
        const unsigned char *nm = take_str(&c, &len);
        if (len == 0 || len > GGUF_MAX_KEY || memchr(nm, 0, (size_t)len))
            BAD(g, "tensor %" PRIu64 " has a bad name (length %" PRIu64 ")", i, len);
        t->name = keep_name(g, &used, nm, len);
        c.what = t->name;
        uint32_t nd = take_u32(&c);
        if (nd < 1 || nd > 4) BAD(g, "tensor '%s' has %u dimensions (1 to 4)", t->name, (unsigned)nd);
        t->n_dims = (int)nd;
        t->numel = 1;
        for (int d = 0; d < 4; d++) t->ne[d] = 1;
        for (uint32_t d = 0; d < nd; d++) {
            uint64_t ne = take_u64(&c);
            if (ne == 0 || ne > (uint64_t)GGUF_MAX_NUMEL || (uint64_t)t->numel > (uint64_t)GGUF_MAX_NUMEL / ne)
                BAD(g, "tensor '%s' has a bad dimension %" PRIu64 " (or too many elements)", t->name, ne);
            t->ne[d] = (int64_t)ne;
            t->numel *= (int64_t)ne;
        }
        uint32_t ty = take_u32(&c);
        int ti = type_index(ty);
        if (ti < 0)
            BAD(g, "tensor '%s' has ggml type %s (%u), which is not supported (F32, F16, BF16, Q8_0, "
                "Q4_0, Q4_K, Q5_K, Q6_K)", t->name, ggml_other_name(ty), (unsigned)ty);
        t->type = (ggml_type)ty;
        if (t->ne[0] % ggml_types[ti].block != 0)
            BAD(g, "tensor '%s': %" PRId64 " columns are not a multiple of %s's block of %d", t->name,
                t->ne[0], ggml_types[ti].name, ggml_types[ti].block);
        t->nbytes = t->numel / ggml_types[ti].block * ggml_types[ti].bytes;
        offs[i] = take_u64(&c);
        if (offs[i] % g->alignment != 0)
            BAD(g, "tensor '%s' starts at offset %" PRIu64 ", not a multiple of the alignment %" PRIu64,
                t->name, offs[i], g->alignment);
        for (uint64_t j = 0; j < i; j++)
            if (strcmp(g->tensors[j].name, t->name) == 0) BAD(g, "tensor '%s' appears twice", t->name);
    }
    uint64_t data = (c.pos + g->alignment - 1) / g->alignment * g->alignment;
    for (uint64_t i = 0; i < nt; i++) {
        gguf_tensor *t = &g->tensors[i];
        if (data > g->size || offs[i] > g->size - data || (uint64_t)t->nbytes > g->size - data - offs[i])
            BAD(g, "tensor '%s' (%" PRId64 " bytes at data offset %" PRIu64 ") ends past the end of the "
                "file (truncated?)", t->name, t->nbytes, offs[i]);
        t->data = g->map + data + offs[i];
    }
    free(offs);
}

void gguf_close(gguf_file *g) {
    if (g->map && g->map != MAP_FAILED) munmap(g->map, g->size);
    for (int64_t i = 0; i < g->n_kv; i++) free(g->kv[i].str_off);
    free(g->kv);
    free(g->tensors);
    free(g->names);
    free(g->path);
    memset(g, 0, sizeof *g);
}

/* ---------------------------------------------------------------- accessors */

const gguf_kv *gguf_find(const gguf_file *g, const char *key) {
    for (int64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key && strcmp(g->kv[i].key, key) == 0) return &g->kv[i];
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name) {
    for (int64_t i = 0; i < g->n_tensors; i++)
        if (strcmp(g->tensors[i].name, name) == 0) return &g->tensors[i];
    return NULL;
}

static int64_t scalar_int(gguf_type t, const unsigned char *p, int *ok) {
    *ok = 1;
    switch (t) {
    case GGUF_UINT8: case GGUF_BOOL: return p[0];
    case GGUF_INT8: return (int8_t)p[0];
    case GGUF_UINT16: return (uint16_t)(p[0] | p[1] << 8);
    case GGUF_INT16: return (int16_t)(uint16_t)(p[0] | p[1] << 8);
    case GGUF_UINT32: return rd_u32(p);
    case GGUF_INT32: return (int32_t)rd_u32(p);
    case GGUF_UINT64: {
        uint64_t v = rd_u64(p);
        if (v > INT64_MAX) *ok = 0;
        return (int64_t)v;
    }
    case GGUF_INT64: return (int64_t)rd_u64(p);
    default: *ok = 0; return 0;
    }
}

static double scalar_num(gguf_type t, const unsigned char *p, int *ok) {
    if (t == GGUF_FLOAT32) {
        uint32_t u = rd_u32(p);
        float f;
        memcpy(&f, &u, 4);
        *ok = 1;
        return f;
    }
    if (t == GGUF_FLOAT64) {
        uint64_t u = rd_u64(p);
        double d;
        memcpy(&d, &u, 8);
        *ok = 1;
        return d;
    }
    return (double)scalar_int(t, p, ok);
}

int64_t gguf_int(const gguf_file *g, const gguf_kv *kv) {
    int ok;
    int64_t v = scalar_int(kv->type, kv->val, &ok);
    if (!ok) BAD(g, "key '%s' must be an integer", kv->key);
    return v;
}

double gguf_float(const gguf_file *g, const gguf_kv *kv) {
    int ok;
    double v = scalar_num(kv->type, kv->val, &ok);
    if (!ok) BAD(g, "key '%s' must be a number", kv->key);
    return v;
}

const char *gguf_str(const gguf_file *g, const gguf_kv *kv, uint64_t *len) {
    if (kv->type != GGUF_STRING) BAD(g, "key '%s' must be a string", kv->key);
    *len = rd_u64(kv->val);
    return (const char *)kv->val + 8;
}

char *gguf_strdup(const gguf_file *g, const gguf_kv *kv) {
    uint64_t len;
    const char *s = gguf_str(g, kv, &len);
    char *d = xmalloc((size_t)len + 1);
    memcpy(d, s, (size_t)len);
    d[len] = 0;
    return d;
}

const char *gguf_arr_str(const gguf_kv *kv, uint64_t i, uint64_t *len) {
    const unsigned char *p = kv->data + kv->str_off[i];
    *len = rd_u64(p);
    return (const char *)p + 8;
}

double gguf_arr_num(const gguf_kv *kv, uint64_t i) {
    int ok;
    return scalar_num(kv->elem, kv->data + i * (uint64_t)scalar_size(kv->elem), &ok);
}

/* ---------------------------------------------------------------- dequantisation
 * Block layouts (ggml's): Q8_0: f16 d, 32 int8; Q4_0: f16 d, 16 bytes of nibbles (element j low,
 * j + 16 high), value (q - 8) * d; K-quants: 256 elements in sub-blocks with 6-bit (Q4_K, Q5_K)
 * or 8-bit (Q6_K) scales under an f16 super-scale. */

static float f16_at(const unsigned char *p) { return util_f16_to_f32((uint16_t)(p[0] | p[1] << 8)); }

static void deq_q8_0(const unsigned char *b, float *y) {
    float d = f16_at(b);
    for (int j = 0; j < 32; j++) y[j] = d * (float)(int8_t)b[2 + j];
}

static void deq_q4_0(const unsigned char *b, float *y) {
    float d = f16_at(b);
    for (int j = 0; j < 16; j++) {
        y[j] = d * (float)((b[2 + j] & 0x0f) - 8);
        y[j + 16] = d * (float)((b[2 + j] >> 4) - 8);
    }
}

/* Q4_K / Q5_K: scale and min of sub-block j (0..7) from the 12 packed bytes */
static void k_scale_min(const unsigned char *s, int j, int *sc, int *m) {
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0x0f) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

/* Q4_K (144 bytes): f16 d, f16 dmin, 12 scale bytes, 128 bytes of nibbles; Q5_K (176 bytes): the
 * same with 32 bytes of fifth bits (qh) before the nibbles. Each 64 elements take 32 nibble
 * bytes: low nibbles are sub-block 2i, high nibbles 2i + 1; y = d * sc * q - dmin * m. */
static void deq_q45_k(const unsigned char *b, float *y, int five) {
    float d = f16_at(b), dmin = f16_at(b + 2);
    const unsigned char *sc = b + 4, *qh = b + 16, *q = b + (five ? 48 : 16);
    for (int i = 0; i < 4; i++) {
        int s0, m0, s1, m1;
        k_scale_min(sc, 2 * i, &s0, &m0);
        k_scale_min(sc, 2 * i + 1, &s1, &m1);
        float d0 = d * (float)s0, d1 = d * (float)s1, n0 = dmin * (float)m0, n1 = dmin * (float)m1;
        for (int l = 0; l < 32; l++) {
            int lo = q[l] & 0x0f, hi = q[l] >> 4;
            if (five) {
                lo += (qh[l] >> (2 * i) & 1) << 4;
                hi += (qh[l] >> (2 * i + 1) & 1) << 4;
            }
            y[64 * i + l] = d0 * (float)lo - n0;
            y[64 * i + 32 + l] = d1 * (float)hi - n1;
        }
        q += 32;
    }
}

/* Q6_K (210 bytes): 128 bytes of low nibbles, 64 bytes of high 2-bit pairs, 16 int8 scales, f16
 * d. Each half of 128 elements uses 64 low bytes and 32 high bytes: element l + 32k of the half
 * takes low nibble (k even: low, odd: high half-byte of byte l + 32 (k & 1)) and bits 2k of qh[l];
 * value d * scale[l / 16 + 2k] * (q - 32). */
static void deq_q6_k(const unsigned char *b, float *y) {
    const unsigned char *ql = b, *qh = b + 128;
    const int8_t *sc = (const int8_t *)(b + 192);
    float d = f16_at(b + 208);
    for (int h = 0; h < 2; h++) {
        for (int l = 0; l < 32; l++) {
            int is = l / 16;
            int q0 = ((ql[l] & 0x0f) | ((qh[l] >> 0 & 3) << 4)) - 32;
            int q1 = ((ql[l + 32] & 0x0f) | ((qh[l] >> 2 & 3) << 4)) - 32;
            int q2 = ((ql[l] >> 4) | ((qh[l] >> 4 & 3) << 4)) - 32;
            int q3 = ((ql[l + 32] >> 4) | ((qh[l] >> 6 & 3) << 4)) - 32;
            y[l] = d * (float)sc[is] * (float)q0;
            y[l + 32] = d * (float)sc[is + 2] * (float)q1;
            y[l + 64] = d * (float)sc[is + 4] * (float)q2;
            y[l + 96] = d * (float)sc[is + 6] * (float)q3;
        }
        y += 128;
        ql += 64;
        qh += 32;
        sc += 8;
    }
}

void gguf_tensor_to_f32(const gguf_tensor *t, int64_t row0, int64_t nrows, float *out) {
    const int ti = type_index((uint32_t)t->type);
    const int64_t cols = t->ne[0], rows = t->numel / cols;
    check(ti >= 0 && row0 >= 0 && nrows >= 0 && row0 + nrows <= rows,
          "gguf_tensor_to_f32: rows %" PRId64 "+%" PRId64 " of '%s' (%" PRId64 " rows)", row0, nrows,
          t->name, rows);
    const int blk = ggml_types[ti].block, bb = ggml_types[ti].bytes;
    const int64_t n_blocks = nrows * cols / blk;
    const unsigned char *p = t->data + row0 * cols / blk * bb;
    for (int64_t k = 0; k < n_blocks; k++, p += bb) {
        float *y = out + k * blk;
        switch (t->type) {
        case GGML_F32: {
            uint32_t u = rd_u32(p);
            memcpy(y, &u, 4);
            break;
        }
        case GGML_F16: *y = f16_at(p); break;
        case GGML_BF16: *y = util_bf16_to_f32((uint16_t)(p[0] | p[1] << 8)); break;
        case GGML_Q8_0: deq_q8_0(p, y); break;
        case GGML_Q4_0: deq_q4_0(p, y); break;
        case GGML_Q4_K: deq_q45_k(p, y, 0); break;
        case GGML_Q5_K: deq_q45_k(p, y, 1); break;
        case GGML_Q6_K: deq_q6_k(p, y); break;
        }
    }
}
