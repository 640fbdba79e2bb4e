#include "dist.h"

#include <stdlib.h>
#include <string.h>

#include "trace.h"
#include "util.h"

#define MPI_CHECK(call)                                                   \
    do {                                                                  \
        int rc_ = (call);                                                 \
        if (rc_ != MPI_SUCCESS) {                                         \
            char msg_[MPI_MAX_ERROR_STRING];                              \
            int len_ = 0;                                                 \
            MPI_Error_string(rc_, msg_, &len_);                           \
            die("MPI call failed: %s: %s", #call, msg_);                  \
        }                                                                 \
    } while (0)

void dist_abort(int code) {
    int inited = 0, fin = 0;
    MPI_Initialized(&inited);
    MPI_Finalized(&fin);
    if (inited && !fin) {
        int n = 1;
        MPI_Comm_size(MPI_COMM_WORLD, &n);
        if (n > 1) MPI_Abort(MPI_COMM_WORLD, code); /* one rank alone just exits: no abort banner */
    }
    exit(code);
}

void dist_init(int *argc, char ***argv) {
    MPI_CHECK(MPI_Init(argc, argv));
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
    int r;
    MPI_Comm_rank(MPI_COMM_WORLD, &r);
    util_set_rank(r);
    util_set_abort(dist_abort);
}

void dist_finalize(void) { MPI_Finalize(); }

void dist_ctx_init(dist_ctx *d) {
    memset(d, 0, sizeof(*d));
    d->world = MPI_COMM_WORLD;
    MPI_Comm_rank(d->world, &d->world_rank);
    MPI_Comm_size(d->world, &d->world_size);
    MPI_CHECK(MPI_Comm_split_type(d->world, MPI_COMM_TYPE_SHARED, d->world_rank, MPI_INFO_NULL, &d->node));
    MPI_Comm_rank(d->node, &d->node_rank);
    MPI_Comm_size(d->node, &d->node_size);
    int leader = d->node_rank == 0, n = 0;
    MPI_CHECK(MPI_Allreduce(&leader, &n, 1, MPI_INT, MPI_SUM, d->world));
    d->n_nodes = n;
    d->tp_comm = MPI_COMM_NULL;
    d->pp = d->tp = 1;
    for (int i = 0; i < DIST_RING; i++) d->ring[i] = MPI_REQUEST_NULL;
}

void dist_grid_init(dist_ctx *d, int pp, int tp) {
    if (pp * tp != d->world_size) die("grid %d x %d does not match %d ranks", pp, tp, d->world_size);
    d->pp = pp;
    d->tp = tp;
    d->stage = d->world_rank / tp;
    d->tp_rank = d->world_rank % tp;
    MPI_CHECK(MPI_Comm_split(d->world, d->stage, d->tp_rank, &d->tp_comm));
}

void dist_ctx_free(dist_ctx *d) {
    if (d->tp_comm != MPI_COMM_NULL) MPI_Comm_free(&d->tp_comm);
    MPI_Comm_free(&d->node);
}

void dist_bcast(dist_ctx *d, void *buf, int64_t bytes, int root) {
    if (d->world_size == 1) return;
    check(bytes < (1LL << 31), "broadcast of %lld bytes is too large", (long long)bytes);
    MPI_CHECK(MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, d->world));
}

void dist_barrier(dist_ctx *d) { MPI_CHECK(MPI_Barrier(d->world)); }

double dist_max_double(dist_ctx *d, double v) {
    double r = v;
    MPI_CHECK(MPI_Allreduce(&v, &r, 1, MPI_DOUBLE, MPI_MAX, d->world));
    return r;
}

int64_t dist_sum_int64(dist_ctx *d, int64_t v) {
    int64_t r = v;
    MPI_CHECK(MPI_Allreduce(&v, &r, 1, MPI_INT64_T, MPI_SUM, d->world));
    return r;
}

void dist_gather_int64(dist_ctx *d, int64_t v, int64_t *out, int root) {
    MPI_CHECK(MPI_Gather(&v, 1, MPI_INT64_T, out, 1, MPI_INT64_T, root, d->world));
}

void dist_allreduce_sum(dist_ctx *d, float *buf, int64_t n) {
    if (d->tp == 1) return;
    double t0 = trace_now();
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, d->tp_comm));
    trace_end(TN_ALLREDUCE, TRACE_ALLREDUCE, t0, (int)n);
    d->bytes_allreduce += n * 4;
    d->n_allreduce++;
}

void dist_tp_bcast(dist_ctx *d, void *buf, int64_t bytes) {
    if (d->tp == 1) return;
    double t0 = trace_now();
    MPI_CHECK(MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, d->tp_comm));
    trace_end(d->tp_rank == 0 ? TN_SEND : TN_WAIT, d->tp_rank == 0 ? TRACE_P2P : TRACE_WAIT, t0, -1);
}

void dist_ring_wait(dist_ctx *d, int ring) {
    check(ring >= 0 && ring < DIST_RING, "ring index %d out of range", ring);
    if (d->ring[ring] != MPI_REQUEST_NULL && d->ring[ring] != 0) MPI_CHECK(MPI_Wait(&d->ring[ring], MPI_STATUS_IGNORE));
    d->ring[ring] = MPI_REQUEST_NULL;
}

void dist_pipe_send(dist_ctx *d, const void *buf, int64_t bytes, int ring) {
    double t0 = trace_now();
    dist_ring_wait(d, ring);
    int dest = (d->stage + 1) * d->tp + d->tp_rank;
    MPI_CHECK(MPI_Isend(buf, (int)bytes, MPI_BYTE, dest, 100, d->world, &d->ring[ring]));
    trace_end(TN_SEND, TRACE_P2P, t0, -1);
    d->bytes_p2p += bytes;
    d->n_p2p++;
}

int64_t dist_pipe_recv(dist_ctx *d, void *buf, int64_t max_bytes) {
    double t0 = trace_now();
    int src = (d->stage - 1) * d->tp + d->tp_rank, count = 0;
    MPI_Status st;
    MPI_CHECK(MPI_Recv(buf, (int)max_bytes, MPI_BYTE, src, 100, d->world, &st));
    MPI_Get_count(&st, MPI_BYTE, &count);
    trace_end(TN_WAIT, TRACE_WAIT, t0, -1);
    return count;
}

int dist_is_collector(const dist_ctx *d) { return d->stage == d->pp - 1 && d->tp_rank == 0; }

void dist_gather_logits(dist_ctx *d, const float *local, int rows, int vocab_local, const int *counts,
                        const int *offsets, int vocab, float *blocks, float *out) {
    if (rows == 0) return;
    double t0 = trace_now();
    if (d->tp == 1) {
        if (out != local) memcpy(out, local, sizeof(float) * (size_t)rows * vocab);
    } else {
        int rc[d->tp], rd[d->tp];
        for (int r = 0; r < d->tp; r++) {
            rc[r] = counts[r] * rows;
            rd[r] = offsets[r] * rows;
        }
        MPI_CHECK(MPI_Gatherv(local, rows * vocab_local, MPI_FLOAT, blocks, rc, rd, MPI_FLOAT, 0, d->tp_comm));
        if (d->tp_rank == 0)
            for (int r = 0; r < d->tp; r++)
                for (int i = 0; i < rows; i++)
                    memcpy(out + (size_t)i * vocab + offsets[r], blocks + (size_t)rd[r] + (size_t)i * counts[r],
                           sizeof(float) * counts[r]);
        d->bytes_gather += (int64_t)rows * vocab_local * 4;
    }
    trace_end(TN_GATHER, TRACE_GATHER, t0, rows);
}

void dist_logits_send(dist_ctx *d, const float *buf, int64_t n, int ring) {
    double t0 = trace_now();
    dist_ring_wait(d, ring);
    MPI_CHECK(MPI_Isend(buf, (int)n, MPI_FLOAT, 0, 101, d->world, &d->ring[ring]));
    trace_end(TN_SEND, TRACE_GATHER, t0, -1);
    d->bytes_gather += n * 4;
}

void dist_logits_recv(dist_ctx *d, float *buf, int64_t n) {
    double t0 = trace_now();
    int src = (d->pp - 1) * d->tp;
    MPI_CHECK(MPI_Recv(buf, (int)n, MPI_FLOAT, src, 101, d->world, MPI_STATUS_IGNORE));
    trace_end(TN_WAIT, TRACE_WAIT, t0, -1);
}

void dist_wait_sends(dist_ctx *d) {
    for (int i = 0; i < DIST_RING; i++) dist_ring_wait(d, i);
}

void dist_gather_bytes(dist_ctx *d, const void *buf, int64_t bytes, char **out, int64_t *sizes) {
    int n = (int)bytes, *counts = NULL, *displs = NULL, total = 0;
    check(bytes < (1LL << 31), "trace of %lld bytes is too large to gather", (long long)bytes);
    if (d->world_rank == 0) {
        counts = xmalloc(sizeof(int) * d->world_size);
        displs = xmalloc(sizeof(int) * d->world_size);
    }
    MPI_CHECK(MPI_Gather(&n, 1, MPI_INT, counts, 1, MPI_INT, 0, d->world));
    if (d->world_rank == 0) {
        for (int r = 0; r < d->world_size; r++) {
            displs[r] = total;
            sizes[r] = counts[r];
            check((int64_t)total + counts[r] < (1LL << 31), "gathered traces exceed 2 GiB");
            total += counts[r];
        }
        *out = xmalloc((size_t)total + 1);
    }
    MPI_CHECK(MPI_Gatherv(buf, n, MPI_BYTE, d->world_rank == 0 ? *out : NULL, counts, displs, MPI_BYTE, 0, d->world));
    free(counts);
    free(displs);
}

void dist_world_bcast_int(int *v) { MPI_CHECK(MPI_Bcast(v, 1, MPI_INT, 0, MPI_COMM_WORLD)); }

int dist_world_size(void) {
    int n = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    return n;
}

MPI_Comm dist_comm_self(void) { return MPI_COMM_SELF; }
