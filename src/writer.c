#include "writer.h"

#include <cJSON.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

void writer_open(writer *w, const run_opts *o) {
    memset(w, 0, sizeof(*w));
    w->o = o;
    outfile_open(&w->out, o->output, o->resume);
}

void writer_start(writer *w, const prompt_item *items, double t_start) {
    w->items = items;
    w->tty = isatty(STDERR_FILENO);
    w->t_start = w->t_last_progress = t_start;
}

static cJSON *int_array(const int *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

void writer_result(writer *w, const sched_result *s) {
    const prompt_item *it = &w->items[s->item];
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "custom_id", it->custom_id);
    if (w->o->mode == RUN_SCORE) {
        cJSON_AddItemToObject(r, "token_ids", int_array(s->ids, s->n_prompt));
        cJSON *a = cJSON_CreateArray();
        for (int i = 0; i + 1 < s->n_prompt; i++) {
            char buf[32];
            snprintf(buf, sizeof(buf), "%.6f", s->logprobs[i]);
            cJSON_AddItemToArray(a, cJSON_CreateRaw(buf));
        }
        cJSON_AddItemToObject(r, "logprobs", a);
    } else {
        int nc = s->n - s->n_prompt;
        cJSON_AddNumberToObject(r, "prompt_tokens", s->n_prompt);
        if (s->text) cJSON_AddStringToObject(r, "completion", s->text);
        cJSON_AddItemToObject(r, "completion_ids", int_array(s->ids + s->n_prompt, nc));
        cJSON_AddNumberToObject(r, "completion_tokens", nc);
        cJSON_AddStringToObject(r, "finish_reason", s->reason);
        char seed[32];
        snprintf(seed, sizeof(seed), "%llu", (unsigned long long)s->seed);
        cJSON_AddItemToObject(r, "seed", cJSON_CreateRaw(seed));
    }
    cJSON *t = cJSON_CreateObject();
    cJSON_AddNumberToObject(t, "queued_ms", round(s->queued_s * 1e6) / 1e3);
    cJSON_AddNumberToObject(t, "prefill_ms", round(s->prefill_s * 1e6) / 1e3);
    cJSON_AddNumberToObject(t, "decode_ms", round(s->decode_s * 1e6) / 1e3);
    cJSON_AddNumberToObject(t, "total_ms", round(s->total_s * 1e6) / 1e3);
    cJSON_AddItemToObject(r, "timing", t);
    outfile_write(&w->out, r);
    if (!strcmp(s->reason, "interrupted")) w->out.interrupted++;
    else w->completed++;
}

void writer_error(writer *w, int item, const char *why) {
    outfile_error(&w->out, w->items[item].custom_id, w->items[item].line, why);
}

void writer_progress(writer *w, int total, const sched_stats *st, int force) {
    double now = util_now(), el = now - w->t_start;
    double interval = w->tty ? 0.25 : w->o->progress_interval;
    if (!force && now - w->t_last_progress < interval) return;
    w->t_last_progress = now;
    int done = w->out.written - w->out.interrupted;
    double tps = el > 0 ? (st->tokens_in + st->tokens_out) / el : 0;
    double eta = done > 0 ? el * (total - done) / done : 0;
    if (w->tty) {
        int width = 30, fill = total > 0 ? (int)((double)width * done / total) : width;
        char bar[64];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        fprintf(stderr, "\r[%s] %d/%d prompts  %.0f tok/s  ETA %.0f s   %s", bar, done, total, tps, eta, force ? "\n" : "");
    } else {
        fprintf(stderr, "mpillama: progress %d/%d prompts, %lld tokens in, %lld out, %.1f tok/s, elapsed %.0f s, ETA %.0f s\n",
                done, total, (long long)st->tokens_in, (long long)st->tokens_out, tps, el, eta);
    }
}

void writer_close(writer *w) { outfile_close(&w->out); }
