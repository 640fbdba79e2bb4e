#include "dist.h"

#include <stdlib.h>
#include <string.h>

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
    if (inited && !fin) MPI_Abort(MPI_COMM_WORLD, code);
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
    double t0 = MPI_Wtime();
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, d->tp_comm));
    d->t_allreduce += MPI_Wtime() - t0;
    d->bytes_allreduce += n * 4;
}

void dist_send_next(dist_ctx *d, const float *buf, int64_t n) {
    double t0 = MPI_Wtime();
    MPI_Request req;
    int dest = (d->stage + 1) * d->tp + d->tp_rank;
    MPI_CHECK(MPI_Isend(buf, (int)n, MPI_FLOAT, dest, 100, d->world, &req));
    MPI_CHECK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    d->t_p2p += MPI_Wtime() - t0;
    d->bytes_p2p += n * 4;
}

void dist_recv_prev(dist_ctx *d, float *buf, int64_t n) {
    double t0 = MPI_Wtime();
    MPI_Request req;
    int src = (d->stage - 1) * d->tp + d->tp_rank;
    MPI_CHECK(MPI_Irecv(buf, (int)n, MPI_FLOAT, src, 100, d->world, &req));
    MPI_CHECK(MPI_Wait(&req, MPI_STATUS_IGNORE));
    d->t_p2p += MPI_Wtime() - t0;
}

void dist_gather_logits(dist_ctx *d, const float *local, int rows, int vocab_local,
                        const int *counts, const int *offsets, int vocab, float *scratch, float *out) {
    double t0 = MPI_Wtime();
    int last = d->stage == d->pp - 1;
    int collector = (d->pp - 1) * d->tp; /* tp rank 0 of the last stage */
    if (rows == 0) return;
    if (last) {
        /* gather each rank's (rows, vocab_local) block on tp rank 0, then interleave into rows */
        float *dst = d->world_rank == 0 ? out : scratch;
        if (d->tp == 1) {
            if (d->world_rank == 0) memcpy(out, local, sizeof(float) * rows * vocab);
            else MPI_CHECK(MPI_Send(local, rows * vocab, MPI_FLOAT, 0, 101, d->world));
        } else {
            int *rc = NULL, *rd = NULL;
            float *blocks = NULL;
            if (d->tp_rank == 0) {
                rc = xmalloc(sizeof(int) * d->tp);
                rd = xmalloc(sizeof(int) * d->tp);
                for (int r = 0; r < d->tp; r++) {
                    rc[r] = counts[r] * rows;
                    rd[r] = offsets[r] * rows;
                }
                blocks = xmalloc(sizeof(float) * (size_t)rows * vocab);
            }
            MPI_CHECK(MPI_Gatherv(local, rows * vocab_local, MPI_FLOAT, blocks, rc, rd, MPI_FLOAT, 0, d->tp_comm));
            if (d->tp_rank == 0) {
                for (int r = 0; r < d->tp; r++)
                    for (int i = 0; i < rows; i++)
                        memcpy(dst + (size_t)i * vocab + offsets[r], blocks + (size_t)rd[r] + (size_t)i * counts[r],
                               sizeof(float) * counts[r]);
                free(blocks);
                free(rc);
                free(rd);
                if (d->world_rank != 0) MPI_CHECK(MPI_Send(dst, rows * vocab, MPI_FLOAT, 0, 101, d->world));
            }
        }
        d->bytes_gather += (int64_t)rows * vocab_local * 4;
    }
    if (d->world_rank == 0 && collector != 0)
        MPI_CHECK(MPI_Recv(out, rows * vocab, MPI_FLOAT, collector, 101, d->world, MPI_STATUS_IGNORE));
    d->t_gather += MPI_Wtime() - t0;
}

void dist_world_bcast_int(int *v) { MPI_CHECK(MPI_Bcast(v, 1, MPI_INT, 0, MPI_COMM_WORLD)); }

int dist_world_size(void) {
    int n = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    return n;
}

MPI_Comm dist_comm_self(void) { return MPI_COMM_SELF; }
