#include "runner.h"

#include <cJSON.h>
#include <errno.h>
#include <signal.h>
#include <sys/stat.h>
#include <getopt.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "affinity.h"
#include "dist.h"
#include "kernels.h"
#include "mfile.h"
#include "chat.h"
#include "model.h"
#include "outfile.h"
#include "report.h"
#include "trace.h"
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
    const char *trace_dir;      /* --trace DIR: summary.json + trace.json */
    float grace;                /* seconds to finish in-flight requests after SIGTERM */
    int micro_batches;          /* 0 = pp */
    float progress_interval;    /* seconds between progress lines when stderr is not a terminal */
    const char *chat_template;  /* --chat-template NAME: overrides the model's */
    const char *stop[16];       /* --stop STRING (repeatable) */
    int n_stop;
    /* info */
    int plan;
} run_opts;

enum { OPT_PP = 1000, OPT_TP, OPT_BATCH, OPT_MAXSEQ, OPT_CHUNK, OPT_MAXTOK, OPT_TEMP, OPT_TOPK,
       OPT_TOPP, OPT_SEED, OPT_IGNORE_EOS, OPT_RESUME, OPT_PLAN, OPT_TRACE, OPT_GRACE, OPT_MINP, OPT_REP,
       OPT_FREQ, OPT_PRES, OPT_STOP, OPT_MICRO, OPT_PROGRESS, OPT_CHAT };

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
    {"trace", required_argument, 0, OPT_TRACE}, {"grace", required_argument, 0, OPT_GRACE},
    {"min-p", required_argument, 0, OPT_MINP},  {"repetition-penalty", required_argument, 0, OPT_REP},
    {"frequency-penalty", required_argument, 0, OPT_FREQ}, {"presence-penalty", required_argument, 0, OPT_PRES},
    {"stop", required_argument, 0, OPT_STOP},   {"micro-batches", required_argument, 0, OPT_MICRO},
    {"progress-interval", required_argument, 0, OPT_PROGRESS}, {"chat-template", required_argument, 0, OPT_CHAT},
    {0, 0, 0, 0}};

static void usage(const char *cmd, FILE *out) {
    if (!strcmp(cmd, "info")) {
        fprintf(out, "usage: mpillama info M.h5 [--plan --pp P --tp T [--max-seq-len S] [--batch B]]\n");
        return;
    }
    fprintf(out,
            "usage: mpirun -n N mpillama %s --model M.h5 --prompts IN --output OUT.jsonl [options]\n"
            "  IN: JSONL ({\"custom_id\", \"prompt\" | \"prompt_ids\" | \"messages\"}) or plain text, one prompt a line\n"
            "  --pp P --tp T        pipeline stages x tensor-parallel ranks (P*T = N; default:\n"
            "                       tp = ranks per node, pp = nodes)\n"
            "  --batch B            sequences in flight (default 16)\n"
            "  --max-seq-len S      KV cache positions per sequence (default: model's, at most 4096)\n"
            "  --prefill-chunk C    prompt tokens per sequence per step (default 128)\n"
            "  --micro-batches M    micro-batches in flight (default pp, so every stage is busy)\n"
            "  --resume             keep OUT's finished records and skip their custom_ids\n"
            "  --trace DIR          write DIR/summary.json and DIR/trace.json (Perfetto)\n"
            "  --grace S            after SIGTERM/SIGUSR1, finish in-flight requests for S seconds (default 30),\n"
            "                       then record them as interrupted and exit 75 (rerun with --resume)\n"
            "  --progress-interval S  seconds between progress lines in logs (default 30)\n"
            "  --verbose            binding map, per-rank plan, bytes read, KV cache size\n",
            cmd);
    if (!strcmp(cmd, "generate"))
        fprintf(out,
                "  --max-tokens N       tokens to generate (default 8192, capped by the context)\n"
                "  --temperature T      0 = greedy (default 0.85)\n"
                "  --top-k K            (default 25; 0 = off)   --top-p P (default 0.9; 1 = off)\n"
                "  --seed S             job seed; each request's stream derives from it and its custom_id\n"
                "  --min-p P            keep tokens with p >= P x p_max (default 0 = off)\n"
                "  --repetition-penalty R  (default 1 = off)  --frequency-penalty F  --presence-penalty P (default 0)\n"
                "  --stop STRING        end a completion at STRING (repeatable)\n"
                "  --ignore-eos         do not stop at end-of-sequence tokens\n"
                "  --chat-template NAME requests with \"messages\" use llama2, llama3 or chatml (default: the model's)\n"
                "  Each JSONL request may override: max_tokens, temperature, top_k, top_p, min_p,\n"
                "  repetition_penalty, frequency_penalty, presence_penalty, seed, stop, stop_token_ids, ignore_eos.\n");
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
    o->sp.min_p = 0.0f;
    o->sp.repetition_penalty = 1.0f;
    o->seed = 42;
    o->grace = 30.0f;
    o->progress_interval = 30.0f;
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
        case OPT_TRACE: o->trace_dir = optarg; break;
        case OPT_GRACE: bad = parse_float("--grace", optarg, 0, 1e6, &o->grace); break;
        case OPT_MINP: bad = parse_float("--min-p", optarg, 0, 1, &o->sp.min_p); break;
        case OPT_REP: bad = parse_float("--repetition-penalty", optarg, 1e-3f, 100, &o->sp.repetition_penalty); break;
        case OPT_FREQ: bad = parse_float("--frequency-penalty", optarg, -2, 2, &o->sp.frequency_penalty); break;
        case OPT_PRES: bad = parse_float("--presence-penalty", optarg, -2, 2, &o->sp.presence_penalty); break;
        case OPT_MICRO: bad = parse_int("--micro-batches", optarg, 1, &o->micro_batches); break;
        case OPT_PROGRESS: bad = parse_float("--progress-interval", optarg, 0.1f, 1e6, &o->progress_interval); break;
        case OPT_CHAT:
            if (!chat_template_known(optarg)) bad = error("--chat-template: '%s' is not one of llama2, llama3, chatml", optarg);
            else o->chat_template = optarg;
            break;
        case OPT_STOP:
            if (o->n_stop == 16) bad = error("--stop: at most 16 stop strings");
            else if (!optarg[0]) bad = error("--stop: empty string");
            else o->stop[o->n_stop++] = optarg;
            break;
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

/* ------------------------------------------------------------------ signals */

/* SIGTERM (Slurm's warning before the time limit) and SIGUSR1 (what mpirun forwards): stop
 * taking new prompts, finish in-flight ones within --grace, record the rest as interrupted */
static volatile sig_atomic_t g_stop_signal = 0;
static void on_stop_signal(int sig) { g_stop_signal = sig; }

/* ------------------------------------------------------------------ pipeline messages */

/* a micro-batch travels as int32 [n, group, prompt tokens, 0, token[T], pos[T], slot[T], want[T]] followed,
 * between stages, by the activations x (n, dim) as float32 */
#define MSG_HDR 4
static int64_t msg_ints(int T) { return MSG_HDR + 4 * (int64_t)T; }

static model_batch msg_batch(int *msg, int T) {
    model_batch b = {msg[0], msg + MSG_HDR, msg + MSG_HDR + T, msg + MSG_HDR + 2 * T, msg + MSG_HDR + 3 * T};
    return b;
}

static int msg_n_want(const int *msg, int T) {
    int nw = 0;
    for (int i = 0; i < msg[0]; i++) nw += msg[MSG_HDR + 3 * T + i] != 0;
    return nw;
}

/* the trace name of a step: by whether its tokens are prompt tokens (msg[2] counts them) */
static trace_name step_name(const int *msg) {
    return msg[2] == msg[0] ? TN_PREFILL : msg[2] == 0 ? TN_DECODE : TN_MIXED;
}

/* ------------------------------------------------------------------ requests (rank 0) */

typedef enum { MODE_GENERATE, MODE_SCORE } run_mode;

typedef struct {
    int active, in_flight;
    int item;               /* index into the prompt list */
    int *ids;               /* (cap) prompt then generated tokens */
    int n, cap, n_prompt;
    int n_cached;           /* tokens already in the KV cache */
    int max_new, ignore_eos;
    sampler_params sp;
    uint64_t rng, seed;
    float *logprobs;        /* score: (n_prompt - 1) */
    char *text;             /* generate: completion text so far (textlen bytes) */
    size_t textlen, textcap;
    tok_decoder dec;        /* streaming: never splits a UTF-8 character */
    int has_dec;
    int stop_ids[8];        /* the chat template's end-of-turn tokens */
    int n_stop_ids;
    double t_queued, t_admit, t_prefill_done, t_end;
} seq_state;

typedef struct {
    int *msg;               /* (msg_ints + T * dim floats) what was launched */
    float *logits;          /* (rows_max, vocab) */
    int in_flight;
} group_state;

typedef struct {
    run_opts *o;
    run_mode mode;
    dist_ctx *d;
    model *m;
    tokenizer *tok;
    model_config *cfg;
    prompt_item *items;
    int n_items, next_item, skipped;
    seq_state *seqs;        /* (batch) one per KV slot; slot s belongs to group s % M */
    group_state *groups;    /* (M) */
    int M, T;
    int fifo[DIST_RING], fifo_head, fifo_len;
    outfile out;
    sampler_candidate *cand;
    int *seen;              /* (vocab) zeroed scratch for penalties */
    int64_t tokens_in, tokens_out;
    double t_prefill, t_decode, t_start, t_last_process, t_last_progress;
    int completed, tty;
} run_state;

static void seq_push(seq_state *s, int tok) {
    if (s->n == s->cap) s->ids = xrealloc(s->ids, sizeof(int) * (size_t)(s->cap = s->cap * 2 + 16));
    s->ids[s->n++] = tok;
}

static void seq_append_text(seq_state *s, const char *t) {
    size_t l = strlen(t);
    if (s->textlen + l + 1 > s->textcap) s->text = xrealloc(s->text, s->textcap = (s->textlen + l + 1) * 2 + 64);
    memcpy(s->text + s->textlen, t, l + 1);
    s->textlen += l;
}

static cJSON *int_array(const int *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

/* tokenizes and checks one request into slot; 0, or -1 after an error record (or a resume skip) */
static int admit(run_state *rs, int slot) {
    const prompt_item *it = &rs->items[rs->next_item++];
    seq_state *s = &rs->seqs[slot];
    const model_config *c = rs->cfg;
    const int ctx = rs->m->seq_len;
    char why[256];
    if (outfile_has(&rs->out, it->custom_id)) {
        rs->skipped++;
        return -1;
    }
    double t0 = trace_now();
    if (it->error) {
        outfile_error(&rs->out, it->custom_id, it->line, it->error);
        return -1;
    }
    free(s->ids);
    free(s->logprobs);
    free(s->text);
    if (s->has_dec) tok_decoder_free(&s->dec);
    memset(s, 0, sizeof(*s));
    s->item = (int)(it - rs->items);
    if (it->ids) {
        s->cap = it->n_ids + 16;
        s->ids = xmalloc(sizeof(int) * s->cap);
        for (int i = 0; i < it->n_ids; i++) {
            if (it->ids[i] >= c->vocab_size) {
                snprintf(why, sizeof(why), "prompt_ids[%d] = %d is outside the vocabulary (%d)", i, it->ids[i], c->vocab_size);
                outfile_error(&rs->out, it->custom_id, it->line, why);
                return -1;
            }
            s->ids[s->n++] = it->ids[i];
        }
    } else {
        if (!rs->tok) {
            outfile_error(&rs->out, it->custom_id, it->line, "the model file has no tokenizer: give 'prompt_ids'");
            return -1;
        }
        s->cap = ctx + 16;
        s->ids = xmalloc(sizeof(int) * s->cap);
        int bos = tok_bos_id(rs->tok) >= 0 ? tok_bos_id(rs->tok) : c->bos_id;
        if (it->roles) {
            const char *tmpl = rs->o->chat_template ? rs->o->chat_template : tok_chat_template(rs->tok);
            if (!tmpl || !tmpl[0]) {
                outfile_error(&rs->out, it->custom_id, it->line,
                              "the model has no chat template: give --chat-template llama2|llama3|chatml");
                return -1;
            }
            chat_message *msgs = xmalloc(sizeof(chat_message) * (size_t)it->n_messages);
            for (int k = 0; k < it->n_messages; k++) msgs[k] = (chat_message){it->roles[k], it->contents[k]};
            s->n = chat_encode(rs->tok, tmpl, msgs, it->n_messages, 1, bos, s->ids, ctx + 1, why, sizeof(why));
            free(msgs);
            if (s->n < 0) {
                outfile_error(&rs->out, it->custom_id, it->line, why);
                s->n = 0;
                return -1;
            }
            s->n_stop_ids = chat_stop_ids(rs->tok, tmpl, s->stop_ids, 8);
        } else {
            s->n = tok_encode(rs->tok, it->text, bos, s->ids, ctx + 1); /* may report more than it wrote */
        }
    }
    s->n_prompt = s->n;
    int limit = rs->mode == MODE_GENERATE ? ctx - 1 : ctx;
    if (s->n_prompt > limit) {
        snprintf(why, sizeof(why), "prompt has %d tokens, more than the %d that the context (--max-seq-len %d) allows%s",
                 s->n_prompt, limit, ctx, rs->mode == MODE_GENERATE ? " with one generated token" : "");
        outfile_error(&rs->out, it->custom_id, it->line, why);
        s->n = 0;
        return -1;
    }
    if (s->n_prompt == 0) {
        outfile_error(&rs->out, it->custom_id, it->line, "empty prompt (and the model has no BOS token)");
        return -1;
    }
    s->sp = rs->o->sp;
    if (!isnan(it->temperature)) s->sp.temperature = it->temperature;
    if (it->top_k >= 0) s->sp.top_k = it->top_k;
    if (!isnan(it->top_p)) s->sp.top_p = it->top_p;
    if (!isnan(it->min_p)) s->sp.min_p = it->min_p;
    if (!isnan(it->repetition_penalty)) s->sp.repetition_penalty = it->repetition_penalty;
    if (!isnan(it->frequency_penalty)) s->sp.frequency_penalty = it->frequency_penalty;
    if (!isnan(it->presence_penalty)) s->sp.presence_penalty = it->presence_penalty;
    s->ignore_eos = it->ignore_eos >= 0 ? it->ignore_eos : rs->o->ignore_eos;
    s->max_new = it->max_tokens >= 0 ? it->max_tokens : rs->o->max_tokens;
    s->seed = it->has_seed ? (uint64_t)it->seed : sampler_seed_for((uint64_t)rs->o->seed, it->custom_id);
    s->rng = s->seed ? s->seed : 1;
    if (rs->mode == MODE_SCORE) s->logprobs = xmalloc(sizeof(float) * (size_t)(s->n_prompt > 1 ? s->n_prompt - 1 : 1));
    s->t_admit = util_now();
    s->t_queued = s->t_admit - rs->t_start;
    s->active = 1;
    trace_end(TN_IO, TRACE_IO, t0, -1);
    return 0;
}

static int check_stop_strings(run_state *rs, seq_state *s, const prompt_item *it, int token);

/* writes the request's record; reason "stop_string" is written as "stop" after the text was cut */
static void finish(run_state *rs, seq_state *s, const char *reason) {
    const prompt_item *it = &rs->items[s->item];
    double t0 = trace_now();
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
        if (s->has_dec && strcmp(reason, "stop_string") != 0) check_stop_strings(rs, s, it, -1); /* held-back bytes */
        if (!strcmp(reason, "stop_string")) reason = "stop";
        cJSON_AddNumberToObject(r, "prompt_tokens", s->n_prompt);
        if (rs->tok) cJSON_AddStringToObject(r, "completion", s->text ? s->text : "");
        cJSON_AddItemToObject(r, "completion_ids", int_array(s->ids + s->n_prompt, nc));
        cJSON_AddNumberToObject(r, "completion_tokens", nc);
        cJSON_AddStringToObject(r, "finish_reason", reason);
        char seed[32];
        snprintf(seed, sizeof(seed), "%llu", (unsigned long long)s->seed);
        cJSON_AddItemToObject(r, "seed", cJSON_CreateRaw(seed));
    }
    cJSON *t = cJSON_CreateObject();
    cJSON_AddNumberToObject(t, "queued_ms", round(s->t_queued * 1e6) / 1e3);
    cJSON_AddNumberToObject(t, "prefill_ms", round((s->t_prefill_done - s->t_admit) * 1e6) / 1e3);
    cJSON_AddNumberToObject(t, "decode_ms", round((s->t_end - s->t_prefill_done) * 1e6) / 1e3);
    cJSON_AddNumberToObject(t, "total_ms", round((s->t_end - s->t_admit) * 1e6) / 1e3);
    cJSON_AddItemToObject(r, "timing", t);
    outfile_write(&rs->out, r);
    if (!strcmp(reason, "interrupted")) rs->out.interrupted++;
    else rs->completed++;
    s->active = 0;
    trace_end(TN_IO, TRACE_IO, t0, -1);
}

/* appends the sampled token's text (streaming: a UTF-8 character split over tokens comes out
 * whole) and looks for a stop string; 1 when one ended the text */
static int check_stop_strings(run_state *rs, seq_state *s, const prompt_item *it, int token) {
    if (!rs->tok) return 0;
    if (!s->has_dec) {
        tok_decoder_init(&s->dec, rs->tok, s->ids[s->n_prompt - 1], rs->cfg->bos_id, 0);
        s->has_dec = 1;
    }
    size_t len, before = s->textlen;
    const char *piece = token >= 0 ? tok_decoder_push(&s->dec, token, &len) : tok_decoder_flush(&s->dec, &len);
    seq_append_text(s, piece);
    int nstop = it->n_stop ? it->n_stop : rs->o->n_stop;
    for (int k = 0; k < nstop; k++) {
        const char *stop = it->n_stop ? it->stop[k] : rs->o->stop[k];
        size_t sl = strlen(stop), from = before >= sl ? before - sl + 1 : 0;
        char *hit = s->textlen >= sl ? memmem(s->text + from, s->textlen - from, stop, sl) : NULL;
        if (hit) {
            s->textlen = (size_t)(hit - s->text);
            s->text[s->textlen] = 0;
            return 1;
        }
    }
    return 0;
}

/* builds group g's micro-batch from its active sequences; returns the token count */
static int build_group(run_state *rs, int g) {
    const int T = rs->T, B = rs->o->batch;
    int *msg = rs->groups[g].msg;
    dist_ring_wait(rs->d, g); /* the buffer's previous send must be complete */
    model_batch b = msg_batch(msg, T);
    int n = 0, prompt_tokens = 0;
    for (int slot = g; slot < B && n < T; slot += rs->M) {
        seq_state *s = &rs->seqs[slot];
        if (!s->active) continue;
        int take = s->n - s->n_cached;
        if (take > rs->o->prefill_chunk) take = rs->o->prefill_chunk;
        if (take > T - n) take = T - n;
        for (int i = 0; i < take; i++) {
            int p = s->n_cached + i;
            b.token[n] = s->ids[p];
            b.pos[n] = p;
            b.slot[n] = slot;
            /* generate wants the last token's logits; score every one but the last */
            b.want[n] = rs->mode == MODE_GENERATE ? p == s->n - 1 : p < s->n_prompt - 1;
            prompt_tokens += p < s->n_prompt;
            n++;
        }
        if (take > 0) s->in_flight = 1;
    }
    msg[0] = n;
    msg[1] = g;
    msg[2] = prompt_tokens;
    return n;
}

/* stage 0's share of a micro-batch; with pp = 1 the logits too */
static void launch_group(run_state *rs, int g) {
    group_state *gs = &rs->groups[g];
    model_batch b = msg_batch(gs->msg, rs->T);
    double t0 = trace_now();
    dist_tp_bcast(rs->d, gs->msg, sizeof(int) * msg_ints(rs->T));
    model_embed(rs->m, rs->d, &b);
    model_layers(rs->m, rs->d, &b);
    if (rs->d->pp > 1) {
        float *x = (float *)(gs->msg + msg_ints(rs->T));
        memcpy(x, rs->m->x, sizeof(float) * (size_t)b.n * rs->cfg->dim);
        dist_pipe_send(rs->d, gs->msg, sizeof(int) * msg_ints(rs->T) + sizeof(float) * (int64_t)b.n * rs->cfg->dim, g);
    } else {
        model_logits(rs->m, rs->d, &b, gs->logits);
    }
    trace_end(step_name(gs->msg), TRACE_STEP, t0, b.n);
    gs->in_flight = 1;
    rs->fifo[(rs->fifo_head + rs->fifo_len++) % DIST_RING] = g;
}

/* consumes group g's logits: log-probs, sampling, stops, finished records */
static void process_group(run_state *rs, int g) {
    group_state *gs = &rs->groups[g];
    const int T = rs->T, V = rs->cfg->vocab_size;
    model_batch b = msg_batch(gs->msg, T);
    int nw = msg_n_want(gs->msg, T);
    if (rs->d->pp > 1 && nw > 0) dist_logits_recv(rs->d, gs->logits, (int64_t)nw * V);
    double t0 = trace_now();
    int row = 0, prefill_tokens = 0, decode_tokens = 0;
    for (int k = 0; k < b.n;) {
        const int slot = b.slot[k];
        seq_state *s = &rs->seqs[slot];
        const prompt_item *it = &rs->items[s->item];
        int first = k;
        while (k < b.n && b.slot[k] == slot) k++;
        int ntok = k - first;
        if (s->n_cached < s->n_prompt) prefill_tokens += ntok;
        else decode_tokens += ntok;
        float *last = NULL;
        for (int i = first; i < k; i++) {
            if (!b.want[i]) continue;
            last = gs->logits + (int64_t)row++ * V;
            if (rs->mode == MODE_SCORE) s->logprobs[b.pos[i]] = kern_log_softmax_at(last, V, s->ids[b.pos[i] + 1]);
        }
        s->n_cached += ntok;
        s->in_flight = 0;
        if (rs->mode == MODE_SCORE) {
            if (s->n_cached == s->n_prompt) finish(rs, s, "done");
            continue;
        }
        if (s->n_cached < s->n) continue; /* prompt not all in yet */
        if (!s->t_prefill_done) s->t_prefill_done = util_now();
        if (s->n - s->n_prompt >= s->max_new) {
            finish(rs, s, "length");
            continue;
        }
        sampler_penalize(last, &s->sp, s->ids, s->n_prompt, s->n, rs->seen);
        int next = sampler_sample(last, V, &s->sp, &s->rng, rs->cand);
        int is_stop = !s->ignore_eos && config_is_eos(rs->cfg, next);
        for (int j = 0; j < it->n_stop_ids && !is_stop; j++) is_stop = it->stop_token_ids[j] == next;
        for (int j = 0; j < s->n_stop_ids && !is_stop; j++) is_stop = s->stop_ids[j] == next;
        if (is_stop) {
            finish(rs, s, "stop");
            continue;
        }
        int stop_text = check_stop_strings(rs, s, it, next);
        seq_push(s, next);
        rs->tokens_out++;
        if (stop_text) finish(rs, s, "stop_string");
        else if (s->n - s->n_prompt >= s->max_new || s->n >= rs->m->seq_len) finish(rs, s, "length");
    }
    rs->tokens_in += prefill_tokens;
    trace_end(TN_SAMPLING, TRACE_SAMPLING, t0, b.n);
    /* the driver's time since the last micro-batch, split by the kind of tokens it carried */
    double now = util_now(), dt = now - rs->t_last_process;
    rs->t_last_process = now;
    if (b.n > 0) {
        rs->t_prefill += dt * prefill_tokens / b.n;
        rs->t_decode += dt * decode_tokens / b.n;
    }
    gs->in_flight = 0;
}

static void progress(run_state *rs, int force) {
    double now = util_now(), el = now - rs->t_start;
    double interval = rs->tty ? 0.25 : rs->o->progress_interval;
    if (!force && now - rs->t_last_progress < interval) return;
    rs->t_last_progress = now;
    int total = rs->n_items - rs->skipped, done = rs->out.written - rs->out.interrupted;
    double tps = el > 0 ? (rs->tokens_in + rs->tokens_out) / el : 0;
    double eta = done > 0 ? el * (total - done) / done : 0;
    if (rs->tty) {
        int w = 30, fill = total > 0 ? (int)((double)w * done / total) : w;
        char bar[64];
        for (int i = 0; i < w; i++) bar[i] = i < fill ? '#' : '.';
        bar[w] = 0;
        fprintf(stderr, "\r[%s] %d/%d prompts  %.0f tok/s  ETA %.0f s   %s", bar, done, total, tps, eta, force ? "\n" : "");
    } else {
        fprintf(stderr, "mpillama: progress %d/%d prompts, %lld tokens in, %lld out, %.1f tok/s, elapsed %.0f s, ETA %.0f s\n",
                done, total, (long long)rs->tokens_in, (long long)rs->tokens_out, tps, el, eta);
    }
}

/* the driver loop (world rank 0). Returns 1 when interrupted by a signal before the end. */
static int drive(run_state *rs) {
    const int B = rs->o->batch;
    int stopping = 0;
    double deadline = 0;
    for (;;) {
        if (g_stop_signal && !stopping) {
            stopping = 1;
            deadline = util_now() + rs->o->grace;
            fprintf(stderr, "mpillama: signal %d: taking no new prompts; finishing in-flight ones for up to %g s\n",
                    (int)g_stop_signal, rs->o->grace);
        }
        int expired = stopping && util_now() >= deadline;
        if (!stopping)
            for (int slot = 0; slot < B; slot++)
                while (!rs->seqs[slot].active && rs->next_item < rs->n_items) admit(rs, slot);
        if (!expired)
            for (int g = 0; g < rs->M; g++)
                if (!rs->groups[g].in_flight && build_group(rs, g) > 0) launch_group(rs, g);
        if (rs->fifo_len == 0) break;
        int g = rs->fifo[rs->fifo_head];
        rs->fifo_head = (rs->fifo_head + 1) % DIST_RING;
        rs->fifo_len--;
        process_group(rs, g);
        progress(rs, 0);
    }
    int left = 0;
    for (int slot = 0; slot < B; slot++)
        if (rs->seqs[slot].active) {
            finish(rs, &rs->seqs[slot], "interrupted");
            left++;
        }
    return stopping && (left > 0 || rs->next_item < rs->n_items);
}

/* every rank but the driver: run micro-batches until the terminator (n = 0) */
static void follow(dist_ctx *d, model *m, int T, int M, int *in, int **out, float **lbuf) {
    const int dim = m->cfg.dim, last = d->stage == d->pp - 1;
    const int64_t ints = msg_ints(T);
    for (;;) {
        if (d->stage == 0) dist_tp_bcast(d, in, sizeof(int) * ints);
        else dist_pipe_recv(d, in, sizeof(int) * ints + sizeof(float) * (int64_t)T * dim);
        model_batch b = msg_batch(in, T);
        int g = in[1];
        if (b.n == 0) {
            if (!last) {
                dist_wait_sends(d);
                dist_pipe_send(d, in, sizeof(int) * ints, M);
            }
            break;
        }
        double t0 = trace_now();
        if (d->stage == 0) model_embed(m, d, &b);
        else memcpy(m->x, in + ints, sizeof(float) * (size_t)b.n * dim);
        model_layers(m, d, &b);
        if (!last) {
            dist_ring_wait(d, g);
            memcpy(out[g], in, sizeof(int) * ints);
            memcpy(out[g] + ints, m->x, sizeof(float) * (size_t)b.n * dim);
            dist_pipe_send(d, out[g], sizeof(int) * ints + sizeof(float) * (int64_t)b.n * dim, g);
        } else if (dist_is_collector(d)) {
            dist_ring_wait(d, g);
            int nw = model_logits(m, d, &b, lbuf[g]);
            if (nw > 0) dist_logits_send(d, lbuf[g], (int64_t)nw * m->cfg.vocab_size, g);
        } else {
            model_logits(m, d, &b, NULL);
        }
        trace_end(step_name(in), TRACE_STEP, t0, b.n);
    }
    dist_wait_sends(d);
}
/* ------------------------------------------------------------------ setup */

typedef struct {
    dist_ctx d;
    mfile *f;
    model_config cfg;
    plan_grid grid;
    model m;
    tokenizer *tok; /* world rank 0, when the file has one */
    int threads;    /* BLAS threads of this rank */
} run_setup;

/* opens the model, picks the grid, loads every rank's share; -1 when the grid is impossible */
static int setup(run_setup *su, run_opts *o) {
    dist_ctx_init(&su->d);
    affinity_info aff;
    affinity_bind(su->d.node_rank, su->d.node_size, &aff);
    su->threads = aff.threads;
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

/* gathers every rank's totals (and spans) to rank 0 and writes summary.json / trace.json */
static void write_reports(run_setup *su, const run_opts *o, const report_run *run, int threads) {
    report_rank me;
    memset(&me, 0, sizeof(me));
    me.rank = su->d.world_rank;
    me.stage = su->d.stage;
    me.tp_rank = su->d.tp_rank;
    me.threads = threads;
    me.bytes_allreduce = su->d.bytes_allreduce;
    me.bytes_p2p = su->d.bytes_p2p;
    me.bytes_gather = su->d.bytes_gather;
    me.weight_bytes = su->m.bytes_read;
    me.kv_bytes = su->m.kv_bytes;
    report_rank_fill(&me);
    int nsp, dropped;
    const trace_span *sp = trace_spans(&nsp, &dropped);
    me.n_spans = nsp;
    me.dropped = dropped;
    int W = su->d.world_size;
    char *all = NULL, *spans = NULL;
    int64_t *sizes = xmalloc(sizeof(int64_t) * W);
    dist_gather_bytes(&su->d, &me, sizeof(me), &all, sizes);
    dist_gather_bytes(&su->d, sp, (int64_t)sizeof(trace_span) * nsp, &spans, sizes);
    if (su->d.world_rank == 0) {
        char path[4096];
        snprintf(path, sizeof(path), "%s/summary.json", o->trace_dir);
        report_write_summary(path, run, (report_rank *)all, W);
        snprintf(path, sizeof(path), "%s/trace.json", o->trace_dir);
        report_write_trace(path, (report_rank *)all, W, (trace_span *)spans);
        fprintf(stderr, "mpillama: wrote %s/summary.json and trace.json\n", o->trace_dir);
    }
    free(all);
    free(spans);
    free(sizes);
}

static int run_main(const char *cmd, run_mode mode, int argc, char **argv) {
    run_opts o;
    int rc = parse_opts(cmd, argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    trace_start(o.trace_dir != NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_stop_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);

    /* rank 0 checks its inputs and outputs before any weight is read */
    run_state rs;
    memset(&rs, 0, sizeof(rs));
    if (util_rank() == 0) {
        double t0 = trace_now();
        if (access(o.prompts, R_OK) != 0) die_errno("cannot open prompts '%s'", o.prompts);
        rs.n_items = prompts_read(o.prompts, &rs.items);
        outfile_open(&rs.out, o.output, o.resume);
        if (o.trace_dir && mkdir(o.trace_dir, 0777) != 0 && errno != EEXIST)
            die_errno("cannot create trace directory '%s'", o.trace_dir);
        trace_end(TN_IO, TRACE_IO, t0, -1);
    }

    run_setup su;
    double t_load0 = util_now();
    if (setup(&su, &o) != 0) {
        if (util_rank() == 0) {
            outfile_close(&rs.out);
            prompts_free(rs.items, rs.n_items);
        }
        return 1;
    }
    const model_config *c = &su.cfg;
    int seq_len = o.max_seq_len ? o.max_seq_len : (c->max_seq_len < 4096 ? c->max_seq_len : 4096);
    if (seq_len > c->max_seq_len) {
        if (su.d.world_rank == 0) warning("--max-seq-len %d exceeds the model's context %d; using %d", seq_len, c->max_seq_len, c->max_seq_len);
        seq_len = c->max_seq_len;
    }
    const int T = o.prefill_chunk + o.batch; /* tokens per micro-batch */
    int M = o.micro_batches ? o.micro_batches : su.d.pp;
    if (M > o.batch) M = o.batch;
    if (M > DIST_RING - 1) M = DIST_RING - 1;
    model_alloc_state(&su.m, o.batch, seq_len, T);
    double load_s = util_now() - t_load0;
    int64_t kv = dist_sum_int64(&su.d, su.m.kv_bytes);
    if (su.d.world_rank == 0 && o.verbose)
        fprintf(stderr, "mpillama: KV cache %.2f MiB in all (%d slots x %d positions); %d micro-batch(es) of up to %d tokens\n",
                kv / 1048576.0, o.batch, seq_len, M, T);

    /* buffers: a message in, and per micro-batch a message out and logits */
    const int64_t msg_bytes = sizeof(int) * msg_ints(T) + sizeof(float) * (int64_t)T * c->dim;
    const int rows = mode == MODE_SCORE ? T : (o.batch + M - 1) / M;
    int *in = xmalloc((size_t)msg_bytes);
    int **out = xcalloc((size_t)M + 1, sizeof(int *));
    float **lbuf = xcalloc((size_t)M + 1, sizeof(float *));
    for (int g = 0; g <= M; g++) {
        out[g] = xmalloc((size_t)msg_bytes);
        if (dist_is_collector(&su.d) || su.d.world_rank == 0) lbuf[g] = xmalloc(sizeof(float) * (size_t)rows * c->vocab_size);
    }
    dist_barrier(&su.d);
    double t_start = util_now();
    int interrupted = 0;
    if (su.d.world_rank != 0) {
        follow(&su.d, &su.m, T, M, in, out, lbuf);
    } else {
        rs.o = &o;
        rs.mode = mode;
        rs.d = &su.d;
        rs.m = &su.m;
        rs.cfg = &su.cfg;
        rs.tok = su.tok;
        rs.M = M;
        rs.T = T;
        rs.groups = xcalloc((size_t)M, sizeof(group_state));
        for (int g = 0; g < M; g++) {
            rs.groups[g].msg = out[g];
            rs.groups[g].logits = lbuf[g];
        }
        rs.seqs = xcalloc((size_t)o.batch, sizeof(seq_state));
        rs.cand = xmalloc(sizeof(sampler_candidate) * c->vocab_size);
        rs.seen = xcalloc((size_t)c->vocab_size, sizeof(int));
        rs.tty = isatty(STDERR_FILENO);
        rs.t_start = rs.t_last_process = rs.t_last_progress = t_start;
        interrupted = drive(&rs);
        /* the terminator: stage 0's tp ranks, then down the pipeline */
        int *term = out[M];
        memset(term, 0, sizeof(int) * msg_ints(T));
        dist_tp_bcast(&su.d, term, sizeof(int) * msg_ints(T));
        if (su.d.pp > 1) {
            dist_wait_sends(&su.d);
            dist_pipe_send(&su.d, term, sizeof(int) * msg_ints(T), M);
        }
        dist_wait_sends(&su.d);
        progress(&rs, 1);
    }
    double wall = util_now() - t_start;
    if (su.d.world_rank == 0) {
        fprintf(stderr,
                "mpillama: %d prompts: %d done, %d errors, %d skipped (resume), %d interrupted; %lld tokens in, %lld out; "
                "%.2f s; prefill %.1f tok/s, decode %.1f tok/s\n",
                rs.n_items, rs.completed, rs.out.errors, rs.skipped, rs.out.interrupted, (long long)rs.tokens_in,
                (long long)rs.tokens_out, wall, rs.t_prefill > 0 ? rs.tokens_in / rs.t_prefill : 0.0,
                rs.t_decode > 0 ? rs.tokens_out / rs.t_decode : 0.0);
        if (interrupted) fprintf(stderr, "mpillama: interrupted: rerun with --resume to finish the rest (exit 75)\n");
    }
    dist_bcast(&su.d, &interrupted, sizeof(int), 0);
    if (o.trace_dir) {
        report_run run = {0};
        run.command = cmd;
        run.model_path = o.model;
        run.cfg = su.cfg;
        run.pp = su.d.pp;
        run.tp = su.d.tp;
        run.ranks = su.d.world_size;
        run.nodes = su.d.n_nodes;
        run.batch = o.batch;
        run.max_seq_len = seq_len;
        run.prefill_chunk = o.prefill_chunk;
        run.micro_batches = M;
        run.prompts_total = rs.n_items;
        run.completed = rs.completed;
        run.errors = rs.out.errors;
        run.skipped = rs.skipped;
        run.interrupted = rs.out.interrupted;
        run.tokens_prompt = rs.tokens_in;
        run.tokens_completion = rs.tokens_out;
        run.wall_s = wall;
        run.load_s = load_s;
        run.prefill_s = rs.t_prefill;
        run.decode_s = rs.t_decode;
        write_reports(&su, &o, &run, su.threads);
    }
    if (su.d.world_rank == 0) {
        outfile_close(&rs.out);
        for (int i = 0; i < o.batch; i++) {
            free(rs.seqs[i].ids);
            free(rs.seqs[i].logprobs);
            free(rs.seqs[i].text);
            if (rs.seqs[i].has_dec) tok_decoder_free(&rs.seqs[i].dec);
        }
        free(rs.seqs);
        free(rs.groups);
        free(rs.cand);
        free(rs.seen);
        prompts_free(rs.items, rs.n_items);
    }
    for (int g = 0; g <= M; g++) {
        free(out[g]);
        free(lbuf[g]);
    }
    free(out);
    free(lbuf);
    free(in);
    teardown(&su);
    return interrupted ? 75 : 0;
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
