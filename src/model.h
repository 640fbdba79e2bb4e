/* model: one rank's share of a Llama model (its stage's layers, its heads and FFN columns) and
 * the batched forward pass across the grid. Calls kernels for math and dist for communication. */
#ifndef MPILLAMA_MODEL_H
#define MPILLAMA_MODEL_H

#include "arena.h"
#include "config.h"
#include "dist.h"
#include "kernels.h"
#include "mfile.h"
#include "plan.h"

typedef struct {
    float *attention_norm; /* (dim) */
    kern_wmat wq;          /* (n_heads_local * head_size, dim) */
    kern_wmat wk;          /* (n_kv_local * head_size, dim) */
    kern_wmat wv;          /* (n_kv_local * head_size, dim) */
    float *bq;             /* (n_heads_local * head_size) q bias, or NULL (attn_qkv_bias) */
    float *bk, *bv;        /* (n_kv_local * head_size) k, v biases, or NULL */
    float *q_norm, *k_norm; /* (head_size) per-head RMSNorm weights, or NULL (attn_qk_norm) */
    kern_wmat wo;          /* (dim, n_heads_local * head_size): input columns of this rank's heads */
    float *ffn_norm;       /* (dim) */
    kern_wmat w1;          /* (hidden_local, dim) gate */
    kern_wmat w2;          /* (dim, hidden_local): input columns */
    kern_wmat w3;          /* (hidden_local, dim) up */
} model_layer;

/* n tokens processed together; every rank holds the same batch */
typedef struct {
    int n;
    int *token;           /* (n) */
    int *pos;             /* (n) position within its sequence */
    int *slot;            /* (n) KV cache slot of its sequence */
    int *want;            /* (n) 1 when the logits of this token are wanted */
} model_batch;

typedef struct {
    model_config cfg;
    plan_rank share;
    arena weights;         /* over `shared`: one copy per node of each slice (dist_shared); every
                            * weight in its stored type (cfg.weight_dtype) */
    dist_shared shared;
    kern_wmat tok_embeddings; /* (vocab_local, dim), first stage */
    model_layer *layers;   /* (n_layers_local) */
    float *norm;           /* (dim), last stage */
    kern_wmat classifier;  /* (vocab_local, dim), last stage; = tok_embeddings when tied, pp = 1 */
    int *vocab_counts;     /* (tp) classifier rows of each tp rank */
    int *vocab_offsets;    /* (tp) */
    /* run state */
    int n_slots, seq_len, max_tokens;
    kern_dtype kv_dtype;   /* of the KV cache: KERN_F32 or KERN_BF16 (cfg.kv_dtype) */
    void *key_cache;       /* (n_layers_local, n_slots, seq_len, n_kv_local * head_size) of kv_dtype */
    void *value_cache;     /* same */
    float *x;              /* (max_tokens, dim) residual stream */
    float *xb;             /* (max_tokens, dim) */
    float *q;              /* (max_tokens, n_heads_local * head_size) */
    float *k, *v;          /* (max_tokens, n_kv_local * head_size) */
    float *att_out;        /* (max_tokens, n_heads_local * head_size) */
    float *hb, *hb2;       /* (max_tokens, hidden_local) */
    float *att;            /* (n_heads_local, seq_len) */
    float *logits_local;   /* (max_tokens, vocab_local), last stage */
    float *gather_scratch; /* (max_tokens, vocab), last stage's tp rank 0 */
    float *inv_freq;       /* (head_size / 2) */
    int64_t bytes_read, kv_bytes;
    int64_t bytes_in_place; /* of bytes_read: weights used in place in the file's mapping */
    int64_t bytes_copied;   /* of bytes_read: weights copied from the file into the rank's own memory */
} model;

/* collective over the world: every rank reads its own slice of every tensor */
/* checks every tensor of the file (present, rank, shape) against cfg, in the order model_load
 * reads them; dies naming the tensor. model_load calls it before it allocates anything, so a
 * config that claims more or larger layers than the file stores costs no memory. Collective
 * on a file opened over several ranks. */
void model_check_file(mfile *f, const model_config *cfg);
void model_load(model *m, mfile *f, const model_config *cfg, const plan_grid *g, const dist_ctx *d);
/* allocates the KV cache (n_slots sequences of seq_len, elements of cfg.kv_dtype) and scratch
 * for max_tokens per call */
void model_alloc_state(model *m, int n_slots, int seq_len, int max_tokens);
void model_free(model *m);
/* first stage: the batch's token embeddings into x (vocab-parallel, summed over tp) */
void model_embed(model *m, dist_ctx *d, const model_batch *b);
/* this stage's layers on x (n, dim) in place; two all-reduces per layer over the stage's tp ranks */
void model_layers(model *m, dist_ctx *d, const model_batch *b);
/* copies positions [0, n) of KV slot src to slot dst, every local layer (n choices of one prompt
 * share its prefill) */
void model_kv_copy(model *m, int src, int dst, int n);
/* last stage: final norm and classifier for the wanted tokens; the stage's tp rank 0 gets the
 * logits (n_want, vocab) in out. Returns n_want. */
int model_logits(model *m, dist_ctx *d, const model_batch *b, float *out);
/* last stage: final norm and this rank's classifier rows for the wanted tokens, into
 * logits_local (n_want, vocab_local), nothing gathered. Returns n_want. */
int model_classify(model *m, const model_batch *b);

#endif
