#include "dtype.h"

#include <string.h>

int dtype_parse(const char *s, kern_dtype *t) {
    for (int k = 0; k < 3; k++)
        if (strcmp(s, kern_dtype_name((kern_dtype)k)) == 0) {
            *t = (kern_dtype)k;
            return 0;
        }
    return -1;
}

int64_t dtype_bytes(kern_dtype t, int64_t rows, int64_t cols) {
    int64_t n = rows * cols;
    switch (t) {
    case KERN_BF16: return 2 * n;
    case KERN_Q8: return n + 4 * (n / KERN_Q8_BLOCK);
    default: return 4 * n;
    }
}

const char *dtype_kind_tensor(int kind) {
    static const char *const t[CONFIG_W_COUNT] = {"tok_embeddings", "layers/0/wq", "layers/0/wk",
                                                  "layers/0/wv",    "layers/0/wo", "layers/0/w1",
                                                  "layers/0/w2",    "layers/0/w3", "output"};
    return t[kind];
}

int dtype_kind_of(const char *name) {
    if (strcmp(name, "tok_embeddings") == 0) return CONFIG_W_EMBED;
    if (strcmp(name, "output") == 0) return CONFIG_W_OUT;
    const char *slash = strrchr(name, '/');
    if (strncmp(name, "layers/", 7) != 0 || !slash) return -1;
    for (int k = CONFIG_W_Q; k <= CONFIG_W_3; k++)
        if (strcmp(slash, strrchr(dtype_kind_tensor(k), '/')) == 0) return k;
    return -1;
}

int64_t dtype_input_dim(const model_config *c, int kind) {
    if (kind == CONFIG_W_O) return config_q_dim(c);
    if (kind == CONFIG_W_2) return c->hidden_dim;
    return c->dim;
}

kern_dtype dtype_for(const model_config *c, int kind, kern_dtype want) {
    if (want == KERN_Q8 && dtype_input_dim(c, kind) % KERN_Q8_BLOCK != 0) return KERN_BF16;
    return want;
}

void dtype_set_all(model_config *c, kern_dtype want) {
    for (int k = 0; k < CONFIG_W_COUNT; k++) c->weight_dtype[k] = dtype_for(c, k, want);
}

kern_dtype dtype_main(const model_config *c) { return (kern_dtype)c->weight_dtype[CONFIG_W_Q]; }

kern_dtype dtype_default_kv(const model_config *c) { return dtype_main(c) == KERN_F32 ? KERN_F32 : KERN_BF16; }

int64_t dtype_model_bytes(const model_config *c) {
    const int *t = c->weight_dtype;
    int64_t d = c->dim, q = config_q_dim(c), kv = config_kv_dim(c), h = c->hidden_dim, v = c->vocab_size;
    int64_t layer = 4 * 2 * d + dtype_bytes(t[CONFIG_W_Q], q, d) + dtype_bytes(t[CONFIG_W_K], kv, d) +
                    dtype_bytes(t[CONFIG_W_V], kv, d) + dtype_bytes(t[CONFIG_W_O], d, q) +
                    dtype_bytes(t[CONFIG_W_1], h, d) + dtype_bytes(t[CONFIG_W_2], d, h) + dtype_bytes(t[CONFIG_W_3], h, d);
    return c->n_layers * layer + dtype_bytes(t[CONFIG_W_EMBED], v, d) + 4 * d +
           (c->tied_classifier ? 0 : dtype_bytes(t[CONFIG_W_OUT], v, d));
}
