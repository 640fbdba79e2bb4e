#include "dist.h"

#include <sched.h>
#include <stdatomic.h>
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

/* ------------------------------------------------------------------ tp all-reduce in shared memory */

/* A stage's tp ranks on one node sum through a shared window instead of MPI_Allreduce: each rank
 * copies its partial sums to its slot and raises its arrival count, waits for every other rank's,
 * and sums the slots in tp rank order (every rank gets the same bits; with tp = 2 each adds the
 * other's slot to its own buffer, a + b being b + a), then raises its done count. Two sets of slots
 * alternate by the call's parity: a rank refills its slot once every peer has read it (their done
 * count two calls back), so one call needs no second synchronisation. On the 2-core development VM
 * (jobs/bench_pipeline.py's 107M model at 1x2, traced: the later rank's time in each call) Open MPI
 * 4.1's MPI_Allreduce took a median 65-85 us for a decode step's 64 KiB and 175-345 us for a
 * prefill chunk's 576 KiB, 0.15 s a run; this 18 us and 130 us, 0.06 s a run.
 * MPILLAMA_SHM_ALLREDUCE=0 keeps MPI_Allreduce (to measure it). */
typedef struct {
    _Atomic uint64_t arrived; /* all-reduces whose partial sums this rank has put in its slot */
    char pad0[56];
    _Atomic uint64_t done;    /* all-reduces in which this rank has read every slot */
    char pad1[56];
} tp_shm_flags;

#define TP_SHM_HDR 4096 /* the flags' page (tp x 128 bytes, tp <= 32) */

static void tp_shm_init(dist_ctx *d) {
    d->tp_shm_on = 0;
    if (d->tp == 1) return;
    const char *env = getenv("MPILLAMA_SHM_ALLREDUCE");
    MPI_Comm local;
    int n = 0, on;
    MPI_CHECK(MPI_Comm_split_type(d->tp_comm, MPI_COMM_TYPE_SHARED, d->tp_rank, MPI_INFO_NULL, &local));
    MPI_Comm_size(local, &n);
    MPI_Comm_free(&local);
    on = n == d->tp && d->tp * (int)sizeof(tp_shm_flags) <= TP_SHM_HDR && !(env && strcmp(env, "0") == 0);
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, &on, 1, MPI_INT, MPI_MIN, d->tp_comm)); /* one choice for all */
    d->tp_shm_on = on;
}

/* collective over the tp ranks: a window whose slots hold n floats (the flags start at zero) */
static void tp_shm_alloc(dist_ctx *d, int64_t n) {
    if (d->tp_win != MPI_WIN_NULL) { /* a larger one: every rank is past the last call's reads */
        MPI_CHECK(MPI_Barrier(d->tp_comm));
        MPI_CHECK(MPI_Win_free(&d->tp_win));
    }
    d->tp_shm_cap = (n + 4095) / 4096 * 4096; /* whole pages */
    const MPI_Aint bytes = TP_SHM_HDR + (MPI_Aint)2 * d->tp * d->tp_shm_cap * (MPI_Aint)sizeof(float);
    MPI_Info info;
    MPI_Info_create(&info);
    MPI_Info_set(info, "alloc_shared_noncontig", "true");
    void *mine = NULL;
    MPI_CHECK(MPI_Win_allocate_shared(d->tp_rank == 0 ? bytes : 0, 1, info, d->tp_comm, &mine, &d->tp_win));
    MPI_Info_free(&info);
    MPI_Aint size = 0;
    int disp = 1;
    MPI_CHECK(MPI_Win_shared_query(d->tp_win, 0, &size, &disp, &d->tp_shm));
    if (d->tp_rank == 0) memset(d->tp_shm, 0, TP_SHM_HDR);
    MPI_CHECK(MPI_Win_fence(0, d->tp_win)); /* the zeroed flags, seen by every tp rank */
    MPI_CHECK(MPI_Barrier(d->tp_comm));
    d->tp_shm_seq = 0;
}

static tp_shm_flags *tp_shm_flag(const dist_ctx *d, int r) { return (tp_shm_flags *)(d->tp_shm + 128 * (size_t)r); }

static float *tp_shm_slot(const dist_ctx *d, uint64_t seq, int r) {
    return (float *)(d->tp_shm + TP_SHM_HDR) + ((int64_t)(seq & 1) * d->tp + r) * d->tp_shm_cap;
}

/* waits until *v reaches target: spins a while, then yields the core (oversubscribed ranks), and
 * keeps the pipeline's sends moving as MPI_Allreduce would */
static void tp_shm_wait(dist_ctx *d, _Atomic uint64_t *v, uint64_t target) {
    for (unsigned spins = 1; atomic_load_explicit(v, memory_order_acquire) < target; spins++) {
#if defined(__x86_64__) || defined(__i386__)
        __builtin_ia32_pause();
#endif
        if (spins > 4096) sched_yield();
        if (spins % 256 == 0) dist_progress(d);
    }
}

static void tp_shm_allreduce(dist_ctx *d, float *buf, int64_t n) {
    if (n > d->tp_shm_cap) tp_shm_alloc(d, n); /* every tp rank asks for the same n */
    const uint64_t k = ++d->tp_shm_seq;
    const int me = d->tp_rank, tp = d->tp;
    if (k > 2)
        for (int r = 0; r < tp; r++)
            if (r != me) tp_shm_wait(d, &tp_shm_flag(d, r)->done, k - 2);
    memcpy(tp_shm_slot(d, k, me), buf, sizeof(float) * (size_t)n);
    atomic_store_explicit(&tp_shm_flag(d, me)->arrived, k, memory_order_release);
    for (int r = 0; r < tp; r++)
        if (r != me) tp_shm_wait(d, &tp_shm_flag(d, r)->arrived, k);
    if (tp == 2) {
        const float *o = tp_shm_slot(d, k, 1 - me);
        for (int64_t i = 0; i < n; i++) buf[i] += o[i];
    } else {
        if (me != 0) memcpy(buf, tp_shm_slot(d, k, 0), sizeof(float) * (size_t)n);
        for (int r = 1; r < tp; r++) {
            const float *o = tp_shm_slot(d, k, r);
            for (int64_t i = 0; i < n; i++) buf[i] += o[i];
        }
    }
    atomic_store_explicit(&tp_shm_flag(d, me)->done, k, memory_order_release);
}

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
    d->tp_comm = d->replica_comm = d->ctrl = d->twin = MPI_COMM_NULL;
    d->dp = d->pp = d->tp = 1;
    for (int i = 0; i < DIST_RING; i++) d->ring[i] = MPI_REQUEST_NULL;
    d->tp_win = MPI_WIN_NULL;
    const char *progress = getenv("MPILLAMA_PROGRESS"); /* "0": no dist_progress (to measure it) */
    d->progress = !(progress && strcmp(progress, "0") == 0);
}

void dist_grid_init_dp(dist_ctx *d, int dp, int pp, int tp) {
    if (dp * pp * tp != d->world_size) die("grid %d x %d x %d does not match %d ranks", dp, pp, tp, d->world_size);
    d->dp = dp;
    d->pp = pp;
    d->tp = tp;
    d->replica = d->world_rank / (pp * tp);
    d->stage = d->world_rank % (pp * tp) / tp;
    d->tp_rank = d->world_rank % tp;
    MPI_CHECK(MPI_Comm_split(d->world, d->replica, d->world_rank, &d->replica_comm));
    MPI_CHECK(MPI_Comm_split(d->world, d->replica * pp + d->stage, d->tp_rank, &d->tp_comm));
    tp_shm_init(d);
    MPI_CHECK(MPI_Comm_dup(d->world, &d->ctrl));
    /* twins: same slice on the same node; ordered by world rank so the lowest one reads */
    MPI_CHECK(MPI_Comm_split(d->node, d->stage * tp + d->tp_rank, d->world_rank, &d->twin));
    MPI_Comm_rank(d->twin, &d->twin_rank);
    MPI_Comm_size(d->twin, &d->twin_size);
}

void dist_grid_init(dist_ctx *d, int pp, int tp) { dist_grid_init_dp(d, 1, pp, tp); }

int dist_scheduler_rank(const dist_ctx *d, int replica) { return replica * d->pp * d->tp; }

void dist_ctx_free(dist_ctx *d) {
    dist_msg_progress(d, 1);
    if (d->tp_win != MPI_WIN_NULL) {
        MPI_Barrier(d->tp_comm); /* every tp rank is past the last all-reduce's reads */
        MPI_Win_free(&d->tp_win);
    }
    free(d->posted);
    MPI_Comm *comms[] = {&d->tp_comm, &d->replica_comm, &d->ctrl, &d->twin};
    for (size_t i = 0; i < sizeof(comms) / sizeof(comms[0]); i++)
        if (*comms[i] != MPI_COMM_NULL) MPI_Comm_free(comms[i]);
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

double dist_sum_double(dist_ctx *d, double v) {
    double r = v;
    MPI_CHECK(MPI_Allreduce(&v, &r, 1, MPI_DOUBLE, MPI_SUM, d->world));
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
    if (d->tp_shm_on) tp_shm_allreduce(d, buf, n);
    else MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, buf, (int)n, MPI_FLOAT, MPI_SUM, d->tp_comm));
    trace_end(TN_ALLREDUCE, TRACE_ALLREDUCE, t0, (int)n);
    d->bytes_allreduce += n * 4;
    d->n_allreduce++;
}

void dist_tp_bcast(dist_ctx *d, void *buf, int64_t bytes) {
    if (d->tp == 1) return;
    double t0 = trace_now();
    MPI_CHECK(MPI_Bcast(buf, (int)bytes, MPI_BYTE, 0, d->tp_comm));
    trace_end(d->tp_rank == 0 ? TN_SEND : TN_WAIT, d->tp_rank == 0 ? TRACE_P2P : TRACE_WAIT, t0, -1);
    if (d->tp_rank == 0) d->bytes_p2p += bytes * (d->tp - 1); /* the message to each tp peer */
}

/* a ring's send has completed: its in-flight span in the trace */
static void ring_done(dist_ctx *d, int ring) {
    d->ring[ring] = MPI_REQUEST_NULL;
    trace_end(TN_IN_FLIGHT, TRACE_FLIGHT, d->ring_posted[ring], ring);
}

static int ring_live(const dist_ctx *d, int ring) { return d->ring[ring] != MPI_REQUEST_NULL && d->ring[ring] != 0; }

/* a send posted on ring now */
static void ring_posted(dist_ctx *d, int ring) { d->ring_posted[ring] = trace_now(); }

void dist_ring_wait(dist_ctx *d, int ring) {
    check(ring >= 0 && ring < DIST_RING, "ring index %d out of range", ring);
    if (!ring_live(d, ring)) return;
    MPI_CHECK(MPI_Wait(&d->ring[ring], MPI_STATUS_IGNORE));
    ring_done(d, ring);
}

void dist_progress(dist_ctx *d) {
    if (!d->progress) return;
    for (int r = 0; r < DIST_RING; r++) {
        if (!ring_live(d, r)) continue;
        int done = 0;
        MPI_CHECK(MPI_Test(&d->ring[r], &done, MPI_STATUS_IGNORE));
        if (done) ring_done(d, r);
    }
}

void dist_pipe_send(dist_ctx *d, const void *buf, int64_t bytes, int ring) {
    double t0 = trace_now();
    dist_ring_wait(d, ring);
    int dest = (d->stage + 1) * d->tp + d->tp_rank;
    MPI_CHECK(MPI_Isend(buf, (int)bytes, MPI_BYTE, dest, 100, d->replica_comm, &d->ring[ring]));
    ring_posted(d, ring);
    trace_end(TN_SEND, TRACE_P2P, t0, -1);
    d->bytes_p2p += bytes;
    d->n_p2p++;
}

int64_t dist_pipe_recv(dist_ctx *d, void *buf, int64_t max_bytes) {
    double t0 = trace_now();
    int src = (d->stage - 1) * d->tp + d->tp_rank, count = 0;
    MPI_Status st;
    MPI_CHECK(MPI_Recv(buf, (int)max_bytes, MPI_BYTE, src, 100, d->replica_comm, &st));
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

/* ------------------------------------------------------------------ shared weights */

void dist_shared_alloc(const dist_ctx *d, dist_shared *s, size_t bytes) {
    memset(s, 0, sizeof(*s));
    s->bytes = bytes;
    s->win = MPI_WIN_NULL;
    /* MPILLAMA_PRIVATE_WEIGHTS=1: a copy per rank (to measure what sharing saves) */
    const char *priv = getenv("MPILLAMA_PRIVATE_WEIGHTS");
    int private_copy = priv && priv[0] == '1';
    s->owner = d->twin == MPI_COMM_NULL || d->twin_rank == 0 || private_copy;
    if (d->twin == MPI_COMM_NULL || d->twin_size == 1 || private_copy) {
        if (!(s->base = util_alloc_huge(bytes)))
            die("out of memory: cannot allocate %.1f MiB of weights", bytes / 1048576.0);
        return;
    }
    MPI_Info info;
    MPI_Info_create(&info);
    MPI_Info_set(info, "alloc_shared_noncontig", "true");
    void *mine = NULL;
    /* 64 bytes more than needed so that the base can be aligned like the private arena's */
    MPI_CHECK(MPI_Win_allocate_shared(s->owner ? (MPI_Aint)bytes + 64 : 0, 1, info, d->twin, &mine, &s->win));
    MPI_Info_free(&info);
    MPI_Aint size = 0;
    int disp = 1;
    char *base = NULL;
    MPI_CHECK(MPI_Win_shared_query(s->win, 0, &size, &disp, &base));
    s->base = (void *)(((uintptr_t)base + 63) & ~(uintptr_t)63);
}

void dist_shared_ready(const dist_ctx *d, dist_shared *s) {
    if (s->win == MPI_WIN_NULL) return;
    MPI_CHECK(MPI_Win_fence(0, s->win)); /* a memory barrier over the window and a barrier over the twins */
    MPI_CHECK(MPI_Barrier(d->twin));
}

void dist_shared_free(dist_shared *s) {
    if (s->win != MPI_WIN_NULL) MPI_Win_free(&s->win);
    else free(s->base);
    memset(s, 0, sizeof(*s));
}

/* ------------------------------------------------------------------ rank 0 <-> schedulers */

void dist_msg_send(dist_ctx *d, int dest, int tag, const void *buf, int64_t bytes) {
    check(bytes < (1LL << 31), "message of %lld bytes is too large", (long long)bytes);
    MPI_CHECK(MPI_Send(buf, (int)bytes, MPI_BYTE, dest, tag, d->ctrl));
    d->bytes_ctrl += bytes;
}

struct dist_posted {
    MPI_Request req;
    void *copy;
};

void dist_msg_post(dist_ctx *d, int dest, int tag, const void *buf, int64_t bytes) {
    check(bytes < (1LL << 31), "message of %lld bytes is too large", (long long)bytes);
    if (d->n_posted == d->cap_posted)
        d->posted = xrealloc(d->posted, sizeof(*d->posted) * (size_t)(d->cap_posted = d->cap_posted * 2 + 8));
    struct dist_posted *p = &d->posted[d->n_posted++];
    p->copy = xmalloc(bytes ? (size_t)bytes : 1);
    memcpy(p->copy, buf, (size_t)bytes);
    MPI_CHECK(MPI_Isend(p->copy, (int)bytes, MPI_BYTE, dest, tag, d->ctrl, &p->req));
    d->bytes_ctrl += bytes;
}

void dist_msg_progress(dist_ctx *d, int wait) {
    int k = 0;
    for (int i = 0; i < d->n_posted; i++) {
        int done = 0;
        if (wait) {
            MPI_CHECK(MPI_Wait(&d->posted[i].req, MPI_STATUS_IGNORE));
            done = 1;
        } else {
            MPI_CHECK(MPI_Test(&d->posted[i].req, &done, MPI_STATUS_IGNORE));
        }
        if (done) free(d->posted[i].copy);
        else d->posted[k++] = d->posted[i];
    }
    d->n_posted = k;
}

static void msg_status(MPI_Status *st, int *src_out, int *tag_out, int64_t *bytes) {
    int count = 0;
    MPI_Get_count(st, MPI_BYTE, &count);
    if (src_out) *src_out = st->MPI_SOURCE;
    if (tag_out) *tag_out = st->MPI_TAG;
    if (bytes) *bytes = count;
}

int dist_msg_probe(dist_ctx *d, int src, int tag, int *src_out, int *tag_out, int64_t *bytes) {
    int flag = 0;
    MPI_Status st;
    MPI_CHECK(MPI_Iprobe(src < 0 ? MPI_ANY_SOURCE : src, tag < 0 ? MPI_ANY_TAG : tag, d->ctrl, &flag, &st));
    if (flag) msg_status(&st, src_out, tag_out, bytes);
    return flag;
}

void dist_msg_wait(dist_ctx *d, int src, int tag, int *src_out, int *tag_out, int64_t *bytes) {
    MPI_Status st;
    double t0 = trace_now();
    MPI_CHECK(MPI_Probe(src < 0 ? MPI_ANY_SOURCE : src, tag < 0 ? MPI_ANY_TAG : tag, d->ctrl, &st));
    trace_end(TN_WAIT, TRACE_WAIT, t0, -1);
    msg_status(&st, src_out, tag_out, bytes);
}

void dist_msg_recv(dist_ctx *d, int src, int tag, void *buf, int64_t bytes) {
    MPI_CHECK(MPI_Recv(buf, (int)bytes, MPI_BYTE, src, tag, d->ctrl, MPI_STATUS_IGNORE));
    d->bytes_ctrl += bytes;
}

/* ------------------------------------------------------------------ vocab-parallel sampling */

void dist_tp_argmax(dist_ctx *d, float *val, int *idx, int n) {
    if (d->tp == 1 || n == 0) return;
    struct { float v; int i; } *pairs = xmalloc(sizeof(*pairs) * (size_t)n);
    for (int r = 0; r < n; r++) pairs[r].v = val[r], pairs[r].i = idx[r];
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, pairs, n, MPI_FLOAT_INT, MPI_MAXLOC, d->tp_comm));
    for (int r = 0; r < n; r++) val[r] = pairs[r].v, idx[r] = pairs[r].i;
    free(pairs);
    d->bytes_sampling += (int64_t)n * 8;
}

void dist_tp_max(dist_ctx *d, float *v, int n) {
    if (d->tp == 1 || n == 0) return;
    MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, v, n, MPI_FLOAT, MPI_MAX, d->tp_comm));
    d->bytes_sampling += (int64_t)n * 4;
}

void dist_tp_chain_recv(dist_ctx *d, float *v, int n) {
    if (d->tp_rank == 0 || n == 0) return;
    MPI_CHECK(MPI_Recv(v, n, MPI_FLOAT, d->tp_rank - 1, 102, d->tp_comm, MPI_STATUS_IGNORE));
}

void dist_tp_chain_send(dist_ctx *d, const float *v, int n) {
    if (d->tp_rank == d->tp - 1 || n == 0) return;
    MPI_CHECK(MPI_Send(v, n, MPI_FLOAT, d->tp_rank + 1, 102, d->tp_comm));
    d->bytes_sampling += (int64_t)n * 4;
}

void dist_tp_bcast_root(dist_ctx *d, void *buf, int64_t bytes, int root) {
    if (d->tp == 1 || bytes == 0) return;
    MPI_CHECK(MPI_Bcast(buf, (int)bytes, MPI_BYTE, root, d->tp_comm));
    if (d->tp_rank == root) d->bytes_sampling += bytes;
}

int64_t dist_tp_gather_bytes(dist_ctx *d, const void *buf, int64_t bytes, void *out, int64_t cap) {
    if (d->tp == 1) {
        check(bytes <= cap, "gather of %lld bytes exceeds %lld", (long long)bytes, (long long)cap);
        if (out != buf) memcpy(out, buf, (size_t)bytes);
        return bytes;
    }
    int n = (int)bytes, counts[d->tp], displs[d->tp];
    MPI_CHECK(MPI_Gather(&n, 1, MPI_INT, counts, 1, MPI_INT, 0, d->tp_comm));
    int64_t total = 0;
    if (d->tp_rank == 0)
        for (int r = 0; r < d->tp; r++) {
            displs[r] = (int)total;
            total += counts[r];
        }
    check(total <= cap, "gather of %lld bytes exceeds %lld", (long long)total, (long long)cap);
    MPI_CHECK(MPI_Gatherv(buf, n, MPI_BYTE, out, counts, displs, MPI_BYTE, 0, d->tp_comm));
    if (d->tp_rank != 0) d->bytes_sampling += bytes;
    return total;
}

void dist_tokens_send(dist_ctx *d, const void *buf, int64_t bytes, int ring) {
    double t0 = trace_now();
    dist_ring_wait(d, ring);
    MPI_CHECK(MPI_Isend(buf, (int)bytes, MPI_BYTE, 0, 103, d->replica_comm, &d->ring[ring]));
    ring_posted(d, ring);
    trace_end(TN_SEND, TRACE_SAMPLING, t0, -1);
    d->bytes_sampling += bytes;
}

int64_t dist_tokens_recv(dist_ctx *d, void *buf, int64_t max_bytes) {
    double t0 = trace_now();
    MPI_Status st;
    int count = 0;
    MPI_CHECK(MPI_Recv(buf, (int)max_bytes, MPI_BYTE, (d->pp - 1) * d->tp, 103, d->replica_comm, &st));
    MPI_Get_count(&st, MPI_BYTE, &count);
    trace_end(TN_WAIT, TRACE_WAIT, t0, -1);
    return count;
}

void dist_world_bcast_int(int *v) { MPI_CHECK(MPI_Bcast(v, 1, MPI_INT, 0, MPI_COMM_WORLD)); }

int dist_world_size(void) {
    int n = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &n);
    return n;
}

MPI_Comm dist_comm_self(void) { return MPI_COMM_SELF; }

/* ------------------------------------------------------------------ stop signals */

#define DIST_TAG_STOP 7707

void dist_stop_notify(dist_ctx *d, int sig) {
    static int sent; /* the buffer of a freed request must outlive the send */
    static int payload;
    if (sent || d->world_rank == 0) return;
    sent = 1;
    payload = sig;
    MPI_Request r;
    MPI_CHECK(MPI_Isend(&payload, 1, MPI_INT, 0, DIST_TAG_STOP, d->world, &r));
    MPI_CHECK(MPI_Request_free(&r));
}

int dist_stop_poll(dist_ctx *d) {
    int sig = 0, flag = 1;
    while (d->world_size > 1) {
        MPI_Status st;
        MPI_CHECK(MPI_Iprobe(MPI_ANY_SOURCE, DIST_TAG_STOP, d->world, &flag, &st));
        if (!flag) break;
        int v;
        MPI_CHECK(MPI_Recv(&v, 1, MPI_INT, st.MPI_SOURCE, DIST_TAG_STOP, d->world, MPI_STATUS_IGNORE));
        if (!sig) sig = v;
    }
    return sig;
}
