#include "trace.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

const char *const trace_names[] = {"embed", "attention", "matmul", "ffn", "classifier", "allreduce", "send", "recv",
                                   "gather", "wait", "sampling", "io", "prefill", "decode", "mixed", "in_flight"};
const char *const trace_category_names[] = {"compute", "allreduce", "p2p", "gather", "wait", "sampling", "io", "step", "flight"};

#define TRACE_MAX_SPANS (1 << 20) /* 32 MiB per rank at most; later spans are counted, not kept */
#define TRACE_NEST 4096 /* ended time-category spans remembered for the ones around them (more than a
                          * span ever holds: a sampling span holds at most a micro-batch's records) */

static struct {
    double origin;
    trace_level level;
    trace_span *spans;
    int n, cap, dropped;
    double totals[TRACE_N_CATEGORIES];
    /* exclusive time: every ended time-category span leaves (its end, the seconds credited to all
     * categories so far); a span that ends takes off the entries that ended inside it, and the
     * difference of the credited seconds is its children's time */
    struct {
        double end, credited;
    } ended[TRACE_NEST];
    int n_ended;
    double credited, credited_floor; /* floor: credited when the oldest entries were forgotten */
} g;

int trace_level_parse(const char *s, trace_level *out) {
    static const char *const names[] = {"summary", "steps", "kernels"};
    for (int i = 0; i < 3; i++)
        if (!strcmp(s, names[i])) {
            *out = (trace_level)i;
            return 0;
        }
    return -1;
}

void trace_start(trace_level level) {
    free(g.spans);
    g.spans = NULL;
    g.n = g.cap = g.dropped = 0;
    for (int i = 0; i < TRACE_N_CATEGORIES; i++) g.totals[i] = 0;
    g.n_ended = 0;
    g.credited = g.credited_floor = 0;
    g.level = level;
    g.origin = util_now();
}

double trace_now(void) { return util_now() - g.origin; }

/* the span [t0, now] of a time category: its own seconds, without its children's */
static double exclusive(double t0, double now) {
    while (g.n_ended > 0 && g.ended[g.n_ended - 1].end > t0) g.n_ended--;
    double before = g.n_ended > 0 ? g.ended[g.n_ended - 1].credited : g.credited_floor;
    double own = (now - t0) - (g.credited - before);
    if (own < 0) own = 0;
    g.credited += own;
    if (g.n_ended == TRACE_NEST) { /* forget the older half: they ended before the spans still open */
        g.credited_floor = g.ended[TRACE_NEST / 2 - 1].credited;
        memmove(g.ended, g.ended + TRACE_NEST / 2, sizeof(g.ended[0]) * (TRACE_NEST / 2));
        g.n_ended = TRACE_NEST / 2;
    }
    g.ended[g.n_ended].end = now;
    g.ended[g.n_ended++].credited = g.credited;
    return own;
}

/* is a span of this category kept at the current level: steps keeps each rank's steps and waits
 * (the pipeline's timeline and its gaps), kernels everything */
static int kept(trace_category cat) {
    if (g.level == TRACE_LEVEL_KERNELS) return 1;
    return g.level == TRACE_LEVEL_STEPS && (cat == TRACE_STEP || cat == TRACE_WAIT);
}

double trace_end(trace_name name, trace_category cat, double t0, int arg) {
    double now = trace_now();
    g.totals[cat] += cat < TRACE_STEP ? exclusive(t0, now) : now - t0;
    if (!kept(cat)) return now;
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
