/* sampler: turns one row of logits into a token. Runs on the sampling rank only, with an
 * explicit per-request RNG state, so a completion does not depend on the grid or the batch. */
#ifndef MPILLAMA_SAMPLER_H
#define MPILLAMA_SAMPLER_H

#include <stdint.h>

typedef struct {
    float temperature;         /* 0 = greedy (argmax) */
    int top_k;                 /* 0 = off */
    float top_p;               /* 1 = off */
    float min_p;               /* 0 = off: keep tokens with p >= min_p * p_max */
    float repetition_penalty;  /* 1 = off: logits of seen tokens divided (> 0) or multiplied (< 0) */
    float frequency_penalty;   /* 0 = off: minus penalty x count in the completion */
    float presence_penalty;    /* 0 = off: minus penalty once per token in the completion */
} sampler_params;

typedef struct {
    float prob;
    int index;
} sampler_candidate;

/* splitmix64 of the job seed and a hash of the request id: one independent stream per request;
 * 53 bits, so that JSON readers keep it exact */
uint64_t sampler_seed_for(uint64_t job_seed, const char *custom_id);
/* xorshift64*: uniform float in [0, 1) */
float sampler_random(uint64_t *state);
int sampler_argmax(const float *logits, int n);
/* applies the repetition penalty over prompt + completion and the frequency / presence
 * penalties over the completion (ids[n_prompt..n)), in place. seen: (vocab) zeroed scratch,
 * returned zeroed. */
void sampler_penalize(float *logits, const sampler_params *p, const int *ids, int n_prompt, int n, int *seen);
/* the candidates sampling draws from (temperature > 0): softmax of logits / temperature, then
 * min_p, top_k and top_p (over those probabilities, not renormalised). Writes the kept ones to
 * c[0..return) in decreasing probability (ties by index); overwrites logits. c: n candidates. */
int sampler_filter(float *logits, int n, const sampler_params *p, sampler_candidate *c);
/* samples from logits (n), which it overwrites: argmax when temperature <= 0, else one of
 * sampler_filter's candidates with probability proportional to its prob. scratch: n candidates. */
int sampler_sample(float *logits, int n, const sampler_params *p, uint64_t *rng, sampler_candidate *scratch);

/* ---- the same sampler over a vocabulary split into contiguous shards (vocab-parallel: each
 * tensor-parallel rank of the last stage holds logits [vocab0, vocab0 + n)). Every step does
 * exactly the float operations of sampler_penalize / sampler_sample on the same elements in the
 * same order, so the token and the RNG state are bit-identical to the whole-row sampler's:
 *   1. sampler_penalize_shard on each shard;
 *   2. greedy: sampler_shard_argmax, then the (value, smallest index) maximum over shards;
 *      otherwise sampler_shard_scale (logits / temperature, returns the shard's max), m = the
 *      maximum over shards;
 *   3. s = sampler_shard_exp_sum(shard, m, s) through the shards in vocabulary order (a chain
 *      that keeps the whole row's summation order), from 0;
 *   4. sampler_shard_candidates(shard, s): the shard's survivors of min-p, sorted, at most top_k;
 *   5. sampler_draw over all shards' candidates together. */
void sampler_penalize_shard(float *logits, int vocab0, int n, const sampler_params *p, const int *ids, int n_prompt,
                            int n_ids, int *seen);
/* first index of the largest logit (global index: vocab0 added) into *idx, its value returned */
float sampler_shard_argmax(const float *logits, int vocab0, int n, int *idx);
float sampler_shard_scale(float *logits, int n, float temperature);
float sampler_shard_exp_sum(float *logits, int n, float m, float s);
/* candidates (prob, global index) into c (n at most); returns their count */
int sampler_shard_candidates(float *logits, int vocab0, int n, float s, const sampler_params *p, sampler_candidate *c);
/* sorts the candidates (prob descending, index ascending), keeps top_k, then top_p, and draws
 * one with the RNG */
int sampler_draw(sampler_candidate *c, int n, const sampler_params *p, uint64_t *rng);

#endif
