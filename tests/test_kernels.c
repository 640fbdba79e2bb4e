/* each optimised kernel against its plain reference twin on random inputs (max |diff| and
 * normalised error reported); exits 1 on any mismatch */
#include <cblas.h>
#include <math.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "affinity.h"
#include "kernels.h"
#include "kernels/internal.h"
#include "util.h"

static unsigned long long rng = 88172645463325252ULL;
static float frand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (float)((rng >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}
static void fill(float *x, long n) {
    for (long i = 0; i < n; i++) x[i] = frand();
}

static int failures = 0, passes = 0;

/* normalised mean squared error (ggml's test-backend-ops measure) and max abs diff */
static void compare(const char *what, const float *got, const float *want, long n, double tol) {
    double num = 0, den = 0, mx = 0;
    for (long i = 0; i < n; i++) {
        double d = (double)got[i] - want[i];
        num += d * d;
        den += (double)want[i] * want[i];
        if (fabs(d) > mx || isnan(d)) mx = isnan(d) ? INFINITY : fabs(d);
    }
    double nmse = den > 0 ? num / den : num;
    int ok = nmse <= tol && isfinite(mx);
    printf("%-44s nmse %.2e  max|diff| %.2e  %s\n", what, nmse, mx, ok ? "ok" : "FAIL");
    if (ok) passes++;
    else failures++;
}

static void test_matmul(int n, int i, int o) {
    float *x = calloc((size_t)n * i, sizeof(float)), *w = malloc(sizeof(float) * o * i);
    float *a = malloc(sizeof(float) * n * o), *b = malloc(sizeof(float) * n * o);
    fill(x, (long)n * i);
    fill(w, (long)o * i);
    kern_matmul(a, x, w, n, i, o);
    kern_matmul_ref(b, x, w, n, i, o);
    char name[64];
    snprintf(name, sizeof(name), "matmul %s n=%d in=%d out=%d", kern_matmul_impl(), n, i, o);
    compare(name, a, b, (long)n * o, 1e-10);
    free(x), free(w), free(a), free(b);
}

/* batch invariance: a row's result is bit-identical whatever else shares its batch (alone, or at
 * any position of a larger batch), so completions do not depend on the batch size */
static void test_row_invariance(int i, int o, int n) {
    float *x = calloc((size_t)n * i, sizeof(float)), *w = malloc(sizeof(float) * o * i);
    float *all = malloc(sizeof(float) * n * o), *one = malloc(sizeof(float) * o);
    float *xi = calloc((size_t)i, sizeof(float));
    fill(x, (long)n * i);
    fill(w, (long)o * i);
    kern_matmul(all, x, w, n, i, o);
    int same = 1;
    for (int r = 0; r < n; r++) {
        memcpy(xi, x + (long)r * i, sizeof(float) * i);
        kern_matmul(one, xi, w, 1, i, o);
        if (memcmp(one, all + (long)r * o, sizeof(float) * o) != 0) same = 0;
    }
    printf("matmul %4dx%-4d %-7s n=%-3d rows bit-identical alone/batched %s\n", o, i, kern_matmul_impl(), n,
           same ? "ok" : "FAIL");
    same ? passes++ : failures++;
    free(x), free(w), free(all), free(one), free(xi);
}

/* batch invariance on model-sized shapes: rows alone (n = 1) with `alone_threads` threads, then
 * batches of n rows for every n of ns with `batch_threads`, each batch taking the rows from a
 * different offset (row (off + j) % nmax at position j) so that rows land at varied positions;
 * every batched row must be bit-identical to the same row alone */
static void test_invariance_big(int o, int i, const int *ns, int nns, int alone_threads, int batch_threads) {
    int nmax = 0;
    for (int k = 0; k < nns; k++) nmax = ns[k] > nmax ? ns[k] : nmax;
    float *w = xmalloc(sizeof(float) * (size_t)o * i), *x = xmalloc(sizeof(float) * (size_t)nmax * i);
    float *alone = xmalloc(sizeof(float) * (size_t)nmax * o), *out = xmalloc(sizeof(float) * (size_t)nmax * o);
    float *xb = xmalloc(sizeof(float) * (size_t)nmax * i);
    fill(w, (long)o * i);
    fill(x, (long)nmax * i);
    openblas_set_num_threads(alone_threads);
    for (int r = 0; r < nmax; r++) kern_matmul(alone + (size_t)r * o, x + (size_t)r * i, w, 1, i, o);
    openblas_set_num_threads(batch_threads);
    int same = 1, rows = 0;
    char detail[160] = "";
    for (int k = 0; k < nns && same; k++) {
        const int n = ns[k], off = (37 * k + 11) % nmax;
        for (int j = 0; j < n; j++) memcpy(xb + (size_t)j * i, x + (size_t)((off + j) % nmax) * i, sizeof(float) * i);
        kern_matmul(out, xb, w, n, i, o);
        for (int j = 0; j < n && same; j++, rows++) {
            const int r = (off + j) % nmax;
            if (memcmp(out + (size_t)j * o, alone + (size_t)r * o, sizeof(float) * o) != 0) {
                same = 0;
                snprintf(detail, sizeof(detail), " (n=%d: row %d at position %d differs)", n, r, j);
            }
        }
    }
    printf("matmul %5dx%-5d %-7s threads %d/%d: %4d batched rows == alone%s %s\n", o, i, kern_matmul_impl(),
           alone_threads, batch_threads, rows, detail, same ? "ok" : "FAIL");
    same ? passes++ : failures++;
    free(w), free(x), free(alone), free(out), free(xb);
}

/* the same rows through other thread counts and bindings give the same bits: the process bound
 * with hwloc (affinity_bind, as the runner does) to one core or to all, then
 * openblas_set_num_threads(k) for several k (more threads than cores included) */
static void test_threads_and_binding(int o, int i, int n) {
    float *w = xmalloc(sizeof(float) * (size_t)o * i), *x = xmalloc(sizeof(float) * (size_t)n * i);
    float *want = xmalloc(sizeof(float) * (size_t)n * o), *got = xmalloc(sizeof(float) * (size_t)n * o);
    fill(w, (long)o * i);
    fill(x, (long)n * i);
    openblas_set_num_threads(1);
    kern_matmul(want, x, w, n, i, o);
    int same = 1, runs = 0;
    affinity_info info;
    char sets[2][128];
    cpu_set_t start;
    const int restore = sched_getaffinity(0, sizeof(start), &start) == 0;
    for (int bind = 0; bind < 2; bind++) {
        /* node rank 0 of 2 ranks: a share of the cores (one core on 2 cores); of 1 rank: them all
         * (affinity_bind keeps an existing binding, so the starting one is put back first) */
        if (restore) sched_setaffinity(0, sizeof(start), &start);
        affinity_bind(0, bind == 0 ? 2 : 1, &info);
        snprintf(sets[bind], sizeof(sets[bind]), "%s", info.cpuset);
        for (int k = 1; k <= 4; k++) {
            openblas_set_num_threads(k);
            for (int nn = 1; nn <= n; nn += n - 1) {
                memset(got, 0, sizeof(float) * (size_t)n * o);
                kern_matmul(got, x, w, nn, i, o);
                if (memcmp(got, want, sizeof(float) * (size_t)nn * o) != 0) same = 0;
                runs++;
            }
        }
    }
    if (restore) sched_setaffinity(0, sizeof(start), &start);
    printf("matmul %5dx%-5d %-7s %d runs: bound to PUs %s, then %s, 1-4 threads, bit-identical %s\n", o, i,
           kern_matmul_impl(), runs, sets[0], sets[1], same ? "ok" : "FAIL");
    same ? passes++ : failures++;
    free(w), free(x), free(want), free(got);
}

static void test_attention(int n_heads, int n_kv, int kv_mul, int head0, int kv_head0, int hs, int seq, int slots,
                           kern_dtype kvt, int window) {
    kern_attn_dims d = {n_heads, n_kv, hs, seq, kv_mul, head0, kv_head0, kvt, window};
    int n = 5;
    int pos[5] = {0, 3, seq - 1, 7, 1}, slot[5] = {0, slots - 1, 1 % slots, 0, slots - 1};
    long kvsize = (long)slots * seq * n_kv * hs;
    float *kc = malloc(sizeof(float) * kvsize), *vc = malloc(sizeof(float) * kvsize);
    float *q = malloc(sizeof(float) * n * n_heads * hs);
    float *a = malloc(sizeof(float) * n * n_heads * hs), *b = malloc(sizeof(float) * n * n_heads * hs);
    float *att = malloc(sizeof(float) * n_heads * seq);
    fill(kc, kvsize);
    fill(vc, kvsize);
    fill(q, (long)n * n_heads * hs);
    /* the caches in their type, written as the model writes them */
    if (kvt == KERN_BF16) {
        uint16_t *kb = (uint16_t *)kc, *vb = (uint16_t *)vc;
        for (long k = 0; k < kvsize; k++) kb[k] = kern_f32_to_bf16(kc[k]), vb[k] = kern_f32_to_bf16(vc[k]);
    }
    kern_attention(a, q, kc, vc, pos, slot, n, &d, att);
    kern_attention_ref(b, q, kc, vc, pos, slot, n, &d, att);
    char name[128];
    snprintf(name, sizeof(name), "attention %s %s heads=%d kv=%d mul=%d off=%d/%d hs=%d win=%d", kern_attention_impl(),
             kern_dtype_name(kvt), n_heads, n_kv, kv_mul, head0, kv_head0, hs, window);
    compare(name, a, b, (long)n * n_heads * hs, 1e-10);
    /* batch invariance: each token alone gives the bits it gave in the batch */
    int same = 1;
    for (int t = 0; t < n; t++) {
        kern_attention(b, q + (long)t * n_heads * hs, kc, vc, pos + t, slot + t, 1, &d, att);
        if (memcmp(b, a + (long)t * n_heads * hs, sizeof(float) * n_heads * hs) != 0) same = 0;
    }
    printf("%-44s tokens alone == batched %s\n", name, same ? "ok" : "FAIL");
    same ? passes++ : failures++;
    if (window > 0) { /* the window matters: the same positions without it give another result */
        kern_attn_dims full = d;
        full.window = 0;
        kern_attention_ref(b, q, kc, vc, pos, slot, n, &full, att);
        double diff = 0;
        for (long k = 0; k < (long)n * n_heads * hs; k++) diff = fmax(diff, fabs(a[k] - b[k]));
        printf("attention window=%d differs from full attention by %.3g (must be > 0): %s\n", window, diff,
               diff > 1e-3 ? "ok" : "FAIL");
        diff > 1e-3 ? passes++ : failures++;
    }
    free(kc), free(vc), free(q), free(a), free(b), free(att);
}

/* RoPE: pos 0 is the identity; norms are kept; pair j at position p turns by p * theta^(-2j/hs);
 * rotating by pos then by -pos restores the input (the round trip) */
static void test_rope(void) {
    int hs = 16, nh = 3, n = 4, pos[4] = {0, 1, 17, 1000}, neg[4] = {0, -1, -17, -1000};
    float inv[8], x[4 * 3 * 16], y[4 * 3 * 16], z[4 * 3 * 16];
    kern_rope_freqs(inv, hs, 10000.0f, 0, 1, 1, 4, 0);
    fill(x, n * nh * hs);
    memcpy(y, x, sizeof(x));
    kern_rope(y, pos, inv, n, nh, hs);
    double err = 0;
    for (int i = 0; i < nh * hs; i++) err = fmax(err, fabs(y[i] - x[i])); /* pos 0 */
    for (int t = 0; t < n; t++)
        for (int p = 0; p < nh * hs; p += 2) {
            float *a = x + t * nh * hs + p, *b = y + t * nh * hs + p;
            err = fmax(err, fabs(sqrtf(a[0] * a[0] + a[1] * a[1]) - sqrtf(b[0] * b[0] + b[1] * b[1])));
        }
    /* the angle of pair j at position p is p * theta^(-2j/hs) */
    float a = atan2f(y[1 * nh * hs + 2 * 3 + 1], y[1 * nh * hs + 2 * 3]) - atan2f(x[1 * nh * hs + 7], x[1 * nh * hs + 6]);
    float want = 1.0f * powf(10000.0f, -6.0f / 16.0f);
    a = remainderf(a - want, 2 * (float)M_PI);
    err = fmax(err, fabs(a));
    int ok = err < 1e-4;
    printf("%-44s max err %.2e  %s\n", "rope identity/norm/angle", err, ok ? "ok" : "FAIL");
    ok ? passes++ : failures++;
    /* round trip: (-p) * f is exactly -(p * f), so only the products' rounding is left (observed
     * 1.2e-7 on values in [-1, 1]); 1e-5 bounds it, a wrong sign or angle is off by ~1 */
    memcpy(z, y, sizeof(y));
    kern_rope(z, neg, inv, n, nh, hs);
    double rt = 0;
    for (int i = 0; i < n * nh * hs; i++) rt = fmax(rt, fabs(z[i] - x[i]));
    ok = rt < 1e-5;
    printf("%-44s max err %.2e  %s\n", "rope round trip (pos, then -pos)", rt, ok ? "ok" : "FAIL");
    ok ? passes++ : failures++;
}

/* Meta's apply_scaling (Llama 3.1 reference code) restated in double: wavelengths below
 * orig / high kept, above orig / low divided by factor, between them a linear blend by
 * smooth = (orig / wavelength - low) / (high - low) */
static double llama3_freq_ref(int j, int hs, double theta, double factor, double low, double high, double orig) {
    double f = pow(theta, -2.0 * j / hs), wavelen = 2 * M_PI / f;
    if (wavelen < orig / high) return f;
    if (wavelen > orig / low) return f / factor;
    double smooth = (orig / wavelen - low) / (high - low);
    return (1 - smooth) * f / factor + smooth * f;
}

/* Llama 3 scaling against the formula, frequency by frequency: Llama 3.1's own settings (head size
 * 128, theta 500000, factor 8, low 1, high 4, 8192) and a second set; each has frequencies in all
 * three regions (counted), so a swapped blend or a wrong boundary fails */
static void test_rope_llama3(void) {
    const struct {
        int hs;
        float theta, factor, low, high;
        int orig;
    } cases[] = {{128, 500000.0f, 8.0f, 1.0f, 4.0f, 8192}, {64, 10000.0f, 32.0f, 2.0f, 8.0f, 1024}};
    for (int k = 0; k < 2; k++) {
        const int hs = cases[k].hs;
        float got[64];
        kern_rope_freqs(got, hs, cases[k].theta, 1, cases[k].factor, cases[k].low, cases[k].high, cases[k].orig);
        double worst = 0;
        int kept = 0, divided = 0, blended = 0;
        for (int j = 0; j < hs / 2; j++) {
            double f = pow(cases[k].theta, -2.0 * j / hs);
            double want = llama3_freq_ref(j, hs, cases[k].theta, cases[k].factor, cases[k].low, cases[k].high, cases[k].orig);
            worst = fmax(worst, fabs(got[j] - want) / want);
            if (want == f) kept++;
            else if (fabs(want - f / cases[k].factor) < 1e-12 * f) divided++;
            else blended++;
        }
        int ok = worst < 1e-5 && kept && divided && blended;
        char name[128];
        snprintf(name, sizeof(name), "rope llama3 hs=%d: %d kept, %d blended, %d divided", hs, kept, blended, divided);
        printf("%-44s max rel err %.2e  %s\n", name, worst, ok ? "ok" : "FAIL");
        ok ? passes++ : failures++;
    }
}

/* the row operations' softmax against a double-precision one: lengths of whole vectors, masked
 * tails and one element; scores spread over e^-100..1 (the tail underflows to 0), a -inf score
 * (a masked position) gives exactly 0; every row sums to 1 */
static void test_softmax_rows(void) {
    const char *impls[] = {"generic", "avx512"};
    const int lens[] = {1, 5, 16, 17, 128, 301};
    float x[301], x0[301];
    for (int k = 0; k < 2; k++) {
        kern_matmul_use(impls[k]);
        if (strcmp(kern_attention_impl(), impls[k]) != 0) {
            printf("SKIP (part): softmax %s: not supported by this CPU\n", impls[k]);
            continue;
        }
        double worst = 0;
        int bad = 0;
        for (int li = 0; li < 6; li++) {
            const int n = lens[li];
            for (int i = 0; i < n; i++) x0[i] = 20.0f - 120.0f * (float)((i * 37) % n) / n + 0.01f * i;
            if (n > 3) x0[3] = -INFINITY;
            memcpy(x, x0, sizeof(float) * n);
            kern_rows_get()->softmax(x, n);
            float mx = x0[0]; /* e^ of the difference in f32, as the kernels take it */
            double sum = 0, got = 0;
            for (int i = 1; i < n; i++) mx = x0[i] > mx ? x0[i] : mx;
            for (int i = 0; i < n; i++) sum += exp((double)(x0[i] - mx));
            for (int i = 0; i < n; i++) {
                const double want = exp((double)(x0[i] - mx)) / sum;
                got += x[i];
                if (want == 0 ? x[i] != 0 : want > 1e-30 && fabs(x[i] - want) > 4e-7 * want) {
                    if (!bad) printf("  n %d element %d: got %.9g want %.9g\n", n, i, x[i], want);
                    bad++;
                }
                if (want > 1e-30 && fabs(x[i] - want) / want > worst) worst = fabs(x[i] - want) / want;
            }
            if (fabs(got - 1) > 1e-5) bad++, printf("  n %d: sums to %.9g\n", n, got);
        }
        printf("softmax %-8s lengths 1-301: worst relative error %.2e (bound 4e-7)  %s\n", impls[k], worst,
               bad ? "FAIL" : "ok");
        bad ? failures++ : passes++;
    }
    kern_matmul_use(NULL);
}

/* every implementation's SwiGLU (the AVX-512 code has its own e^x) within a few ulp of the exact
 * value, element by element, over [-110, 110] and the edges (overflow of e^-g, zeros, NaN) */
static void test_swiglu_rows(void) {
    const char *impls[] = {"generic", "avx512"};
    enum { N = 20011 };
    float *g = xmalloc(sizeof(float) * N), *u = xmalloc(sizeof(float) * N);
    for (int k = 0; k < 2; k++) {
        kern_matmul_use(impls[k]);
        if (strcmp(kern_attention_impl(), impls[k]) != 0) {
            printf("SKIP (part): swiglu %s: not supported by this CPU\n", impls[k]);
            continue;
        }
        for (int i = 0; i < N; i++) g[i] = -110.0f + 220.0f * i / (N - 1), u[i] = 1.0f + (i % 7) * 0.25f;
        const float edge[] = {0.0f, -0.0f, 1e-30f, -1e-30f, 88.7f, -88.7f, 89.0f, -89.0f, 104.0f, -104.0f, 1e30f, -1e30f};
        for (int e = 0; e < 12; e++) g[e * 1000 + 7] = edge[e];
        g[N - 2] = NAN;
        float *g0 = xmalloc(sizeof(float) * N);
        memcpy(g0, g, sizeof(float) * N);
        kern_swiglu(g + 1, u + 1, N - 1); /* an odd start and length: a masked last vector */
        double worst = 0;
        int bad = 0;
        for (int i = 1; i < N; i++) {
            const double gi = g0[i], want = gi / (1.0 + exp(-gi)) * u[i];
            if (i == N - 2) {
                bad += !isnan(g[i]);
                continue;
            }
            const double err = fabs(g[i] - want) / (fabs(want) > 1e-30 ? fabs(want) : 1e-30);
            if (!(err <= 4e-7) && !(fabs(want) < 1e-30 && fabs(g[i]) < 1e-30)) {
                if (!bad) printf("  element %d: g %.9g got %.9g want %.9g\n", i, gi, g[i], want);
                bad++;
            }
            if (err > worst && fabs(want) > 1e-30) worst = err;
        }
        free(g0);
        printf("swiglu %-8s %d elements: worst relative error %.2e (bound 4e-7)  %s\n", impls[k], N - 1, worst,
               bad ? "FAIL" : "ok");
        bad ? failures++ : passes++;
    }
    kern_matmul_use(NULL);
    free(g), free(u);
}

static void test_misc(void) {
    float x[6] = {1, 2, 3, -1, 0, 5}, w[3] = {1, 0.5f, 2}, o[6];
    kern_rmsnorm(o, x, w, 2, 3, 0);
    float r0 = sqrtf((1 + 4 + 9) / 3.0f), r1 = sqrtf((1 + 0 + 25) / 3.0f);
    float want[6] = {1 / r0, 0.5f * 2 / r0, 2 * 3 / r0, -1 / r1, 0, 2 * 5 / r1};
    compare("rmsnorm (two rows, by hand)", o, want, 6, 1e-12);
    float g[3] = {0, 1, -2}, u[3] = {3, 2, 1}, sw[3];
    for (int i = 0; i < 3; i++) sw[i] = g[i] / (1 + expf(-g[i])) * u[i];
    kern_swiglu(g, u, 3);
    compare("swiglu", g, sw, 3, 1e-12);
    test_swiglu_rows();
    test_softmax_rows();
    float l[4] = {1, 2, 3, 4};
    float lsm = kern_log_softmax_at(l, 4, 2);
    float want_l = 3 - logf(expf(1) + expf(2) + expf(3) + expf(4));
    compare("log_softmax", &lsm, &want_l, 1, 1e-12);
}


/* ---- weights of other types ---- */

/* the (o, i) block at w (f32 rows ld apart: a column block of a wider matrix when ld > i) made
 * into dtype dt, malloc'ed (free with wmat_free): f32 and plain bf16 copied out packed; q8, and
 * bf16 for AMX, packed for the kernels straight from the converted wider rows, as the model packs
 * a tp rank's share */
static kern_wmat wmat_make_ld(kern_dtype dt, const float *w, int o, int i, int ld) {
    kern_wmat m = {dt, NULL, 0, 0};
    const long n = (long)o * ld;
    if (dt == KERN_F32) {
        m.packed = kern_packs(dt, i); /* packed for AVX-512, as the model does on such a CPU */
        float *d = xmalloc(m.packed ? kern_packed_bytes(dt, o, i) : sizeof(float) * (size_t)o * i);
        if (m.packed) kern_pack(d, w, dt, ld, o, i);
        else
            for (int r = 0; r < o; r++) memcpy(d + (long)r * i, w + (long)r * ld, sizeof(float) * i);
        m.data = d;
    } else if (dt == KERN_BF16) {
        uint16_t *h = xmalloc(sizeof(uint16_t) * n);
        for (long k = 0; k < n; k++) h[k] = kern_f32_to_bf16(k % ld < i ? w[k] : 0.0f);
        m.packed = kern_packs(dt, i); /* packed for AMX or vdpbf16ps, as the model does on such a CPU */
        uint16_t *d = xmalloc(m.packed ? kern_packed_bytes(dt, o, i) : sizeof(uint16_t) * (size_t)o * i);
        if (m.packed) kern_pack(d, h, dt, ld, o, i);
        else
            for (int r = 0; r < o; r++) memcpy(d + (long)r * i, h + (long)r * ld, sizeof(uint16_t) * i);
        m.data = d;
        free(h);
    } else {
        int8_t *q = xmalloc(n);
        float *sc = xmalloc(sizeof(float) * (n / KERN_Q8_BLOCK));
        for (int r = 0; r < o; r++) kern_quantize_q8(q + (long)r * ld, sc + (long)r * (ld / KERN_Q8_BLOCK), w + (long)r * ld, i);
        void *d = xmalloc(kern_q8_packed_bytes(o, i));
        kern_q8_pack(d, q, sc, ld, o, i);
        m.data = d;
        free(q), free(sc);
    }
    return m;
}

static kern_wmat wmat_make(kern_dtype dt, const float *w, int o, int i) { return wmat_make_ld(dt, w, o, i, i); }

static void wmat_free(kern_wmat *m) {
    free((void *)m->data);
}

/* kern_matmul_w against its twin (tight: the same math, summed in another order), and against
 * the f32 product (loose: the type's own rounding; catches a twin wrong in the same way) */
static void test_matmul_w(kern_dtype dt, int n, int i, int o) {
    float *x = xmalloc(sizeof(float) * (size_t)n * i), *w = xmalloc(sizeof(float) * (size_t)o * i);
    float *a = xmalloc(sizeof(float) * (size_t)n * o), *b = xmalloc(sizeof(float) * (size_t)n * o);
    float *f = xmalloc(sizeof(float) * (size_t)n * o);
    fill(x, (long)n * i);
    fill(w, (long)o * i);
    kern_wmat m = wmat_make(dt, w, o, i);
    kern_matmul_w(a, x, &m, n, i, o);
    kern_matmul_w_ref(b, x, &m, n, i, o);
    kern_matmul_ref(f, x, w, n, i, o);
    char name[80];
    snprintf(name, sizeof(name), "matmul_w %s %s n=%d in=%d out=%d", kern_dtype_name(dt), kern_matmul_impl_w(dt), n,
             i, o);
    compare(name, a, b, (long)n * o, 1e-10);
    snprintf(name, sizeof(name), "  %s against f32 weights", kern_dtype_name(dt));
    compare(name, a, f, (long)n * o, dt == KERN_BF16 ? 1e-4 : dt == KERN_Q8 ? 1e-3 : 1e-10);
    wmat_free(&m);
    free(x), free(w), free(a), free(b), free(f);
}

/* kern_matmul_w_multi gives each matrix kern_matmul_w's bits: outputs of 48, 16 and o3 columns (the
 * pool's units span two matrices), and of 20 first (no multiple of 16: one at a time) */
static void test_multi_w(kern_dtype dt, int n, int i, int o3) {
    const int os[2][3] = {{48, 16, o3}, {20, 48, o3}};
    for (int v = 0; v < 2; v++) {
        kern_wmat m[3];
        float *x = xmalloc(sizeof(float) * (size_t)n * i), *outs[3], *one[3];
        fill(x, (long)n * i);
        int same = 1;
        for (int k = 0; k < 3; k++) {
            float *w = xmalloc(sizeof(float) * (size_t)os[v][k] * i);
            fill(w, (long)os[v][k] * i);
            for (long e = 0; e < (long)os[v][k] * i; e++) w[e] *= 1.0f + k; /* three different matrices */
            m[k] = wmat_make(dt, w, os[v][k], i);
            free(w);
            outs[k] = xmalloc(sizeof(float) * (size_t)n * os[v][k]), one[k] = xmalloc(sizeof(float) * (size_t)n * os[v][k]);
            kern_matmul_w(one[k], x, &m[k], n, i, os[v][k]);
        }
        const kern_wmat *const ws[3] = {&m[0], &m[1], &m[2]};
        kern_matmul_w_multi(3, outs, ws, os[v], x, n, i);
        for (int k = 0; k < 3; k++) {
            if (memcmp(outs[k], one[k], sizeof(float) * (size_t)n * os[v][k]) != 0) same = 0;
            wmat_free(&m[k]);
            free(outs[k]), free(one[k]);
        }
        free(x);
        printf("matmul_w_multi %s %s n=%d in=%d out=%d+%d+%d == one by one %s\n", kern_dtype_name(dt),
               kern_matmul_impl_w(dt), n, i, os[v][0], os[v][1], os[v][2], same ? "ok" : "FAIL");
        same ? passes++ : failures++;
    }
}

/* a column block [c0, c0 + i) of a wider (o, I) matrix used in place (w.ld = I, as a tp rank's
 * share of wo or w2 in the file's mapping; q8: packed from the wider matrix) gives the same bits
 * as the block copied out packed, and matches the twin on the strided matrix */
static void test_strided_w(kern_dtype dt, int n, int i, int o, int wide, int c0) {
    float *x = xmalloc(sizeof(float) * (size_t)n * i), *w = xmalloc(sizeof(float) * (size_t)o * wide);
    float *blk = xmalloc(sizeof(float) * (size_t)o * i);
    float *a = xmalloc(sizeof(float) * (size_t)n * o), *b = xmalloc(sizeof(float) * (size_t)n * o);
    float *r = xmalloc(sizeof(float) * (size_t)n * o);
    fill(x, (long)n * i);
    fill(w, (long)o * wide);
    for (int c = 0; c < o; c++) memcpy(blk + (size_t)c * i, w + (size_t)c * wide + c0, sizeof(float) * i);
    kern_wmat full = wmat_make(dt, w, o, wide), packed = wmat_make(dt, blk, o, i);
    const size_t es = kern_dtype_size(dt);
    kern_wmat view = {dt, (const char *)full.data + (size_t)c0 * es, wide, 0};
    if (dt == KERN_Q8 || full.packed) { /* no strided packed layout: the block packed from the wider rows */
        wmat_free(&full);
        full = view = wmat_make_ld(dt, w + c0, o, i, wide);
    }
    kern_matmul_w(a, x, &view, n, i, o);
    kern_matmul_w(b, x, &packed, n, i, o);
    kern_matmul_w_ref(r, x, &view, n, i, o);
    const int same = memcmp(a, b, sizeof(float) * (size_t)n * o) == 0;
    printf("matmul_w %-4s %-8s strided n=%d %dx%d of %d at %d: %s\n", kern_dtype_name(dt), kern_matmul_impl_w(dt), n,
           o, i, wide, c0, same ? "== packed ok" : "!= packed FAIL");
    same ? passes++ : failures++;
    char name[80];
    snprintf(name, sizeof(name), "  strided %s against its twin", kern_dtype_name(dt));
    compare(name, a, r, (long)n * o, 1e-10);
    wmat_free(&full), wmat_free(&packed);
    free(x), free(w), free(blk), free(a), free(b), free(r);
}

/* batch invariance of kern_matmul_w: rows alone (alone_threads) and in batches of every n of ns
 * (batch_threads) at varied positions give the same bits */
static void test_invariance_w(kern_dtype dt, int o, int i, const int *ns, int nns, int alone_threads,
                              int batch_threads) {
    int nmax = 0;
    for (int k = 0; k < nns; k++) nmax = ns[k] > nmax ? ns[k] : nmax;
    float *w = xmalloc(sizeof(float) * (size_t)o * i), *x = xmalloc(sizeof(float) * (size_t)nmax * i);
    float *alone = xmalloc(sizeof(float) * (size_t)nmax * o), *out = xmalloc(sizeof(float) * (size_t)nmax * o);
    float *xb = xmalloc(sizeof(float) * (size_t)nmax * i);
    fill(w, (long)o * i);
    fill(x, (long)nmax * i);
    kern_wmat m = wmat_make(dt, w, o, i);
    openblas_set_num_threads(alone_threads);
    for (int r = 0; r < nmax; r++) kern_matmul_w(alone + (size_t)r * o, x + (size_t)r * i, &m, 1, i, o);
    openblas_set_num_threads(batch_threads);
    int same = 1, rows = 0;
    char detail[160] = "";
    for (int k = 0; k < nns && same; k++) {
        const int n = ns[k], off = (37 * k + 11) % nmax;
        for (int j = 0; j < n; j++) memcpy(xb + (size_t)j * i, x + (size_t)((off + j) % nmax) * i, sizeof(float) * i);
        kern_matmul_w(out, xb, &m, n, i, o);
        for (int j = 0; j < n && same; j++, rows++) {
            const int r = (off + j) % nmax;
            if (memcmp(out + (size_t)j * o, alone + (size_t)r * o, sizeof(float) * o) != 0) {
                same = 0;
                snprintf(detail, sizeof(detail), " (n=%d: row %d at position %d differs)", n, r, j);
            }
        }
    }
    printf("matmul_w %-4s %5dx%-5d %-10s threads %d/%d: %4d batched rows == alone%s %s\n", kern_dtype_name(dt), o, i,
           kern_matmul_impl_w(dt), alone_threads, batch_threads, rows, detail, same ? "ok" : "FAIL");
    same ? passes++ : failures++;
    wmat_free(&m);
    free(w), free(x), free(alone), free(out), free(xb);
}

/* conversions on values worked out by hand */
static void test_conversions(void) {
    int ok = 1;
    /* bf16: exact values stay; ties go to even; 1 + 2^-8 (a tie) -> 1, 1 + 3 * 2^-8 -> 1 + 2^-6,
     * 1 + 2^-7 + 2^-10 -> 1 + 2^-7 */
    const float xs[] = {1.0f, -2.5f, 1.0f + 1.0f / 256, 1.0f + 3.0f / 256, 1.0f + 1.0f / 128 + 1.0f / 1024, 0.0f};
    const float want[] = {1.0f, -2.5f, 1.0f, 1.0f + 1.0f / 64, 1.0f + 1.0f / 128, 0.0f};
    for (int k = 0; k < 6; k++)
        if (kern_bf16_to_f32(kern_f32_to_bf16(xs[k])) != want[k]) ok = 0;
    if (!isnan(kern_bf16_to_f32(kern_f32_to_bf16(NAN))) || !isinf(kern_bf16_to_f32(kern_f32_to_bf16(INFINITY))))
        ok = 0;
    /* q8: block max 31.75 -> scale 0.25, values * 4 rounded to even; an all-zero block -> scale 0 */
    float x[64] = {0};
    x[0] = 31.75f, x[1] = -1.0f, x[2] = 0.125f, x[3] = 0.375f, x[4] = -0.625f;
    int8_t q[64];
    float sc[2];
    kern_quantize_q8(q, sc, x, 64);
    if (sc[0] != 0.25f || q[0] != 127 || q[1] != -4 || q[2] != 0 || q[3] != 2 || q[4] != -2 || sc[1] != 0.0f ||
        q[40] != 0)
        ok = 0;
    /* kern_store_rows: f32 copies, bf16 rounds */
    float src[3] = {1.0f, 1.0f + 3.0f / 256, -7.0f}, dst[3];
    uint16_t h[3];
    kern_store_rows(dst, KERN_F32, src, 3);
    kern_store_rows(h, KERN_BF16, src, 3);
    for (int k = 0; k < 3; k++)
        if (dst[k] != src[k] || kern_bf16_to_f32(h[k]) != kern_bf16_to_f32(kern_f32_to_bf16(src[k]))) ok = 0;
    printf("%-44s %s\n", "bf16/q8 conversions, store_rows", ok ? "ok" : "FAIL");
    ok ? passes++ : failures++;
}

/* the activations' preparation of every vector row-ops implementation this CPU runs against the
 * portable code (the twin computed first), bit for bit: random rows with ties, denormals, zeros,
 * infinities and NaNs for bf16; for q8 random blocks, an all-zero one, tiny and huge ones (no NaN:
 * a NaN's int8 is undefined) */
static void test_prep(void) {
    const char *impls[] = {"avx512"};
    enum { N = 4096 + 13 };
    static float x[N], xb[N];
    static uint16_t h[N], hw[N];
    static int8_t q[N], qw[N];
    static float sc[N / 32], scw[N / 32];
    static int32_t c[N / 4], cw[N / 4];
    const float specials[] = {0.0f, -0.0f, 1e-40f, -3e-39f, 1.0f + 1.0f / 256, 1.0f + 3.0f / 256, INFINITY,
                              -INFINITY, NAN, -NAN, 3.4e38f, 1e-45f};
    for (int k = 0; k < N; k++) x[k] = frand() * (k % 7 == 0 ? 1e-30f : k % 11 == 0 ? 1e30f : 3.0f);
    for (int k = 0; k < 12; k++) x[97 * k] = specials[k];
    memcpy(xb, x, sizeof(xb));
    kern_bf16_rows_generic(h, xb, N);
    for (int k = 0; k < N; k++) x[k] = isfinite(x[k]) ? x[k] : 1.5f; /* q8: finite only */
    for (int k = 64; k < 96; k++) x[k] = 0.0f;                          /* an all-zero block */
    for (int k = 128; k < 160; k++) x[k] = frand() * 1e-38f;             /* denormal products */
    const int nq = N / 32 * 32;
    kern_quantize_q8(q, sc, x, nq);
    kern_q8_corrections_generic(c, q, nq);
    for (int m = 0; m < (int)(sizeof(impls) / sizeof(impls[0])); m++) {
        if (kern_matmul_use(impls[m]) != 0 || strcmp(kern_attention_impl(), impls[m]) != 0) {
            printf("SKIP (part): row operations %s: not supported by this CPU\n", impls[m]);
            continue;
        }
        const kern_row_ops *ops = kern_rows_get();
        int ok = 1;
        for (int len = N; len >= N - 13; len -= 13) { /* whole vectors and a masked tail */
            memset(hw, 0xff, sizeof(hw));
            ops->bf16_rows(hw, xb, len);
            if (memcmp(hw, h, sizeof(uint16_t) * len) != 0 || (len < N && hw[len] != 0xffff)) ok = 0;
        }
        ops->q8_rows(qw, scw, x, nq);
        ops->q8_corr(cw, qw, nq);
        if (memcmp(qw, q, nq) || memcmp(scw, sc, sizeof(float) * (nq / 32)) || memcmp(cw, c, sizeof(int32_t) * (nq / 4)))
            ok = 0;
        printf("%-44s %s\n", ops->name, ok ? "row preparation bit for bit: ok" : "row preparation: FAIL");
        ok ? passes++ : failures++;
    }
    kern_matmul_use(NULL);
}

/* the AVX-512 bf16 code's two ways (vdpbf16ps, and f32 FMAs on the widened operands) give the
 * same bits: which one runs is a matter of speed, measured per CPU (kern_bf16_fma_faster) */
static void test_bf16_fma(void) {
    if (kern_matmul_use("avx512") != 0 || strcmp(kern_matmul_impl_w(KERN_BF16), "avx512") != 0) {
        printf("SKIP (part): matmul_w bf16 avx512: not supported by this CPU\n");
        kern_matmul_use(NULL);
        return;
    }
    /* two token rows and more: a single one takes the vdpbf16ps tiles either way */
    const int shapes[][3] = {{2, 64, 172}, {7, 96, 99}, {37, 4093, 300}, {150, 1056, 200}, {70, 12288, 100}};
    for (int s = 0; s < 5; s++) {
        const int n = shapes[s][0], i = shapes[s][1], o = shapes[s][2];
        float *x = xmalloc(sizeof(float) * (size_t)n * i), *w = xmalloc(sizeof(float) * (size_t)o * i);
        float *a = xmalloc(sizeof(float) * (size_t)n * o), *b = xmalloc(sizeof(float) * (size_t)n * o);
        fill(x, (long)n * i);
        fill(w, (long)o * i);
        kern_wmat m = wmat_make(KERN_BF16, w, o, i);
        kern_bf16_fma_use(0);
        kern_matmul_w(a, x, &m, n, i, o);
        kern_bf16_fma_use(1);
        kern_matmul_w(b, x, &m, n, i, o);
        const int same = memcmp(a, b, sizeof(float) * (size_t)n * o) == 0;
        printf("matmul_w bf16 avx512 n=%d %dx%d: vdpbf16ps %s widened FMAs\n", n, o, i, same ? "==" : "!= FAIL");
        same ? passes++ : failures++;
        wmat_free(&m);
        free(x), free(w), free(a), free(b);
    }
    kern_bf16_fma_use(-1);
    kern_matmul_use(NULL);
}

/* every implementation of weights of type dt this CPU runs, against the twin and for invariance */
static void test_dtype(kern_dtype dt) {
    const char *impls[] = {"generic", "avx2", "avx512", "amx"};
    const int ns[] = {1, 7, 8, 9, 37, 150};
    for (int k = 0; k < 4; k++) {
        if (!strcmp(impls[k], "amx") && dt != KERN_BF16) continue; /* AMX: bf16 only */
        kern_matmul_use(impls[k]);
        if (strcmp(kern_matmul_impl_w(dt), impls[k]) != 0) {
            printf("SKIP (part): matmul_w %s %s: not supported by this CPU\n", kern_dtype_name(dt), impls[k]);
            continue;
        }
        test_matmul_w(dt, 1, 64, 172);
        test_matmul_w(dt, 7, 96, 172);
        test_matmul_w(dt, 33, 160, 64);
        test_matmul_w(dt, 48, 96, 172); /* q8: 6-row tiles, odd blocks, a partial group */
        test_matmul_w(dt, 128, 256, 512);
        test_matmul_w(dt, 5, 4096, 99);
        test_matmul_w(dt, 300, 1024, 1100);
        if (dt == KERN_BF16) test_matmul_w(dt, 5, 4093, 99); /* a partial last vector */
        test_multi_w(dt, 1, 256, 172);
        test_multi_w(dt, 37, 512, 1000);
        test_strided_w(dt, 1, 256, 96, 512, 256);
        test_strided_w(dt, 21, 512, 200, 1536, 512);
        test_invariance_w(dt, 1024, 1024, ns, 6, 1, 2);
        if (strcmp(impls[k], "generic") != 0) {
            test_invariance_w(dt, 4099, 4096, ns, 6, 2, 1);
            test_invariance_w(dt, 2048, 8192, ns, 6, 1, 2);
            test_invariance_w(dt, 200, 12289 / KERN_Q8_BLOCK * KERN_Q8_BLOCK, ns, 6, 2, 1); /* rows past L2: k block by k block */
            test_invariance_w(dt, 300, 1056, ns, 6, 1, 2); /* a last single q8 block (1056 = 16 x 64 + 32) */
            /* batches of 9 to 64 rows, a partial last k block, 7 and 8 tiles of token rows, one row in
             * the last (BP_PAIRS_N / Q8_PAIRS_N; q8 at 64 rows past Q8_XL2) */
            const int ns_batch[] = {57, 64, 13};
            test_invariance_w(dt, 300, 5632, ns_batch, 3, 1, 2);
        }
    }
    kern_matmul_use(NULL);
}

int main(void) {
    const int threads = openblas_get_num_threads();
    const int ns[] = {1, 7, 8, 9, 37, 150}, ns_small[] = {1, 9, 37};
    /* every implementation this CPU runs (the default last, for the rest of the tests) */
    const char *impls[] = {"generic", "avx2", "avx512"};
    for (int m = 0; m < 3; m++) {
        if (kern_matmul_use(impls[m]) != 0 || strcmp(kern_matmul_impl(), impls[m]) != 0) {
            printf("SKIP (part): matmul %s: not supported by this CPU\n", impls[m]);
            continue;
        }
        test_matmul(1, 64, 172);
        test_matmul(7, 64, 172);
        test_matmul(33, 172, 64);
        test_matmul(128, 256, 512);
        test_matmul(5, 4093, 99); /* a partial last vector, remainder tiles */
        test_matmul(300, 1000, 1100); /* several token chunks, k blocks */
        test_row_invariance(64, 172, 21);
        test_row_invariance(64, 32, 21);
        test_row_invariance(512, 1024, 21);
        test_row_invariance(1024, 1024, 37);
        test_row_invariance(1024, 2816, 150);
        test_row_invariance(2816, 1024, 70);
        test_strided_w(KERN_F32, 1, 256, 96, 512, 256);
        test_strided_w(KERN_F32, 21, 512, 200, 1536, 512);
        test_strided_w(KERN_F32, 150, 1024, 300, 2048, 1024); /* k blocks, cache blocks */
        if (!strcmp(impls[m], "generic")) {
            test_invariance_big(1024, 4093, ns, 6, 1, 2);
            continue;
        }
        test_invariance_big(4096, 4096, ns, 6, 1, 2);
        test_invariance_big(4099, 4093, ns, 6, 2, 1); /* odd sizes: masked tails, remainder tiles */
    }
    kern_matmul_use(NULL);
    openblas_set_num_threads(threads);
    test_conversions();
    test_prep();
    test_dtype(KERN_F32); /* kern_matmul_w: packed f32 where the kernels take it */
    test_dtype(KERN_BF16);
    test_bf16_fma();
    test_dtype(KERN_Q8);
    openblas_set_num_threads(threads);
    test_invariance_big(14336, 4096, ns_small, 3, 1, 2);
    test_invariance_big(4096, 14336, ns_small, 3, 2, 1);
    for (int k = 0; k < 4; k++) { /* portable, then the default; f32 and bf16 caches */
        const kern_dtype kvt = k % 2 ? KERN_BF16 : KERN_F32;
        kern_matmul_use(k < 2 ? "generic" : NULL);
        test_attention(8, 4, 2, 0, 0, 8, 32, 3, kvt, 0);    /* GQA, whole model on one rank */
        test_attention(2, 1, 2, 4, 2, 8, 32, 2, kvt, 0);    /* a tp rank's share: heads 4-5, kv head 2 */
        test_attention(1, 1, 8, 3, 0, 16, 64, 1, kvt, 0);   /* replicated kv head (tp > n_kv_heads) */
        test_attention(4, 4, 1, 0, 0, 64, 128, 4, kvt, 0);  /* MHA, larger heads */
        test_attention(32, 8, 4, 0, 0, 64, 300, 2, kvt, 0); /* the 1.1B shape */
        test_attention(8, 2, 4, 0, 0, 100, 64, 2, kvt, 0);  /* a head size that is no multiple of 16 */
        test_attention(16, 2, 8, 0, 0, 128, 70, 2, kvt, 0); /* head size 128, 8 query heads a KV head */
        test_attention(12, 2, 6, 0, 0, 64, 40, 2, kvt, 0);  /* 6 a KV head: a partial group of 4 */
        test_attention(6, 2, 4, 2, 0, 64, 32, 2, kvt, 0);   /* a tp rank's share (heads 2-7) at head size 64;
                                                               position 31: 32 scores, two whole vectors */
        test_attention(24, 2, 12, 0, 0, 64, 48, 2, kvt, 0); /* 12 a KV head: groups of 8 and 4 */
        test_attention(8, 4, 2, 0, 0, 8, 32, 3, kvt, 4);    /* sliding window (Mistral) */
        test_attention(2, 1, 2, 4, 2, 8, 32, 2, kvt, 1);    /* a window of the token alone */
    }
    kern_matmul_use(NULL);
    test_rope();
    test_rope_llama3();
    test_misc();
    test_threads_and_binding(2816, 1024, 70); /* last: it rebinds the process */
    printf("%d passed, %d failed\n", passes, failures);
    return failures ? 1 : 0;
}
