/* bench: `mpillama bench`, the forward pass of a (synthetic) model timed against this machine's
 * measured limits: tok/s, GB/s of weights and GFLOP/s, each as a fraction of the limit. */
#ifndef MPILLAMA_BENCH_H
#define MPILLAMA_BENCH_H

/* every rank of the job calls it (collective); returns 0, or 2 on a usage error */
int bench_main(int argc, char **argv);

#endif
