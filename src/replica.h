/* replica: the messages of data parallelism. World rank 0 is the hub: its intake hands requests
 * to every replica's scheduler as their slots free up (dynamic distribution: a replica that draws
 * long prompts just asks less often) and its writer records every replica's results, so it stays
 * the single writer. Rank 0 is also replica 0's scheduler; it answers the other replicas between
 * its own micro-batches (replica_hub_poll from its sink's tick). Its work per generated token does
 * not grow with the number of replicas: requests and finished results cross, tokens never do.
 *
 * A replica's scheduler (stage 0, tp rank 0 of replicas 1..dp-1) runs sched_run with the remote
 * source and sink below. */
#ifndef MPILLAMA_REPLICA_H
#define MPILLAMA_REPLICA_H

#include <signal.h>

#include "dist.h"
#include "intake.h"
#include "scheduler.h"
#include "writer.h"

typedef struct {
    dist_ctx *d;
    intake *in;
    writer *w;
    const volatile sig_atomic_t *signal; /* rank 0's stop signal: tell the replicas once */
    int stop_sent;
    int n_done;                 /* replicas (other than 0) that finished */
    int interrupted;            /* some replica was cut short by the signal */
    sched_stats *stats;         /* (dp) each replica's latest counts */
    char *buf;                  /* (cap) receive and pack scratch */
    int64_t cap;
} replica_hub;

void replica_hub_init(replica_hub *h, dist_ctx *d, intake *in, writer *w, const volatile sig_atomic_t *signal);
/* before replica 0 starts: answers the first request of every other replica */
void replica_hub_start(replica_hub *h);
/* answers whatever waits (requests wanted, results, replicas done) without blocking */
void replica_hub_poll(replica_hub *h);
/* after replica 0's own run (own: its counts): serves the others until every one has finished,
 * with progress lines as their results come */
void replica_hub_finish(replica_hub *h, const sched_stats *own);
/* all replicas' counts summed (own: replica 0's) */
void replica_hub_total(const replica_hub *h, const sched_stats *own, sched_stats *out);
void replica_hub_free(replica_hub *h);

typedef struct {
    dist_ctx *d;
    int batch;                  /* the scheduler's slots */
    int depth;                  /* requests kept queued ahead of free slots */
    int qcap;                   /* batch + room for the rest of a request's n choices (sent together) */
    intake_request *queue;      /* (qcap) ring */
    int qhead, qlen;
    int running;                /* requests handed to the scheduler whose result is not yet sent */
    int asked;                  /* a request for more is outstanding */
    int exhausted;              /* the hub has nothing more to hand out */
    int more;                   /* the hub still had requests when it stopped us */
    volatile sig_atomic_t stop; /* what sched_run watches: the local signal or the hub's stop */
    const volatile sig_atomic_t *signal;
    const sched_stats *st;      /* the scheduler's counts, sent along with results */
    char *buf;
    int64_t cap;
} replica_remote;

void replica_remote_init(replica_remote *r, dist_ctx *d, int batch, const volatile sig_atomic_t *signal);
sched_source replica_remote_source(replica_remote *r);
sched_sink replica_remote_sink(replica_remote *r);
/* tells the hub this replica is done (its counts and whether it was cut short) */
void replica_remote_done(replica_remote *r, const sched_stats *st, int interrupted);
void replica_remote_free(replica_remote *r);

#endif
