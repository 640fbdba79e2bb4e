/* trace: per-rank timing spans and counters for the Chrome trace and the run summary. No MPI:
 * the runner gathers the recorded spans with dist. One recorder per process (a rank). */
#ifndef MPILLAMA_TRACE_H
#define MPILLAMA_TRACE_H

#include <stdint.h>

typedef enum {
    TRACE_COMPUTE, TRACE_ALLREDUCE, TRACE_P2P, TRACE_GATHER, TRACE_WAIT, TRACE_SAMPLING, TRACE_IO,
    TRACE_STEP, /* steps contain the others: not a time category */
    TRACE_FLIGHT, /* a non-blocking send from its start to its observed completion (its own track) */
    TRACE_N_CATEGORIES
} trace_category;

typedef struct {
    uint16_t name;    /* index into trace_names */
    uint16_t cat;     /* trace_category */
    int32_t arg;      /* layer or token count, -1 when none */
    double t0, dur;   /* seconds since trace_start */
} trace_span;

extern const char *const trace_names[];
extern const char *const trace_category_names[];
typedef enum {
    TN_EMBED, TN_ATTENTION, TN_MATMUL, TN_FFN, TN_CLASSIFIER, TN_ALLREDUCE, TN_SEND, TN_RECV, TN_GATHER,
    TN_WAIT, TN_SAMPLING, TN_IO, TN_PREFILL, TN_DECODE, TN_MIXED, TN_IN_FLIGHT, TN_COUNT
} trace_name;

/* what --trace-level keeps: the per-category totals only (summary.json), also each rank's steps
 * and waits (steps, the default), also every other span: kernels, all-reduces, sends, sampling,
 * I/O, sends in flight (kernels) */
typedef enum { TRACE_LEVEL_SUMMARY, TRACE_LEVEL_STEPS, TRACE_LEVEL_KERNELS } trace_level;
/* "summary" | "steps" | "kernels": 0 with *out set, or -1 */
int trace_level_parse(const char *s, trace_level *out);

/* starts the clock (the run's start barrier) and empties the totals; spans are kept up to level */
void trace_start(trace_level level);
double trace_now(void); /* seconds since trace_start */
/* records a span that began at t0 (a trace_now() value) and ends now; returns now. Spans nest
 * (inner ones end first); a time category's total counts a span's own time, less that of the
 * time-category spans inside it, so that a rank's totals add up to at most its wall time */
double trace_end(trace_name name, trace_category cat, double t0, int arg);
/* totals per category, in seconds (exclusive: see trace_end) */
double trace_total(trace_category cat);
const trace_span *trace_spans(int *n, int *dropped);

#endif
