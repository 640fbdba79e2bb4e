/* config: the model's hyper-parameters, as stored by name in the model file. */
#ifndef MPILLAMA_CONFIG_H
#define MPILLAMA_CONFIG_H

#include <stdio.h>

#define CONFIG_MAX_EOS 8

/* the kinds of weight matrix, each stored in one type in all layers (config_weight_dtype) */
enum { CONFIG_W_EMBED, CONFIG_W_Q, CONFIG_W_K, CONFIG_W_V, CONFIG_W_O, CONFIG_W_1, CONFIG_W_2, CONFIG_W_3,
       CONFIG_W_OUT, CONFIG_W_COUNT };

typedef struct {
    char architecture[32];      /* the source family: "llama", "mistral", "qwen2" or "qwen3"
                                 * (informational: the fields below fix the math) */
    int dim;                    /* model width */
    int hidden_dim;             /* FFN width */
    int n_layers;
    int n_heads;                /* query heads */
    int n_kv_heads;             /* key/value heads (GQA when < n_heads) */
    int head_size;              /* usually dim / n_heads */
    int vocab_size;
    int max_seq_len;            /* the model's context length */
    float norm_eps;             /* RMSNorm epsilon */
    float rope_theta;
    char rope_scaling_type[16]; /* "none" or "llama3" */
    float rope_factor;          /* llama3 scaling: factor, low/high frequency factors, */
    float rope_low_freq_factor; /* original context length */
    float rope_high_freq_factor;
    int rope_original_max_pos;
    int tied_classifier;        /* 1: the classifier is the token embedding */
    int bos_id;                 /* -1: none */
    int n_eos;
    int eos_ids[CONFIG_MAX_EOS];
    /* later fields, absent from older files (read as 0) */
    int sliding_window;         /* > 0: a token attends to itself and the sliding_window - 1
                                 * positions before it (Mistral), in every layer; 0: all */
    int attn_qkv_bias;          /* 1: q, k and v projections add a bias (Qwen2: bq, bk, bv) */
    int attn_qk_norm;           /* 1: per-head RMSNorm of q and k before RoPE (Qwen3: q_norm,
                                 * k_norm, each (head_size)) */
    int weight_dtype[CONFIG_W_COUNT]; /* storage type (kern_dtype, src/dtype.h) of each weight kind:
                                       * read from the tensors (docs/FORMAT.md), not a root
                                       * attribute; 0 (f32) after config_init_defaults */
    int kv_dtype;               /* the KV cache's kern_dtype for a run (f32 or bf16): not in the file;
                                 * mfile_read_config sets dtype_default_kv's, --kv-dtype overrides */
} model_config;

#define CONFIG_ARCHITECTURES "llama, mistral, qwen2, qwen3"
/* the largest sizes a model file may claim: beyond every released Llama-family model, small
 * enough that every byte count of the model fits int64 and nothing is allocated for a header
 * that claims dim 2^30 */
#define CONFIG_MAX_DIM (1 << 17)
#define CONFIG_MAX_HIDDEN_DIM (1 << 20)
#define CONFIG_MAX_LAYERS 4096
#define CONFIG_MAX_HEADS 4096
#define CONFIG_MAX_HEAD_SIZE 4096
#define CONFIG_MAX_VOCAB (1 << 24)
#define CONFIG_MAX_SEQ_LEN (1 << 24)

/* fill the defaults every converter starts from (Llama, eps 1e-5, theta 10000, no scaling) */
void config_init_defaults(model_config *c);
/* returns 0, or -1 with "'<source>': config field '<field>' ..." in why. Checks every size
 * against the CONFIG_MAX_* limits (and q_dim, kv_dim against CONFIG_MAX_DIM * 8), every float
 * for being finite and in range, every token id against the vocabulary. */
int config_validate(const model_config *c, const char *source, char *why, size_t cap);
void config_print(const model_config *c, FILE *out);
/* number of query dimensions, key/value dimensions */
static inline int config_q_dim(const model_config *c) { return c->n_heads * c->head_size; }
static inline int config_kv_dim(const model_config *c) { return c->n_kv_heads * c->head_size; }
int config_is_eos(const model_config *c, int token);

#endif
