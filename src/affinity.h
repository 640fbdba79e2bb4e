/* affinity: binds this rank to its share of the node's cores with hwloc and sizes OpenBLAS's
 * thread pool to match. An existing binding (mpirun --bind-to, Slurm's task binding) is kept. */
#ifndef MPILLAMA_AFFINITY_H
#define MPILLAMA_AFFINITY_H

#include <stddef.h>

typedef struct {
    int cores;           /* cores in this rank's set */
    int threads;         /* OpenBLAS threads chosen */
    int kept_existing;   /* 1 when the launcher had bound the rank already */
    int fair_cores;      /* the node's cores / ranks on the node (at least 1) */
    char cpuset[128];    /* the PU list, e.g. "0-3" */
} affinity_info;

/* node_rank of node_size ranks on this node; verbose fills info for the map. Never fatal:
 * a failure to bind is a warning. */
void affinity_bind(int node_rank, int node_size, affinity_info *info);
/* 1 when the launcher bound this rank to fewer cores than its fair share (info->fair_cores):
 * it then runs fewer threads than the node allows (mpirun -n 1 binds to one core by default) */
int affinity_narrow(const affinity_info *info);
/* the one-line warning for narrow ranks (n_narrow of n_ranks, fair cores each), with the
 * launcher flags that give each rank its share, into buf */
void affinity_narrow_hint(char *buf, size_t cap, int n_narrow, int n_ranks, int fair_cores, int cores);

#endif
