/* machine: measures this node's limits for benchmarks to compare against: memory bandwidth
 * (a STREAM-like triad) and sgemm throughput, with the OpenBLAS threads in use. */
#ifndef MPILLAMA_MACHINE_H
#define MPILLAMA_MACHINE_H

typedef struct {
    double mem_gbs;       /* GB/s, triad a = b + s * c over arrays far larger than the caches */
    double sgemm_gflops;  /* GFLOP/s, sgemm 1024 x 1024 x 1024 */
    int threads;
} machine_limits;

void machine_measure(machine_limits *out);
/* a plain sequential read of a whole file with read(2) into one 4 MiB buffer (what `dd bs=4M`
 * does), in GB/s: warm (the page cache holding it, best of 3) and, cold != NULL, once after the
 * file's cached pages were dropped (posix_fadvise DONTNEED; pages another process maps stay).
 * Returns -1 when the file cannot be read. The bound the weight load is measured against. */
double machine_file_read(const char *path, double *cold);
/* `mpillama machine [--file M.h5]`: prints the limits as JSON (with the file's read bandwidth) */
int machine_main(int argc, char **argv);

#endif
