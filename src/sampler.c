#include "sampler.h"

#include <math.h>
#include <stdlib.h>

#include "kernels.h"

static uint64_t splitmix64(uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

uint64_t sampler_seed_for(uint64_t job_seed, const char *custom_id) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a */
    for (const unsigned char *s = (const unsigned char *)custom_id; *s; s++) h = (h ^ *s) * 1099511628211ULL;
    /* 53 bits: the seed is written to the output record, and JSON readers hold numbers as doubles */
    uint64_t s = splitmix64(job_seed ^ splitmix64(h)) & ((1ULL << 53) - 1);
    return s ? s : 1;
}

float sampler_random(uint64_t *state) {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    return (float)((*state * 0x2545F4914F6CDD1DULL) >> 40) / 16777216.0f;
}

int sampler_is_greedy(const sampler_params *p) { return !(p->temperature >= SAMPLER_GREEDY_BELOW); }

int sampler_argmax(const float *logits, int n) {
    int best = 0;
    for (int i = 1; i < n; i++)
        if (logits[i] > logits[best]) best = i;
    return best;
}

static int cmp_candidate(const void *a, const void *b) {
    const sampler_candidate *x = a, *y = b;
    if (x->prob > y->prob) return -1;
    if (x->prob < y->prob) return 1;
    return x->index - y->index; /* stable order for ties */
}

void sampler_penalize(float *logits, const sampler_params *p, const int *ids, int n_prompt, int n, int *seen) {
    if (p->repetition_penalty != 1.0f && p->repetition_penalty > 0.0f) {
        for (int i = 0; i < n; i++) {
            int t = ids[i];
            if (seen[t] & 1) continue;
            seen[t] |= 1;
            logits[t] = logits[t] > 0 ? logits[t] / p->repetition_penalty : logits[t] * p->repetition_penalty;
        }
    }
    if (p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f) {
        for (int i = n_prompt; i < n; i++) {
            int t = ids[i];
            logits[t] -= p->frequency_penalty;
            if (!(seen[t] & 2)) logits[t] -= p->presence_penalty;
            seen[t] |= 2;
        }
    }
    for (int i = 0; i < n; i++) seen[ids[i]] = 0;
}

/* c[0..k) gets the k best of c[0..n) (quickselect on prob, ties by index), unordered */
static void select_top(sampler_candidate *c, int n, int k) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        sampler_candidate pivot = c[(lo + hi) / 2];
        int i = lo, j = hi;
        while (i <= j) {
            while (cmp_candidate(&c[i], &pivot) < 0) i++;
            while (cmp_candidate(&c[j], &pivot) > 0) j--;
            if (i <= j) {
                sampler_candidate t = c[i];
                c[i++] = c[j];
                c[j--] = t;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

/* top_p over the candidates left by min_p and top_k (c sorted, keep of them), their mass taken
 * as the whole (renormalised, as Hugging Face's warpers, vLLM and llama.cpp do): the shortest
 * prefix whose share of that mass reaches top_p */
static int top_p_keep(const sampler_candidate *c, int keep, const sampler_params *p) {
    if (!(p->top_p > 0.0f && p->top_p < 1.0f)) return keep;
    float mass = 0.0f, cum = 0.0f;
    for (int i = 0; i < keep; i++) mass += c[i].prob;
    const float target = p->top_p * mass;
    for (int i = 0; i < keep; i++) {
        cum += c[i].prob;
        if (cum >= target) return i + 1;
    }
    return keep;
}

/* one of the keep candidates (keep > 0), each as likely as its probability among them */
static int draw_kept(const sampler_candidate *c, int keep, uint64_t *rng) {
    float total = 0.0f;
    for (int i = 0; i < keep; i++) total += c[i].prob;
    float r = sampler_random(rng) * total, cum = 0.0f;
    for (int i = 0; i < keep; i++) {
        cum += c[i].prob;
        if (r < cum) return c[i].index;
    }
    return c[keep - 1].index;
}

int sampler_filter(float *logits, int n, const sampler_params *p, sampler_candidate *c) {
    for (int i = 0; i < n; i++) logits[i] /= p->temperature;
    kern_softmax(logits, n);
    for (int i = 0; i < n; i++) {
        c[i].prob = logits[i];
        c[i].index = i;
    }
    int keep = n;
    if (p->min_p > 0.0f) { /* drop the tail before sorting: it can be most of the vocabulary */
        float mx = 0.0f;
        for (int i = 0; i < n; i++) mx = c[i].prob > mx ? c[i].prob : mx;
        int k = 0;
        for (int i = 0; i < n; i++)
            if (c[i].prob >= p->min_p * mx) c[k++] = c[i];
        keep = k;
    }
    if (p->top_k > 0 && p->top_k < keep) { /* partial selection: only the top k get sorted */
        int k = p->top_k;
        select_top(c, keep, k); /* c[0..k) holds the k best */
        keep = k;
    }
    qsort(c, (size_t)keep, sizeof(*c), cmp_candidate);
    return top_p_keep(c, keep, p);
}

int sampler_sample(float *logits, int n, const sampler_params *p, uint64_t *rng, sampler_candidate *c) {
    if (!sampler_shard_finite(logits, n)) return SAMPLER_NON_FINITE;
    const int best = sampler_argmax(logits, n);
    /* every logit -inf, or the largest / temperature past the float range: softmax would be NaN */
    if (!isfinite(sampler_is_greedy(p) ? logits[best] : logits[best] / p->temperature)) return SAMPLER_NON_FINITE;
    if (sampler_is_greedy(p)) return best;
    const int keep = sampler_filter(logits, n, p, c);
    if (keep <= 0) return SAMPLER_NON_FINITE;
    return draw_kept(c, keep, rng);
}

/* ------------------------------------------------------------------ vocab-parallel pieces */

void sampler_penalize_shard(float *logits, int vocab0, int n, const sampler_params *p, const int *ids, int n_prompt,
                            int n_ids, int *seen) {
    /* the loops of sampler_penalize, restricted to the shard's tokens (seen: (n) scratch) */
    if (p->repetition_penalty != 1.0f && p->repetition_penalty > 0.0f) {
        for (int i = 0; i < n_ids; i++) {
            int t = ids[i] - vocab0;
            if (t < 0 || t >= n || (seen[t] & 1)) continue;
            seen[t] |= 1;
            logits[t] = logits[t] > 0 ? logits[t] / p->repetition_penalty : logits[t] * p->repetition_penalty;
        }
    }
    if (p->frequency_penalty != 0.0f || p->presence_penalty != 0.0f) {
        for (int i = n_prompt; i < n_ids; i++) {
            int t = ids[i] - vocab0;
            if (t < 0 || t >= n) continue;
            logits[t] -= p->frequency_penalty;
            if (!(seen[t] & 2)) logits[t] -= p->presence_penalty;
            seen[t] |= 2;
        }
    }
    for (int i = 0; i < n_ids; i++) {
        int t = ids[i] - vocab0;
        if (t >= 0 && t < n) seen[t] = 0;
    }
}

int sampler_shard_finite(const float *logits, int n) {
    int bad = 0;
    for (int i = 0; i < n; i++) bad |= !(logits[i] < INFINITY); /* NaN or +inf; one compare, vectorised */
    return !bad;
}

float sampler_shard_argmax(const float *logits, int vocab0, int n, int *idx) {
    int best = sampler_argmax(logits, n);
    *idx = vocab0 + best;
    return logits[best];
}

float sampler_shard_scale(float *logits, int n, float temperature) {
    float m = -INFINITY;
    for (int i = 0; i < n; i++) {
        logits[i] /= temperature;
        if (logits[i] > m) m = logits[i];
    }
    return m;
}

float sampler_shard_exp_sum(float *logits, int n, float m, float s) {
    for (int i = 0; i < n; i++) { /* kern_softmax's loop */
        logits[i] = expf(logits[i] - m);
        s += logits[i];
    }
    return s;
}


int sampler_shard_candidates(float *logits, int vocab0, int n, float s, const sampler_params *p, sampler_candidate *c) {
    /* the row's largest probability is exp(0) / s: the maximum's exponent is exactly 1 */
    float mx = 1.0f / s, floor = p->min_p > 0.0f ? p->min_p * mx : 0.0f;
    int k = 0;
    for (int i = 0; i < n; i++) {
        float prob = logits[i] / s;
        if (p->min_p > 0.0f && !(prob >= floor)) continue;
        c[k].prob = prob;
        c[k++].index = vocab0 + i;
    }
    if (p->top_k > 0 && p->top_k < k) {
        select_top(c, k, p->top_k);
        k = p->top_k;
    }
    qsort(c, (size_t)k, sizeof(*c), cmp_candidate);
    return k;
}

int sampler_draw(sampler_candidate *c, int n, const sampler_params *p, uint64_t *rng) {
    if (n <= 0) return SAMPLER_NON_FINITE;
    int keep = n;
    qsort(c, (size_t)keep, sizeof(*c), cmp_candidate);
    if (p->top_k > 0 && p->top_k < keep) keep = p->top_k;
    keep = top_p_keep(c, keep, p);
    return draw_kept(c, keep, rng);
}
