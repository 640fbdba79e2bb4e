/* plan: how a model is laid over a dp x pp x tp grid: dp replicas, each a pp x tp grid. Pure
 * arithmetic, no MPI: `info --plan` uses it without launching ranks. World rank r is replica
 * r / (pp * tp); within its replica, rank q = r % (pp * tp) is stage q / tp, tensor-parallel rank
 * q % tp, so the ranks of one stage are consecutive (on one node when tp <= ranks per node), and
 * so are the ranks of one replica. */
#ifndef MPILLAMA_PLAN_H
#define MPILLAMA_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"

#define PLAN_MAX_PP 1024

typedef struct {
    int dp, pp, tp;                   /* replicas, pipeline stages, tensor-parallel ranks */
    int layer_start[PLAN_MAX_PP + 1]; /* stage s owns layers [layer_start[s], layer_start[s+1]) */
} plan_grid;

/* one rank's share of the model */
typedef struct {
    int world_rank, replica, stage, tp_rank;
    int layer0, n_layers_local;  /* this stage's layers */
    int head0, n_heads_local;    /* query heads */
    int kv_head0, n_kv_local;    /* key/value heads (replicated when tp > n_kv_heads) */
    int hidden0, hidden_local;   /* FFN columns (uneven split allowed) */
    int vocab0, vocab_local;     /* embedding rows (first stage) and classifier rows (last stage) */
    int has_embedding, has_classifier;
    int64_t weight_bytes;        /* bytes this rank reads and holds, in the stored types */
} plan_rank;

/* 0 when (pp, tp) can run the model; otherwise -1 with the reason in why */
/* (q8 weights: tp must split wo's and w2's input columns on whole blocks) */
int plan_check_grid(const model_config *c, int pp, int tp, char *why, size_t cap);
/* lists the valid "PPxTP" pairs for world ranks into buf (", "-separated, "none" if none) */
void plan_list_valid(const model_config *c, int world, char *buf, size_t cap);
/* layers split into pp contiguous ranges balanced by bytes (embedding counted on the first
 * stage, final norm and classifier on the last). The grid must have passed plan_check_grid. */
void plan_make(plan_grid *g, const model_config *c, int pp, int tp);
void plan_rank_share(const plan_grid *g, const model_config *c, int world_rank, plan_rank *r);
/* dp replicas of plan_make's grid */
void plan_make_dp(plan_grid *g, const model_config *c, int dp, int pp, int tp);
/* lists the valid "--dp D --pp P --tp T" layouts for world ranks into buf, smallest replica first */
void plan_list_layouts(const model_config *c, int world, char *buf, size_t cap);

/* memory of one node: the ranks [node * node_size, (node + 1) * node_size) of the grid, with
 * weights shared by the ranks of a node that hold the same slice (shared = 1) or not */
typedef struct {
    int64_t weight_bytes;   /* the node's weights (one copy per distinct slice when shared) */
    int64_t kv_bytes;       /* its ranks' KV caches (INT64_MAX when beyond int64) */
} plan_node_mem;
/* batch: sequences per micro-batch (--batch), micro: micro-batches (--micro-batches; 0 = pp) */
void plan_node_bytes(const plan_grid *g, const model_config *c, int node, int node_size, int max_seq, int batch,
                     int micro, int shared, plan_node_mem *out);
/* the default micro-batches of a replica of pp stages that gets about `requests` requests (< 0:
 * unknown, as many as may be): 1 without a pipeline; else pp, so that every stage computes a
 * whole micro-batch at once, and one more when the requests fill it too (pp + 1 micro-batches of
 * batch sequences): the extra micro-batch absorbs uneven ones (a prefill chunk beside decodes),
 * where with pp a stage waits whenever the other stage's micro-batch is the larger */
int plan_micro_batches(int pp, int batch, int64_t requests);
/* a replica's KV slots (sequences in flight): batch sequences in each of its micro micro-batches
 * (0: plan_micro_batches with the requests unknown); -1 beyond int */
int plan_slots(int batch, int micro, int pp);
/* the default layout for world ranks, node_size per node and node_mem bytes of memory per node:
 * the smallest valid replica (pp x tp, tp inside a node first) whose node share of weights
 * (shared) and KV caches (plan_slots x max_seq per replica) fits 85% of node_mem, and as many
 * replicas as the ranks allow. Returns 0, or -1 when no replica fits (then dp = 1 and the whole
 * world's grid as plan_default_grid chooses). */
int plan_default(const model_config *c, int world, int node_size, int64_t node_mem, int max_seq, int batch, int micro,
                 int *dp, int *pp, int *tp);

/* KV cache bytes of one rank for batch slots of max_seq positions, elements of c->kv_dtype; -1
 * when that does not fit int64 (or batch or max_seq is negative) */
int64_t plan_kv_bytes(const plan_rank *r, const model_config *c, int max_seq, int batch);
/* even split of n items into parts: part i gets [*start, *start + *count) */
void plan_split(int n, int parts, int i, int *start, int *count);

#endif
