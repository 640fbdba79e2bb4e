#include "report.h"

#include <cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "dtype.h"
#include "util.h"

void report_rank_fill(report_rank *r) {
    if (gethostname(r->host, sizeof(r->host)) != 0) snprintf(r->host, sizeof(r->host), "?");
    r->host[sizeof(r->host) - 1] = 0;
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0) r->peak_rss = (int64_t)ru.ru_maxrss * 1024;
    for (int c = 0; c < TRACE_N_CATEGORIES; c++) r->seconds[c] = trace_total((trace_category)c);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) die_errno("cannot write '%s'", path);
    size_t n = strlen(text);
    if (fwrite(text, 1, n, f) != n || fputc('\n', f) == EOF || fclose(f) != 0) die_errno("cannot write '%s'", path);
}

/* {"min", "avg", "max"} of one value per rank (all 0 when there are none) */
static cJSON *over_ranks(const double *v, int n) {
    double mn = n ? v[0] : 0, mx = mn, sum = 0;
    for (int r = 0; r < n; r++) {
        mn = v[r] < mn ? v[r] : mn;
        mx = v[r] > mx ? v[r] : mx;
        sum += v[r];
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "min", mn);
    cJSON_AddNumberToObject(o, "avg", n ? sum / n : 0);
    cJSON_AddNumberToObject(o, "max", mx);
    return o;
}

void report_write_summary(const char *path, const report_run *run, const report_rank *ranks, int n) {
    const model_config *c = &run->cfg;
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "mpillama_version", MPILLAMA_VERSION);
    cJSON_AddStringToObject(s, "command", run->command);
    cJSON *m = cJSON_AddObjectToObject(s, "model");
    cJSON_AddStringToObject(m, "path", run->model_path);
    cJSON_AddNumberToObject(m, "dim", c->dim);
    cJSON_AddNumberToObject(m, "hidden_dim", c->hidden_dim);
    cJSON_AddNumberToObject(m, "n_layers", c->n_layers);
    cJSON_AddNumberToObject(m, "n_heads", c->n_heads);
    cJSON_AddNumberToObject(m, "n_kv_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(m, "head_size", c->head_size);
    cJSON_AddNumberToObject(m, "vocab_size", c->vocab_size);
    double per_layer = 2.0 * c->dim + 2.0 * c->dim * config_q_dim(c) + 2.0 * c->dim * config_kv_dim(c) + 3.0 * c->dim * c->hidden_dim;
    double params = c->n_layers * per_layer + (double)c->vocab_size * c->dim * (c->tied_classifier ? 1 : 2) + c->dim;
    cJSON_AddNumberToObject(m, "params", params);
    cJSON_AddNumberToObject(m, "weight_bytes", (double)dtype_model_bytes(c));
    cJSON_AddStringToObject(s, "dtype", kern_dtype_name(dtype_main(c)));
    cJSON_AddStringToObject(s, "kv_dtype", kern_dtype_name((kern_dtype)run->kv_dtype));
    double kv_total = 0;
    for (int r = 0; r < n; r++) kv_total += (double)ranks[r].kv_bytes;
    cJSON_AddNumberToObject(s, "kv_bytes", kv_total);
    cJSON *g = cJSON_AddObjectToObject(s, "grid");
    cJSON_AddNumberToObject(g, "pp", run->pp);
    cJSON_AddNumberToObject(g, "tp", run->tp);
    cJSON_AddNumberToObject(s, "dp", run->dp ? run->dp : 1); /* replicas of the pp x tp grid */
    cJSON_AddNumberToObject(s, "ranks", run->ranks);
    cJSON_AddNumberToObject(s, "nodes", run->nodes);
    cJSON_AddNumberToObject(s, "threads_per_rank", n > 0 ? ranks[0].threads : 1);
    cJSON_AddNumberToObject(s, "batch", run->batch);
    cJSON_AddNumberToObject(s, "max_seq_len", run->max_seq_len);
    cJSON_AddNumberToObject(s, "prefill_chunk", run->prefill_chunk);
    cJSON_AddNumberToObject(s, "micro_batches", run->micro_batches);
    cJSON *p = cJSON_AddObjectToObject(s, "prompts");
    cJSON_AddNumberToObject(p, "total", run->prompts_total);
    cJSON_AddNumberToObject(p, "completed", run->completed);
    cJSON_AddNumberToObject(p, "errors", run->errors);
    cJSON_AddNumberToObject(p, "skipped", run->skipped);
    cJSON_AddNumberToObject(p, "interrupted", run->interrupted);
    cJSON *t = cJSON_AddObjectToObject(s, "tokens");
    cJSON_AddNumberToObject(t, "prompt", (double)run->tokens_prompt);
    cJSON_AddNumberToObject(t, "completion", (double)run->tokens_completion);
    cJSON_AddNumberToObject(s, "wall_s", run->wall_s);
    cJSON_AddNumberToObject(s, "load_s", run->load_s);
    cJSON_AddNumberToObject(s, "load_gbs", run->load_gbs);
    cJSON_AddNumberToObject(s, "first_token_s", run->first_token_s);
    cJSON_AddNumberToObject(s, "prefill_s", run->prefill_s);
    cJSON_AddNumberToObject(s, "decode_s", run->decode_s);
    cJSON_AddNumberToObject(s, "prefill_tok_s", run->prefill_s > 0 ? run->tokens_prompt / run->prefill_s : 0);
    cJSON_AddNumberToObject(s, "decode_tok_s", run->decode_s > 0 ? run->tokens_completion / run->decode_s : 0);
    cJSON_AddNumberToObject(s, "total_tok_s",
                            run->wall_s > 0 ? (run->tokens_prompt + run->tokens_completion) / run->wall_s : 0);
    if (run->pp > 1) { /* a pipeline's idle stages; with pp = 1 waiting is not a bubble (see "wait") */
        double bubble = 0;
        for (int r = 0; r < n; r++) bubble += run->wall_s > 0 ? ranks[r].seconds[TRACE_WAIT] / run->wall_s : 0;
        cJSON_AddNumberToObject(s, "pipeline_bubble", n ? bubble / n : 0);
    }
    double *v = xmalloc(sizeof(double) * (size_t)(n ? n : 1));
    cJSON *cats = cJSON_AddObjectToObject(s, "categories");
    for (int c2 = 0; c2 < TRACE_STEP; c2++) {
        for (int r = 0; r < n; r++) v[r] = ranks[r].seconds[c2];
        cJSON_AddItemToObject(cats, trace_category_names[c2], over_ranks(v, n));
    }
    int64_t ba = 0, bp = 0, bg = 0, bs = 0, bc = 0;
    for (int r = 0; r < n; r++) {
        ba += ranks[r].bytes_allreduce;
        bp += ranks[r].bytes_p2p;
        bg += ranks[r].bytes_gather;
        bs += ranks[r].bytes_sampling;
        bc += ranks[r].bytes_ctrl;
        v[r] = (double)ranks[r].peak_rss;
    }
    cJSON *b = cJSON_AddObjectToObject(s, "bytes_communicated");
    cJSON_AddNumberToObject(b, "allreduce", (double)ba);
    cJSON_AddNumberToObject(b, "p2p", (double)bp);
    cJSON_AddNumberToObject(b, "gather", (double)bg);
    cJSON_AddNumberToObject(b, "sampling", (double)bs);
    cJSON_AddNumberToObject(b, "control", (double)bc);
    /* memory per node (host): the weights held (one copy per slice with shared windows), what
     * they would be with a private copy per rank, the KV caches and the ranks' peak RSS */
    cJSON *nodes = cJSON_AddArrayToObject(s, "memory_per_node");
    for (int r = 0; r < n; r++) {
        int seen = 0;
        for (int q = 0; q < r && !seen; q++) seen = !strcmp(ranks[q].host, ranks[r].host);
        if (seen) continue;
        int64_t w = 0, wp = 0, kv = 0, rss = 0;
        int count = 0;
        for (int q = r; q < n; q++)
            if (!strcmp(ranks[q].host, ranks[r].host)) {
                w += ranks[q].weight_bytes, wp += ranks[q].weight_share, kv += ranks[q].kv_bytes, rss += ranks[q].peak_rss;
                count++;
            }
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "host", ranks[r].host);
        cJSON_AddNumberToObject(o, "ranks", count);
        cJSON_AddNumberToObject(o, "weight_bytes", (double)w);
        cJSON_AddNumberToObject(o, "weight_bytes_private", (double)wp);
        cJSON_AddNumberToObject(o, "kv_bytes", (double)kv);
        cJSON_AddNumberToObject(o, "peak_rss_bytes", (double)rss);
        cJSON_AddItemToArray(nodes, o);
    }
    cJSON_AddItemToObject(s, "peak_rss_bytes", over_ranks(v, n));
    free(v);
    cJSON *pr = cJSON_AddArrayToObject(s, "per_rank");
    for (int r = 0; r < n; r++) {
        const report_rank *x = &ranks[r];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "rank", x->rank);
        cJSON_AddNumberToObject(o, "replica", x->replica);
        cJSON_AddNumberToObject(o, "stage", x->stage);
        cJSON_AddNumberToObject(o, "tp", x->tp_rank);
        cJSON_AddStringToObject(o, "host", x->host);
        cJSON_AddNumberToObject(o, "threads", x->threads);
        cJSON_AddNumberToObject(o, "weight_bytes", (double)x->weight_bytes);
        cJSON_AddNumberToObject(o, "kv_bytes", (double)x->kv_bytes);
        cJSON_AddNumberToObject(o, "peak_rss_bytes", (double)x->peak_rss);
        cJSON_AddNumberToObject(o, "wall_s", x->wall_s);
        cJSON *sec = cJSON_AddObjectToObject(o, "seconds");
        for (int c2 = 0; c2 < TRACE_STEP; c2++) cJSON_AddNumberToObject(sec, trace_category_names[c2], x->seconds[c2]);
        cJSON *by = cJSON_AddObjectToObject(o, "bytes");
        cJSON_AddNumberToObject(by, "allreduce", (double)x->bytes_allreduce);
        cJSON_AddNumberToObject(by, "p2p", (double)x->bytes_p2p);
        cJSON_AddNumberToObject(by, "gather", (double)x->bytes_gather);
        cJSON_AddNumberToObject(by, "sampling", (double)x->bytes_sampling);
        cJSON_AddNumberToObject(by, "control", (double)x->bytes_ctrl);
        cJSON_AddItemToArray(pr, o);
    }
    char *text = cJSON_Print(s);
    write_text(path, text);
    free(text);
    cJSON_Delete(s);
}

static int cmp_span(const void *a, const void *b) {
    const trace_span *x = a, *y = b;
    if (x->t0 != y->t0) return x->t0 < y->t0 ? -1 : 1;
    if (x->dur != y->dur) return x->dur > y->dur ? -1 : 1;
    return 0;
}

void report_write_trace(const char *path, const report_rank *ranks, int n, const trace_span *spans) {
    FILE *f = fopen(path, "wb");
    if (!f) die_errno("cannot write '%s'", path);
    fprintf(f, "{\"displayTimeUnit\": \"ms\", \"traceEvents\": [\n");
    int first = 1;
    for (int r = 0; r < n; r++) {
        fprintf(f, "%s{\"name\": \"process_name\", \"ph\": \"M\", \"pid\": %d, \"tid\": 0, \"args\": {\"name\": "
                   "\"rank %d (stage %d, tp %d) %s\"}}",
                first ? "" : ",\n", ranks[r].rank, ranks[r].rank, ranks[r].stage, ranks[r].tp_rank, ranks[r].host);
        fprintf(f, ",\n{\"name\": \"process_sort_index\", \"ph\": \"M\", \"pid\": %d, \"tid\": 0, \"args\": {\"sort_index\": %d}}",
                ranks[r].rank, ranks[r].rank);
        first = 0;
    }
    const trace_span *base = spans;
    for (int r = 0; r < n; r++) {
        /* spans were recorded as they ended; a track lists them by start (outer first on ties) */
        int ns = ranks[r].n_spans;
        trace_span *sorted = xmalloc(sizeof(trace_span) * (size_t)(ns ? ns : 1));
        memcpy(sorted, base, sizeof(trace_span) * (size_t)ns);
        qsort(sorted, (size_t)ns, sizeof(trace_span), cmp_span);
        base += ns;
        const trace_span *sp = sorted;
        for (int i = 0; i < ns; i++, sp++) {
            /* sends in flight overlap the compute: a second track */
            fprintf(f, ",\n{\"name\": \"%s\", \"cat\": \"%s\", \"ph\": \"X\", \"ts\": %.3f, \"dur\": %.3f, \"pid\": %d, \"tid\": %d",
                    trace_names[sp->name], trace_category_names[sp->cat], sp->t0 * 1e6, sp->dur * 1e6, ranks[r].rank,
                    sp->cat == TRACE_FLIGHT);
            if (sp->arg >= 0) fprintf(f, ", \"args\": {\"%s\": %d}", sp->name >= TN_ATTENTION && sp->name <= TN_FFN ? "layer" : "n", sp->arg);
            fputc('}', f);
        }
        free(sorted);
    }
    fprintf(f, "\n]}\n");
    if (ferror(f) || fclose(f) != 0) die_errno("cannot write '%s'", path);
}
