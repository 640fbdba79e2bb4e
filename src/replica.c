#include "replica.h"

#include <stdlib.h>
#include <string.h>

#include "trace.h"
#include "util.h"

/* ------------------------------------------------------------------ packing */

typedef struct {
    char **buf;
    int64_t *cap, len;
} packer;

static void put(packer *p, const void *v, int64_t n) {
    if (p->len + n > *p->cap) *p->buf = xrealloc(*p->buf, (size_t)(*p->cap = (p->len + n) * 2 + 256));
    if (n) memcpy(*p->buf + p->len, v, (size_t)n);
    p->len += n;
}

typedef struct {
    const char *p, *end;
} unpacker;

static const void *take(unpacker *u, int64_t n) {
    check(u->p + n <= u->end, "replica message shorter than its contents");
    const void *v = u->p;
    u->p += n;
    return v;
}

typedef struct {
    int item, n_ids, max_new, ignore_eos, n_stop_ids, n_stop, choice, n_choices, logprobs;
    int64_t stop_bytes;
    uint64_t seed;
    sampler_params sp;
} request_head;

static void pack_request(packer *p, const intake_request *rq) {
    request_head h = {rq->item, rq->n_ids, rq->max_new, rq->ignore_eos, rq->n_stop_ids, rq->n_stop, rq->choice,
                      rq->n_choices, rq->logprobs, (int64_t)rq->stop_bytes, rq->seed, rq->sp};
    put(p, &h, sizeof(h));
    put(p, rq->ids, sizeof(int) * (int64_t)rq->n_ids);
    put(p, rq->stop_ids, sizeof(int) * (int64_t)rq->n_stop_ids);
    put(p, rq->stop_text, h.stop_bytes);
}

static void unpack_request(unpacker *u, intake_request *rq) {
    request_head h;
    memcpy(&h, take(u, sizeof(h)), sizeof(h));
    memset(rq, 0, sizeof(*rq));
    rq->item = h.item;
    rq->n_ids = h.n_ids;
    rq->cap = h.n_ids + 16;
    rq->max_new = h.max_new;
    rq->ignore_eos = h.ignore_eos;
    rq->sp = h.sp;
    rq->seed = h.seed;
    rq->choice = h.choice;
    rq->n_choices = h.n_choices;
    rq->logprobs = h.logprobs;
    rq->n_stop_ids = h.n_stop_ids;
    rq->n_stop = h.n_stop;
    rq->stop_bytes = (size_t)h.stop_bytes;
    rq->ids = xmalloc(sizeof(int) * (size_t)rq->cap);
    memcpy(rq->ids, take(u, sizeof(int) * (int64_t)h.n_ids), sizeof(int) * (size_t)h.n_ids);
    if (h.n_stop_ids) {
        rq->stop_ids = xmalloc(sizeof(int) * (size_t)h.n_stop_ids);
        memcpy(rq->stop_ids, take(u, sizeof(int) * (int64_t)h.n_stop_ids), sizeof(int) * (size_t)h.n_stop_ids);
    }
    if (h.stop_bytes) {
        rq->stop_text = xmalloc((size_t)h.stop_bytes);
        memcpy(rq->stop_text, take(u, h.stop_bytes), (size_t)h.stop_bytes);
    }
}

typedef struct {
    int item, n_prompt, n, has_text, n_logprobs, reason_len, choice, n_choices, has_lp, n_top;
    int error_len;             /* 0: no error */
    int64_t text_len;
    uint64_t seed;
    double queued_s, prefill_s, decode_s, total_s;
    sched_stats st;            /* the sender's counts so far */
} result_head;

static void pack_result(packer *p, const sched_result *r, int n_logprobs, const sched_stats *st) {
    result_head h = {r->item, r->n_prompt, r->n, r->text != NULL, n_logprobs, (int)strlen(r->reason) + 1,
                     r->choice, r->n_choices, r->token_logprobs != NULL, r->n_top,
                     r->error ? (int)strlen(r->error) + 1 : 0, (int64_t)r->text_len, r->seed, r->queued_s,
                     r->prefill_s, r->decode_s, r->total_s, *st};
    put(p, &h, sizeof(h));
    put(p, r->ids, sizeof(int) * (int64_t)r->n);
    if (n_logprobs) put(p, r->logprobs, sizeof(float) * (int64_t)n_logprobs);
    if (h.has_lp) {
        const int64_t nc = r->n - r->n_prompt;
        put(p, r->token_logprobs, sizeof(float) * nc);
        put(p, r->top, sizeof(vsample_top) * nc * r->n_top);
    }
    put(p, r->reason, h.reason_len);
    if (r->error) put(p, r->error, h.error_len);
    if (r->text) {
        put(p, r->text, h.text_len);
        put(p, "", 1);
    }
}

/* ------------------------------------------------------------------ the hub (world rank 0) */

typedef struct {
    int count, flags;
} requests_head;
enum { REQ_EXHAUSTED = 1, REQ_STOPPED = 2 };

typedef struct {
    sched_stats st;
    int interrupted, more;
} done_msg;

void replica_hub_init(replica_hub *h, dist_ctx *d, intake *in, writer *w, const volatile sig_atomic_t *signal) {
    memset(h, 0, sizeof(*h));
    h->d = d;
    h->in = in;
    h->w = w;
    h->signal = signal;
    h->stats = xcalloc((size_t)d->dp, sizeof(sched_stats));
}

void replica_hub_free(replica_hub *h) {
    free(h->stats);
    free(h->buf);
    memset(h, 0, sizeof(*h));
}

static void hub_answer_want(replica_hub *h, int src, int want) {
    packer p = {&h->buf, &h->cap, 0};
    requests_head rh = {0, 0};
    put(&p, &rh, sizeof(rh));
    char why[256];
    int item;
    intake_request rq;
    /* the choices of a request of n go together (to share its prefill): past want if need be */
    while ((rh.count < want || intake_in_choices(h->in)) && !*h->signal) {
        intake_status st = intake_next(h->in, &rq, &item, why, sizeof(why));
        if (st == INTAKE_END) break;
        if (st == INTAKE_ERROR) {
            writer_error(h->w, item, why);
            continue;
        }
        pack_request(&p, &rq);
        intake_request_free(&rq);
        rh.count++;
    }
    if (!intake_more(h->in)) rh.flags |= REQ_EXHAUSTED;
    if (*h->signal) rh.flags |= REQ_STOPPED;
    memcpy(h->buf, &rh, sizeof(rh));
    dist_msg_post(h->d, src, DIST_MSG_REQUESTS, h->buf, p.len);
}

static void hub_result(replica_hub *h, int src, const char *msg, int64_t bytes) {
    unpacker u = {msg, msg + bytes};
    result_head hd;
    memcpy(&hd, take(&u, sizeof(hd)), sizeof(hd));
    sched_result r = {.item = hd.item, .n_prompt = hd.n_prompt, .n = hd.n, .text_len = (size_t)hd.text_len,
                      .seed = hd.seed, .choice = hd.choice, .n_choices = hd.n_choices, .queued_s = hd.queued_s,
                      .prefill_s = hd.prefill_s, .decode_s = hd.decode_s, .total_s = hd.total_s};
    r.ids = take(&u, sizeof(int) * (int64_t)hd.n);
    if (hd.n_logprobs) r.logprobs = take(&u, sizeof(float) * (int64_t)hd.n_logprobs);
    if (hd.has_lp) {
        const int64_t nc = hd.n - hd.n_prompt;
        r.token_logprobs = take(&u, sizeof(float) * nc);
        r.top = take(&u, sizeof(vsample_top) * nc * hd.n_top);
        r.n_top = hd.n_top;
    }
    r.reason = take(&u, hd.reason_len);
    if (hd.error_len) r.error = take(&u, hd.error_len);
    if (hd.has_text) r.text = take(&u, hd.text_len + 1);
    int replica = src / (h->d->pp * h->d->tp);
    h->stats[replica] = hd.st;
    writer_result(h->w, &r);
}

/* handles one message that waits; 0 when none does (block = 1: waits for one) */
static int hub_one(replica_hub *h, int block) {
    int src, tag;
    int64_t bytes;
    if (block) dist_msg_wait(h->d, -1, -1, &src, &tag, &bytes);
    else if (!dist_msg_probe(h->d, -1, -1, &src, &tag, &bytes)) return 0;
    if (bytes > h->cap) h->buf = xrealloc(h->buf, (size_t)(h->cap = bytes + 256));
    double t0 = trace_now();
    dist_msg_recv(h->d, src, tag, h->buf, bytes);
    if (tag == DIST_MSG_WANT) {
        int want;
        memcpy(&want, h->buf, sizeof(int));
        hub_answer_want(h, src, want);
    } else if (tag == DIST_MSG_RESULT) {
        hub_result(h, src, h->buf, bytes);
    } else if (tag == DIST_MSG_DONE) {
        done_msg dm;
        memcpy(&dm, h->buf, sizeof(dm));
        h->stats[src / (h->d->pp * h->d->tp)] = dm.st;
        h->interrupted |= dm.interrupted;
        h->n_done++;
    } else {
        die("unexpected message %d from rank %d", tag, src);
    }
    trace_end(TN_IO, TRACE_IO, t0, -1);
    return 1;
}

static void hub_signal(replica_hub *h) {
    if (!*h->signal || h->stop_sent) return;
    h->stop_sent = 1;
    int sig = (int)*h->signal;
    for (int k = 1; k < h->d->dp; k++) dist_msg_post(h->d, dist_scheduler_rank(h->d, k), DIST_MSG_STOP, &sig, sizeof(sig));
}

void replica_hub_poll(replica_hub *h) {
    hub_signal(h);
    while (hub_one(h, 0)) {
    }
    dist_msg_progress(h->d, 0);
}

void replica_hub_start(replica_hub *h) {
    /* every other replica asks at once: serve them before replica 0 fills its own slots, so
     * that a short prompt file is not taken by replica 0 alone */
    int asked = 0;
    while (asked + h->n_done < h->d->dp - 1) { /* (a replica stopped by a signal may just be done) */
        int src, tag;
        int64_t bytes;
        dist_msg_wait(h->d, -1, -1, &src, &tag, &bytes);
        asked += tag == DIST_MSG_WANT;
        hub_one(h, 1);
    }
}

void replica_hub_finish(replica_hub *h, const sched_stats *own) {
    while (h->n_done < h->d->dp - 1) {
        hub_signal(h);
        hub_one(h, 1);
        sched_stats all; /* progress while the other replicas finish (replica 0 may have had no work) */
        replica_hub_total(h, own, &all);
        writer_progress(h->w, intake_total(h->in), &all, 0);
    }
    dist_msg_progress(h->d, 1);
}

void replica_hub_total(const replica_hub *h, const sched_stats *own, sched_stats *out) {
    *out = *own;
    for (int k = 1; k < h->d->dp; k++) {
        out->tokens_in += h->stats[k].tokens_in;
        out->tokens_out += h->stats[k].tokens_out;
        out->t_prefill += h->stats[k].t_prefill;
        out->t_decode += h->stats[k].t_decode;
    }
}

/* ------------------------------------------------------------------ a replica's scheduler */

void replica_remote_init(replica_remote *r, dist_ctx *d, int batch, const volatile sig_atomic_t *signal) {
    memset(r, 0, sizeof(*r));
    r->d = d;
    r->batch = batch;
    r->depth = 2; /* enough to refill a slot or two while the hub is busy, few enough to share the tail */
    r->qcap = batch + PROMPTS_N_MAX - 1;
    r->queue = xcalloc((size_t)r->qcap, sizeof(intake_request));
    r->signal = signal;
}

void replica_remote_free(replica_remote *r) {
    for (int i = 0; i < r->qlen; i++) intake_request_free(&r->queue[(r->qhead + i) % r->qcap]);
    free(r->queue);
    free(r->buf);
    memset(r, 0, sizeof(*r));
}

/* the hub's stop, or requests it sent; block = 1 waits for the answer to our request */
static void remote_poll(replica_remote *r, int block) {
    int src, tag;
    int64_t bytes;
    for (;;) {
        if (block && r->asked) dist_msg_wait(r->d, 0, -1, &src, &tag, &bytes);
        else if (!dist_msg_probe(r->d, 0, -1, &src, &tag, &bytes)) break;
        if (bytes > r->cap) r->buf = xrealloc(r->buf, (size_t)(r->cap = bytes + 256));
        dist_msg_recv(r->d, 0, tag, r->buf, bytes);
        if (tag == DIST_MSG_STOP) {
            int sig;
            memcpy(&sig, r->buf, sizeof(sig));
            r->stop = sig;
            continue;
        }
        check(tag == DIST_MSG_REQUESTS, "unexpected message %d from rank 0", tag);
        unpacker u = {r->buf, r->buf + bytes};
        requests_head rh;
        memcpy(&rh, take(&u, sizeof(rh)), sizeof(rh));
        for (int i = 0; i < rh.count; i++) {
            check(r->qlen < r->qcap, "the hub sent more requests than asked for");
            unpack_request(&u, &r->queue[(r->qhead + r->qlen++) % r->qcap]);
        }
        if (rh.flags & REQ_EXHAUSTED) r->exhausted = 1;
        if (rh.flags & REQ_STOPPED) r->more = !(rh.flags & REQ_EXHAUSTED);
        r->asked = 0;
        block = 0;
    }
    if (*r->signal && !r->stop) r->stop = *r->signal;
}

/* asks for enough to fill the free slots and keep depth more queued (the first ask fills every
 * slot at once) */
static void remote_ask(replica_remote *r) {
    if (r->asked || r->exhausted || r->stop) return;
    int want = r->batch - r->running + r->depth - r->qlen;
    if (want > r->batch - r->qlen) want = r->batch - r->qlen;
    if (want <= 0) return;
    dist_msg_post(r->d, 0, DIST_MSG_WANT, &want, sizeof(want));
    r->asked = 1;
}

static int remote_next(void *ctx, intake_request *rq) {
    replica_remote *r = ctx;
    remote_poll(r, 0);
    /* nothing queued: ask; wait only when this replica has nothing else to compute (its running
     * sequences go on while the hub, busy with replica 0's own micro-batch, answers) */
    while (r->qlen == 0 && !r->exhausted && !r->stop) {
        remote_ask(r);
        if (r->running > 0) return 0;
        remote_poll(r, 1);
    }
    if (r->qlen == 0 || r->stop) return 0;
    *rq = r->queue[r->qhead];
    memset(&r->queue[r->qhead], 0, sizeof(*rq));
    r->qhead = (r->qhead + 1) % r->qcap;
    r->qlen--;
    r->running++;
    remote_ask(r); /* top the queue up while this one runs */
    return 1;
}

static int remote_more(void *ctx) {
    replica_remote *r = ctx;
    return r->qlen > 0 || r->more || !r->exhausted;
}

static void remote_result(void *ctx, const sched_result *res) {
    replica_remote *r = ctx;
    static const sched_stats none;
    packer p = {&r->buf, &r->cap, 0};
    int n_logprobs = res->logprobs && res->n_prompt > 1 ? res->n_prompt - 1 : 0;
    pack_result(&p, res, n_logprobs, r->st ? r->st : &none);
    dist_msg_post(r->d, 0, DIST_MSG_RESULT, r->buf, p.len);
    if (r->running > 0) r->running--;
}

static void remote_tick(void *ctx, const sched_stats *st) {
    replica_remote *r = ctx;
    r->st = st;
    remote_poll(r, 0);
    remote_ask(r);
    dist_msg_progress(r->d, 0);
}

sched_source replica_remote_source(replica_remote *r) { return (sched_source){remote_next, remote_more, r}; }
sched_sink replica_remote_sink(replica_remote *r) { return (sched_sink){remote_result, remote_tick, r}; }

void replica_remote_done(replica_remote *r, const sched_stats *st, int interrupted) {
    /* an answer still on its way is drained so that its requests are not left unreceived */
    while (r->asked) remote_poll(r, 1);
    done_msg dm = {*st, interrupted, remote_more(r) && r->stop};
    dist_msg_post(r->d, 0, DIST_MSG_DONE, &dm, sizeof(dm));
    dist_msg_progress(r->d, 1);
}
