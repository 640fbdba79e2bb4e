#include "config.h"

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

int config_validate(const model_config *c, const char *src, char *why, size_t cap) {
    why[0] = 0;
    if (strcmp(c->architecture, "llama") != 0 && strcmp(c->architecture, "mistral") != 0 &&
        strcmp(c->architecture, "qwen2") != 0 && strcmp(c->architecture, "qwen3") != 0)
        BAD("'%s': architecture '%s' is not supported (" CONFIG_ARCHITECTURES ")", src, c->architecture);
    if (c->dim <= 0) BAD("'%s': config field 'dim' is %d, must be > 0", src, c->dim);
    if (c->hidden_dim <= 0) BAD("'%s': config field 'hidden_dim' is %d, must be > 0", src, c->hidden_dim);
    if (c->n_layers <= 0) BAD("'%s': config field 'n_layers' is %d, must be > 0", src, c->n_layers);
    if (c->n_heads <= 0) BAD("'%s': config field 'n_heads' is %d, must be > 0", src, c->n_heads);
    if (c->n_kv_heads <= 0 || c->n_heads % c->n_kv_heads != 0)
        BAD("'%s': config field 'n_kv_heads' is %d, must divide n_heads %d", src, c->n_kv_heads, c->n_heads);
    if (c->head_size <= 0 || c->head_size % 2 != 0)
        BAD("'%s': config field 'head_size' is %d, must be even and > 0", src, c->head_size);
    if (c->vocab_size <= 0) BAD("'%s': config field 'vocab_size' is %d, must be > 0", src, c->vocab_size);
    if (c->max_seq_len <= 0) BAD("'%s': config field 'max_seq_len' is %d, must be > 0", src, c->max_seq_len);
    if (!(c->norm_eps > 0)) BAD("'%s': config field 'norm_eps' must be > 0", src);
    if (!(c->rope_theta > 0)) BAD("'%s': config field 'rope_theta' must be > 0", src);
    if (strcmp(c->rope_scaling_type, "none") != 0 && strcmp(c->rope_scaling_type, "llama3") != 0)
        BAD("'%s': rope scaling '%s' is not supported (none, llama3)", src, c->rope_scaling_type);
    if (strcmp(c->rope_scaling_type, "llama3") == 0 &&
        (!(c->rope_factor > 0) || !(c->rope_high_freq_factor > c->rope_low_freq_factor) || c->rope_original_max_pos <= 0))
        BAD("'%s': llama3 rope scaling needs factor > 0, high_freq_factor > low_freq_factor and original_max_position_embeddings > 0", src);
    if (c->bos_id >= c->vocab_size) BAD("'%s': config field 'bos_id' %d is outside the vocabulary", src, c->bos_id);
    if (c->n_eos < 0 || c->n_eos > CONFIG_MAX_EOS) BAD("'%s': config field 'eos_ids' has %d ids (at most %d)", src, c->n_eos, CONFIG_MAX_EOS);
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] < 0 || c->eos_ids[i] >= c->vocab_size)
            BAD("'%s': config field 'eos_ids' holds %d, outside the vocabulary", src, c->eos_ids[i]);
    if (c->sliding_window < 0) BAD("'%s': config field 'sliding_window' is %d, must be >= 0", src, c->sliding_window);
    if (c->attn_qkv_bias != 0 && c->attn_qkv_bias != 1) BAD("'%s': config field 'attn_qkv_bias' must be 0 or 1", src);
    if (c->attn_qk_norm != 0 && c->attn_qk_norm != 1) BAD("'%s': config field 'attn_qk_norm' must be 0 or 1", src);
    return 0;
}

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
