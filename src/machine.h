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
/* `mpillama machine`: prints the limits as JSON */
int machine_main(int argc, char **argv);

#endif
