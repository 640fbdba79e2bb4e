#include "affinity.h"

#include <cblas.h>
#include <hwloc.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

void affinity_bind(int node_rank, int node_size, affinity_info *info) {
    memset(info, 0, sizeof(*info));
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) != 0 || hwloc_topology_load(topo) != 0) {
        warning("hwloc cannot read the topology: ranks are not bound");
        info->cores = info->threads = 1;
        return;
    }
    hwloc_bitmap_t cur = hwloc_bitmap_alloc(), set = hwloc_bitmap_alloc();
    hwloc_const_bitmap_t all = hwloc_topology_get_topology_cpuset(topo);
    int ncores = hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE);
    if (ncores <= 0) ncores = 1;
    if (hwloc_get_cpubind(topo, cur, HWLOC_CPUBIND_PROCESS) == 0 && !hwloc_bitmap_iszero(cur) &&
        !hwloc_bitmap_isincluded(all, cur)) {
        /* the launcher bound us: keep it */
        hwloc_bitmap_copy(set, cur);
        info->kept_existing = 1;
    } else if (ncores >= node_size) {
        /* a contiguous block of cores per rank */
        int per = ncores / node_size, first = node_rank * per;
        for (int c = first; c < first + per; c++) {
            hwloc_obj_t core = hwloc_get_obj_by_type(topo, HWLOC_OBJ_CORE, (unsigned)c);
            if (core) hwloc_bitmap_or(set, set, core->cpuset);
        }
    } else {
        /* oversubscribed: ranks share cores round-robin */
        hwloc_obj_t core = hwloc_get_obj_by_type(topo, HWLOC_OBJ_CORE, (unsigned)(node_rank % ncores));
        if (core) hwloc_bitmap_copy(set, core->cpuset);
    }
    if (!info->kept_existing && !hwloc_bitmap_iszero(set) && hwloc_set_cpubind(topo, set, HWLOC_CPUBIND_PROCESS) != 0)
        warning("hwloc cannot bind rank %d of this node", node_rank);
    info->fair_cores = ncores >= node_size ? ncores / node_size : 1;
    info->cores = hwloc_get_nbobjs_inside_cpuset_by_type(topo, set, HWLOC_OBJ_CORE);
    if (info->cores < 1) info->cores = 1;
    hwloc_bitmap_list_snprintf(info->cpuset, sizeof(info->cpuset), set);
    /* one BLAS thread per core of the set, unless the user chose */
    const char *env = getenv("OPENBLAS_NUM_THREADS");
    /* a launcher's set shared by several ranks (mpirun binds to a socket above 2 ranks): the
     * rank's share of the node, not every core of the set */
    int mine = info->kept_existing && info->cores > info->fair_cores ? info->fair_cores : info->cores;
    info->threads = env && atoi(env) > 0 ? atoi(env) : mine;
    if (ncores < node_size) info->threads = env && atoi(env) > 0 ? atoi(env) : 1;
    openblas_set_num_threads(info->threads);
    hwloc_bitmap_free(cur);
    hwloc_bitmap_free(set);
    hwloc_topology_destroy(topo);
}

int affinity_narrow(const affinity_info *info) { return info->kept_existing && info->cores < info->fair_cores; }

void affinity_narrow_hint(char *buf, size_t cap, int n_narrow, int n_ranks, int fair_cores, int cores) {
    snprintf(buf, cap,
             "%d of %d rank(s) are bound (by the launcher or taskset) to %d core(s), fewer than their share of the node (%d cores each), "
             "so they run %d thread(s); the binding is kept. To use the node: Open MPI 'mpirun --bind-to none' or "
             "'--map-by slot:PE=%d', Slurm 'sbatch --cpus-per-task=%d' with 'srun --cpu-bind=cores' "
             "(ranks x threads = cores: README, \"Ranks and threads\")",
             n_narrow, n_ranks, cores, fair_cores, cores, fair_cores, fair_cores);
}
