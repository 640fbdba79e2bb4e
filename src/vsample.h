/* vsample: sampling on a replica's last stage, vocab-parallel. Each tensor-parallel rank of the
 * last stage holds its classifier rows' logits; it applies the penalties to its shard and reduces
 * it to what the sampler needs (its maximum; its candidates after min-p and top-k), so only those
 * cross between ranks and only the sampled token (and the RNG state) goes back to the scheduler.
 * The token is bit-identical to the whole-row sampler's (sampler.h's shard steps); score's
 * log-probs are computed from the row gathered on the stage's tp rank 0. */
#ifndef MPILLAMA_VSAMPLE_H
#define MPILLAMA_VSAMPLE_H

#include <stdint.h>

#include "dist.h"
#include "model.h"
#include "sampler.h"

/* a sequence starting in a KV slot, as the scheduler sends it down the pipeline with the
 * micro-batch that carries its first tokens: what the last stage needs to sample it */
typedef struct {
    int slot;
    int n_prompt;            /* the penalties split prompt / completion here */
    uint32_t rng_lo, rng_hi; /* the request's RNG state (its seed) */
    sampler_params sp;
    int logprobs;            /* generate: the sampled token's log-prob and this many top alternatives
                              * (at most VSAMPLE_TOP_MAX); -1: none */
    int copy_from, copy_len; /* copy_len > 0: every rank first copies the KV rows (and the last stage
                              * the token history) of positions [0, copy_len) from slot copy_from,
                              * which holds the same prompt (a sibling choice: a shared prefill) */
} vsample_seq;
#define VSAMPLE_SEQ_INTS ((int)(sizeof(vsample_seq) / sizeof(int)))

/* what goes back to the scheduler for one wanted row */
typedef struct {
    int token;               /* generate: the sampled token, or SAMPLER_NON_FINITE (NaN or inf logits) */
    float logprob;           /* score: log p(target); generate with logprobs: log p(token) */
    int n_top;               /* generate: top alternatives that follow the rows (vsample_top) */
} vsample_out;

/* log-probs are of the model's distribution: log-softmax of the raw logits (before penalties,
 * temperature and filters, as vLLM's default), over the whole vocabulary (a log-sum-exp across
 * the tp shards) */
#define VSAMPLE_TOP_MAX 20
typedef struct {
    int id;
    float logprob;
} vsample_top;

/* one tp rank's share of a row's log-probs: its shard's log-sum-exp parts and top alternatives */
typedef struct {
    double sum;              /* sum of exp(logit - max) over the shard */
    float max;
    int n;
    int id[VSAMPLE_TOP_MAX]; /* (n) the shard's largest logits, largest first (ties: smaller id) */
    float val[VSAMPLE_TOP_MAX];
} vsample_lp_part;

typedef struct {
    int vocab, vocab0, vocab_local, n_slots, seq_len, rows_max;
    int *hist;                  /* (n_slots, seq_len) the token at each position of each slot */
    vsample_seq *seqs;          /* (n_slots) each slot's sequence: parameters, RNG state */
    int *seen;                  /* (vocab_local) zeroed penalty scratch */
    float *val, *sum;           /* (rows_max) maxima, softmax sums */
    int *idx;                   /* (rows_max) */
    char *packed;               /* (pack_cap) this rank's candidates: counts (rows_max) then lists */
    char *gathered;             /* (tp * pack_cap) tp rank 0: every rank's packet */
    sampler_candidate *merge;   /* (vocab) tp rank 0 */
    float *logits;              /* score, tp rank 0: (rows_max, vocab) the gathered rows */
    int64_t pack_cap, gather_cap;
    float *raw;                 /* (rows_max, vocab_local) logits before the penalties, for log-probs (made
                                 * when first asked for) */
    vsample_lp_part *lp_parts;  /* (rows_max) this rank's */
    vsample_lp_part *lp_gathered; /* (tp, rows_max) tp rank 0: every rank's */
    float *lp_chosen;           /* (rows_max) the sampled tokens' logits */
    int *lp_tokens;             /* (rows_max) the sampled tokens, sent to every tp rank */
} vsample;

/* on the last stage's ranks: rows_max wanted rows per micro-batch at most; score: log-probs */
void vsample_init(vsample *v, const model *m, const dist_ctx *d, int rows_max, int score);
void vsample_free(vsample *v);
/* the micro-batch's new sequences (n of them; their copy_from history first), then its tokens
 * by slot and position (the penalties' history) */
void vsample_record(vsample *v, const vsample_seq *seqs, int n, const model_batch *b);
/* the bytes of the rows out[0..nw) and the top alternatives that follow them */
int64_t vsample_out_bytes(const vsample_out *out, int nw);
/* generate: samples the batch's wanted rows (their slots' parameters and RNG) from the
 * classifier's local logits; out (n_want) on the stage's tp rank 0, whose RNG states advance,
 * followed by the top alternatives of the rows that asked for log-probs (out[r].n_top each, row
 * by row, as vsample_top; out needs room for n_want x VSAMPLE_TOP_MAX of them).
 * Collective over the stage's tp ranks. Returns n_want. */
int vsample_sample(vsample *v, model *m, dist_ctx *d, const model_batch *b, vsample_out *out);
/* score: log p(want - 1) for each wanted row (want holds the target + 1); out on the stage's
 * tp rank 0. Returns n_want. */
int vsample_score(vsample *v, model *m, dist_ctx *d, const model_batch *b, vsample_out *out);

#endif
