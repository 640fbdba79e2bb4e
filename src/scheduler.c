#include "scheduler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "trace.h"
#include "util.h"

struct sched_seq {
    int active, in_flight;
    intake_request rq;      /* the request; rq.ids grows by the completion */
    int n, n_prompt;        /* tokens in rq.ids, of them the prompt's */
    int n_cached;           /* tokens already in the KV cache */
    int announced;          /* its vsample_seq record went down the pipeline */
    int wait_for;           /* a choice of n waiting for a sibling's prefill (its slot), or -1 */
    int copy_from;          /* the sibling slot whose prompt KV rows it takes (next micro-batch), or -1 */
    uint64_t rng;
    float *logprobs;        /* score: (n_prompt - 1) */
    char *text;             /* generate: completion text so far (textlen bytes) */
    float *lp;              /* generate with logprobs: (lp_cap) each completion token's log-prob */
    vsample_top *tops;      /* (lp_cap, rq.logprobs) its top alternatives */
    int lp_cap;
    size_t textlen, textcap;
    tok_decoder dec;        /* streaming: never splits a UTF-8 character */
    int has_dec;
    double t_queued, t_admit, t_prefill_done, t_end;
};

struct sched_group {
    int *msg;               /* (msg ints + T * dim floats) what was launched */
    vsample_out *res;       /* (rows) the last stage's tokens or log-probs */
    int in_flight;
};

void sched_init(sched *s, const run_opts *o, dist_ctx *d, model *m, const tokenizer *tok, stage_bufs *bufs, int M,
                int T, double t_start, sched_source src, sched_sink sink, volatile sig_atomic_t *stop_signal) {
    memset(s, 0, sizeof(*s));
    s->o = o;
    s->d = d;
    s->m = m;
    s->cfg = &m->cfg;
    s->tok = tok;
    s->src = src;
    s->sink = sink;
    s->stop_signal = stop_signal;
    s->bufs = bufs;
    s->M = M;
    s->T = T;
    s->groups = xcalloc((size_t)M, sizeof(sched_group));
    for (int g = 0; g < M; g++) {
        s->groups[g].msg = bufs->out[g];
        s->groups[g].res = bufs->res[g];
    }
    s->seqs = xcalloc((size_t)m->n_slots, sizeof(sched_seq));
    s->t_start = s->t_last_process = t_start;
}

static void seq_clear(sched_seq *q) {
    intake_request_free(&q->rq);
    free(q->logprobs);
    free(q->text);
    free(q->lp);
    free(q->tops);
    if (q->has_dec) tok_decoder_free(&q->dec);
    memset(q, 0, sizeof(*q));
}

void sched_free(sched *s) {
    for (int i = 0; i < s->m->n_slots; i++) seq_clear(&s->seqs[i]);
    free(s->seqs);
    free(s->groups);
    memset(s, 0, sizeof(*s));
}

/* ------------------------------------------------------------------ sequences */

static void seq_push(sched_seq *q, int tok) {
    if (q->n == q->rq.cap) q->rq.ids = xrealloc(q->rq.ids, sizeof(int) * (size_t)(q->rq.cap = q->rq.cap * 2 + 16));
    q->rq.ids[q->n++] = tok;
}

static void seq_append_text(sched_seq *q, const char *t) {
    size_t l = strlen(t);
    if (q->textlen + l + 1 > q->textcap) q->text = xrealloc(q->text, q->textcap = (q->textlen + l + 1) * 2 + 64);
    memcpy(q->text + q->textlen, t, l + 1);
    q->textlen += l;
}

/* puts request rq (taken over) into slot */
static void seq_start(sched *s, int slot, intake_request *rq) {
    sched_seq *q = &s->seqs[slot];
    seq_clear(q);
    q->rq = *rq;
    memset(rq, 0, sizeof(*rq));
    q->n = q->n_prompt = q->rq.n_ids;
    q->rng = q->rq.seed ? q->rq.seed : 1;
    if (s->o->mode == RUN_SCORE) q->logprobs = xmalloc(sizeof(float) * (size_t)(q->n_prompt > 1 ? q->n_prompt - 1 : 1));
    q->t_admit = util_now();
    q->t_queued = q->t_admit - s->t_start;
    q->active = 1;
    q->wait_for = q->copy_from = -1;
    /* a choice of n > 1 whose sibling prefills the same prompt here waits for it and takes its KV
     * rows instead of computing them again (the last prompt token it computes itself: its first
     * token is sampled with its own seed) */
    if (q->rq.n_choices > 1 && q->n_prompt >= 2)
        for (int k = 0; k < s->m->n_slots; k++) {
            const sched_seq *o = &s->seqs[k];
            if (k != slot && o->active && o->rq.item == q->rq.item && o->wait_for < 0 && o->copy_from < 0 &&
                o->n_prompt == q->n_prompt) {
                q->wait_for = k;
                break;
            }
        }
}

/* a waiting choice: 1 when it may be built now (its sibling's prompt rows are in every rank's
 * cache, or the sibling is gone and it prefills itself) */
static int seq_ready(sched *s, sched_seq *q) {
    if (q->wait_for < 0) return 1;
    const sched_seq *d = &s->seqs[q->wait_for];
    if (!d->active || d->rq.item != q->rq.item) { /* finished first: prefill alone */
        q->wait_for = -1;
        return 1;
    }
    if (d->n_cached < q->n_prompt - 1) return 0; /* (n_cached counts what the last stage sent back for) */
    q->copy_from = q->wait_for;
    q->wait_for = -1;
    q->n_cached = q->n_prompt - 1;
    return 1;
}

/* appends the sampled token's text (streaming: a UTF-8 character split over tokens comes out
 * whole) and looks for a stop string; 1 when one ended the text. token < 0 flushes. */
static int check_stop_strings(sched *s, sched_seq *q, int token) {
    if (!s->tok) return 0;
    if (!q->has_dec) {
        tok_decoder_init(&q->dec, s->tok, q->rq.ids[q->n_prompt - 1], s->cfg->bos_id, 0);
        q->has_dec = 1;
    }
    size_t len, before = q->textlen;
    const char *piece = token >= 0 ? tok_decoder_push(&q->dec, token, &len) : tok_decoder_flush(&q->dec, &len);
    seq_append_text(q, piece);
    const char *stop = q->rq.stop_text;
    for (int k = 0; k < q->rq.n_stop; k++, stop += strlen(stop) + 1) {
        size_t sl = strlen(stop), from = before >= sl ? before - sl + 1 : 0;
        char *hit = q->textlen >= sl ? memmem(q->text + from, q->textlen - from, stop, sl) : NULL;
        if (hit) {
            q->textlen = (size_t)(hit - q->text);
            q->text[q->textlen] = 0;
            return 1;
        }
    }
    return 0;
}

/* hands the finished request to the sink; reason "stop_string" is reported as "stop" after the
 * text was cut; error non-NULL: the request failed (the sink writes an error record) */
static void finish_as(sched *s, sched_seq *q, const char *reason, const char *error) {
    double t0 = trace_now();
    q->t_end = util_now();
    if (!q->t_prefill_done) q->t_prefill_done = q->t_end;
    if (s->o->mode == RUN_GENERATE) {
        if (q->has_dec && strcmp(reason, "stop_string") != 0) check_stop_strings(s, q, -1); /* held-back bytes */
        if (!strcmp(reason, "stop_string")) reason = "stop";
    }
    sched_result r = {.item = q->rq.item, .reason = reason, .ids = q->rq.ids, .n_prompt = q->n_prompt,
                      .n = q->n, .logprobs = q->logprobs, .seed = q->rq.seed, .choice = q->rq.choice,
                      .n_choices = q->rq.n_choices, .queued_s = q->t_queued,
                      .prefill_s = q->t_prefill_done - q->t_admit, .decode_s = q->t_end - q->t_prefill_done,
                      .total_s = q->t_end - q->t_admit, .error = error};
    if (q->rq.logprobs >= 0) {
        r.token_logprobs = q->lp;
        r.top = q->tops;
        r.n_top = q->rq.logprobs;
    }
    if (s->tok) {
        r.text = q->text ? q->text : "";
        r.text_len = q->text ? q->textlen : 0;
    }
    s->sink.result(s->sink.ctx, &r);
    q->active = 0;
    trace_end(TN_IO, TRACE_IO, t0, -1);
}

static void finish(sched *s, sched_seq *q, const char *reason) { finish_as(s, q, reason, NULL); }


/* ------------------------------------------------------------------ micro-batches */

/* builds group g's micro-batch from its active sequences; returns the token count */
static int build_group(sched *s, int g) {
    const int T = s->T, B = s->m->n_slots;
    int *msg = s->groups[g].msg;
    dist_ring_wait(s->d, g); /* the buffer's previous send must be complete */
    model_batch b = stage_msg_batch(msg, T);
    vsample_seq *seqs = stage_msg_seqs(msg, T);
    int n = 0, prompt_tokens = 0, n_seqs = 0;
    for (int slot = g; slot < B && n < T; slot += s->M) {
        sched_seq *q = &s->seqs[slot];
        if (!q->active || !seq_ready(s, q)) continue;
        int take = q->n - q->n_cached;
        if (take > s->o->prefill_chunk) take = s->o->prefill_chunk;
        if (take > T - n) take = T - n;
        if (take > 0 && !q->announced) { /* the sequence starts: what the last stage samples it with */
            check(n_seqs < s->bufs->C, "more new sequences in a micro-batch than its %d records", s->bufs->C);
            vsample_seq *v = &seqs[n_seqs++];
            v->slot = slot;
            v->n_prompt = q->n_prompt;
            v->rng_lo = (uint32_t)q->rng;
            v->rng_hi = (uint32_t)(q->rng >> 32);
            v->sp = q->rq.sp;
            v->logprobs = q->rq.logprobs;
            v->copy_from = q->copy_from;
            v->copy_len = q->copy_from >= 0 ? q->n_cached : 0;
            q->announced = 1;
            s->st.prefill_shared += v->copy_len;
        }
        for (int i = 0; i < take; i++) {
            int p = q->n_cached + i;
            b.token[n] = q->rq.ids[p];
            b.pos[n] = p;
            b.slot[n] = slot;
            /* generate samples after the last token; score wants every next token's log-prob
             * (want = the target + 1) */
            if (s->o->mode == RUN_GENERATE) b.want[n] = p == q->n - 1;
            else b.want[n] = p < q->n_prompt - 1 ? q->rq.ids[p + 1] + 1 : 0;
            prompt_tokens += p < q->n_prompt;
            n++;
        }
        if (take > 0) q->in_flight = 1;
    }
    msg[0] = n;
    msg[1] = g;
    msg[2] = prompt_tokens;
    msg[3] = n_seqs;
    return n;
}

/* stage 0's share of a micro-batch; with pp = 1 the sampling too */
static void launch_group(sched *s, int g) {
    sched_group *gs = &s->groups[g];
    model_batch b = stage_msg_batch(gs->msg, s->T);
    const int64_t ints = stage_msg_ints(s->T, s->bufs->C);
    double t0 = trace_now();
    dist_tp_bcast(s->d, gs->msg, sizeof(int) * ints);
    model_embed(s->m, s->d, &b);
    stage_msg_kv_copies(s->m, gs->msg, s->T);
    model_layers(s->m, s->d, &b);
    if (s->d->pp > 1) {
        float *x = (float *)(gs->msg + ints);
        memcpy(x, s->m->x, sizeof(float) * (size_t)b.n * s->cfg->dim);
        dist_pipe_send(s->d, gs->msg, sizeof(int) * ints + sizeof(float) * (int64_t)b.n * s->cfg->dim, g);
    } else {
        stage_sample(s->bufs, s->d, s->m, gs->msg, gs->res);
    }
    trace_end(stage_msg_step_name(gs->msg), TRACE_STEP, t0, b.n);
    gs->in_flight = 1;
    s->fifo[(s->fifo_head + s->fifo_len++) % DIST_RING] = g;
}

/* the log-prob and top alternatives of the completion token being pushed */
static void seq_push_logprobs(sched_seq *q, const vsample_out *r, const vsample_top *top) {
    const int c = q->n - q->n_prompt, k = q->rq.logprobs;
    if (c >= q->lp_cap) {
        q->lp_cap = c * 2 + 16;
        q->lp = xrealloc(q->lp, sizeof(float) * (size_t)q->lp_cap);
        q->tops = xrealloc(q->tops, sizeof(vsample_top) * (size_t)q->lp_cap * (k > 0 ? k : 1));
    }
    q->lp[c] = r->logprob;
    for (int i = 0; i < k; i++) q->tops[(int64_t)c * k + i] = i < r->n_top ? top[i] : (vsample_top){-1, -INFINITY};
}

/* one sequence's token sampled after its last token (by the last stage): the stop rules; r and
 * top: the token's log-prob and alternatives */
static void sample_next(sched *s, sched_seq *q, int next, const vsample_out *r, const vsample_top *top) {
    if (!q->t_prefill_done) q->t_prefill_done = util_now();
    if (!s->st.t_first_token) s->st.t_first_token = q->t_prefill_done; /* the job's first token, kept or not */
    if (q->n - q->n_prompt >= q->rq.max_new) {
        finish(s, q, "length");
        return;
    }
    if (next == SAMPLER_NON_FINITE) { /* NaN weights or activations, or an overflow: no token to pick */
        char why[128];
        snprintf(why, sizeof(why), "non-finite logits (NaN or inf) at completion token %d", q->n - q->n_prompt);
        finish_as(s, q, "error", why);
        return;
    }
    int is_stop = !q->rq.ignore_eos && config_is_eos(s->cfg, next);
    for (int j = 0; j < q->rq.n_stop_ids && !is_stop; j++) is_stop = q->rq.stop_ids[j] == next;
    if (is_stop) {
        finish(s, q, "stop");
        return;
    }
    int stop_text = check_stop_strings(s, q, next);
    if (q->rq.logprobs >= 0) seq_push_logprobs(q, r, top);
    seq_push(q, next);
    s->st.tokens_out++;
    if (stop_text) finish(s, q, "stop_string");
    else if (q->n - q->n_prompt >= q->rq.max_new || q->n >= s->m->seq_len) finish(s, q, "length");
}

/* consumes group g's results: log-probs or sampled tokens, stops, finished requests */
static void process_group(sched *s, int g) {
    sched_group *gs = &s->groups[g];
    const int T = s->T;
    model_batch b = stage_msg_batch(gs->msg, T);
    int nw = stage_msg_n_want(gs->msg, T);
    if (s->d->pp > 1 && nw > 0) dist_tokens_recv(s->d, gs->res, stage_res_bytes(s->bufs));
    const vsample_top *top = (const vsample_top *)(gs->res + nw); /* generate: the rows' alternatives */
    double t0 = trace_now();
    int row = 0, prefill_tokens = 0, decode_tokens = 0;
    for (int k = 0; k < b.n;) {
        const int slot = b.slot[k];
        sched_seq *q = &s->seqs[slot];
        int first = k;
        while (k < b.n && b.slot[k] == slot) k++;
        int ntok = k - first;
        if (q->n_cached < q->n_prompt) prefill_tokens += ntok;
        else decode_tokens += ntok;
        int next = -1;
        const vsample_out *got = NULL;
        const vsample_top *got_top = NULL;
        for (int i = first; i < k; i++) {
            if (!b.want[i]) continue;
            const vsample_out *r = &gs->res[row++];
            if (s->o->mode == RUN_SCORE) {
                q->logprobs[b.pos[i]] = r->logprob;
                continue;
            }
            next = r->token;
            got = r;
            got_top = top;
            top += r->n_top;
        }
        q->n_cached += ntok;
        q->in_flight = 0;
        if (s->o->mode == RUN_SCORE) {
            if (q->n_cached == q->n_prompt && !s->st.t_first_token) s->st.t_first_token = util_now();
            if (q->n_cached == q->n_prompt) finish(s, q, "done");
            continue;
        }
        if (q->n_cached < q->n) continue; /* prompt not all in yet */
        sample_next(s, q, next, got, got_top);
    }
    s->st.tokens_in += prefill_tokens;
    trace_end(TN_SAMPLING, TRACE_SAMPLING, t0, b.n); /* the stop rules and the text of the tokens */
    /* the scheduler's time since the last micro-batch, split by the kind of tokens it carried */
    double now = util_now(), dt = now - s->t_last_process;
    s->t_last_process = now;
    if (b.n > 0) {
        s->st.t_prefill += dt * prefill_tokens / b.n;
        s->st.t_decode += dt * decode_tokens / b.n;
    }
    gs->in_flight = 0;
}

/* the terminator: stage 0's tp ranks, then down the pipeline */
static void send_terminator(sched *s) {
    int *term = s->bufs->out[s->M];
    const int64_t ints = stage_msg_ints(s->T, s->bufs->C);
    memset(term, 0, sizeof(int) * ints);
    dist_tp_bcast(s->d, term, sizeof(int) * ints);
    if (s->d->pp > 1) {
        dist_wait_sends(s->d);
        dist_pipe_send(s->d, term, sizeof(int) * ints, s->M);
    }
    dist_wait_sends(s->d);
}

int sched_run(sched *s) {
    const int B = s->m->n_slots;
    int stopping = 0;
    double deadline = 0;
    for (;;) {
        if (!*s->stop_signal) { /* a signal another rank got (dist_stop_notify) counts as this rank's */
            int other = dist_stop_poll(s->d);
            if (other) *s->stop_signal = other;
        }
        int sig = *s->stop_signal;
        if (sig && !stopping) {
            stopping = 1;
            deadline = util_now() + s->o->grace;
            fprintf(stderr, "mpillama: signal %d: taking no new prompts; finishing in-flight ones for up to %g s\n", sig,
                    s->o->grace);
        }
        int expired = stopping && util_now() >= deadline;
        if (!stopping)
            for (int slot = 0; slot < B; slot++) {
                intake_request rq;
                if (!s->seqs[slot].active && s->src.next(s->src.ctx, &rq)) seq_start(s, slot, &rq);
            }
        if (!expired)
            for (int g = 0; g < s->M; g++)
                if (!s->groups[g].in_flight && build_group(s, g) > 0) launch_group(s, g);
        if (s->fifo_len == 0) break;
        int g = s->fifo[s->fifo_head];
        s->fifo_head = (s->fifo_head + 1) % DIST_RING;
        s->fifo_len--;
        process_group(s, g);
        s->sink.tick(s->sink.ctx, &s->st);
    }
    int left = 0;
    for (int slot = 0; slot < B; slot++)
        if (s->seqs[slot].active) {
            finish(s, &s->seqs[slot], "interrupted");
            left++;
        }
    send_terminator(s);
    return stopping && (left > 0 || s->src.more(s->src.ctx));
}
