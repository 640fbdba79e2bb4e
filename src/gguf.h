/* gguf: a reader for GGUF files (llama.cpp's model format), versions 2 and 3, little-endian.
 *
 * Layout: "GGUF", uint32 version, uint64 tensor count, uint64 key/value count, the key/values
 * (string key, uint32 type, value), the tensor infos (string name, uint32 n_dims, uint64 ne[n_dims],
 * uint32 ggml type, uint64 offset), padding to general.alignment (default 32), then the tensor data.
 * A string is uint64 length + bytes; an array is uint32 element type + uint64 count + elements.
 * ne[0] is the fastest-varying dimension: a matrix of rows x cols has ne = {cols, rows}.
 *
 * The file is mapped read-only. Every length, count and offset is checked against the file's
 * size (and every product for overflow) while parsing, so a truncated or corrupt file fails at
 * gguf_open with one line naming the file and what is wrong, and accessors never read outside
 * the map. */
#ifndef MPILLAMA_GGUF_H
#define MPILLAMA_GGUF_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    GGUF_UINT8 = 0, GGUF_INT8 = 1, GGUF_UINT16 = 2, GGUF_INT16 = 3, GGUF_UINT32 = 4,
    GGUF_INT32 = 5, GGUF_FLOAT32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9,
    GGUF_UINT64 = 10, GGUF_INT64 = 11, GGUF_FLOAT64 = 12
} gguf_type;

/* ggml tensor types this reader converts (others are refused by name) */
typedef enum {
    GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q8_0 = 8, GGML_Q4_K = 12, GGML_Q5_K = 13,
    GGML_Q6_K = 14, GGML_BF16 = 30
} ggml_type;

typedef struct {
    const char *key;          /* NUL-terminated copy */
    gguf_type type;
    const unsigned char *val; /* the value's bytes in the map (after the type) */
    /* arrays */
    gguf_type elem;           /* element type */
    uint64_t n;               /* element count */
    const unsigned char *data; /* first element */
    uint64_t *str_off;        /* string arrays: (n + 1) offsets of each element from data */
} gguf_kv;

typedef struct {
    const char *name;         /* NUL-terminated copy */
    int n_dims;               /* 1..4 */
    int64_t ne[4];            /* ne[0] fastest; unused dims are 1 */
    ggml_type type;
    int64_t numel;
    int64_t nbytes;
    const unsigned char *data; /* in the map */
} gguf_tensor;

typedef struct {
    char *path;
    unsigned char *map;
    size_t size;
    uint32_t version;
    int64_t n_kv, n_tensors;
    gguf_kv *kv;              /* (n_kv) */
    gguf_tensor *tensors;     /* (n_tensors), in file order */
    uint64_t alignment;
    char *names;              /* storage of the key and tensor name copies */
} gguf_file;

/* 1 when the first bytes of the file at path are the GGUF magic */
int gguf_is_gguf(const char *path);
/* maps and parses path; dies with "'<path>': <what>" on anything malformed or unsupported */
void gguf_open(gguf_file *g, const char *path);
void gguf_close(gguf_file *g);

/* the key/value of that key, or NULL */
const gguf_kv *gguf_find(const gguf_file *g, const char *key);
/* value accessors: die naming the key when the type does not fit */
int64_t gguf_int(const gguf_file *g, const gguf_kv *kv);      /* any integer type or bool */
double gguf_float(const gguf_file *g, const gguf_kv *kv);     /* float32/64 or integer */
/* a string value (not NUL-terminated): its bytes and length */
const char *gguf_str(const gguf_file *g, const gguf_kv *kv, uint64_t *len);
/* element i of an array of strings / numbers */
const char *gguf_arr_str(const gguf_kv *kv, uint64_t i, uint64_t *len);
double gguf_arr_num(const gguf_kv *kv, uint64_t i);
/* NUL-terminated copy of a string value (malloc'd) */
char *gguf_strdup(const gguf_file *g, const gguf_kv *kv);

/* the tensor of that name, or NULL */
const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name);
/* "F32", "Q8_0", ...; "?" for others */
const char *gguf_type_name(ggml_type t);
/* rows [row0, row0 + nrows) of t (rows of ne[0] elements) as f32 into out (nrows * ne[0]) */
void gguf_tensor_to_f32(const gguf_tensor *t, int64_t row0, int64_t nrows, float *out);

#endif
