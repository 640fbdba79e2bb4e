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

#endif
