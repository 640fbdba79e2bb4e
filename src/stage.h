/* stage: the micro-batch message that travels down a replica's pipeline, its buffers, and the
 * loop of every rank that does not schedule (stage 0's other tp ranks and the later stages).
 *
 * A micro-batch travels as int32 [n, group, prompt tokens, 0, token[T], pos[T], slot[T], want[T]]
 * followed, between stages, by the activations x (n, dim) as float32. n = 0 is the terminator. */
#ifndef MPILLAMA_STAGE_H
#define MPILLAMA_STAGE_H

#include <stdint.h>

#include "dist.h"
#include "model.h"
#include "trace.h"

#define STAGE_MSG_HDR 4

/* int32 count of a message's header and token arrays for micro-batches of up to T tokens */
int64_t stage_msg_ints(int T);
/* the batch view of a message (pointers into msg) */
model_batch stage_msg_batch(int *msg, int T);
/* tokens of the message whose logits are wanted */
int stage_msg_n_want(const int *msg, int T);
/* the trace name of a step: by whether its tokens are prompt tokens */
trace_name stage_msg_step_name(const int *msg);

typedef struct {
    int M;           /* micro-batch groups; index M is the terminator's buffer */
    int *in;         /* (msg ints + T * dim floats) the message received */
    int **out;       /* (M + 1) per group: the message launched or sent on */
    float **logits;  /* (M + 1) per group: (rows, vocab) on the scheduler and the logits collector, else NULL */
} stage_bufs;

/* rows: logits rows per group. is_scheduler: this rank consumes logits. */
void stage_bufs_init(stage_bufs *b, const dist_ctx *d, int T, int M, int rows, int dim, int vocab, int is_scheduler);
void stage_bufs_free(stage_bufs *b);

/* every rank but the scheduler: run micro-batches until the terminator (n = 0), passing it on
 * down the pipeline */
void stage_follow(dist_ctx *d, model *m, int T, stage_bufs *b);

#endif
