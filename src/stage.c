#include "stage.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

int64_t stage_msg_ints(int T, int C) { return STAGE_MSG_HDR + 4 * (int64_t)T + (int64_t)VSAMPLE_SEQ_INTS * C; }

vsample_seq *stage_msg_seqs(int *msg, int T) { return (vsample_seq *)(msg + STAGE_MSG_HDR + 4 * (int64_t)T); }

model_batch stage_msg_batch(int *msg, int T) {
    model_batch b = {msg[0], msg + STAGE_MSG_HDR, msg + STAGE_MSG_HDR + T, msg + STAGE_MSG_HDR + 2 * T,
                     msg + STAGE_MSG_HDR + 3 * T};
    return b;
}

int stage_msg_n_want(const int *msg, int T) {
    int nw = 0;
    for (int i = 0; i < msg[0]; i++) nw += msg[STAGE_MSG_HDR + 3 * T + i] != 0;
    return nw;
}

void stage_msg_kv_copies(model *m, int *msg, int T) {
    const vsample_seq *seqs = stage_msg_seqs(msg, T);
    for (int i = 0; i < msg[3]; i++)
        if (seqs[i].copy_len > 0) model_kv_copy(m, seqs[i].copy_from, seqs[i].slot, seqs[i].copy_len);
}

trace_name stage_msg_step_name(const int *msg) {
    return msg[2] == msg[0] ? TN_PREFILL : msg[2] == 0 ? TN_DECODE : TN_MIXED;
}

int64_t stage_res_bytes(const stage_bufs *b) {
    /* generate: room for the rows' top log-prob alternatives after them */
    return (int64_t)b->rows * ((int64_t)sizeof(vsample_out) + (b->score ? 0 : (int64_t)sizeof(vsample_top) * VSAMPLE_TOP_MAX));
}

void stage_bufs_init(stage_bufs *b, const dist_ctx *d, const model *m, int T, int C, int M, int rows, int score,
                     int is_scheduler) {
    memset(b, 0, sizeof(*b));
    const int64_t msg_bytes = sizeof(int) * stage_msg_ints(T, C) + sizeof(float) * (int64_t)T * m->cfg.dim;
    const int last = d->stage == d->pp - 1;
    b->M = M;
    b->T = T;
    b->C = C;
    b->rows = rows;
    b->score = score;
    b->in = xmalloc((size_t)msg_bytes);
    b->out = xcalloc((size_t)M + 1, sizeof(int *));
    b->res = xcalloc((size_t)M + 1, sizeof(vsample_out *));
    for (int g = 0; g <= M; g++) {
        b->out[g] = xmalloc((size_t)msg_bytes);
        if ((last && d->tp_rank == 0) || is_scheduler) b->res[g] = xmalloc(stage_res_bytes(b));
    }
    if (last) {
        vsample_init(&b->vs, m, d, rows, score);
        b->has_vs = 1;
    }
}

void stage_bufs_free(stage_bufs *b) {
    for (int g = 0; g <= b->M; g++) {
        free(b->out[g]);
        free(b->res[g]);
    }
    free(b->out);
    free(b->res);
    free(b->in);
    if (b->has_vs) vsample_free(&b->vs);
    memset(b, 0, sizeof(*b));
}

int stage_sample(stage_bufs *bufs, dist_ctx *d, model *m, int *msg, vsample_out *res) {
    model_batch b = stage_msg_batch(msg, bufs->T);
    vsample_record(&bufs->vs, stage_msg_seqs(msg, bufs->T), msg[3], &b);
    return bufs->score ? vsample_score(&bufs->vs, m, d, &b, res) : vsample_sample(&bufs->vs, m, d, &b, res);
}

void stage_follow(dist_ctx *d, model *m, stage_bufs *bufs, const volatile sig_atomic_t *stop_signal) {
    const int dim = m->cfg.dim, last = d->stage == d->pp - 1, M = bufs->M, T = bufs->T;
    const int64_t ints = stage_msg_ints(T, bufs->C);
    int *in = bufs->in, **out = bufs->out;
    for (;;) {
        if (*stop_signal) dist_stop_notify(d, *stop_signal); /* a signal to this rank alone stops the job too */
        if (d->stage == 0) dist_tp_bcast(d, in, sizeof(int) * ints);
        else dist_pipe_recv(d, in, sizeof(int) * ints + sizeof(float) * (int64_t)T * dim);
        model_batch b = stage_msg_batch(in, T);
        int g = in[1];
        if (b.n == 0) {
            if (!last) {
                dist_wait_sends(d);
                dist_pipe_send(d, in, sizeof(int) * ints, M);
            }
            break;
        }
        double t0 = trace_now();
        if (d->stage == 0) model_embed(m, d, &b);
        else memcpy(m->x, in + ints, sizeof(float) * (size_t)b.n * dim);
        stage_msg_kv_copies(m, in, T);
        model_layers(m, d, &b);
        if (!last) {
            dist_ring_wait(d, g);
            memcpy(out[g], in, sizeof(int) * ints);
            memcpy(out[g] + ints, m->x, sizeof(float) * (size_t)b.n * dim);
            dist_pipe_send(d, out[g], sizeof(int) * ints + sizeof(float) * (int64_t)b.n * dim, g);
        } else {
            if (d->tp_rank == 0) dist_ring_wait(d, g); /* res[g]'s previous send */
            int nw = stage_sample(bufs, d, m, in, bufs->res[g]);
            if (nw > 0 && d->tp_rank == 0) dist_tokens_send(d, bufs->res[g], vsample_out_bytes(bufs->res[g], nw), g);
        }
        trace_end(stage_msg_step_name(in), TRACE_STEP, t0, b.n);
    }
    dist_wait_sends(d);
}
