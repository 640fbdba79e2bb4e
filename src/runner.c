#include "runner.h"

#include <cJSON.h>
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "affinity.h"
#include "dist.h"
#include "kernels.h"
#include "mfile.h"
#include "model.h"
#include "plan.h"
#include "prompts.h"
#include "sampler.h"
#include "tokenizer.h"
#include "util.h"

/* ------------------------------------------------------------------ options */

typedef struct {
    const char *model, *prompts, *output;
    int pp, tp;                 /* 0 = default (tp = ranks per node, pp = nodes) */
    int batch;                  /* sequences in flight */
    int max_seq_len;            /* KV cache length per sequence; 0 = min(model, 4096) */
    int prefill_chunk;          /* prompt tokens per sequence per step */
    int max_tokens;             /* generated tokens per request (capped by the context) */
    sampler_params sp;
    long long seed;
    int ignore_eos, resume, verbose;
    /* info */
    int plan;
} run_opts;

enum { OPT_PP = 1000, OPT_TP, OPT_BATCH, OPT_MAXSEQ, OPT_CHUNK, OPT_MAXTOK, OPT_TEMP, OPT_TOPK,
       OPT_TOPP, OPT_SEED, OPT_IGNORE_EOS, OPT_RESUME, OPT_PLAN };

static const struct option long_opts[] = {
    {"model", required_argument, 0, 'm'},       {"prompts", required_argument, 0, 'p'},
    {"output", required_argument, 0, 'o'},      {"pp", required_argument, 0, OPT_PP},
    {"tp", required_argument, 0, OPT_TP},       {"batch", required_argument, 0, OPT_BATCH},
    {"max-seq-len", required_argument, 0, OPT_MAXSEQ}, {"prefill-chunk", required_argument, 0, OPT_CHUNK},
    {"max-tokens", required_argument, 0, OPT_MAXTOK},  {"temperature", required_argument, 0, OPT_TEMP},
    {"top-k", required_argument, 0, OPT_TOPK},  {"top-p", required_argument, 0, OPT_TOPP},
    {"seed", required_argument, 0, OPT_SEED},   {"ignore-eos", no_argument, 0, OPT_IGNORE_EOS},
    {"resume", no_argument, 0, OPT_RESUME},     {"verbose", no_argument, 0, 'v'},
    {"plan", no_argument, 0, OPT_PLAN},         {"help", no_argument, 0, 'h'},
    {0, 0, 0, 0}};

static void usage(const char *cmd, FILE *out) {
    if (!strcmp(cmd, "info")) {
        fprintf(out, "usage: mpillama info M.h5 [--plan --pp P --tp T [--max-seq-len S] [--batch B]]\n");
        return;
    }
    fprintf(out,
            "usage: mpirun -n N mpillama %s --model M.h5 --prompts IN --output OUT.jsonl [options]\n"
            "  IN: JSONL ({\"custom_id\", \"prompt\" | \"prompt_ids\"}) or plain text, one prompt a line\n"
            "  --pp P --tp T        pipeline stages x tensor-parallel ranks (P*T = N; default:\n"
            "                       tp = ranks per node, pp = nodes)\n"
            "  --batch B            sequences in flight (default 16)\n"
            "  --max-seq-len S      KV cache positions per sequence (default: model's, at most 4096)\n"
            "  --prefill-chunk C    prompt tokens per sequence per step (default 128)\n"
            "  --resume             keep OUT's records and skip their custom_ids\n"
            "  --verbose            per-rank plan, bytes read and timings\n",
            cmd);
    if (!strcmp(cmd, "generate"))
        fprintf(out,
                "  --max-tokens N       tokens to generate (default 8192, capped by the context)\n"
                "  --temperature T      0 = greedy (default 0.85)\n"
                "  --top-k K            (default 25; 0 = off)   --top-p P (default 0.9; 1 = off)\n"
                "  --seed S             job seed; each request's stream derives from it and its custom_id\n"
                "  --ignore-eos         do not stop at end-of-sequence tokens\n");
}

static int parse_int(const char *flag, const char *s, int lo, int *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || end == s || v < lo || v > 1000000000) return error("%s: '%s' is not an integer >= %d", flag, s, lo);
    *out = (int)v;
    return 0;
}

static int parse_float(const char *flag, const char *s, float lo, float hi, float *out) {
    char *end;
    errno = 0;
    float v = strtof(s, &end);
    if (errno || *end || end == s || !(v >= lo && v <= hi)) return error("%s: '%s' is not a number in [%g, %g]", flag, s, lo, hi);
    *out = v;
    return 0;
}

/* returns 0, 1 for --help, or 2 on a usage error (printed by rank 0 only) */
static int parse_opts(const char *cmd, int argc, char **argv, run_opts *o) {
    memset(o, 0, sizeof(*o));
    o->batch = 16;
    o->prefill_chunk = 128;
    o->max_tokens = 8192;
    o->sp.temperature = 0.85f;
    o->sp.top_k = 25;
    o->sp.top_p = 0.9f;
    o->seed = 42;
    int quiet = util_rank() != 0, c, bad = 0;
    opterr = 0;
    optind = 1;
    FILE *saved = stderr;
    if (quiet) stderr = fopen("/dev/null", "w");
    while (!bad && (c = getopt_long(argc, argv, "m:p:o:vh", long_opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 'p': o->prompts = optarg; break;
        case 'o': o->output = optarg; break;
        case 'v': o->verbose = 1; break;
        case 'h':
            if (!quiet) usage(cmd, stdout);
            if (quiet) fclose(stderr), stderr = saved;
            return 1;
        case OPT_PP: bad = parse_int("--pp", optarg, 1, &o->pp); break;
        case OPT_TP: bad = parse_int("--tp", optarg, 1, &o->tp); break;
        case OPT_BATCH: bad = parse_int("--batch", optarg, 1, &o->batch); break;
        case OPT_MAXSEQ: bad = parse_int("--max-seq-len", optarg, 2, &o->max_seq_len); break;
        case OPT_CHUNK: bad = parse_int("--prefill-chunk", optarg, 1, &o->prefill_chunk); break;
        case OPT_MAXTOK: bad = parse_int("--max-tokens", optarg, 0, &o->max_tokens); break;
        case OPT_TEMP: bad = parse_float("--temperature", optarg, 0, 100, &o->sp.temperature); break;
        case OPT_TOPK: bad = parse_int("--top-k", optarg, 0, &o->sp.top_k); break;
        case OPT_TOPP: bad = parse_float("--top-p", optarg, 1e-6f, 1, &o->sp.top_p); break;
        case OPT_SEED: {
            int s;
            bad = parse_int("--seed", optarg, 0, &s);
            o->seed = s;
            break;
        }
        case OPT_IGNORE_EOS: o->ignore_eos = 1; break;
        case OPT_RESUME: o->resume = 1; break;
        case OPT_PLAN: o->plan = 1; break;
        default:
            error("%s: unknown or incomplete option '%s' (see 'mpillama %s --help')", cmd, argv[optind - 1], cmd);
            bad = 1;
        }
    }
    if (!bad && !strcmp(cmd, "info")) {
        if (optind == argc - 1) o->model = argv[optind];
        else if (!o->model) {
            usage(cmd, stderr);
            bad = 1;
        }
    } else if (!bad) {
        if (optind < argc) {
            error("%s: unexpected argument '%s'", cmd, argv[optind]);
            bad = 1;
        } else if (!o->model || !o->prompts || !o->output) {
            error("%s: --model, --prompts and --output are required (see 'mpillama %s --help')", cmd, cmd);
            bad = 1;
        }
    }
    if (quiet) fclose(stderr), stderr = saved;
    return bad ? 2 : 0;
}

/* ------------------------------------------------------------------ grid */

/* fills pp/tp from the options or the default; returns 0, or -1 after rank 0 printed why */
static int choose_grid(const model_config *c, const dist_ctx *d, run_opts *o) {
    int world = d->world_size, pp = o->pp, tp = o->tp;
    if (!pp && !tp) {
        tp = d->node_size;
        if (world % tp) tp = 1;
        pp = world / tp;
        char why[256];
        /* the usual layout does not suit this model: fall back to the largest valid tp */
        while (plan_check_grid(c, pp, tp, why, sizeof(why)) != 0 && tp > 1) {
            do tp--; while (world % tp);
            pp = world / tp;
        }
    } else if (!pp) {
        pp = world % tp ? 0 : world / tp;
    } else if (!tp) {
        tp = world % pp ? 0 : world / pp;
    }
    char why[256] = "", valid[1024];
    if (pp * tp != world) snprintf(why, sizeof(why), "--pp %d x --tp %d is not the %d ranks launched", o->pp ? o->pp : pp, o->tp ? o->tp : tp, world);
    else plan_check_grid(c, pp, tp, why, sizeof(why));
    if (why[0]) {
        if (d->world_rank == 0) {
            plan_list_valid(c, world, valid, sizeof(valid));
            error("impossible grid: %s; valid grids for this model on %d ranks: %s", why, world, valid);
        }
        return -1;
    }
    o->pp = pp;
    o->tp = tp;
    return 0;
}

/* ------------------------------------------------------------------ output */

typedef struct {
    FILE *f;
    const char *path;
    char **done_ids;  /* custom_ids already in the file (--resume) */
    int n_done;
    int written, errors;
} out_file;

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void out_open(out_file *o, const char *path, int resume) {
    memset(o, 0, sizeof(*o));
    o->path = path;
    if (resume && access(path, F_OK) == 0) {
        size_t len;
        char *buf = util_read_file(path, &len);
        /* a torn last record (killed mid-write) is dropped */
        size_t keep = len;
        while (keep > 0 && buf[keep - 1] != '\n') keep--;
        if (keep != len && truncate(path, (off_t)keep) != 0) die_errno("cannot truncate the torn last record of '%s'", path);
        int cap = 64;
        o->done_ids = xmalloc(sizeof(char *) * cap);
        for (char *line = buf, *nl; line < buf + keep; line = nl + 1) {
            nl = memchr(line, '\n', (size_t)(buf + keep - line));
            *nl = 0;
            cJSON *j = cJSON_Parse(line);
            cJSON *id = j ? cJSON_GetObjectItemCaseSensitive(j, "custom_id") : NULL;
            if (cJSON_IsString(id)) {
                if (o->n_done == cap) o->done_ids = xrealloc(o->done_ids, sizeof(char *) * (cap *= 2));
                o->done_ids[o->n_done++] = xstrdup(id->valuestring);
            }
            cJSON_Delete(j);
        }
        free(buf);
        qsort(o->done_ids, (size_t)o->n_done, sizeof(char *), cmp_str);
        fprintf(stderr, "mpillama: resuming '%s': %d records kept, their prompts are skipped\n", path, o->n_done);
        o->f = fopen(path, "ab");
    } else {
        o->f = fopen(path, "wb");
    }
    if (!o->f) die_errno("cannot open output '%s'", path);
}

static int out_has(const out_file *o, const char *id) {
    return o->n_done && bsearch(&id, o->done_ids, (size_t)o->n_done, sizeof(char *), cmp_str) != NULL;
}

/* appends one record as one line and makes it durable (flush + fsync) */
static void out_write(out_file *o, cJSON *rec) {
    char *s = cJSON_PrintUnformatted(rec);
    if (!s) die("out of memory printing a record");
    size_t n = strlen(s);
    s[n] = '\n';
    if (fwrite(s, 1, n + 1, o->f) != n + 1 || fflush(o->f) != 0) die_errno("cannot write output '%s'", o->path);
    if (fsync(fileno(o->f)) != 0 && errno != EINVAL) die_errno("cannot sync output '%s'", o->path);
    free(s);
    cJSON_Delete(rec);
    o->written++;
}

static void out_close(out_file *o) {
    if (fclose(o->f) != 0) die_errno("cannot close output '%s'", o->path);
    for (int i = 0; i < o->n_done; i++) free(o->done_ids[i]);
    free(o->done_ids);
}

static void out_error(out_file *o, const prompt_item *it, const char *why) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "custom_id", it->custom_id);
    cJSON_AddNumberToObject(r, "line", it->line);
    cJSON_AddStringToObject(r, "error", why);
    out_write(o, r);
    o->errors++;
}

static cJSON *int_array(const int *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

/* ------------------------------------------------------------------ scheduling */

typedef enum { MODE_GENERATE, MODE_SCORE } run_mode;

typedef struct {
    int active;
    int item;               /* index into the prompt list */
    int *ids;               /* (cap) prompt then generated tokens */
    int n, cap, n_prompt;
    int n_cached;           /* tokens already in the KV cache */
    int max_new;
    sampler_params sp;
    uint64_t rng, seed;
    float *logprobs;        /* score: (n_prompt - 1) */
    double t_admit, t_prefill_done, t_end;
} seq_state;

typedef struct {
    run_opts *o;
    run_mode mode;
    dist_ctx *d;
    model *m;
    tokenizer *tok;
    model_config *cfg;
    prompt_item *items;
    int n_items, next_item;
    seq_state *seqs;        /* (batch) one per KV slot */
    out_file out;
    int *msg;               /* (1 + 4 * max_tokens) broadcast batch */
    float *logits;          /* (max_tokens, vocab) */
    sampler_candidate *cand;
    int64_t tokens_in, tokens_out;
    double t_prefill, t_decode;
} run_state;

static void seq_push(seq_state *s, int tok) {
    if (s->n == s->cap) s->ids = xrealloc(s->ids, sizeof(int) * (size_t)(s->cap = s->cap * 2 + 16));
    s->ids[s->n++] = tok;
}

/* tokenizes and checks one request; 0 and a filled seq, or -1 after an error record */
static int admit(run_state *rs, int slot) {
    const prompt_item *it = &rs->items[rs->next_item++];
    seq_state *s = &rs->seqs[slot];
    const model_config *c = rs->cfg;
    const int ctx = rs->m->seq_len;
    char why[256];
    if (out_has(&rs->out, it->custom_id)) return -1;
    if (it->error) {
        out_error(&rs->out, it, it->error);
        return -1;
    }
    free(s->ids);
    free(s->logprobs);
    memset(s, 0, sizeof(*s));
    s->item = (int)(it - rs->items);
    if (it->ids) {
        s->cap = it->n_ids + 16;
        s->ids = xmalloc(sizeof(int) * s->cap);
        for (int i = 0; i < it->n_ids; i++) {
            if (it->ids[i] >= c->vocab_size) {
                snprintf(why, sizeof(why), "prompt_ids[%d] = %d is outside the vocabulary (%d)", i, it->ids[i], c->vocab_size);
                out_error(&rs->out, it, why);
                return -1;
            }
            s->ids[s->n++] = it->ids[i];
        }
    } else {
        if (!rs->tok) {
            out_error(&rs->out, it, "the model file has no tokenizer: give 'prompt_ids'");
            return -1;
        }
        s->cap = ctx + 16;
        s->ids = xmalloc(sizeof(int) * s->cap);
        int need = tok_encode(rs->tok, it->text, c->bos_id, s->ids, ctx + 1);
        s->n = need > ctx + 1 ? ctx + 1 : need;
        if (need > ctx) s->n = need; /* for the message below */
    }
    s->n_prompt = s->n;
    int limit = rs->mode == MODE_GENERATE ? ctx - 1 : ctx;
    if (s->n_prompt > limit) {
        snprintf(why, sizeof(why), "prompt has %d tokens, more than the %d the context (--max-seq-len %d) allows%s", s->n_prompt,
                 limit, ctx, rs->mode == MODE_GENERATE ? " with one generated token" : "");
        out_error(&rs->out, it, why);
        s->n = 0;
        return -1;
    }
    if (s->n_prompt == 0) {
        out_error(&rs->out, it, "empty prompt (and the model has no BOS token)");
        return -1;
    }
    s->sp = rs->o->sp;
    if (!isnan(it->temperature)) s->sp.temperature = it->temperature;
    if (it->top_k >= 0) s->sp.top_k = it->top_k;
    if (!isnan(it->top_p)) s->sp.top_p = it->top_p;
    s->max_new = it->max_tokens >= 0 ? it->max_tokens : rs->o->max_tokens;
    s->seed = it->has_seed ? (uint64_t)it->seed : sampler_seed_for((uint64_t)rs->o->seed, it->custom_id);
    s->rng = s->seed ? s->seed : 1;
    if (rs->mode == MODE_SCORE) s->logprobs = xmalloc(sizeof(float) * (size_t)(s->n_prompt > 1 ? s->n_prompt - 1 : 1));
    s->t_admit = util_now();
    s->active = 1;
    return 0;
}

static void finish(run_state *rs, seq_state *s, const char *reason) {
    const prompt_item *it = &rs->items[s->item];
    s->t_end = util_now();
    if (!s->t_prefill_done) s->t_prefill_done = s->t_end;
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "custom_id", it->custom_id);
    if (rs->mode == MODE_SCORE) {
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
        if (rs->tok) {
            char *text = tok_decode(rs->tok, s->ids[s->n_prompt - 1], s->ids + s->n_prompt, nc, rs->cfg->bos_id);
            cJSON_AddStringToObject(r, "completion", text);
            free(text);
        }
        cJSON_AddItemToObject(r, "completion_ids", int_array(s->ids + s->n_prompt, nc));
        cJSON_AddNumberToObject(r, "completion_tokens", nc);
        cJSON_AddStringToObject(r, "finish_reason", reason);
        cJSON_AddNumberToObject(r, "seed", (double)s->seed);
    }
    cJSON *t = cJSON_CreateObject();
    cJSON_AddNumberToObject(t, "prefill_ms", round((s->t_prefill_done - s->t_admit) * 1e6) / 1e3);
    cJSON_AddNumberToObject(t, "decode_ms", round((s->t_end - s->t_prefill_done) * 1e6) / 1e3);
    cJSON_AddNumberToObject(t, "total_ms", round((s->t_end - s->t_admit) * 1e6) / 1e3);
    cJSON_AddItemToObject(r, "timing", t);
    out_write(&rs->out, r);
    s->active = 0;
}

/* rank 0: one step. Returns 0 when nothing is left. */
static int step(run_state *rs) {
    const int B = rs->o->batch, T = rs->m->max_tokens;
    for (int slot = 0; slot < B; slot++)
        while (!rs->seqs[slot].active && rs->next_item < rs->n_items) admit(rs, slot);
    int *tok = rs->msg + 1, *pos = tok + T, *slt = pos + T, *want = slt + T;
    int n = 0, fed[B], nfed = 0;
    for (int slot = 0; slot < B && n < T; slot++) {
        seq_state *s = &rs->seqs[slot];
        if (!s->active) continue;
        int take = s->n - s->n_cached;
        if (take > rs->o->prefill_chunk) take = rs->o->prefill_chunk;
        if (take > T - n) take = T - n;
        for (int i = 0; i < take; i++) {
            int p = s->n_cached + i;
            tok[n] = s->ids[p];
            pos[n] = p;
            slt[n] = slot;
            /* generate wants the last token's logits; score wants every one but the last */
            want[n] = rs->mode == MODE_GENERATE ? p == s->n - 1 : p < s->n_prompt - 1;
            n++;
        }
        fed[nfed++] = slot;
    }
    rs->msg[0] = n;
    if (n == 0) return 0;
    dist_bcast(rs->d, rs->msg, sizeof(int) * (1 + 4 * (int64_t)T), 0);
    double t0 = util_now();
    model_batch b = {n, tok, pos, slt, want};
    model_forward(rs->m, rs->d, &b, rs->logits);
    double dt = util_now() - t0;
    int decode_tokens = 0;

    /* consume the logits in batch order */
    int row = 0, k = 0;
    for (int f = 0; f < nfed; f++) {
        seq_state *s = &rs->seqs[fed[f]];
        int first = k;
        while (k < n && slt[k] == fed[f]) k++;
        int ntok = k - first;
        int was_prefill = s->n_cached < s->n_prompt;
        if (was_prefill) rs->tokens_in += ntok;
        else decode_tokens += ntok;
        for (int i = first; i < k; i++) {
            if (!want[i]) continue;
            float *lg = rs->logits + (int64_t)row++ * rs->cfg->vocab_size;
            if (rs->mode == MODE_SCORE) s->logprobs[pos[i]] = kern_log_softmax_at(lg, rs->cfg->vocab_size, s->ids[pos[i] + 1]);
        }
        s->n_cached += ntok;
        if (rs->mode == MODE_SCORE) {
            if (s->n_cached == s->n_prompt) finish(rs, s, "done");
            continue;
        }
        if (s->n_cached < s->n) continue; /* prompt not yet all in */
        if (!s->t_prefill_done) s->t_prefill_done = util_now();
        float *lg = rs->logits + (int64_t)(row - 1) * rs->cfg->vocab_size;
        if (s->n - s->n_prompt >= s->max_new) {
            finish(rs, s, "length");
            continue;
        }
        int next = sampler_sample(lg, rs->cfg->vocab_size, &s->sp, &s->rng, rs->cand);
        if (!rs->o->ignore_eos && config_is_eos(rs->cfg, next)) {
            finish(rs, s, "stop");
            continue;
        }
        seq_push(s, next);
        rs->tokens_out++;
        if (s->n - s->n_prompt >= s->max_new || s->n >= rs->m->seq_len) finish(rs, s, "length");
    }
    if (decode_tokens > 0 && decode_tokens == n) rs->t_decode += dt;
    else if (decode_tokens == 0) rs->t_prefill += dt;
    else { /* mixed step: split the time by tokens */
        rs->t_decode += dt * decode_tokens / n;
        rs->t_prefill += dt * (n - decode_tokens) / n;
    }
    return 1;
}

/* ------------------------------------------------------------------ setup */

typedef struct {
    dist_ctx d;
    mfile *f;
    model_config cfg;
    plan_grid grid;
    model m;
    tokenizer *tok; /* world rank 0, when the file has one */
} run_setup;

/* opens the model, picks the grid, loads every rank's share; -1 when the grid is impossible */
static int setup(run_setup *su, run_opts *o) {
    dist_ctx_init(&su->d);
    affinity_info aff;
    affinity_bind(su->d.node_rank, su->d.node_size, &aff);
    if (o->verbose) /* the binding map, one line per rank, in rank order */
        for (int r = 0; r < su->d.world_size; r++) {
            if (r == su->d.world_rank)
                fprintf(stderr, "mpillama: rank %d (node rank %d of %d): cores %s (%d), %d BLAS threads%s\n", r,
                        su->d.node_rank, su->d.node_size, aff.cpuset, aff.cores, aff.threads,
                        aff.kept_existing ? ", binding kept from the launcher" : "");
            dist_barrier(&su->d);
        }
    su->f = mfile_open(o->model, su->d.world);
    mfile_read_config(su->f, &su->cfg);
    su->tok = NULL;
    mfile_tokenizer mt;
    if (mfile_read_tokenizer(su->f, &mt)) { /* collective; only the sampling rank keeps it */
        if (mt.n != su->cfg.vocab_size)
            die("'%s': tokenizer has %d pieces, vocab_size is %d", o->model, mt.n, su->cfg.vocab_size);
        if (su->d.world_rank == 0) su->tok = tok_init(&mt);
        mfile_tokenizer_free(&mt);
    }
    if (choose_grid(&su->cfg, &su->d, o) != 0) {
        mfile_close(su->f);
        dist_ctx_free(&su->d);
        return -1;
    }
    dist_grid_init(&su->d, o->pp, o->tp);
    plan_make(&su->grid, &su->cfg, o->pp, o->tp);
    double t0 = util_now();
    model_load(&su->m, su->f, &su->cfg, &su->grid, &su->d);
    double t_load = dist_max_double(&su->d, util_now() - t0);
    int64_t *bytes = su->d.world_rank == 0 ? xmalloc(sizeof(int64_t) * su->d.world_size) : NULL;
    dist_gather_int64(&su->d, su->m.bytes_read, bytes, 0);
    if (su->d.world_rank == 0) {
        int64_t total = 0;
        for (int r = 0; r < su->d.world_size; r++) total += bytes[r];
        fprintf(stderr, "mpillama: %d ranks on %d node(s), grid --pp %d --tp %d; loaded %.2f MiB of weights in %.2f s\n",
                su->d.world_size, su->d.n_nodes, o->pp, o->tp, total / 1048576.0, t_load);
        if (o->verbose)
            for (int r = 0; r < su->d.world_size; r++) {
                plan_rank pr;
                plan_rank_share(&su->grid, &su->cfg, r, &pr);
                fprintf(stderr, "mpillama: rank %d stage %d tp %d: layers %d-%d, heads %d-%d, kv heads %d-%d, ffn %d-%d, "
                                "bytes read %lld (plan %lld)\n",
                        r, pr.stage, pr.tp_rank, pr.layer0, pr.layer0 + pr.n_layers_local - 1, pr.head0,
                        pr.head0 + pr.n_heads_local - 1, pr.kv_head0, pr.kv_head0 + pr.n_kv_local - 1, pr.hidden0,
                        pr.hidden0 + pr.hidden_local - 1, (long long)bytes[r], (long long)pr.weight_bytes);
            }
    }
    free(bytes);
    return 0;
}

static void teardown(run_setup *su) {
    if (su->tok) tok_free(su->tok);
    model_free(&su->m);
    mfile_close(su->f);
    dist_ctx_free(&su->d);
}

static int run_main(const char *cmd, run_mode mode, int argc, char **argv) {
    run_opts o;
    int rc = parse_opts(cmd, argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    run_setup su;
    if (setup(&su, &o) != 0) return 1;
    const model_config *c = &su.cfg;
    int seq_len = o.max_seq_len ? o.max_seq_len : (c->max_seq_len < 4096 ? c->max_seq_len : 4096);
    if (seq_len > c->max_seq_len) {
        if (su.d.world_rank == 0) warning("--max-seq-len %d exceeds the model's context %d; using %d", seq_len, c->max_seq_len, c->max_seq_len);
        seq_len = c->max_seq_len;
    }
    int max_tokens = o.prefill_chunk + o.batch; /* tokens per forward call */
    model_alloc_state(&su.m, o.batch, seq_len, max_tokens);
    int64_t kv = dist_sum_int64(&su.d, su.m.kv_bytes);
    if (su.d.world_rank == 0 && o.verbose)
        fprintf(stderr, "mpillama: KV cache %.2f MiB in all (%d slots x %d positions)\n", kv / 1048576.0, o.batch, seq_len);

    int *msg = xmalloc(sizeof(int) * (1 + 4 * (size_t)max_tokens));
    if (su.d.world_rank != 0) {
        /* follower: run every batch rank 0 broadcasts until the empty one */
        for (;;) {
            dist_bcast(&su.d, msg, sizeof(int) * (1 + 4 * (int64_t)max_tokens), 0);
            int n = msg[0];
            if (n == 0) break;
            model_batch b = {n, msg + 1, msg + 1 + max_tokens, msg + 1 + 2 * max_tokens, msg + 1 + 3 * max_tokens};
            model_forward(&su.m, &su.d, &b, NULL);
        }
    } else {
        run_state rs = {0};
        rs.o = &o;
        rs.mode = mode;
        rs.d = &su.d;
        rs.m = &su.m;
        rs.cfg = &su.cfg;
        rs.msg = msg;
        rs.n_items = prompts_read(o.prompts, &rs.items);
        out_open(&rs.out, o.output, o.resume);
        rs.seqs = xcalloc((size_t)o.batch, sizeof(seq_state));
        rs.logits = xmalloc(sizeof(float) * (size_t)max_tokens * c->vocab_size);
        rs.cand = xmalloc(sizeof(sampler_candidate) * c->vocab_size);
        rs.tok = su.tok;
        double t0 = util_now();
        while (step(&rs)) {
        }
        msg[0] = 0;
        dist_bcast(&su.d, msg, sizeof(int) * (1 + 4 * (int64_t)max_tokens), 0);
        double wall = util_now() - t0;
        fprintf(stderr,
                "mpillama: %d prompts, %d records written (%d errors); %lld tokens in, %lld out; %.2f s; "
                "prefill %.1f tok/s, decode %.1f tok/s\n",
                rs.n_items, rs.out.written, rs.out.errors, (long long)rs.tokens_in, (long long)rs.tokens_out, wall,
                rs.t_prefill > 0 ? rs.tokens_in / rs.t_prefill : 0.0, rs.t_decode > 0 ? rs.tokens_out / rs.t_decode : 0.0);
        out_close(&rs.out);
        for (int i = 0; i < o.batch; i++) {
            free(rs.seqs[i].ids);
            free(rs.seqs[i].logprobs);
        }
        free(rs.seqs);
        free(rs.logits);
        free(rs.cand);
        prompts_free(rs.items, rs.n_items);
    }
    free(msg);
    teardown(&su);
    return 0;
}

int runner_generate_main(int argc, char **argv) { return run_main("generate", MODE_GENERATE, argc, argv); }
int runner_score_main(int argc, char **argv) { return run_main("score", MODE_SCORE, argc, argv); }

int runner_info_main(int argc, char **argv) {
    run_opts o;
    int rc = parse_opts("info", argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    if (util_rank() != 0) return 0;
    mfile *f = mfile_open(o.model, dist_comm_self());
    model_config c;
    mfile_read_config(f, &c);
    printf("model: %s\n", o.model);
    config_print(&c, stdout);
    mfile_tokenizer mt;
    if (mfile_read_tokenizer(f, &mt)) {
        printf("tokenizer: %s, %d pieces\n", mt.type, mt.n);
        mfile_tokenizer_free(&mt);
    } else {
        printf("tokenizer: none (prompts must give prompt_ids)\n");
    }
    if (mfile_has(f, "source/tokenizer.json")) printf("source tokenizer.json: stored\n");
    mfile_print_tensors(f, stdout);
    if (o.plan) {
        int pp = o.pp ? o.pp : 1, tp = o.tp ? o.tp : 1;
        char why[256], valid[1024];
        if (plan_check_grid(&c, pp, tp, why, sizeof(why)) != 0) {
            plan_list_valid(&c, pp * tp, valid, sizeof(valid));
            error("impossible grid: %s; valid grids for this model on %d ranks: %s", why, pp * tp, valid);
            mfile_close(f);
            return 1;
        }
        int seq = o.max_seq_len ? o.max_seq_len : (c.max_seq_len < 4096 ? c.max_seq_len : 4096);
        plan_grid g;
        plan_make(&g, &c, pp, tp);
        printf("plan: --pp %d --tp %d, KV cache for --batch %d x --max-seq-len %d\n", pp, tp, o.batch, seq);
        printf("%5s %5s %3s %9s %9s %9s %11s %14s %14s\n", "rank", "stage", "tp", "layers", "heads", "kv_heads",
               "ffn_cols", "weight_bytes", "kv_bytes");
        int64_t tw = 0, tk = 0;
        for (int r = 0; r < pp * tp; r++) {
            plan_rank pr;
            plan_rank_share(&g, &c, r, &pr);
            int64_t kvb = plan_kv_bytes(&pr, &c, seq, o.batch);
            char lay[32], hd[32], kvh[32], ffn[32];
            snprintf(lay, sizeof(lay), "%d-%d", pr.layer0, pr.layer0 + pr.n_layers_local - 1);
            snprintf(hd, sizeof(hd), "%d-%d", pr.head0, pr.head0 + pr.n_heads_local - 1);
            snprintf(kvh, sizeof(kvh), "%d-%d", pr.kv_head0, pr.kv_head0 + pr.n_kv_local - 1);
            snprintf(ffn, sizeof(ffn), "%d-%d", pr.hidden0, pr.hidden0 + pr.hidden_local - 1);
            printf("%5d %5d %3d %9s %9s %9s %11s %14lld %14lld\n", r, pr.stage, pr.tp_rank, lay, hd, kvh, ffn,
                   (long long)pr.weight_bytes, (long long)kvb);
            tw += pr.weight_bytes;
            tk += kvb;
        }
        printf("total: weights %lld bytes (%.2f MiB), KV cache %lld bytes (%.2f MiB)\n", (long long)tw, tw / 1048576.0,
               (long long)tk, tk / 1048576.0);
    }
    mfile_close(f);
    return 0;
}
