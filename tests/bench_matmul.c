/* bench_matmul: kern_matmul_w in every weight type against this machine's limits (a benchmark,
 * not a test: it asserts nothing).
 *
 * Limits, measured first on the kernels' threads: memory read bandwidth (kern_read_gbs over
 * 512 MiB, best of 5), and per type the peak of a register-only loop of its widest multiply-add
 * (kern_peak_gops: f32 FMA, bf16 vdpbf16ps, int8 vpdpbusd). For each type, weight shape (o x i:
 * o outputs, i inputs) and token count n it prints the time per call (best of the repetitions,
 * and the median), GFLOP/s (2 n o i per call) and its fraction of the type's peak, GB/s of
 * weights streamed (each weight read once per call, q8 with its scales) and its fraction of the
 * read bandwidth, and the fraction of the roofline time max(bytes / bandwidth, flops / peak)
 * reached. For f32, --blas adds one cblas_sgemm call of the same n rows (x_sgemm = t_sgemm /
 * t_kern; above 1: faster).
 *
 * usage: bench_matmul [--time SECONDS per measurement, default 0.3] [--shapes OxI,OxI,...]
 *                     [--ns N,N,...] [--dtypes f32,bf16,q8] [--blas] [--cold] [--small-pages]
 * --cold reads 128 MiB between calls (untimed), so that each call's weights come from memory as in
 * a decode step, not from the cache the previous call left them in. --small-pages leaves the
 * weights on 4 KiB pages (a file mapping's); by default they go on transparent huge pages, as a
 * rank's own copy of its weights does.
 * Threads: OPENBLAS_NUM_THREADS (the kernels use as many as OpenBLAS was given); MPILLAMA_MATMUL
 * picks the implementation. */
#include <cblas.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "util.h"

#define MAXLIST 32

static int parse_list(const char *s, int *v, int max) {
    int k = 0;
    while (*s && k < max) {
        char *end;
        v[k++] = (int)strtol(s, &end, 10);
        if (end == s) break;
        s = *end ? end + 1 : end;
    }
    return k;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

typedef struct {
    double best, median;
} timing;

static void call(int blas, float *out, const float *x, const kern_wmat *w, int n, int i, int o) {
    if (blas) cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, o, i, 1.0f, x, i, w->data, i, 0.0f, out, o);
    else kern_matmul_w(out, x, w, n, i, o);
}

/* --cold: a buffer larger than the last-level cache, read between calls (untimed), so that every
 * call reads its weights from memory as a decode step does (each matrix once a step) */
#define COLD_BYTES ((size_t)128 << 20)
static float *cold_buf;

/* weights' memory: on transparent huge pages (util_alloc_huge) unless small */
static void *weights_alloc(size_t bytes, int small) {
    void *p = small ? xmalloc(bytes) : util_alloc_huge(bytes);
    if (!p) die("out of memory (%zu bytes of weights)", bytes);
    return p;
}
static volatile float cold_sink;
static void cold_evict(void) {
    if (!cold_buf) return;
    float s = 0;
    for (size_t k = 0; k < COLD_BYTES / sizeof(float); k += 16) s += cold_buf[k];
    cold_sink = s;
}

/* repeats until `budget` seconds are spent (at least 3 calls, at most 200) after one warm-up */
static timing measure(int blas, float *out, const float *x, const kern_wmat *w, int n, int i, int o, double budget) {
    double t[200];
    int k = 0;
    call(blas, out, x, w, n, i, o);
    const double start = util_now();
    while (k < 200 && (k < 3 || util_now() - start < budget)) {
        cold_evict();
        const double t0 = util_now();
        call(blas, out, x, w, n, i, o);
        t[k++] = util_now() - t0;
    }
    qsort(t, k, sizeof(double), cmp_double);
    timing r = {t[0], t[k / 2]};
    return r;
}

int main(int argc, char **argv) {
    double budget = 0.3;
    int shapes[MAXLIST][2] = {{2048, 2048}, {8192, 2048}, {2048, 8192}, {32000, 2048}}, nshapes = 4;
    int ns[MAXLIST] = {1, 4, 16, 32, 64, 128}, nns = 6, blas = 0, small = 0;
    int dts[3] = {KERN_F32, KERN_BF16, KERN_Q8}, ndts = 3;
    for (int a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--time") && a + 1 < argc) budget = atof(argv[++a]);
        else if (!strcmp(argv[a], "--ns") && a + 1 < argc) nns = parse_list(argv[++a], ns, MAXLIST);
        else if (!strcmp(argv[a], "--dtypes") && a + 1 < argc) {
            const char *s = argv[++a];
            ndts = 0;
            if (strstr(s, "f32")) dts[ndts++] = KERN_F32;
            if (strstr(s, "bf16")) dts[ndts++] = KERN_BF16;
            if (strstr(s, "q8")) dts[ndts++] = KERN_Q8;
        } else if (!strcmp(argv[a], "--shapes") && a + 1 < argc) {
            const char *s = argv[++a];
            nshapes = 0;
            while (*s && nshapes < MAXLIST) {
                if (sscanf(s, "%dx%d", &shapes[nshapes][0], &shapes[nshapes][1]) != 2) break;
                nshapes++;
                s = strchr(s, ',');
                if (!s) break;
                s++;
            }
        } else if (!strcmp(argv[a], "--blas")) blas = 1;
        else if (!strcmp(argv[a], "--small-pages")) small = 1;
        else if (!strcmp(argv[a], "--cold")) {
            cold_buf = xmalloc(COLD_BYTES);
            for (size_t k = 0; k < COLD_BYTES / sizeof(float); k++) cold_buf[k] = (float)(k & 7);
        }
        else {
            fprintf(stderr, "usage: %s [--time S] [--shapes OxI,...] [--ns N,...] [--dtypes f32,bf16,q8] [--blas] [--cold] [--small-pages]\n",
                    argv[0]);
            return 2;
        }
    }
    const int threads = openblas_get_num_threads();
    const double bw = kern_read_gbs((size_t)512 << 20, threads);
    double peak[3];
    for (int d = 0; d < 3; d++) peak[d] = kern_peak_gops((kern_dtype)d, threads);
    printf("# threads %d; read bandwidth %.1f GB/s; peaks (register-only loops): f32 %.0f GFLOP/s, bf16 %.0f, int8 "
           "%.0f GOP/s\n", threads, bw, peak[0], peak[1], peak[2]);
    int nmax = 1, imax = 1, omax = 1;
    size_t wmax = 1;
    for (int k = 0; k < nns; k++) nmax = ns[k] > nmax ? ns[k] : nmax;
    for (int s = 0; s < nshapes; s++) {
        omax = shapes[s][0] > omax ? shapes[s][0] : omax;
        imax = shapes[s][1] > imax ? shapes[s][1] : imax;
        size_t sz = (size_t)shapes[s][0] * shapes[s][1];
        wmax = sz > wmax ? sz : wmax;
    }
    float *w = weights_alloc(sizeof(float) * wmax, small), *x = xcalloc((size_t)nmax * imax, sizeof(float));
    float *out = xcalloc((size_t)nmax * omax, sizeof(float));
    size_t wqmax = sizeof(float) * wmax; /* packed layouts pad to whole groups of 16 rows */
    for (int s = 0; s < nshapes; s++) {
        for (int t = 0; t < 3; t++) {
            const size_t b = kern_packed_bytes((kern_dtype)t, shapes[s][0], shapes[s][1]); /* whole chunks */
            wqmax = b > wqmax ? b : wqmax;
        }
    }
    void *wq = weights_alloc(wqmax, small);
    float *ws = weights_alloc(sizeof(float) * (wmax / KERN_Q8_BLOCK + 1), small);
    unsigned long long r = 0x9E3779B97F4A7C15ULL;
    for (size_t k = 0; k < wmax; k++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        w[k] = (float)((r >> 40) * (1.0 / 16777216.0)) - 0.5f;
    }
    for (size_t k = 0; k < (size_t)nmax * imax; k++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        x[k] = (float)((r >> 40) * (1.0 / 16777216.0)) - 0.5f;
    }
    printf("%-5s %-7s %-11s %4s | %9s %9s | %8s %6s | %8s %6s | %6s", "dtype", "impl", "shape(oxi)", "n", "ms",
           "ms_med", "GFLOP/s", "%peak", "GB/s_w", "%bw", "%roof");
    if (blas) printf(" | %9s %7s", "sgemm_ms", "x_sgemm");
    printf("\n");
    for (int d = 0; d < ndts; d++) {
        const kern_dtype dt = (kern_dtype)dts[d];
        for (int s = 0; s < nshapes; s++) {
            const int o = shapes[s][0], i = shapes[s][1];
            if (dt == KERN_Q8 && i % KERN_Q8_BLOCK) continue;
            kern_wmat m = {dt, w, 0, 0};
            const size_t ow = (size_t)o * i;
            if (dt != KERN_Q8 && kern_packs(dt, i)) { /* packed, as the model does */
                const void *src = w;
                uint16_t *h = NULL;
                if (dt == KERN_BF16) {
                    h = xmalloc(ow * sizeof(uint16_t));
                    for (size_t k = 0; k < ow; k++) h[k] = kern_f32_to_bf16(w[k]);
                    src = h;
                }
                kern_pack(wq, src, dt, i, o, i);
                free(h);
                m.data = wq;
                m.packed = 1;
            } else if (dt == KERN_BF16) {
                for (size_t k = 0; k < ow; k++) ((uint16_t *)wq)[k] = kern_f32_to_bf16(w[k]);
                m.data = wq;
            } else if (dt == KERN_Q8) { /* quantised, then packed (its layout for the kernels) */
                int8_t *q = xmalloc(ow);
                kern_quantize_q8(q, ws, w, (int64_t)ow);
                kern_q8_pack(wq, q, ws, i, o, i);
                free(q);
                m.data = wq;
            }
            const double bytes = (double)ow * kern_dtype_size(dt) + (dt == KERN_Q8 ? 4.0 * ow / KERN_Q8_BLOCK : 0);
            char name[32];
            snprintf(name, sizeof(name), "%dx%d", o, i);
            for (int k = 0; k < nns; k++) {
                const int n = ns[k];
                timing tk = measure(0, out, x, &m, n, i, o, budget);
                const double flops = 2.0 * n * (double)o * i;
                const double gf = flops / tk.best / 1e9, gbs = bytes / tk.best / 1e9;
                const double tm = bw > 0 ? bytes / (bw * 1e9) : 0, tc = peak[dt] > 0 ? flops / (peak[dt] * 1e9) : 0;
                printf("%-5s %-7s %-11s %4d | %9.3f %9.3f | %8.1f %6.1f | %8.1f %6.1f | %6.1f", kern_dtype_name(dt),
                       kern_matmul_impl_w(dt), name, n, tk.best * 1e3, tk.median * 1e3, gf,
                       peak[dt] > 0 ? 100 * gf / peak[dt] : 0, gbs, bw > 0 ? 100 * gbs / bw : 0,
                       100 * (tm > tc ? tm : tc) / tk.best);
                if (blas && dt == KERN_F32) {
                    const kern_wmat plain = {KERN_F32, w, 0, 0}; /* OpenBLAS takes the rows as they are */
                    timing tg = measure(1, out, x, &plain, n, i, o, budget);
                    printf(" | %9.3f %7.2f", tg.best * 1e3, tg.best / tk.best);
                }
                printf("\n");
                fflush(stdout);
            }
        }
    }
    free(w), free(x), free(out), free(wq), free(ws), free(cold_buf);
    return 0;
}
