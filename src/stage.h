/* stage: the micro-batch message that travels down a replica's pipeline, its buffers, and the
 * loop of every rank that does not schedule (stage 0's other tp ranks and the later stages).
 *
 * A micro-batch travels as int32 [n, group, prompt tokens, new sequences, token[T], pos[T], slot[T],
 * want[T], seqs[C]] followed, between stages, by the activations x (n, dim) as float32. n = 0 is
 * the terminator. want is 1 for a row to sample (generate) or the target token + 1 (score); seqs
 * are the vsample_seq records of the sequences that start in this micro-batch (at most C).
 *
 * The replica's last stage samples where the logits are (vsample.h): its tp rank 0 sends the
 * sampled tokens (or score's log-probs) back to the scheduler, one vsample_out per wanted row. */
#ifndef MPILLAMA_STAGE_H
#define MPILLAMA_STAGE_H

#include <signal.h>
#include <stdint.h>

#include "dist.h"
#include "model.h"
#include "trace.h"
#include "vsample.h"

#define STAGE_MSG_HDR 4

/* int32 count of a message's header, token arrays and sequence records for micro-batches of up
 * to T tokens and C new sequences */
int64_t stage_msg_ints(int T, int C);
/* the batch view of a message (pointers into msg) */
model_batch stage_msg_batch(int *msg, int T);
/* the message's new-sequence records (msg[3] of them) */
vsample_seq *stage_msg_seqs(int *msg, int T);
/* tokens of the message whose logits are wanted */
int stage_msg_n_want(const int *msg, int T);
/* before the layers, on every rank: the KV copies of the message's new sequences (shared
 * prefills, vsample_seq.copy_from) */
void stage_msg_kv_copies(model *m, int *msg, int T);
/* the trace name of a step: by whether its tokens are prompt tokens */
trace_name stage_msg_step_name(const int *msg);

typedef struct {
    int M;           /* micro-batch groups; index M is the terminator's buffer */
    int T, C;        /* tokens and new sequences per micro-batch at most */
    int rows;        /* wanted rows per micro-batch at most */
    int score;       /* score: log-probs of the targets, else sampling */
    int *in;         /* (msg ints + T * dim floats) the message received */
    int **out;       /* (M + 1) per group: the message launched or sent on */
    vsample_out **res; /* (M + 1) per group: (rows) on the scheduler and the last stage's tp rank 0, then
                        * (generate) room for VSAMPLE_TOP_MAX vsample_top per row (stage_res_bytes) */
    vsample vs;      /* the last stage's sampler */
    int has_vs;
} stage_bufs;

/* rows: wanted rows per micro-batch at most. is_scheduler: this rank consumes the results. */
void stage_bufs_init(stage_bufs *b, const dist_ctx *d, const model *m, int T, int C, int M, int rows, int score,
                     int is_scheduler);
void stage_bufs_free(stage_bufs *b);
/* the bytes of one group's results buffer */
int64_t stage_res_bytes(const stage_bufs *b);

/* the last stage's share of micro-batch msg (its x already in m->x): the sampler's records, then
 * sampling (or log-probs) into res (tp rank 0). Collective over the stage's tp ranks. Returns the
 * wanted rows. */
int stage_sample(stage_bufs *bufs, dist_ctx *d, model *m, int *msg, vsample_out *res);

/* every rank but the scheduler: run micro-batches until the terminator (n = 0), passing it on
 * down the pipeline. A stop signal this rank got is passed to world rank 0 (dist_stop_notify). */
void stage_follow(dist_ctx *d, model *m, stage_bufs *bufs, const volatile sig_atomic_t *stop_signal);

#endif
