/* report: writes the run's summary.json and trace.json (docs/TRACE.md) on rank 0 from the
 * per-rank records the runner gathered. No MPI. */
#ifndef MPILLAMA_REPORT_H
#define MPILLAMA_REPORT_H

#include <stdint.h>

#include "config.h"
#include "trace.h"

/* one rank's totals, gathered to rank 0 as plain bytes */
typedef struct {
    int32_t rank, replica, stage, tp_rank, n_spans, dropped, threads;
    char host[64];
    double seconds[TRACE_N_CATEGORIES];  /* exclusive: the time categories add up to at most wall_s */
    double wall_s;                       /* this rank's time from the start barrier to its end */
    int64_t bytes_allreduce, bytes_p2p, bytes_gather, weight_bytes, kv_bytes, peak_rss;
    int64_t bytes_sampling, bytes_ctrl;  /* vocab-parallel sampling and tokens back; rank 0 <-> schedulers */
    int64_t weight_share;                /* the slice this rank uses (weight_bytes: what it read and holds;
                                          * 0 when another rank of its node holds the same slice) */
} report_rank;

typedef struct {
    const char *command, *model_path;
    model_config cfg;
    int dp, pp, tp, ranks, nodes, batch, max_seq_len, prefill_chunk, micro_batches;
    int kv_dtype;  /* kern_dtype of the KV cache (the weights' types are cfg.weight_dtype) */
    int prompts_total, completed, errors, skipped, interrupted;
    int64_t tokens_prompt, tokens_completion;
    double wall_s, load_s, prefill_s, decode_s;
    double load_gbs;       /* weight bytes / the weight load's time (slowest rank) */
    double first_token_s;  /* from the command's start to the first sampled token (score: first record) */
} report_run;

/* fills the calling rank's record (host name, peak RSS) */
void report_rank_fill(report_rank *r);
/* dies naming the path when it cannot be written */
void report_write_summary(const char *path, const report_run *run, const report_rank *ranks, int n);
/* spans: every rank's trace_span array concatenated in rank order (ranks[i].n_spans each) */
void report_write_trace(const char *path, const report_rank *ranks, int n, const trace_span *spans);

#endif
