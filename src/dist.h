/* dist: the distributed layer, the only module that calls MPI (besides handing a communicator
 * to parallel HDF5). One context struct holds every communicator of the dp x pp x tp grid.
 *
 * World rank = replica * (pp * tp) + stage * tp + tp_rank: a replica's ranks are consecutive, so
 * with block placement (mpirun's and Slurm's default) a replica that fits a node stays on one
 * node (its all-reduces never cross the network) and replicas spread over the nodes first.
 * Pipeline and stage traffic uses the replica's communicator; rank 0's traffic with the
 * replicas' schedulers (requests out, results back) a communicator of its own. */
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
    int dp, pp, tp;       /* grid: world rank = replica * pp * tp + stage * tp + tp_rank */
    int replica, stage, tp_rank;
    MPI_Comm replica_comm; /* the pp * tp ranks of this replica (rank = stage * tp + tp_rank) */
    MPI_Comm tp_comm;     /* the tp ranks of this stage */
    MPI_Comm ctrl;        /* world rank 0 <-> the replicas' schedulers (dist_msg_*) */
    MPI_Comm twin;        /* the ranks of this node that hold the same slice (same stage and tp
                           * rank in other replicas): they share one copy of the weights */
    int twin_rank, twin_size;
    struct dist_posted *posted; /* (n_posted) dist_msg_post's sends in flight and their copies */
    int n_posted, cap_posted;
    /* non-blocking sends in flight, one per ring index (pipeline micro-batches) */
    MPI_Request ring[DIST_RING];
    double ring_posted[DIST_RING]; /* trace_now() when each ring's send was posted */
    int progress;                  /* dist_progress tests the ring (MPILLAMA_PROGRESS=0: off) */
    /* the tp ranks' all-reduce through shared memory, when they share a node (dist_tp_shm_*) */
    int tp_shm_on;        /* 1: this stage's tp ranks are on one node (MPILLAMA_SHM_ALLREDUCE=0: off) */
    MPI_Win tp_win;       /* the window over the tp ranks (MPI_WIN_NULL until the first all-reduce) */
    char *tp_shm;         /* its base: the ranks' flags, then 2 x tp slots of tp_shm_cap floats */
    int64_t tp_shm_cap;   /* floats a slot holds */
    uint64_t tp_shm_seq;  /* all-reduces done through it */
    /* counters for the run summary (times are kept by trace) */
    int64_t bytes_allreduce, bytes_p2p, bytes_gather;
    int64_t bytes_sampling;   /* vocab-parallel sampling reductions and tokens sent back */
    int64_t bytes_ctrl;       /* requests and results between world rank 0 and the schedulers */
    int64_t n_allreduce, n_p2p;
} dist_ctx;

/* MPI_Init, errors-return handler, die() hooked to MPI_Abort */
void dist_init(int *argc, char ***argv);
void dist_finalize(void);
/* world communicator and node layout only (before the grid is known) */
void dist_ctx_init(dist_ctx *d);
/* builds the grid communicators; dp * pp * tp must equal the world size (checked by the caller) */
void dist_grid_init_dp(dist_ctx *d, int dp, int pp, int tp);
/* one replica: dist_grid_init_dp(d, 1, pp, tp) */
void dist_grid_init(dist_ctx *d, int pp, int tp);
/* the world rank of a replica's scheduler (its stage 0, tp rank 0) */
int dist_scheduler_rank(const dist_ctx *d, int replica);

/* ---- weights once per node: a shared-memory window over this rank's twins (same slice) */
typedef struct {
    MPI_Win win;
    void *base;           /* (bytes) the twins' one copy, 64-byte aligned */
    size_t bytes;
    int owner;            /* 1 on the twin that reads the slice from the file (twin rank 0) */
} dist_shared;
/* collective over the twins: allocates bytes once on the node (MPI_Win_allocate_shared); every
 * twin gets the same memory in s->base. With one twin, plain memory. */
void dist_shared_alloc(const dist_ctx *d, dist_shared *s, size_t bytes);
/* collective over the twins: the owner's writes are complete and visible to every twin */
void dist_shared_ready(const dist_ctx *d, dist_shared *s);
void dist_shared_free(dist_shared *s);

/* ---- messages between world rank 0 and the replicas' schedulers (own communicator and tags) */
enum { DIST_MSG_WANT = 1, DIST_MSG_REQUESTS, DIST_MSG_RESULT, DIST_MSG_DONE, DIST_MSG_STOP };
/* blocking send of bytes to world rank dest */
void dist_msg_send(dist_ctx *d, int dest, int tag, const void *buf, int64_t bytes);
/* non-blocking send of a copy of bytes to world rank dest (the copy is kept until it is sent) */
void dist_msg_post(dist_ctx *d, int dest, int tag, const void *buf, int64_t bytes);
/* completes the posted sends that are done; wait = 1: waits for all of them */
void dist_msg_progress(dist_ctx *d, int wait);
/* non-blocking check for a message from src (-1: any) with tag (-1: any); 1 when one waits,
 * with its source, tag and size */
int dist_msg_probe(dist_ctx *d, int src, int tag, int *src_out, int *tag_out, int64_t *bytes);
/* blocking probe: waits for a message as above */
void dist_msg_wait(dist_ctx *d, int src, int tag, int *src_out, int *tag_out, int64_t *bytes);
/* receives the message from src with tag into buf (bytes as probed) */
void dist_msg_recv(dist_ctx *d, int src, int tag, void *buf, int64_t bytes);

/* ---- vocab-parallel sampling over the last stage's tp ranks (each holds a vocabulary shard) */
/* per row: the largest value and, on ties, the smallest index (MPI_MAXLOC), on every tp rank */
void dist_tp_argmax(dist_ctx *d, float *val, int *idx, int n);
/* per element: the maximum over the tp ranks, on every tp rank */
void dist_tp_max(dist_ctx *d, float *v, int n);
/* a chain through the tp ranks in order (for sums that must keep one order): receive n floats
 * from the previous tp rank (tp rank 0: nothing), then after the caller's work send them on */
void dist_tp_chain_recv(dist_ctx *d, float *v, int n);
void dist_tp_chain_send(dist_ctx *d, const float *v, int n);
/* bytes from tp rank root to the stage's other tp ranks */
void dist_tp_bcast_root(dist_ctx *d, void *buf, int64_t bytes, int root);
/* variable-size byte buffers to tp rank 0: out (cap bytes) gets them in tp rank order; returns
 * the total (tp rank 0) */
int64_t dist_tp_gather_bytes(dist_ctx *d, const void *buf, int64_t bytes, void *out, int64_t cap);
/* sampled tokens (or log-probs) from the replica's last stage tp rank 0 to its scheduler
 * (non-blocking, ring as dist_pipe_send), and their receipt; returns the bytes received */
void dist_tokens_send(dist_ctx *d, const void *buf, int64_t bytes, int ring);
int64_t dist_tokens_recv(dist_ctx *d, void *buf, int64_t max_bytes);
void dist_ctx_free(dist_ctx *d);

/* world-wide helpers */
void dist_bcast(dist_ctx *d, void *buf, int64_t bytes, int root);
void dist_barrier(dist_ctx *d);
/* abort every rank with exit code (after the caller printed why) */
void dist_abort(int code) __attribute__((noreturn));
double dist_max_double(dist_ctx *d, double v);
/* the sum of v over the world */
double dist_sum_double(dist_ctx *d, double v);
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
/* moves the ring's sends along while this rank computes (MPI_Test on each; cheap when none is in
 * flight). A send above the eager limit (rendezvous) only starts when its sender is inside MPI
 * after the receiver has posted: without this the next stage waits until the sender's next
 * MPI call, a whole step later. The model calls it between layers. */
void dist_progress(dist_ctx *d);
/* pipeline: blocking receive from the same tp rank of the previous stage; returns the bytes */
int64_t dist_pipe_recv(dist_ctx *d, void *buf, int64_t max_bytes);
/* the last stage's tp ranks each hold logits (rows, vocab_local); the stage's tp rank 0 gets
 * them assembled as (rows, vocab) in out. counts/offsets: each tp rank's vocab columns;
 * blocks: (rows, vocab) scratch on that rank. */
void dist_gather_logits(dist_ctx *d, const float *local, int rows, int vocab_local, const int *counts,
                        const int *offsets, int vocab, float *blocks, float *out);
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

/* stop signals (SIGTERM / SIGUSR1 delivered to one rank alone): a rank other than world rank 0
 * tells it, once, without blocking */
void dist_stop_notify(dist_ctx *d, int sig);
/* world rank 0: the signal another rank reported since the last call, or 0 */
int dist_stop_poll(dist_ctx *d);

#endif
