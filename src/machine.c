#include "machine.h"

#include <cblas.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

static double best_of(double a, double b) { return a > b ? a : b; }

void machine_measure(machine_limits *m) {
    memset(m, 0, sizeof(*m));
    m->threads = openblas_get_num_threads();
    /* triad over 3 x 128 MiB, best of 5 (bandwidth counted as 3 arrays moved) */
    size_t n = 32u << 20;
    float *a = xmalloc(n * 4), *b = xmalloc(n * 4), *c = xmalloc(n * 4);
    for (size_t i = 0; i < n; i++) b[i] = 1.0f, c[i] = 2.0f, a[i] = 0.0f;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = util_now();
        for (size_t i = 0; i < n; i++) a[i] = b[i] + 0.5f * c[i];
        double dt = util_now() - t0;
        m->mem_gbs = best_of(m->mem_gbs, 3.0 * n * 4 / dt / 1e9);
    }
    if (a[n / 2] != 2.0f) warning("machine: triad gave a wrong value");
    free(a), free(b), free(c);
    int k = 1024;
    float *x = xmalloc(sizeof(float) * k * k), *y = xmalloc(sizeof(float) * k * k), *z = xmalloc(sizeof(float) * k * k);
    for (int i = 0; i < k * k; i++) x[i] = (float)(i % 7) * 0.1f, y[i] = (float)(i % 5) * 0.1f;
    for (int rep = 0; rep < 5; rep++) {
        double t0 = util_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k, k, k, 1.0f, x, k, y, k, 0.0f, z, k);
        double dt = util_now() - t0;
        m->sgemm_gflops = best_of(m->sgemm_gflops, 2.0 * k * k * (double)k / dt / 1e9);
    }
    free(x), free(y), free(z);
}

/* one pass of read(2) over the file; GB/s, or -1 */
static double read_pass(const char *path, char *buf, size_t cap, int drop_first) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return -1;
    if (drop_first) {
        fdatasync(fd);
        posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
    }
    double t0 = util_now();
    int64_t total = 0;
    ssize_t got;
    while ((got = read(fd, buf, cap)) > 0) total += got;
    double dt = util_now() - t0;
    close(fd);
    return got < 0 || dt <= 0 ? -1 : total / dt / 1e9;
}

double machine_file_read(const char *path, double *cold) {
    const size_t cap = 4u << 20;
    char *buf = xmalloc(cap);
    if (cold) *cold = read_pass(path, buf, cap, 1);
    double warm = -1;
    for (int rep = 0; rep < 4; rep++) { /* the first pass fills the page cache */
        double g = read_pass(path, buf, cap, 0);
        if (rep > 0) warm = best_of(warm, g);
    }
    free(buf);
    return warm;
}

int machine_main(int argc, char **argv) {
    const char *file = NULL;
    for (int a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--file") && a + 1 < argc) {
            file = argv[++a];
            continue;
        }
        int help = !strcmp(argv[a], "-h") || !strcmp(argv[a], "--help");
        if (util_rank() == 0) {
            FILE *out = help ? stdout : stderr;
            if (!help) fprintf(out, "mpillama machine: unknown argument '%s'\n", argv[a]);
            fprintf(out, "usage: mpillama machine [--file M.h5]\n"
                         "  measures this node's memory bandwidth (a triad over 3 x 128 MiB) and the sgemm rate of the\n"
                         "  BLAS threads this process has, and prints them as one JSON line: the limits that the\n"
                         "  benchmarks' ratios use. --file adds a plain sequential read of that file with 4 MiB\n"
                         "  read(2) calls, warm (best of 3) and cold (after dropping its cached pages): the bound\n"
                         "  the weight load is measured against\n");
        }
        return help ? 0 : 2;
    }
    if (util_rank() != 0) return 0;
    machine_limits m;
    machine_measure(&m);
    printf("{\"mem_gbs\": %.2f, \"sgemm_gflops\": %.2f, \"blas_threads\": %d", m.mem_gbs, m.sgemm_gflops, m.threads);
    if (file) {
        double cold, warm = machine_file_read(file, &cold);
        if (warm < 0) die_errno("machine: cannot read '%s'", file);
        printf(", \"file\": \"%s\", \"file_read_gbs\": %.2f, \"file_read_cold_gbs\": %.2f", file, warm, cold);
    }
    printf("}\n");
    return 0;
}
