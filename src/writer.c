#include "writer.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "openai.h"
#include "tokenizer.h"
#include "util.h"

/* the model file's identity: its size and a hash of its first and last MiB (headers, config and
 * the ends of the weights), cheap for any size and independent of its path */
static int model_fingerprint(const char *path, long long *bytes, char hex[17]) {
    FILE *f = fopen(path, "rb");
    if (!f) return error("cannot open model '%s': %s", path, strerror(errno));
    enum { SPAN = 1 << 20 };
    char *buf = xmalloc(SPAN);
    uint64_t h = UTIL_FNV1A64_INIT;
    fseeko(f, 0, SEEK_END);
    *bytes = (long long)ftello(f);
    h = util_fnv1a64(bytes, sizeof(*bytes), h);
    for (int part = 0; part < 2; part++) {
        fseeko(f, part == 0 ? 0 : (*bytes > SPAN ? *bytes - SPAN : 0), SEEK_SET);
        size_t n = fread(buf, 1, SPAN, f);
        h = util_fnv1a64(buf, n, h);
    }
    free(buf);
    fclose(f);
    snprintf(hex, 17, "%016llx", (unsigned long long)h);
    return 0;
}

typedef struct {
    const char *id, *hash;
} meta_request;

static int cmp_meta(const void *a, const void *b) { return strcmp(((const meta_request *)a)->id, ((const meta_request *)b)->id); }

/* the finished records of a resumed output against what they came from; 0 or -1 after printing why */
static int check_resume(writer *w, const intake *in, const cJSON *meta, const char *fingerprint) {
    const char *path = w->out.path;
    const cJSON *cmd = cJSON_GetObjectItemCaseSensitive(meta, "command");
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(meta, "model");
    const cJSON *fp = model ? cJSON_GetObjectItemCaseSensitive(model, "fingerprint") : NULL;
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(meta, "ids");
    const cJSON *hashes = cJSON_GetObjectItemCaseSensitive(meta, "hashes");
    if (!cJSON_IsString(cmd) || !cJSON_IsString(fp) || !cJSON_IsArray(ids) || !cJSON_IsArray(hashes) ||
        cJSON_GetArraySize(ids) != cJSON_GetArraySize(hashes))
        return error("'%s.meta.json' is not what mpillama wrote: give --overwrite to start '%s' again", path, path);
    if (strcmp(cmd->valuestring, w->o->cmd) != 0)
        return error("'%s' holds %s records, this is %s: give another --output", path, cmd->valuestring, w->o->cmd);
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(meta, "output_format"); /* absent: native (older outputs) */
    const char *was = cJSON_IsString(fmt) ? fmt->valuestring : "native", *now = w->o->openai_output ? "openai" : "native";
    if (strcmp(was, now) != 0)
        return error("'%s' holds records of --output-format %s, this run writes %s: give --output-format %s or another "
                     "--output", path, was, now, was);
    if (strcmp(fp->valuestring, fingerprint) != 0) {
        const cJSON *mp = cJSON_GetObjectItemCaseSensitive(model, "path");
        return error("'%s' was written with another model file ('%s', fingerprint %s; '%s' has %s): resume with that "
                     "model, or give --overwrite or another --output", path, cJSON_IsString(mp) ? mp->valuestring : "?",
                     fp->valuestring, w->o->model, fingerprint);
    }
    int n = cJSON_GetArraySize(ids), rc = 0;
    meta_request *reqs = xmalloc(sizeof(meta_request) * (size_t)(n + 1));
    int k = 0;
    for (const cJSON *a = ids->child, *b = hashes->child; a && b; a = a->next, b = b->next)
        if (cJSON_IsString(a) && cJSON_IsString(b)) reqs[k++] = (meta_request){a->valuestring, b->valuestring};
    qsort(reqs, (size_t)k, sizeof(meta_request), cmp_meta);
    for (int d = 0; d < w->out.n_done && rc == 0; d++) {
        const char *id = w->out.done_ids[d];
        meta_request key = {id, NULL}, *was = bsearch(&key, reqs, (size_t)k, sizeof(meta_request), cmp_meta);
        int item = intake_find(in, id);
        char now[17];
        if (item >= 0) snprintf(now, sizeof(now), "%016llx", (unsigned long long)in->items[item].hash);
        if (item < 0)
            rc = error("'%s' holds a record for custom_id '%.100s', which '%s' lacks: these records come from another "
                       "prompt file; give --overwrite or another --output", path, id, w->o->prompts);
        else if (!was || strcmp(was->hash, now) != 0)
            rc = error("the request of custom_id '%.100s' (line %d of '%s') changed since its record in '%s' was written: "
                       "give --overwrite or another --output", id, in->items[item].line, w->o->prompts, path);
    }
    free(reqs);
    return rc;
}

int writer_open(writer *w, const run_opts *o, const intake *in) {
    memset(w, 0, sizeof(*w));
    w->o = o;
    long long bytes;
    char fingerprint[17];
    if (model_fingerprint(o->model, &bytes, fingerprint) != 0) return -1;
    memcpy(w->fingerprint, fingerprint, sizeof(fingerprint));
    w->tok = in->tok;
    w->model_label = strrchr(o->model, '/') ? strrchr(o->model, '/') + 1 : o->model;
    if (outfile_open(&w->out, o->output, o->resume, o->overwrite) != 0) return -1;
    if (o->openai_output && w->out.regular) {
        /* error records are not finished work: the error file starts empty in every run (--resume runs them again) */
        char *path = openai_errors_path(o->output);
        int rc = outfile_open(&w->err, path, 0, 1);
        free(path);
        if (rc != 0) return -1;
        w->has_err = 1;
    }
    if (!w->out.regular) return outfile_resume_commit(&w->out);
    int bad;
    cJSON *meta = outfile_meta_read(&w->out, &bad);
    int rc = 0;
    if (o->resume && w->out.n_done > 0) {
        if (bad) rc = error("cannot read '%s.meta.json': give --overwrite to start '%s' again", o->output, o->output);
        else if (!meta)
            warning("'%s.meta.json' is missing: cannot check that the records of '%s' come from this model and prompt "
                    "file", o->output, o->output);
        else rc = check_resume(w, in, meta, fingerprint);
    }
    cJSON_Delete(meta);
    if (rc != 0 || (rc = outfile_resume_commit(&w->out)) != 0) return rc;
    /* what this output's records come from, for the next --resume */
    meta = cJSON_CreateObject();
    cJSON_AddStringToObject(meta, "command", o->cmd);
    cJSON_AddStringToObject(meta, "output_format", o->openai_output ? "openai" : "native");
    cJSON *m = cJSON_AddObjectToObject(meta, "model");
    cJSON_AddStringToObject(m, "path", o->model);
    cJSON_AddNumberToObject(m, "bytes", (double)bytes);
    cJSON_AddStringToObject(m, "fingerprint", fingerprint);
    cJSON_AddStringToObject(meta, "prompts", o->prompts);
    cJSON *ids = cJSON_AddArrayToObject(meta, "ids"), *hashes = cJSON_AddArrayToObject(meta, "hashes");
    for (int i = 0; i < in->n_items; i++) {
        char h[17];
        snprintf(h, sizeof(h), "%016llx", (unsigned long long)in->items[i].hash);
        cJSON_AddItemToArray(ids, cJSON_CreateString(in->items[i].custom_id));
        cJSON_AddItemToArray(hashes, cJSON_CreateString(h));
    }
    outfile_meta_write(&w->out, meta);
    cJSON_Delete(meta);
    return 0;
}

/* whether the user reads this process's stderr on a terminal: its own stderr, or under mpirun
 * (rank 0's stderr is a pipe to its launcher, which copies it to its own stderr) the launcher's */
static int stderr_terminal(void) {
    if (isatty(STDERR_FILENO)) return 1;
    if (!getenv("OMPI_COMM_WORLD_SIZE") && !getenv("PMIX_RANK")) return 0; /* not launched by mpirun */
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/fd/2", (int)getppid());
    int fd = open(path, O_WRONLY | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) return 0;
    int tty = isatty(fd);
    close(fd);
    return tty;
}

void writer_start(writer *w, const prompt_item *items, double t_start) {
    w->items = items;
    w->tty = stderr_terminal();
    w->t_start = w->t_last_progress = t_start;
}

static cJSON *int_array(const int *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

static void error_record(writer *w, int item, const char *why, int server);

static void add_timing(cJSON *r, double queued_s, double prefill_s, double decode_s, double total_s) {
    cJSON *t = cJSON_CreateObject();
    cJSON_AddNumberToObject(t, "queued_ms", round(queued_s * 1e6) / 1e3);
    cJSON_AddNumberToObject(t, "prefill_ms", round(prefill_s * 1e6) / 1e3);
    cJSON_AddNumberToObject(t, "decode_ms", round(decode_s * 1e6) / 1e3);
    cJSON_AddNumberToObject(t, "total_ms", round(total_s * 1e6) / 1e3);
    cJSON_AddItemToObject(r, "timing", t);
}

static void add_seed(cJSON *r, uint64_t seed) {
    char buf[32];
    snprintf(buf, sizeof(buf), "%llu", (unsigned long long)seed);
    cJSON_AddItemToObject(r, "seed", cJSON_CreateRaw(buf));
}

/* the fields of one completion, into a record (n = 1) or a choice (n > 1) */
static void add_completion(cJSON *r, const sched_result *s) {
    int nc = s->n - s->n_prompt;
    if (s->text) cJSON_AddStringToObject(r, "completion", s->text);
    cJSON_AddItemToObject(r, "completion_ids", int_array(s->ids + s->n_prompt, nc));
    cJSON_AddNumberToObject(r, "completion_tokens", nc);
    cJSON_AddStringToObject(r, "finish_reason", s->reason);
    add_seed(r, s->seed);
    if (!s->token_logprobs) return;
    /* logprobs: each completion token's; top_logprobs: its k likeliest alternatives */
    cJSON *a = cJSON_AddArrayToObject(r, "logprobs");
    for (int i = 0; i < nc; i++) cJSON_AddItemToArray(a, openai_logprob_number(s->token_logprobs[i]));
    if (s->n_top <= 0) return;
    cJSON *tops = cJSON_AddArrayToObject(r, "top_logprobs");
    for (int i = 0; i < nc; i++) {
        cJSON *t = cJSON_CreateArray();
        for (int j = 0; j < s->n_top; j++) {
            const vsample_top *e = &s->top[(int64_t)i * s->n_top + j];
            if (e->id < 0) continue;
            cJSON *o = cJSON_CreateObject();
            cJSON_AddNumberToObject(o, "id", e->id);
            cJSON_AddItemToObject(o, "logprob", openai_logprob_number(e->logprob));
            cJSON_AddItemToArray(t, o);
        }
        cJSON_AddItemToArray(tops, t);
    }
}

/* a request of n > 1 completions, while its choices come in (each its own sched_result) */
struct writer_pending {
    cJSON **choice;          /* (n) each choice's object, NULL until it came */
    int got, n, prompt_tokens, completion_tokens, interrupted;
    char *error;             /* the first failed choice's why (non-finite logits): one error record */
    uint64_t seed;           /* the request's (choice 0's) */
    double t[4];             /* the latest of the choices' queued, prefill, decode and total times */
};

static void pending_free(writer_pending *p) {
    for (int k = 0; k < p->n; k++) cJSON_Delete(p->choice[k]);
    free(p->choice);
    free(p->error);
    free(p);
}

/* one choice of a request of n > 1: kept until the last one comes, then the request's record
 * (native: "n" and "choices"; openai: the choices of one line). A request cut short is one
 * interrupted record. */
static void collect_choice(writer *w, const sched_result *s) {
    const prompt_item *it = &w->items[s->item];
    if (s->item >= w->n_pending) {
        int n = w->n_pending * 2 > s->item + 1 ? w->n_pending * 2 : s->item + 64;
        w->pending = xrealloc(w->pending, sizeof(writer_pending *) * (size_t)n);
        memset(w->pending + w->n_pending, 0, sizeof(writer_pending *) * (size_t)(n - w->n_pending));
        w->n_pending = n;
    }
    writer_pending *p = w->pending[s->item];
    if (!p) {
        p = w->pending[s->item] = xcalloc(1, sizeof(writer_pending));
        p->n = s->n_choices;
        p->choice = xcalloc((size_t)p->n, sizeof(cJSON *));
    }
    check(s->choice >= 0 && s->choice < p->n && !p->choice[s->choice], "choice %d of %d of item %d twice", s->choice,
          p->n, s->item);
    cJSON *c = NULL;
    if (s->error) {
        if (!p->error) p->error = xstrdup(s->error);
    } else if (w->o->openai_output) {
        c = openai_choice(it, s->choice, s, w->tok);
    } else {
        c = cJSON_CreateObject();
        cJSON_AddNumberToObject(c, "index", s->choice);
        add_completion(c, s);
    }
    p->choice[s->choice] = c;
    p->got++;
    p->prompt_tokens = s->n_prompt;
    p->completion_tokens += s->n - s->n_prompt;
    p->interrupted |= !strcmp(s->reason, "interrupted");
    if (s->choice == 0) p->seed = s->seed;
    const double t[4] = {s->queued_s, s->prefill_s, s->decode_s, s->total_s};
    for (int k = 0; k < 4; k++) p->t[k] = t[k] > p->t[k] ? t[k] : p->t[k];
    if (p->got < p->n) return;
    w->pending[s->item] = NULL;
    if (p->error) { /* a failed choice fails the request: --resume runs all of it again */
        error_record(w, s->item, p->error, 1);
        pending_free(p);
        return;
    }
    cJSON *choices = cJSON_CreateArray();
    for (int k = 0; k < p->n; k++) {
        cJSON_AddItemToArray(choices, p->choice[k]);
        p->choice[k] = NULL;
    }
    if (w->o->openai_output && p->interrupted) {
        cJSON_Delete(choices);
        outfile_write(w->has_err ? &w->err : &w->out, openai_interrupted(it));
    } else if (w->o->openai_output) {
        outfile_write(&w->out, openai_response(it, choices, p->prompt_tokens, p->completion_tokens, w->model_label,
                                               w->fingerprint, (long long)time(NULL)));
    } else {
        cJSON *r = cJSON_CreateObject();
        cJSON_AddStringToObject(r, "custom_id", it->custom_id);
        cJSON_AddNumberToObject(r, "prompt_tokens", p->prompt_tokens);
        cJSON_AddNumberToObject(r, "n", p->n);
        cJSON_AddItemToObject(r, "choices", choices);
        cJSON_AddNumberToObject(r, "completion_tokens", p->completion_tokens);
        if (p->interrupted) cJSON_AddStringToObject(r, "finish_reason", "interrupted"); /* --resume runs it again */
        add_seed(r, p->seed);
        add_timing(r, p->t[0], p->t[1], p->t[2], p->t[3]);
        outfile_write(&w->out, r);
    }
    if (p->interrupted) w->out.interrupted++;
    else w->completed++;
    pending_free(p);
}

/* --output-format openai: the line of a finished request, or the error file's for an interrupted one */
static void openai_result(writer *w, const sched_result *s) {
    const prompt_item *it = &w->items[s->item];
    if (!strcmp(s->reason, "interrupted")) {
        outfile_write(w->has_err ? &w->err : &w->out, openai_interrupted(it));
        w->out.interrupted++;
        return;
    }
    cJSON *choices = cJSON_CreateArray();
    cJSON_AddItemToArray(choices, openai_choice(it, 0, s, w->tok));
    outfile_write(&w->out, openai_response(it, choices, s->n_prompt, s->n - s->n_prompt, w->model_label, w->fingerprint,
                                           (long long)time(NULL)));
    w->completed++;
}

/* the text of each token: what it adds to the decoded text (a character split over byte tokens
 * comes whole with its last byte; control tokens as their text, "<s>"), always valid UTF-8 */
static cJSON *token_texts(const writer *w, const int *ids, int n) {
    cJSON *a = cJSON_CreateArray();
    tok_decoder d;
    tok_decoder_init(&d, w->tok, -1, tok_bos_id(w->tok), TOK_DECODE_SPECIAL);
    for (int i = 0; i < n; i++) {
        size_t len;
        const char *piece = tok_decoder_push(&d, ids[i], &len);
        if (i == n - 1 && piece) { /* the last token takes what the end completes */
            char *last = xstrdup(piece);
            const char *rest = tok_decoder_flush(&d, &len);
            char *both = xmalloc(strlen(last) + strlen(rest) + 1);
            strcpy(both, last);
            strcat(both, rest);
            cJSON_AddItemToArray(a, cJSON_CreateString(both));
            free(both);
            free(last);
        } else {
            cJSON_AddItemToArray(a, piece ? cJSON_CreateString(piece) : cJSON_CreateNull()); /* null: outside the vocabulary */
        }
    }
    tok_decoder_free(&d);
    return a;
}

void writer_result(writer *w, const sched_result *s) {
    if (w->o->mode == RUN_GENERATE && s->n_choices > 1) {
        collect_choice(w, s);
        return;
    }
    if (s->error) { /* failed mid-run: an error record, run again by --resume */
        error_record(w, s->item, s->error, 1);
        return;
    }
    if (w->o->openai_output) {
        openai_result(w, s);
        return;
    }
    const prompt_item *it = &w->items[s->item];
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "custom_id", it->custom_id);
    if (w->o->mode == RUN_SCORE) {
        cJSON_AddItemToObject(r, "token_ids", int_array(s->ids, s->n_prompt));
        if (w->tok) cJSON_AddItemToObject(r, "tokens", token_texts(w, s->ids, s->n_prompt));
        cJSON *a = cJSON_CreateArray();
        double sum = 0;
        for (int i = 0; i + 1 < s->n_prompt; i++) {
            char buf[32];
            if (isfinite(s->logprobs[i])) snprintf(buf, sizeof(buf), "%.6f", s->logprobs[i]);
            else snprintf(buf, sizeof(buf), "null"); /* NaN or inf logits: JSON has no such numbers */
            cJSON_AddItemToArray(a, cJSON_CreateRaw(buf));
            sum += s->logprobs[i];
        }
        cJSON_AddItemToObject(r, "logprobs", a);
        /* the sum of the log-probs and the perplexity exp(-mean) (null without a finite value) */
        int n = s->n_prompt - 1;
        cJSON_AddItemToObject(r, "sum_logprob", isfinite(sum) ? cJSON_CreateNumber(round(sum * 1e6) / 1e6) : cJSON_CreateNull());
        double ppl = n > 0 ? exp(-sum / n) : NAN;
        cJSON_AddItemToObject(r, "perplexity", isfinite(ppl) ? cJSON_CreateNumber(round(ppl * 1e6) / 1e6) : cJSON_CreateNull());
    } else {
        cJSON_AddNumberToObject(r, "prompt_tokens", s->n_prompt);
        add_completion(r, s);
    }
    add_timing(r, s->queued_s, s->prefill_s, s->decode_s, s->total_s);
    outfile_write(&w->out, r);
    if (!strcmp(s->reason, "interrupted")) w->out.interrupted++;
    else w->completed++;
}

/* server: the request failed while running (OpenAI output: status 500), else it cannot run */
static void error_record(writer *w, int item, const char *why, int server) {
    if (!w->o->openai_output) {
        outfile_error(&w->out, w->items[item].custom_id, w->items[item].line, why);
        return;
    }
    outfile_write(w->has_err ? &w->err : &w->out, openai_error(&w->items[item], why, server));
    w->out.errors++; /* the job's counts stay on the output's */
}

void writer_error(writer *w, int item, const char *why) { error_record(w, item, why, 0); }

void writer_progress(writer *w, int total, const sched_stats *st, int force) {
    double now = util_now(), el = now - w->t_start;
    double interval = w->tty ? 0.25 : w->o->progress_interval;
    /* the first line as soon as the first micro-batch is back, then one every interval */
    if (!force && w->n_progress > 0 && now - w->t_last_progress < interval) return;
    w->t_last_progress = now;
    w->n_progress++;
    int done = w->out.written + w->err.written - w->out.interrupted;
    double tps = el > 0 ? (st->tokens_in + st->tokens_out) / el : 0;
    char eta[32] = "unknown"; /* until a request has finished */
    if (done > 0) snprintf(eta, sizeof(eta), "%.0f s", el * (total - done) / done);
    if (w->tty) {
        int width = 30, fill = total > 0 ? (int)((double)width * done / total) : width;
        char bar[64];
        for (int i = 0; i < width; i++) bar[i] = i < fill ? '#' : '.';
        bar[width] = 0;
        fprintf(stderr, "\r[%s] %d/%d prompts  %.0f tok/s  ETA %s   %s", bar, done, total, tps, eta, force ? "\n" : "");
    } else {
        fprintf(stderr, "mpillama: progress %d/%d prompts, %lld tokens in, %lld out, %.1f tok/s, elapsed %.0f s, ETA %s\n",
                done, total, (long long)st->tokens_in, (long long)st->tokens_out, tps, el, eta);
    }
}

void writer_close(writer *w) {
    for (int i = 0; i < w->n_pending; i++) /* requests cut short before all their choices started */
        if (w->pending[i]) pending_free(w->pending[i]);
    free(w->pending);
    outfile_close(&w->out);
    if (w->has_err) outfile_close(&w->err);
}
