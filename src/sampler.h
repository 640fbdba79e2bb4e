/* sampler: turns one row of logits into a token. Runs on the sampling rank only, with an
 * explicit per-request RNG state, so a completion does not depend on the grid or the batch. */
#ifndef MPILLAMA_SAMPLER_H
#define MPILLAMA_SAMPLER_H

#include <stdint.h>

typedef struct {
    float temperature;  /* 0 = greedy (argmax) */
    int top_k;          /* 0 = off */
    float top_p;        /* 1 = off */
} sampler_params;

typedef struct {
    float prob;
    int index;
} sampler_candidate;

/* splitmix64 of the job seed and a hash of the request id: one independent stream per request */
uint64_t sampler_seed_for(uint64_t job_seed, const char *custom_id);
/* xorshift64*: uniform float in [0, 1) */
float sampler_random(uint64_t *state);
int sampler_argmax(const float *logits, int n);
/* samples from logits (n), which it overwrites. scratch: n candidates. */
int sampler_sample(float *logits, int n, const sampler_params *p, uint64_t *rng, sampler_candidate *scratch);

#endif
