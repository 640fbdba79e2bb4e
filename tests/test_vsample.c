/* the vocab-parallel sampler (sampler_*_shard, sampler_draw) against the whole-row sampler: the
 * same token and RNG state for every split of the vocabulary, sampling parameters and seed */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "plan.h"
#include "sampler.h"

/* the shards' steps in order, as the last stage's tp ranks run them with the reductions done here */
static int sample_sharded(const float *row, int V, int tp, const sampler_params *p, const int *ids, int n_prompt,
                          int n_ids, uint64_t *rng) {
    float *x = malloc(sizeof(float) * V);
    int *seen = calloc((size_t)V, sizeof(int));
    sampler_candidate *c = malloc(sizeof(sampler_candidate) * V);
    memcpy(x, row, sizeof(float) * V);
    int off[64], cnt[64];
    for (int r = 0; r < tp; r++) plan_split(V, tp, r, &off[r], &cnt[r]);
    for (int r = 0; r < tp; r++) sampler_penalize_shard(x + off[r], off[r], cnt[r], p, ids, n_prompt, n_ids, seen);
    /* step 2 and the (value, smallest index) maximum over the shards (MPI_MAXLOC) */
    float m = 0.0f;
    int tok = 0;
    for (int r = 0; r < tp; r++) {
        int idx = off[r];
        float v;
        if (!sampler_shard_finite(x + off[r], cnt[r])) v = INFINITY, idx = -1;
        else if (sampler_is_greedy(p)) v = sampler_shard_argmax(x + off[r], off[r], cnt[r], &idx);
        else v = sampler_shard_scale(x + off[r], cnt[r], p->temperature);
        if (r == 0 || v > m || (v == m && idx < tok)) m = v, tok = idx;
    }
    if (!isfinite(m)) {
        tok = SAMPLER_NON_FINITE;
    } else if (!sampler_is_greedy(p)) {
        float s = 0.0f;
        for (int r = 0; r < tp; r++) s = sampler_shard_exp_sum(x + off[r], cnt[r], m, s);
        int n = 0;
        for (int r = 0; r < tp; r++) n += sampler_shard_candidates(x + off[r], off[r], cnt[r], s, p, c + n);
        tok = sampler_draw(c, n, p, rng);
    }
    free(x);
    free(seen);
    free(c);
    return tok;
}

static uint64_t lcg = 12345;
static float frand(void) {
    lcg = lcg * 6364136223846793005ULL + 1442695040888963407ULL;
    return (float)((lcg >> 40) & 0xffffff) / 16777216.0f;
}

int main(void) {
    const int V = 997;
    float *row = malloc(sizeof(float) * V), *ref = malloc(sizeof(float) * V);
    int *seen = calloc(V, sizeof(int)), ids[64];
    sampler_candidate *cand = malloc(sizeof(sampler_candidate) * V);
    int fails = 0, checks = 0;
    int non_finite = 0;
    for (int trial = 0; trial < 800; trial++) {
        for (int i = 0; i < V; i++) row[i] = (frand() - 0.5f) * 12.0f;
        if (trial % 5 == 0) /* ties: quantised logits */
            for (int i = 0; i < V; i++) row[i] = roundf(row[i]);
        int n_ids = 8 + trial % 40, n_prompt = n_ids / 2;
        for (int i = 0; i < n_ids; i++) ids[i] = (int)(frand() * V) % V;
        sampler_params p = {0.85f, 25, 0.9f, 0.0f, 1.0f, 0.0f, 0.0f};
        switch (trial % 8) {
        case 0: p.temperature = 0; break;
        case 1: p.top_k = 0; break;
        case 2: p.top_k = 0, p.top_p = 1.0f, p.min_p = (trial / 8) % 2 ? 0.1f : 0.0f; break;
        case 3: p.min_p = 0.05f, p.top_k = 0; break;
        case 4: p.repetition_penalty = 1.3f, p.frequency_penalty = 0.5f, p.presence_penalty = 0.3f, p.temperature = 1.2f; break;
        case 5: p.temperature = 0, p.repetition_penalty = 1.5f; break;
        case 6: p.top_k = 1; break;
        case 7: p.top_k = 200, p.top_p = 0.5f, p.min_p = 0.01f, p.temperature = 2.0f; break;
        }
        int at = -1, row_case = -1;
        if (trial >= 400) { /* numerical extremes: the rows and the parameters at their limits */
            at = (int)(frand() * V) % V;
            row_case = trial % 7;
            switch (row_case) {
            case 0: row[at] = NAN; break;
            case 1: row[at] = INFINITY; break;
            case 2: for (int i = 0; i < V; i++) row[i] = i == at ? row[i] : -INFINITY; break;
            case 3: for (int i = 0; i < V; i++) row[i] = -INFINITY; break;
            case 4: for (int i = 0; i < V; i++) row[i] *= 1e37f; break; /* / temperature overflows */
            case 5: for (int i = 0; i < V; i += 3) row[i] = -INFINITY; break;
            default: break;
            }
            const sampler_params ext[7] = {{1e-6f, 25, 0.9f, 0, 1, 0, 0},  {1e-5f, 0, 1, 0, 1, 0, 0},
                                           {100, 0, 1, 0, 1, 0, 0},        {1, 0, 1e-6f, 0, 1, 0, 0},
                                           {1, 0, 1, 1, 1, 0, 0},          {0.7f, 5, 0.9f, 0, 100, 2, 2},
                                           {0.7f, 0, 0.9f, 0.3f, 1e-3f, -2, -2}};
            p = ext[(trial / 7) % 7];
        }
        uint64_t seed = 1 + trial * 7919ULL;
        memcpy(ref, row, sizeof(float) * V);
        uint64_t rng_ref = seed;
        sampler_penalize(ref, &p, ids, n_prompt, n_ids, seen);
        int want = sampler_sample(ref, V, &p, &rng_ref, cand);
        non_finite += want == SAMPLER_NON_FINITE;
        /* a NaN, +inf or every logit -inf: refused; every logit -inf but one: that one */
        int expect = row_case == 2 ? at : row_case >= 0 && row_case <= 3 ? SAMPLER_NON_FINITE : want;
        if (want != expect) {
            fprintf(stderr, "FAIL: trial %d (row case %d): token %d, expected %d\n", trial, row_case, want, expect);
            fails++;
        }
        for (int tp = 1; tp <= 7; tp++) {
            uint64_t rng = seed;
            int got = sample_sharded(row, V, tp, &p, ids, n_prompt, n_ids, &rng);
            checks++;
            if (got != want || rng != rng_ref) {
                fprintf(stderr, "FAIL: trial %d tp %d: token %d (whole row %d), rng %s\n", trial, tp, got, want,
                        rng == rng_ref ? "same" : "differs");
                fails++;
            }
        }
    }
    printf("test_vsample: %d checks (%d rows SAMPLER_NON_FINITE on both paths), %d failures\n", checks, non_finite,
           fails);
    free(row);
    free(ref);
    free(seen);
    free(cand);
    return fails ? 1 : 0;
}
