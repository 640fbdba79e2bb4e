#include "config.h"

#include <math.h>
#include <string.h>

#include "util.h"

void config_init_defaults(model_config *c) {
    memset(c, 0, sizeof(*c));
    snprintf(c->architecture, sizeof(c->architecture), "llama");
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    snprintf(c->rope_scaling_type, sizeof(c->rope_scaling_type), "none");
    c->rope_factor = 1.0f;
    c->rope_low_freq_factor = 1.0f;
    c->rope_high_freq_factor = 4.0f;
    c->rope_original_max_pos = 0;
    c->bos_id = 1;
    c->n_eos = 1;
    c->eos_ids[0] = 2;
}

#define BAD(...) return snprintf(why, cap, __VA_ARGS__), -1

/* an int field in [lo, hi] */
#define RANGE(field, lo, hi)                                                                       \
    do {                                                                                           \
        if (c->field < (lo) || c->field > (hi))                                                    \
            BAD("'%s': config field '" #field "' is %d, must be in [%d, %d]", src, c->field, (int)(lo), \
                (int)(hi));                                                                        \
    } while (0)
/* a float field, finite and > lo */
#define FINITE_ABOVE(field, lo)                                                                    \
    do {                                                                                           \
        if (!isfinite(c->field) || !(c->field > (lo)))                                             \
            BAD("'%s': config field '" #field "' is %g, must be finite and > %g", src,             \
                (double)c->field, (double)(lo));                                                   \
    } while (0)

int config_validate(const model_config *c, const char *src, char *why, size_t cap) {
    why[0] = 0;
    if (!memchr(c->architecture, 0, sizeof c->architecture) ||
        (strcmp(c->architecture, "llama") != 0 && strcmp(c->architecture, "mistral") != 0 &&
         strcmp(c->architecture, "qwen2") != 0 && strcmp(c->architecture, "qwen3") != 0))
        BAD("'%s': architecture '%.31s' is not supported (" CONFIG_ARCHITECTURES ")", src, c->architecture);
    RANGE(dim, 1, CONFIG_MAX_DIM);
    RANGE(hidden_dim, 1, CONFIG_MAX_HIDDEN_DIM);
    RANGE(n_layers, 1, CONFIG_MAX_LAYERS);
    RANGE(n_heads, 1, CONFIG_MAX_HEADS);
    RANGE(n_kv_heads, 1, CONFIG_MAX_HEADS);
    if (c->n_heads % c->n_kv_heads != 0)
        BAD("'%s': config field 'n_kv_heads' is %d, must divide n_heads %d", src, c->n_kv_heads, c->n_heads);
    RANGE(head_size, 2, CONFIG_MAX_HEAD_SIZE);
    if (c->head_size % 2 != 0) BAD("'%s': config field 'head_size' is %d, must be even", src, c->head_size);
    /* both at most 2^12 * 2^12: the products fit int */
    if ((int64_t)c->n_heads * c->head_size > 8 * (int64_t)CONFIG_MAX_DIM)
        BAD("'%s': config fields 'n_heads' x 'head_size' = %lld is over %d", src,
            (long long)c->n_heads * c->head_size, 8 * CONFIG_MAX_DIM);
    RANGE(vocab_size, 1, CONFIG_MAX_VOCAB);
    RANGE(max_seq_len, 1, CONFIG_MAX_SEQ_LEN);
    FINITE_ABOVE(norm_eps, 0);
    if (!(c->norm_eps < 1)) BAD("'%s': config field 'norm_eps' is %g, must be < 1", src, (double)c->norm_eps);
    FINITE_ABOVE(rope_theta, 0);
    if (!memchr(c->rope_scaling_type, 0, sizeof c->rope_scaling_type) ||
        (strcmp(c->rope_scaling_type, "none") != 0 && strcmp(c->rope_scaling_type, "llama3") != 0))
        BAD("'%s': rope scaling '%.15s' is not supported (none, llama3)", src, c->rope_scaling_type);
    if (strcmp(c->rope_scaling_type, "llama3") == 0) {
        FINITE_ABOVE(rope_factor, 0);
        FINITE_ABOVE(rope_low_freq_factor, 0);
        FINITE_ABOVE(rope_high_freq_factor, 0);
        if (!(c->rope_high_freq_factor > c->rope_low_freq_factor))
            BAD("'%s': llama3 rope scaling needs high_freq_factor > low_freq_factor", src);
        RANGE(rope_original_max_pos, 1, CONFIG_MAX_SEQ_LEN);
    }
    if (c->tied_classifier != 0 && c->tied_classifier != 1)
        BAD("'%s': config field 'tied_classifier' is %d, must be 0 or 1", src, c->tied_classifier);
    RANGE(bos_id, -1, c->vocab_size - 1);
    if (c->n_eos < 0 || c->n_eos > CONFIG_MAX_EOS) BAD("'%s': config field 'eos_ids' has %d ids (at most %d)", src, c->n_eos, CONFIG_MAX_EOS);
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] < 0 || c->eos_ids[i] >= c->vocab_size)
            BAD("'%s': config field 'eos_ids' holds %d, outside the vocabulary", src, c->eos_ids[i]);
    if (c->sliding_window < 0) BAD("'%s': config field 'sliding_window' is %d, must be >= 0", src, c->sliding_window);
    if (c->attn_qkv_bias != 0 && c->attn_qkv_bias != 1) BAD("'%s': config field 'attn_qkv_bias' must be 0 or 1", src);
    if (c->attn_qk_norm != 0 && c->attn_qk_norm != 1) BAD("'%s': config field 'attn_qk_norm' must be 0 or 1", src);
    return 0;
}
#undef RANGE
#undef FINITE_ABOVE

void config_print(const model_config *c, FILE *out) {
    fprintf(out, "architecture: %s\n", c->architecture);
    fprintf(out, "dim: %d\nhidden_dim: %d\nn_layers: %d\nn_heads: %d\nn_kv_heads: %d\nhead_size: %d\n",
            c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_size);
    fprintf(out, "vocab_size: %d\nmax_seq_len: %d\nnorm_eps: %g\nrope_theta: %g\n", c->vocab_size,
            c->max_seq_len, c->norm_eps, c->rope_theta);
    fprintf(out, "rope_scaling: %s", c->rope_scaling_type);
    if (strcmp(c->rope_scaling_type, "llama3") == 0)
        fprintf(out, " (factor %g, low_freq_factor %g, high_freq_factor %g, original_max_pos %d)",
                c->rope_factor, c->rope_low_freq_factor, c->rope_high_freq_factor, c->rope_original_max_pos);
    fprintf(out, "\ntied_classifier: %s\nbos_id: %d\neos_ids: [", c->tied_classifier ? "yes" : "no", c->bos_id);
    for (int i = 0; i < c->n_eos; i++) fprintf(out, "%s%d", i ? ", " : "", c->eos_ids[i]);
    fprintf(out, "]\n");
    if (c->sliding_window > 0) fprintf(out, "sliding_window: %d\n", c->sliding_window);
    else fprintf(out, "sliding_window: none\n");
    fprintf(out, "attention: %s%s\n", c->attn_qkv_bias ? "q/k/v biases" : "no biases",
            c->attn_qk_norm ? ", per-head q/k RMSNorm" : "");
}

int config_is_eos(const model_config *c, int token) {
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == token) return 1;
    return 0;
}
