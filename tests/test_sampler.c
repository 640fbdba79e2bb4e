/* the sampler on fixed logits: top_k, top_p and min_p keep exactly the right candidates (also on
 * a 32000-token vocabulary with ties, where top_k goes through the quickselect); the penalties
 * follow the README's arithmetic; with a fixed seed, sampled frequencies match the renormalised
 * kept distribution (chi-square below its 99.9% point, and above it against the distribution a
 * filter that keeps one token too many would give); greedy is the first argmax. Exits 1 on any
 * mismatch. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sampler.h"

static int failures = 0, passes = 0;

/* prints what, then the detail (printf format and arguments), then ok or FAIL */
static void check(int ok, const char *what, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    printf("%-62s ", what);
    vprintf(fmt, ap);
    printf("  %s\n", ok ? "ok" : "FAIL");
    va_end(ap);
    ok ? passes++ : failures++;
}

static sampler_params plain(float temperature) {
    sampler_params p = {temperature, 0, 1.0f, 0.0f, 1.0f, 0.0f, 0.0f};
    return p;
}

/* softmax(l / t) in double, written independently of the kernels */
static void softmax_ref(double *p, const float *l, int n, double t) {
    double mx = -INFINITY, s = 0;
    for (int i = 0; i < n; i++) mx = fmax(mx, l[i] / t);
    for (int i = 0; i < n; i++) s += p[i] = exp(l[i] / t - mx);
    for (int i = 0; i < n; i++) p[i] /= s;
}

/* indices in decreasing probability, ties by lower index */
static const double *order_p;
static int cmp_order(const void *a, const void *b) {
    int i = *(const int *)a, j = *(const int *)b;
    if (order_p[i] != order_p[j]) return order_p[i] > order_p[j] ? -1 : 1;
    return i - j;
}
static void order(int *idx, const double *p, int n) {
    for (int i = 0; i < n; i++) idx[i] = i;
    order_p = p;
    qsort(idx, (size_t)n, sizeof(int), cmp_order);
}

/* runs sampler_filter on a copy of l and compares the kept candidates with want[0..nwant) (in
 * order) and their probabilities with p (the full softmax) */
static void expect_kept(const char *what, const float *l, int n, const sampler_params *sp, const int *want,
                        int nwant, const double *p) {
    float *x = malloc(sizeof(float) * n);
    sampler_candidate *c = malloc(sizeof(*c) * n);
    memcpy(x, l, sizeof(float) * n);
    int keep = sampler_filter(x, n, sp, c);
    int same = keep == nwant;
    double perr = 0;
    for (int i = 0; same && i < keep; i++) {
        if (c[i].index != want[i]) same = 0;
        perr = fmax(perr, fabs(c[i].prob - p[c[i].index]) / p[c[i].index]);
    }
    char name[128];
    snprintf(name, sizeof(name), "%s: kept %d, want %d", what, keep, nwant);
    /* float softmax over the vocabulary: observed 7e-8 (12 tokens) and 3e-5 (32000); 1e-4 bounds both */
    check(same && perr < 1e-4, name, "same set and order, max rel prob err %.1e", perr);
    if (!same) {
        printf("   kept:");
        for (int i = 0; i < keep && i < 20; i++) printf(" %d", c[i].index);
        printf("\n   want:");
        for (int i = 0; i < nwant && i < 20; i++) printf(" %d", want[i]);
        printf("\n");
    }
    free(x), free(c);
}

/* the 99.9% point of chi-square with df degrees of freedom (Wilson-Hilferty) */
static double chi2_crit(int df) {
    double a = 2.0 / (9.0 * df);
    return df * pow(1 - a + 3.090 * sqrt(a), 3);
}

/* draws `draws` tokens with sampler_sample from l under sp (seeded) and compares the counts with
 * the distribution q (n; zero outside the kept set): every draw inside the set, chi-square below
 * the 99.9% point. Then the same counts against `wrong` (or skipped when NULL) must be above it:
 * the bound is tight enough to catch a filter that keeps a wrong set. */
static void expect_freqs(const char *what, const float *l, int n, const sampler_params *sp, const double *q,
                         const double *wrong, int draws, uint64_t seed) {
    float *x = malloc(sizeof(float) * n);
    sampler_candidate *c = malloc(sizeof(*c) * n);
    long *count = calloc((size_t)n, sizeof(long));
    uint64_t rng = seed;
    for (int d = 0; d < draws; d++) {
        memcpy(x, l, sizeof(float) * n);
        count[sampler_sample(x, n, sp, &rng, c)]++;
    }
    long outside = 0;
    double chi2 = 0, chi2_wrong = 0;
    int df = -1, df_wrong = -1;
    for (int i = 0; i < n; i++) {
        if (q[i] == 0) outside += count[i];
        else {
            double e = q[i] * draws;
            chi2 += (count[i] - e) * (count[i] - e) / e;
            df++;
        }
        if (wrong && wrong[i] > 0) {
            double e = wrong[i] * draws;
            chi2_wrong += (count[i] - e) * (count[i] - e) / e;
            df_wrong++;
        }
    }
    char name[128];
    snprintf(name, sizeof(name), "%s: %d draws, %ld outside the set", what, draws, outside);
    double crit = chi2_crit(df > 0 ? df : 1);
    check(outside == 0 && (df == 0 || chi2 < crit), name, "chi2 %6.2f < %6.2f", chi2, crit);
    if (wrong) {
        double cw = chi2_crit(df_wrong);
        snprintf(name, sizeof(name), "%s: against one token too many", what);
        check(chi2_wrong > cw, name, "chi2 %6.0f > %6.2f", chi2_wrong, cw);
    }
    free(x), free(c), free(count);
}

/* q = p restricted to idx[0..k), renormalised */
static void restrict_to(double *q, const double *p, int n, const int *idx, int k) {
    double s = 0;
    memset(q, 0, sizeof(double) * n);
    for (int i = 0; i < k; i++) s += p[idx[i]];
    for (int i = 0; i < k; i++) q[idx[i]] = p[idx[i]] / s;
}

enum { N = 12 };
/* distinct logits, no two probabilities close */
static const float L[N] = {1.0f, 3.0f, 0.5f, 2.5f, -1.0f, 2.0f, 0.0f, 1.5f, -0.5f, 2.2f, -2.0f, 0.8f};

static void test_filters(void) {
    double p[N], q[N], w[N];
    int idx[N];
    softmax_ref(p, L, N, 1.0);
    order(idx, p, N); /* 1 3 9 5 7 0 11 2 6 8 4 10 */

    /* top_k: exactly the k most probable */
    for (int k = 1; k <= 6; k++) {
        sampler_params sp = plain(1.0f);
        sp.top_k = k;
        char name[64];
        snprintf(name, sizeof(name), "top_k=%d", k);
        expect_kept(name, L, N, &sp, idx, k, p);
    }
    sampler_params sp = plain(1.0f);
    sp.top_k = 4;
    restrict_to(q, p, N, idx, 4);
    restrict_to(w, p, N, idx, 5);
    expect_freqs("top_k=4 frequencies", L, N, &sp, q, w, 20000, 12345);

    /* top_p: the shortest prefix whose mass reaches p; p halfway between two prefix sums */
    double cum[N];
    for (int i = 0; i < N; i++) cum[i] = (i ? cum[i - 1] : 0) + p[idx[i]];
    for (int k = 1; k <= 7; k += 2) {
        sp = plain(1.0f);
        sp.top_p = (float)(0.5 * ((k > 1 ? cum[k - 2] : 0) + cum[k - 1]));
        char name[64];
        snprintf(name, sizeof(name), "top_p=%.4f", sp.top_p);
        expect_kept(name, L, N, &sp, idx, k, p);
    }
    sp = plain(1.0f);
    sp.top_p = (float)(0.5 * (cum[3] + cum[4])); /* keeps 5 */
    restrict_to(q, p, N, idx, 5);
    restrict_to(w, p, N, idx, 6);
    expect_freqs("top_p (5 kept) frequencies", L, N, &sp, q, w, 20000, 777);

    /* min_p: every token with p >= min_p * p_max; min_p halfway between two ratios */
    for (int k = 1; k <= 8; k += 3) {
        sp = plain(1.0f);
        sp.min_p = (float)(0.5 * (p[idx[k - 1]] + p[idx[k]]) / p[idx[0]]);
        char name[64];
        snprintf(name, sizeof(name), "min_p=%.4f", sp.min_p);
        expect_kept(name, L, N, &sp, idx, k, p);
    }
    sp = plain(1.0f);
    sp.min_p = (float)(0.5 * (p[idx[5]] + p[idx[6]]) / p[idx[0]]); /* keeps 6 */
    restrict_to(q, p, N, idx, 6);
    restrict_to(w, p, N, idx, 7);
    expect_freqs("min_p (6 kept) frequencies", L, N, &sp, q, w, 20000, 4242);

    /* temperature: softmax(l / t) over everything */
    double pt[N];
    softmax_ref(pt, L, N, 0.6);
    sp = plain(0.6f);
    int all[N];
    order(all, pt, N);
    expect_kept("temperature 0.6, no filter", L, N, &sp, all, N, pt);
    expect_freqs("temperature 0.6 frequencies", L, N, &sp, pt, NULL, 30000, 99);

    /* together: min_p, then top_k, then top_p; no token outside the top k whatever top_p says */
    sp = plain(1.0f);
    sp.top_k = 3;
    sp.top_p = 0.999f;
    sp.min_p = 0.01f;
    expect_kept("top_k=3 with top_p=0.999 and min_p=0.01", L, N, &sp, idx, 3, p);
    sp.top_k = 6;
    sp.min_p = (float)(0.5 * (p[idx[3]] + p[idx[4]]) / p[idx[0]]);
    expect_kept("min_p (4 kept) under top_k=6", L, N, &sp, idx, 4, p);
    /* top_p shares the mass left by top_k (renormalised): halfway between the top 3's prefix
     * shares of 1 and 2 keeps 2 (as a share of the whole row's mass it would keep all 3) */
    sp = plain(1.0f);
    sp.top_k = 3;
    const double m3 = p[idx[0]] + p[idx[1]] + p[idx[2]];
    sp.top_p = (float)(0.5 * (p[idx[0]] / m3 + (p[idx[0]] + p[idx[1]]) / m3));
    expect_kept("top_p of top_k=3's renormalised mass (2 kept)", L, N, &sp, idx, 2, p);

    /* greedy: the first maximum */
    float g[5] = {0.5f, 2.0f, -1.0f, 2.0f, 1.0f};
    sp = plain(0.0f);
    uint64_t rng = 1;
    sampler_candidate c[5];
    int t = sampler_sample(g, 5, &sp, &rng, c);
    check(t == 1, "greedy: first argmax", "token %d, want 1", t);
}

/* a 32000-token vocabulary with many tied logits: top_k through the quickselect */
static void test_quickselect(void) {
    enum { V = 32000 };
    float *l = malloc(sizeof(float) * V);
    double *p = malloc(sizeof(double) * V), *q = malloc(sizeof(double) * V), *w = malloc(sizeof(double) * V);
    int *idx = malloc(sizeof(int) * V);
    uint64_t s = 88172645463325252ULL;
    for (int i = 0; i < V; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        /* 0.05 steps in [-6, 6): ~130 copies of each value, so ties everywhere */
        l[i] = (float)((int)(s % 240) - 120) * 0.05f;
    }
    l[31999] = 7.0f, l[17] = 6.5f, l[20000] = 6.5f; /* distinct top few, one tie among them */
    softmax_ref(p, l, V, 1.0);
    order(idx, p, V);
    const int ks[] = {1, 2, 3, 5, 64, 1000, 31999};
    for (int j = 0; j < (int)(sizeof(ks) / sizeof(ks[0])); j++) {
        sampler_params sp = plain(1.0f);
        sp.top_k = ks[j];
        char name[64];
        snprintf(name, sizeof(name), "vocab %d, top_k=%d (quickselect)", V, ks[j]);
        expect_kept(name, l, V, &sp, idx, ks[j], p);
    }
    sampler_params sp = plain(1.0f);
    sp.top_k = 5;
    restrict_to(q, p, V, idx, 5);
    restrict_to(w, p, V, idx, 6);
    expect_freqs("vocab 32000, top_k=5 frequencies", l, V, &sp, q, w, 6000, 31337);
    free(l), free(p), free(q), free(w), free(idx);
}

/* README: repetition_penalty divides positive and multiplies negative logits of tokens seen in
 * prompt + completion (once each); frequency_penalty subtracts penalty x count and
 * presence_penalty subtracts penalty once, over the completion only; repetition first */
static void test_penalties(void) {
    const float l0[7] = {2.0f, -1.0f, 0.5f, 3.0f, -2.0f, 1.0f, -0.5f};
    const int ids[7] = {0, 1, 6, 3, 3, 1, 4}; /* prompt 0 1 6; completion 3 3 1 4 */
    int seen[7] = {0};
    struct {
        const char *what;
        float rep, freq, pres;
        float want[7];
    } cases[] = {
        {"repetition_penalty 1.5", 1.5f, 0, 0,
         {2.0f / 1.5f, -1.0f * 1.5f, 0.5f, 3.0f / 1.5f, -2.0f * 1.5f, 1.0f, -0.5f * 1.5f}},
        {"frequency_penalty 0.4", 1.0f, 0.4f, 0, {2.0f, -1.0f - 0.4f, 0.5f, 3.0f - 0.8f, -2.0f - 0.4f, 1.0f, -0.5f}},
        {"presence_penalty 0.3", 1.0f, 0, 0.3f, {2.0f, -1.0f - 0.3f, 0.5f, 3.0f - 0.3f, -2.0f - 0.3f, 1.0f, -0.5f}},
        {"all three", 1.5f, 0.4f, 0.3f,
         {2.0f / 1.5f, -1.5f - 0.7f, 0.5f, 2.0f - 1.1f, -3.0f - 0.7f, 1.0f, -0.75f}},
        {"all off", 1.0f, 0, 0, {2.0f, -1.0f, 0.5f, 3.0f, -2.0f, 1.0f, -0.5f}},
    };
    for (int k = 0; k < (int)(sizeof(cases) / sizeof(cases[0])); k++) {
        sampler_params sp = plain(1.0f);
        sp.repetition_penalty = cases[k].rep;
        sp.frequency_penalty = cases[k].freq;
        sp.presence_penalty = cases[k].pres;
        float x[7];
        memcpy(x, l0, sizeof(x));
        sampler_penalize(x, &sp, ids, 3, 7, seen);
        double err = 0;
        int clean = 1;
        for (int i = 0; i < 7; i++) {
            err = fmax(err, fabs(x[i] - cases[k].want[i]));
            if (seen[i]) clean = 0;
        }
        char name[96];
        snprintf(name, sizeof(name), "penalties: %s (seen returned zeroed: %s)", cases[k].what, clean ? "yes" : "no");
        check(err < 1e-6 && clean, name, "max |diff| %.1e", err);
    }
}

/* the RNG: seeds per request are stable, 53-bit and differ by id; draws are uniform in [0, 1) */
static void test_rng(void) {
    uint64_t a = sampler_seed_for(42, "req-1"), b = sampler_seed_for(42, "req-2"), a2 = sampler_seed_for(42, "req-1");
    check(a == a2 && a != b && a < (1ULL << 53) && b < (1ULL << 53) && sampler_seed_for(43, "req-1") != a,
          "seed_for: stable, per id and job seed, 53 bits", "seed %llu", (unsigned long long)a);
    uint64_t r = a;
    long bins[10] = {0};
    int bad = 0;
    for (int i = 0; i < 100000; i++) {
        float u = sampler_random(&r);
        if (!(u >= 0.0f && u < 1.0f)) bad = 1;
        else bins[(int)(u * 10)]++;
    }
    double chi2 = 0;
    for (int i = 0; i < 10; i++) chi2 += (bins[i] - 10000.0) * (bins[i] - 10000.0) / 10000.0;
    check(!bad && chi2 < chi2_crit(9), "random: 100000 draws in [0, 1), 10 bins uniform", "chi2 %6.2f < %6.2f", chi2,
          chi2_crit(9));
}

/* numerical extremes (issue 10): a sensible token or SAMPLER_NON_FINITE, never a NaN draw or a
 * read outside the candidates. Each case: sampler_sample on a copy of the row, over many seeds. */
static int sample_row(const float *l, int n, const sampler_params *sp, uint64_t seed, uint64_t *rng_out) {
    float x[64];
    sampler_candidate c[64];
    memcpy(x, l, sizeof(float) * n);
    uint64_t rng = seed;
    int t = sampler_sample(x, n, sp, &rng, c);
    if (rng_out) *rng_out = rng;
    return t;
}

/* every one of `seeds` draws gives token want (or, want -2: any token in [0, n)) */
static void expect_always(const char *what, const float *l, int n, const sampler_params *sp, int want) {
    int bad = -99, ok = 1;
    for (uint64_t seed = 1; seed <= 300 && ok; seed++) {
        int t = sample_row(l, n, sp, seed * 2654435761ULL, NULL);
        ok = want == -2 ? t >= 0 && t < n : t == want;
        if (!ok) bad = t;
    }
    if (want == -2) check(ok, what, ok ? "every draw in [0, %d)" : "a draw gave %d", ok ? n : bad);
    else check(ok, what, ok ? "every draw %d" : "a draw gave %d", ok ? want : bad);
}

static void test_extremes(void) {
    const float l[6] = {0.5f, 2.0f, -1.0f, 1.99f, 2.0f, -3.0f}; /* argmax 1 (tied with 4: first) */
    sampler_params sp = plain(1e-6f);
    uint64_t rng;
    int t = sample_row(l, 6, &sp, 77, &rng);
    check(t == 1 && rng == 77, "temperature 1e-6: greedy (first argmax, RNG untouched)", "token %d", t);
    sp = plain(1e-30f);
    expect_always("temperature 1e-30: greedy", l, 6, &sp, 1);
    sp = plain(SAMPLER_GREEDY_BELOW);
    sp.top_k = 0;
    int seen1 = 0, seen4 = 0, other = 0;
    for (uint64_t seed = 1; seed <= 400; seed++) {
        int k = sample_row(l, 6, &sp, seed * 7919, NULL);
        seen1 += k == 1, seen4 += k == 4, other += k != 1 && k != 4;
    }
    check(seen1 > 100 && seen4 > 100 && !other, "temperature 1e-5: samples, only the two tied maxima",
          "1: %d, 4: %d, other: %d", seen1, seen4, other);
    sp = plain(100.0f);
    int hist[6] = {0};
    for (uint64_t seed = 1; seed <= 600; seed++) {
        int k = sample_row(l, 6, &sp, seed * 104729, NULL);
        if (k >= 0 && k < 6) hist[k]++;
    }
    int low = hist[0];
    for (int i = 1; i < 6; i++) low = hist[i] < low ? hist[i] : low;
    check(low > 60, "temperature 100: near uniform over all 6", "fewest draws of a token %d of 600", low);
    sp = plain(1.0f);
    sp.top_p = 1e-6f;
    expect_always("top_p 1e-6: the top token only", l, 6, &sp, 1);
    sp = plain(1.0f);
    sp.min_p = 1.0f;
    const float l2[6] = {0.5f, 2.5f, -1.0f, 1.99f, 2.0f, -3.0f};
    expect_always("min_p 1: the top token only", l2, 6, &sp, 1);
    sp.min_p = 1.0f, sp.top_k = 1, sp.top_p = 1e-6f;
    expect_always("min_p 1, top_k 1, top_p 1e-6 together", l2, 6, &sp, 1);

    float one[6] = {-INFINITY, -INFINITY, -INFINITY, -4.0f, -INFINITY, -INFINITY};
    const float temps[4] = {0.0f, 1.0f, 100.0f, 1e-5f};
    for (int i = 0; i < 4; i++) {
        sp = plain(temps[i]);
        char name[96];
        snprintf(name, sizeof(name), "every logit -inf but one, temperature %g", temps[i]);
        expect_always(name, one, 6, &sp, 3);
    }
    sp = plain(1.0f);
    sp.top_k = 3, sp.top_p = 0.5f, sp.min_p = 0.5f;
    expect_always("every logit -inf but one, with top_k, top_p, min_p", one, 6, &sp, 3);

    float bad[6];
    const struct {
        const char *what;
        int at;
        float v;
    } cases[3] = {{"a NaN logit", 4, NAN}, {"a +inf logit", 0, INFINITY}, {"every logit -inf", -1, -INFINITY}};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 2; i++) {
            memcpy(bad, l, sizeof(bad));
            for (int j = 0; j < 6; j++)
                if (cases[k].at < 0 || cases[k].at == j) bad[j] = cases[k].v;
            sp = plain(i ? 0.8f : 0.0f);
            t = sample_row(bad, 6, &sp, 5, &rng);
            char name[96];
            snprintf(name, sizeof(name), "%s (%s): SAMPLER_NON_FINITE", cases[k].what, i ? "sampled" : "greedy");
            check(t == SAMPLER_NON_FINITE && rng == 5, name, "token %d", t);
        }
    /* finite logits whose quotient by a small temperature overflows: refused, not NaN */
    const float huge[3] = {3e38f, 1e38f, 0.0f};
    sp = plain(1e-4f);
    t = sample_row(huge, 3, &sp, 5, NULL);
    check(t == SAMPLER_NON_FINITE, "logits 3e38 / temperature 1e-4 overflow: SAMPLER_NON_FINITE", "token %d", t);
    sp = plain(0.0f);
    t = sample_row(huge, 3, &sp, 5, NULL);
    check(t == 0, "logits 3e38, greedy: the argmax", "token %d", t);

    /* the penalties at their limits (repetition 100 and 1e-3, frequency and presence +-2) */
    const int ids[5] = {1, 4, 1, 3, 1};
    const float rp[2] = {100.0f, 1e-3f}, fp[2] = {2.0f, -2.0f};
    for (int i = 0; i < 2; i++) {
        float x[6];
        int seen[6] = {0};
        memcpy(x, l, sizeof(x));
        sp = plain(0.8f);
        sp.repetition_penalty = rp[i], sp.frequency_penalty = fp[i], sp.presence_penalty = fp[i];
        sampler_penalize(x, &sp, ids, 2, 5, seen);
        char name[96];
        snprintf(name, sizeof(name), "penalties repetition %g, frequency and presence %g", rp[i], fp[i]);
        expect_always(name, x, 6, &sp, -2);
    }
    /* sampler_draw with nothing to draw from */
    sp = plain(1.0f);
    rng = 9;
    sampler_candidate none[1];
    t = sampler_draw(none, 0, &sp, &rng);
    check(t == SAMPLER_NON_FINITE, "sampler_draw of 0 candidates: SAMPLER_NON_FINITE", "token %d", t);
}

int main(void) {
    test_filters();
    test_quickselect();
    test_penalties();
    test_rng();
    test_extremes();
    printf("%d passed, %d failed\n", passes, failures);
    return failures ? 1 : 0;
}
