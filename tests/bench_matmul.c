/* bench_matmul: kern_matmul against plain BLAS and this machine's limits (a benchmark, not a
 * test: it asserts nothing).
 *
 * For each weight shape (o x i: o output features, i inputs) and token count n it prints the
 * time per call (best of the repetitions, and the median), GFLOP/s, GB/s of weights streamed
 * (o * i * 4 bytes per call, once), the percentage of the roofline time
 * max(weight bytes / memory bandwidth, flops / sgemm throughput) reached, and the speed against
 *   (a) one cblas_sgemm call of the same n rows (x_sgemm = t_sgemm / t_kern; above 1: faster),
 *   (b) cblas_sgemv, for n = 1 (x_sgemv = t_sgemv / t_kern).
 * Memory bandwidth for the roofline: the better of machine_measure()'s triad (one thread) and
 * cblas_sgemv streaming a 235 MB weight matrix with the BLAS threads, so a kernel that streams
 * better than sgemv passes 100%; sgemm throughput: machine_measure()'s 1024^3 sgemm. The
 * 1024 x 1024 weights (4 MiB) stay in the last-level cache, so their GB/s pass both.
 *
 * usage: bench_matmul [--time SECONDS per measurement, default 0.4] [--shapes OxI,OxI,...]
 *                     [--ns N,N,...] [--no-machine] [--no-blas]
 * Threads: OPENBLAS_NUM_THREADS (kern_matmul uses as many as OpenBLAS was given). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "machine.h"
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

enum { K_KERN, K_SGEMM, K_SGEMV };

static void call(int kind, float *out, const float *x, const float *w, int n, int i, int o) {
    if (kind == K_KERN) kern_matmul(out, x, w, n, i, o);
    else if (kind == K_SGEMM)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, o, i, 1.0f, x, i, w, i, 0.0f, out, o);
    else
        cblas_sgemv(CblasRowMajor, CblasNoTrans, o, i, 1.0f, w, i, x, 1, 0.0f, out, 1);
}

/* repeats until `budget` seconds are spent (at least 3 calls, at most 200) after one warm-up */
static timing measure(int kind, float *out, const float *x, const float *w, int n, int i, int o, double budget) {
    double t[200];
    int k = 0;
    call(kind, out, x, w, n, i, o);
    double start = util_now();
    while (k < 200 && (k < 3 || util_now() - start < budget)) {
        double t0 = util_now();
        call(kind, out, x, w, n, i, o);
        t[k++] = util_now() - t0;
    }
    qsort(t, k, sizeof(double), cmp_double);
    timing r = {t[0], t[k / 2]};
    return r;
}

int main(int argc, char **argv) {
    double budget = 0.4;
    int shapes[MAXLIST][2] = {{4096, 4096}, {14336, 4096}, {4096, 14336}, {1024, 1024}}, nshapes = 4;
    int ns[MAXLIST] = {1, 4, 16, 64, 256}, nns = 5, do_machine = 1, do_blas = 1;
    for (int a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--time") && a + 1 < argc) budget = atof(argv[++a]);
        else if (!strcmp(argv[a], "--ns") && a + 1 < argc) nns = parse_list(argv[++a], ns, MAXLIST);
        else if (!strcmp(argv[a], "--shapes") && a + 1 < argc) {
            const char *s = argv[++a];
            nshapes = 0;
            while (*s && nshapes < MAXLIST) {
                if (sscanf(s, "%dx%d", &shapes[nshapes][0], &shapes[nshapes][1]) != 2) break;
                nshapes++;
                s = strchr(s, ',');
                if (!s) break;
                s++;
            }
        } else if (!strcmp(argv[a], "--no-machine")) do_machine = 0;
        else if (!strcmp(argv[a], "--no-blas")) do_blas = 0;
        else {
            fprintf(stderr, "usage: %s [--time S] [--shapes OxI,...] [--ns N,...] [--no-machine] [--no-blas]\n",
                    argv[0]);
            return 2;
        }
    }
    const char *ct = getenv("OPENBLAS_CORETYPE");
    printf("# OpenBLAS %s, OPENBLAS_CORETYPE=%s, threads %d, kern_matmul: %s\n", openblas_get_config(),
           ct ? ct : "(unset)", openblas_get_num_threads(), kern_matmul_impl());
    machine_limits m = {0};
    if (do_machine) {
        machine_measure(&m);
        printf("# machine: memory %.1f GB/s (triad), sgemm 1024^3 %.1f GFLOP/s, %d threads\n", m.mem_gbs,
               m.sgemm_gflops, m.threads);
    }
    /* what streaming weights can reach in practice: cblas_sgemv over 14336 x 4096 (235 MB) */
    double stream_gbs = 0;
    if (do_machine) {
        const int so = 14336, si = 4096;
        float *sw = xmalloc(sizeof(float) * so * si), *sx = xcalloc(si, sizeof(float));
        float *sy = xmalloc(sizeof(float) * so);
        for (size_t k = 0; k < (size_t)so * si; k++) sw[k] = (float)(k % 11) * 0.1f;
        timing ts = measure(K_SGEMV, sy, sx, sw, 1, si, so, 1.0);
        stream_gbs = 4.0 * so * si / ts.best / 1e9;
        printf("# weight streaming: cblas_sgemv 14336x4096 %.1f GB/s; roofline below: max(weight bytes / %.1f GB/s,"
               " flops / %.1f GFLOP/s)\n", stream_gbs, stream_gbs > m.mem_gbs ? stream_gbs : m.mem_gbs, m.sgemm_gflops);
        free(sw), free(sx), free(sy);
    }
    const double mem_gbs = stream_gbs > m.mem_gbs ? stream_gbs : m.mem_gbs;
    int nmax = 1, imax = 1, omax = 1;
    size_t wmax = 1;
    for (int k = 0; k < nns; k++) nmax = ns[k] > nmax ? ns[k] : nmax;
    for (int s = 0; s < nshapes; s++) {
        omax = shapes[s][0] > omax ? shapes[s][0] : omax;
        imax = shapes[s][1] > imax ? shapes[s][1] : imax;
        size_t sz = (size_t)shapes[s][0] * shapes[s][1];
        wmax = sz > wmax ? sz : wmax;
    }
    int rows = nmax;
    float *w = xmalloc(sizeof(float) * wmax), *x = xcalloc((size_t)rows * imax, sizeof(float));
    float *out = xcalloc((size_t)rows * omax, sizeof(float));
    unsigned long long r = 0x9E3779B97F4A7C15ULL;
    for (size_t k = 0; k < wmax; k++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        w[k] = (float)((r >> 40) * (1.0 / 16777216.0)) - 0.5f;
    }
    for (size_t k = 0; k < (size_t)nmax * imax; k++) {
        r ^= r << 13, r ^= r >> 7, r ^= r << 17;
        x[k] = (float)((r >> 40) * (1.0 / 16777216.0)) - 0.5f;
    }
    printf("%-11s %4s | %9s %9s %8s %8s %6s", "shape(oxi)", "n", "ms", "ms_med", "GFLOP/s", "GB/s_w", "%roof");
    if (do_blas) printf(" | %9s %7s | %9s %7s", "sgemm_ms", "x_sgemm", "sgemv_ms", "x_sgemv");
    printf("\n");
    for (int s = 0; s < nshapes; s++) {
        int o = shapes[s][0], i = shapes[s][1];
        char name[32];
        snprintf(name, sizeof(name), "%dx%d", o, i);
        for (int k = 0; k < nns; k++) {
            int n = ns[k];
            timing tk = measure(K_KERN, out, x, w, n, i, o, budget);
            double flops = 2.0 * n * (double)o * i, bytes = 4.0 * o * (double)i;
            double roof = 0;
            if (mem_gbs > 0 && m.sgemm_gflops > 0) {
                double tm = bytes / (mem_gbs * 1e9), tc = flops / (m.sgemm_gflops * 1e9);
                roof = 100.0 * (tm > tc ? tm : tc) / tk.best;
            }
            printf("%-11s %4d | %9.3f %9.3f %8.1f %8.1f", name, n, tk.best * 1e3, tk.median * 1e3,
                   flops / tk.best / 1e9, bytes / tk.best / 1e9);
            if (roof > 0) printf(" %6.1f", roof);
            else printf(" %6s", "-");
            if (do_blas) {
                timing tg = measure(K_SGEMM, out, x, w, n, i, o, budget);
                printf(" | %9.3f %7.2f |", tg.best * 1e3, tg.best / tk.best);
                if (n == 1) {
                    timing tv = measure(K_SGEMV, out, x, w, n, i, o, budget);
                    printf(" %9.3f %7.2f", tv.best * 1e3, tv.best / tk.best);
                } else printf(" %9s %7s", "-", "-");
            }
            printf("\n");
            fflush(stdout);
        }
    }
    free(w), free(x), free(out);
    return 0;
}
