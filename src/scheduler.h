/* scheduler (prefix sched_; the file is not sched.h, which would hide the system <sched.h>):
 * the scheduler of one replica, on its driver rank (stage 0, tp rank 0). It keeps up to --batch
 * sequences in KV slots, groups them into micro-batches (slot s belongs to group s % M),
 * launches stage 0's share of each micro-batch, consumes the tokens (or score's log-probs) that
 * the replica's last stage sends back (it samples where the logits are: vsample.h), applies the
 * stop rules and hands every finished request on.
 *
 * Requests come from a source and results go to a sink, two small interfaces: today both are
 * local on world rank 0 (the intake and the writer); a data-parallel job swaps them for ones
 * that receive requests from and send results to world rank 0. */
#ifndef MPILLAMA_SCHEDULER_H
#define MPILLAMA_SCHEDULER_H

#include <signal.h>
#include <stdint.h>

#include "dist.h"
#include "intake.h"
#include "model.h"
#include "run_opts.h"
#include "sampler.h"
#include "stage.h"
#include "tokenizer.h"

/* a finished request, as the writer needs it (flat: it can be sent to another rank) */
typedef struct {
    int item;                /* the request's index into the prompt list */
    const char *reason;      /* generate: "stop", "length" or "interrupted"; score: "done" or "interrupted" */
    const char *error;       /* NULL, or why the request failed mid-run (non-finite logits): an error record */
    const int *ids;          /* (n) prompt then completion tokens */
    int n_prompt, n;
    const char *text;        /* generate: completion text (text_len bytes), or NULL without a tokenizer */
    size_t text_len;
    const float *logprobs;   /* score: (n_prompt - 1) log-prob of each next prompt token */
    uint64_t seed;
    int choice, n_choices;   /* generate: which of the request's n completions this is */
    const float *token_logprobs; /* generate with logprobs: (n - n_prompt) each completion token's log-prob */
    const vsample_top *top;  /* (n - n_prompt, n_top) and its top alternatives (id -1: none) */
    int n_top;
    double queued_s, prefill_s, decode_s, total_s;
} sched_result;

/* the replica's token counts and times, for progress lines and the summary */
typedef struct {
    int64_t tokens_in, tokens_out;   /* prompt tokens computed, tokens generated */
    int64_t prefill_shared;          /* prompt tokens not computed: KV rows copied from a sibling choice */
    double t_prefill, t_decode;      /* the scheduler's time split by the kind of tokens */
    double t_first_token;            /* util_now() of the first token sampled (score: first request done); 0: none */
} sched_stats;

typedef struct {
    /* fills rq with the next request to run and returns 1, or returns 0 when none is left */
    int (*next)(void *ctx, intake_request *rq);
    /* 1 while requests are left (after a stop signal: the run was cut short) */
    int (*more)(void *ctx);
    void *ctx;
} sched_source;

typedef struct {
    /* a finished request (the result's arrays stay valid only during the call) */
    void (*result)(void *ctx, const sched_result *r);
    /* after each consumed micro-batch: progress */
    void (*tick)(void *ctx, const sched_stats *st);
    void *ctx;
} sched_sink;

typedef struct sched_seq sched_seq;
typedef struct sched_group sched_group;

typedef struct {
    const run_opts *o;
    dist_ctx *d;
    model *m;
    const model_config *cfg;
    const tokenizer *tok;         /* NULL without one: no text, no stop strings */
    sched_source src;
    sched_sink sink;
    volatile sig_atomic_t *stop_signal; /* non-zero (or a signal another rank reported, dist_stop_poll):
                                               * take no new requests, finish within --grace */
    stage_bufs *bufs;
    int M, T;                     /* micro-batch groups, tokens per micro-batch */
    sched_seq *seqs;              /* (batch) one per KV slot */
    sched_group *groups;          /* (M) */
    int fifo[DIST_RING], fifo_head, fifo_len; /* groups in flight, in launch order */
    sched_stats st;
    double t_start, t_last_process;
} sched;

void sched_init(sched *s, const run_opts *o, dist_ctx *d, model *m, const tokenizer *tok, stage_bufs *bufs, int M,
                int T, double t_start, sched_source src, sched_sink sink, volatile sig_atomic_t *stop_signal);
/* runs requests until the source is exhausted (or a stop signal's grace ran out), then sends the
 * terminator down the replica. Returns 1 when a signal cut the run short. */
int sched_run(sched *s);
void sched_free(sched *s);

#endif
