#include "stage.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

int64_t stage_msg_ints(int T) { return STAGE_MSG_HDR + 4 * (int64_t)T; }

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

trace_name stage_msg_step_name(const int *msg) {
    return msg[2] == msg[0] ? TN_PREFILL : msg[2] == 0 ? TN_DECODE : TN_MIXED;
}

void stage_bufs_init(stage_bufs *b, const dist_ctx *d, int T, int M, int rows, int dim, int vocab, int is_scheduler) {
    const int64_t msg_bytes = sizeof(int) * stage_msg_ints(T) + sizeof(float) * (int64_t)T * dim;
    b->M = M;
    b->in = xmalloc((size_t)msg_bytes);
    b->out = xcalloc((size_t)M + 1, sizeof(int *));
    b->logits = xcalloc((size_t)M + 1, sizeof(float *));
    for (int g = 0; g <= M; g++) {
        b->out[g] = xmalloc((size_t)msg_bytes);
        if (dist_is_collector(d) || is_scheduler) b->logits[g] = xmalloc(sizeof(float) * (size_t)rows * vocab);
    }
}

void stage_bufs_free(stage_bufs *b) {
    for (int g = 0; g <= b->M; g++) {
        free(b->out[g]);
        free(b->logits[g]);
    }
    free(b->out);
    free(b->logits);
    free(b->in);
    memset(b, 0, sizeof(*b));
}

void stage_follow(dist_ctx *d, model *m, int T, stage_bufs *bufs) {
    const int dim = m->cfg.dim, last = d->stage == d->pp - 1, M = bufs->M;
    const int64_t ints = stage_msg_ints(T);
    int *in = bufs->in, **out = bufs->out;
    float **lbuf = bufs->logits;
    for (;;) {
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
        model_layers(m, d, &b);
        if (!last) {
            dist_ring_wait(d, g);
            memcpy(out[g], in, sizeof(int) * ints);
            memcpy(out[g] + ints, m->x, sizeof(float) * (size_t)b.n * dim);
            dist_pipe_send(d, out[g], sizeof(int) * ints + sizeof(float) * (int64_t)b.n * dim, g);
        } else if (dist_is_collector(d)) {
            dist_ring_wait(d, g);
            int nw = model_logits(m, d, &b, lbuf[g]);
            if (nw > 0) dist_logits_send(d, lbuf[g], (int64_t)nw * m->cfg.vocab_size, g);
        } else {
            model_logits(m, d, &b, NULL);
        }
        trace_end(stage_msg_step_name(in), TRACE_STEP, t0, b.n);
    }
    dist_wait_sends(d);
}
