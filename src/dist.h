/* dist: the distributed layer, the only module that calls MPI (besides handing a communicator
 * to parallel HDF5). One context struct holds every communicator of the pp x tp grid. */
#ifndef MPILLAMA_DIST_H
#define MPILLAMA_DIST_H

#include <mpi.h>
#include <stdint.h>

#define DIST_RING 64

typedef struct {
    MPI_Comm world;       /* all ranks */
    int world_rank, world_size;
    MPI_Comm node;        /* ranks sharing a node (MPI_Comm_split_type shared) */
    int node_rank, node_size, n_nodes;
    int pp, tp;           /* grid: world rank = stage * tp + tp_rank */
    int stage, tp_rank;
    MPI_Comm tp_comm;     /* the tp ranks of this stage */
    /* non-blocking sends in flight, one per ring index (pipeline micro-batches) */
    MPI_Request ring[DIST_RING];
    /* counters for the run summary (times are kept by trace) */
    int64_t bytes_allreduce, bytes_p2p, bytes_gather;
    int64_t n_allreduce, n_p2p;
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
/* from this stage's tp rank 0 to the stage's other tp ranks */
void dist_tp_bcast(dist_ctx *d, void *buf, int64_t bytes);
/* pipeline: to the same tp rank of the next stage, non-blocking. buf must stay untouched until
 * the next send with the same ring index (0 <= ring < DIST_RING) or dist_wait_sends. */
void dist_pipe_send(dist_ctx *d, const void *buf, int64_t bytes, int ring);
/* pipeline: blocking receive from the same tp rank of the previous stage; returns the bytes */
int64_t dist_pipe_recv(dist_ctx *d, void *buf, int64_t max_bytes);
/* the last stage's tp ranks each hold logits (rows, vocab_local); the stage's tp rank 0 gets
 * them assembled as (rows, vocab) in out. counts/offsets: each tp rank's vocab columns;
 * blocks: (rows, vocab) scratch on that rank. */
void dist_gather_logits(dist_ctx *d, const float *local, int rows, int vocab_local, const int *counts,
                        const int *offsets, int vocab, float *blocks, float *out);
/* logits from the last stage's tp rank 0 to world rank 0 (non-blocking, ring as above) */
void dist_logits_send(dist_ctx *d, const float *buf, int64_t n, int ring);
void dist_logits_recv(dist_ctx *d, float *buf, int64_t n);
/* completes the send in flight on one ring index (before its buffer is reused) */
void dist_ring_wait(dist_ctx *d, int ring);
/* completes every send in flight */
void dist_wait_sends(dist_ctx *d);
/* 1 on the last stage's tp rank 0, the rank that collects logits */
int dist_is_collector(const dist_ctx *d);
/* gathers variable-size byte buffers to world rank 0 (out: malloc'd concatenation, sizes per rank) */
void dist_gather_bytes(dist_ctx *d, const void *buf, int64_t bytes, char **out, int64_t *sizes);

/* broadcast one int from world rank 0 (before any context exists) */
void dist_world_bcast_int(int *v);
int dist_world_size(void);
/* MPI_COMM_SELF, for serial use of the parallel file layer (info) */
MPI_Comm dist_comm_self(void);

#endif
