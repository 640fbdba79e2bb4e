/* affinity: binds this rank to its share of the node's cores with hwloc and sizes OpenBLAS's
 * thread pool to match. An existing binding (mpirun --bind-to, Slurm's task binding) is kept. */
#ifndef MPILLAMA_AFFINITY_H
#define MPILLAMA_AFFINITY_H

typedef struct {
    int cores;           /* cores in this rank's set */
    int threads;         /* OpenBLAS threads chosen */
    int kept_existing;   /* 1 when the launcher had bound the rank already */
    char cpuset[128];    /* the PU list, e.g. "0-3" */
} affinity_info;

/* node_rank of node_size ranks on this node; verbose fills info for the map. Never fatal:
 * a failure to bind is a warning. */
void affinity_bind(int node_rank, int node_size, affinity_info *info);

#endif
