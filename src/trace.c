#include "trace.h"

#include <stdlib.h>

#include "util.h"

const char *const trace_names[] = {"embed", "attention", "matmul", "ffn", "classifier", "allreduce", "send", "recv",
                                   "gather", "wait", "sampling", "io", "prefill", "decode", "mixed", "load", "in_flight"};
const char *const trace_category_names[] = {"compute", "allreduce", "p2p", "gather", "wait", "sampling", "io", "step", "flight"};

#define TRACE_MAX_SPANS (1 << 20) /* 32 MiB per rank at most; later spans are counted, not kept */

static struct {
    double origin;
    int record;
    trace_span *spans;
    int n, cap, dropped;
    double totals[TRACE_N_CATEGORIES];
} g;

void trace_start(int record_spans) {
    free(g.spans);
    g.spans = NULL;
    g.n = g.cap = g.dropped = 0;
    for (int i = 0; i < TRACE_N_CATEGORIES; i++) g.totals[i] = 0;
    g.record = record_spans;
    g.origin = util_now();
}

double trace_now(void) { return util_now() - g.origin; }

double trace_end(trace_name name, trace_category cat, double t0, int arg) {
    double now = trace_now();
    g.totals[cat] += now - t0;
    if (!g.record) return now;
    if (g.n == g.cap) {
        if (g.cap >= TRACE_MAX_SPANS) {
            g.dropped++;
            return now;
        }
        g.cap = g.cap ? g.cap * 2 : 4096;
        g.spans = xrealloc(g.spans, sizeof(trace_span) * (size_t)g.cap);
    }
    g.spans[g.n++] = (trace_span){(uint16_t)name, (uint16_t)cat, arg, t0, now - t0};
    return now;
}

double trace_total(trace_category cat) { return g.totals[cat]; }

const trace_span *trace_spans(int *n, int *dropped) {
    *n = g.n;
    *dropped = g.dropped;
    return g.spans;
}
