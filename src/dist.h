/* dist: the distributed layer, the only module that calls MPI (besides handing a communicator
 * to parallel HDF5). One context struct holds every communicator of the pp x tp grid. */
#ifndef MPILLAMA_DIST_H
#define MPILLAMA_DIST_H

#include <mpi.h>
#include <stdint.h>

typedef struct {
    MPI_Comm world;       /* all ranks */
    int world_rank, world_size;
    MPI_Comm node;        /* ranks sharing a node (MPI_Comm_split_type shared) */
    int node_rank, node_size, n_nodes;
    int pp, tp;           /* grid: world rank = stage * tp + tp_rank */
    int stage, tp_rank;
    MPI_Comm tp_comm;     /* the tp ranks of this stage */
    /* counters for the run summary */
    double t_allreduce, t_p2p, t_gather;
    int64_t bytes_allreduce, bytes_p2p, bytes_gather;
} dist_ctx;

/* MPI_Init, errors-return handler, die() hooked to MPI_Abort */
void dist_init(int *argc, char ***argv);
void dist_finalize(void);
/* world communicator and node layout only (before the grid is known) */
void dist_ctx_init(dist_ctx *d);
/* builds the grid communicators; pp * tp must equal the world size (checked by the caller) */
void dist_grid_init(dist_ctx *d, int pp, int tp);
void dist_ctx_free(dist_ctx *d);

/* world-wide helpers */
void dist_bcast(dist_ctx *d, void *buf, int64_t bytes, int root);
void dist_barrier(dist_ctx *d);
/* abort every rank with exit code (after the caller printed why) */
void dist_abort(int code) __attribute__((noreturn));
double dist_max_double(dist_ctx *d, double v);
int64_t dist_sum_int64(dist_ctx *d, int64_t v);
/* gathers one int64 per rank to root (out: world_size values, root only) */
void dist_gather_int64(dist_ctx *d, int64_t v, int64_t *out, int root);

/* in-place sum over this stage's tp ranks */
void dist_allreduce_sum(dist_ctx *d, float *buf, int64_t n);
/* activations between stages: send to the same tp rank of stage+1 / receive from stage-1 */
void dist_send_next(dist_ctx *d, const float *buf, int64_t n);
void dist_recv_prev(dist_ctx *d, float *buf, int64_t n);
/* the last stage's tp ranks hold logits (rows, vocab_local[r]) each; world rank 0 receives
 * (rows, vocab) assembled. counts[r] / offsets[r]: each tp rank's vocab columns. */
void dist_gather_logits(dist_ctx *d, const float *local, int rows, int vocab_local,
                        const int *counts, const int *offsets, int vocab, float *scratch, float *out);



/* broadcast one int from world rank 0 (before any context exists) */
void dist_world_bcast_int(int *v);
int dist_world_size(void);
/* MPI_COMM_SELF, for serial use of the parallel file layer (info) */
MPI_Comm dist_comm_self(void);

#endif
