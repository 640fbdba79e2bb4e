/* sampler: turns one row of logits into a token. Runs on the sampling rank only, with an
 * explicit per-request RNG state, so a completion does not depend on the grid or the batch. */
#ifndef MPILLAMA_SAMPLER_H
#define MPILLAMA_SAMPLER_H

#include <stdint.h>

typedef struct {
    float temperature;         /* 0 (or below SAMPLER_GREEDY_BELOW) = greedy (argmax) */
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

/* temperatures below this sample greedily, as vLLM does below 1e-5: logits divided by a smaller
 * one can overflow to inf, and the distribution is the argmax's anyway */
#define SAMPLER_GREEDY_BELOW 1e-5f
/* what the samplers return for a row they cannot sample: a logit that is NaN or +inf, every
 * logit -inf, or logits / temperature past the float range (never a token picked from NaNs) */
#define SAMPLER_NON_FINITE (-1)

/* 1 when p samples greedily (temperature 0, or below SAMPLER_GREEDY_BELOW) */
int sampler_is_greedy(const sampler_params *p);

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
/* samples from logits (n), which it overwrites: argmax when greedy (sampler_is_greedy), else one
 * of sampler_filter's candidates with probability proportional to its prob; SAMPLER_NON_FINITE
 * (the RNG untouched) when a logit is NaN or +inf or no logit / temperature is finite.
 * scratch: n candidates. */
int sampler_sample(float *logits, int n, const sampler_params *p, uint64_t *rng, sampler_candidate *scratch);

/* ---- the same sampler over a vocabulary split into contiguous shards (vocab-parallel: each
 * tensor-parallel rank of the last stage holds logits [vocab0, vocab0 + n)). Every step does
 * exactly the float operations of sampler_penalize / sampler_sample on the same elements in the
 * same order, so the token and the RNG state are bit-identical to the whole-row sampler's:
 *   1. sampler_penalize_shard on each shard;
 *   2. a shard where sampler_shard_finite fails contributes (+inf, index -1); greedy:
 *      sampler_shard_argmax, otherwise sampler_shard_scale (logits / temperature, returns the
 *      shard's max); m = the (value, smallest index) maximum over shards. m not finite: the row
 *      is SAMPLER_NON_FINITE (a NaN or +inf logit, every logit -inf, or an overflow); greedy:
 *      the token is m's index;
 *   3. s = sampler_shard_exp_sum(shard, m, s) through the shards in vocabulary order (a chain
 *      that keeps the whole row's summation order), from 0;
 *   4. sampler_shard_candidates(shard, s): the shard's survivors of min-p, sorted, at most top_k;
 *   5. sampler_draw over all shards' candidates together. */
void sampler_penalize_shard(float *logits, int vocab0, int n, const sampler_params *p, const int *ids, int n_prompt,
                            int n_ids, int *seen);
/* 1 when no logit is NaN or +inf (-inf is allowed: a token ruled out) */
int sampler_shard_finite(const float *logits, int n);
/* first index of the largest logit (global index: vocab0 added) into *idx, its value returned */
float sampler_shard_argmax(const float *logits, int vocab0, int n, int *idx);
float sampler_shard_scale(float *logits, int n, float temperature);
float sampler_shard_exp_sum(float *logits, int n, float m, float s);
/* candidates (prob, global index) into c (n at most); returns their count */
int sampler_shard_candidates(float *logits, int vocab0, int n, float s, const sampler_params *p, sampler_candidate *c);
/* sorts the candidates (prob descending, index ascending), keeps top_k, then top_p, and draws
 * one with the RNG; SAMPLER_NON_FINITE when n is 0 */
int sampler_draw(sampler_candidate *c, int n, const sampler_params *p, uint64_t *rng);

#endif
