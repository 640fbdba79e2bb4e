#include "run_opts.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "dtype.h"
#include "trace.h"
#include "util.h"

enum { OPT_PP = 1000, OPT_TP, OPT_BATCH, OPT_MAXSEQ, OPT_CHUNK, OPT_MAXTOK, OPT_TEMP, OPT_TOPK,
       OPT_TOPP, OPT_SEED, OPT_IGNORE_EOS, OPT_RESUME, OPT_PLAN, OPT_TRACE, OPT_GRACE, OPT_MINP, OPT_REP,
       OPT_FREQ, OPT_PRES, OPT_STOP, OPT_MICRO, OPT_PROGRESS, OPT_CHAT, OPT_SPECIAL_TEXT, OPT_DP, OPT_KV_DTYPE,
       OPT_OVERWRITE, OPT_OUTPUT_FORMAT,
       OPT_TRACE_LEVEL, OPT_TENSORS, OPT_CONFIG };

static const struct option long_opts[] = {
    {"model", required_argument, 0, 'm'},       {"prompts", required_argument, 0, 'p'},
    {"output", required_argument, 0, 'o'},      {"pp", required_argument, 0, OPT_PP},
    {"tp", required_argument, 0, OPT_TP},       {"batch", required_argument, 0, OPT_BATCH},
    {"max-seq-len", required_argument, 0, OPT_MAXSEQ}, {"prefill-chunk", required_argument, 0, OPT_CHUNK},
    {"max-tokens", required_argument, 0, OPT_MAXTOK},  {"temperature", required_argument, 0, OPT_TEMP},
    {"top-k", required_argument, 0, OPT_TOPK},  {"top-p", required_argument, 0, OPT_TOPP},
    {"seed", required_argument, 0, OPT_SEED},   {"ignore-eos", no_argument, 0, OPT_IGNORE_EOS},
    {"resume", no_argument, 0, OPT_RESUME},     {"verbose", no_argument, 0, 'v'},
    {"overwrite", no_argument, 0, OPT_OVERWRITE},
    {"plan", no_argument, 0, OPT_PLAN},         {"help", no_argument, 0, 'h'},
    {"trace", required_argument, 0, OPT_TRACE}, {"grace", required_argument, 0, OPT_GRACE},
    {"min-p", required_argument, 0, OPT_MINP},  {"repetition-penalty", required_argument, 0, OPT_REP},
    {"frequency-penalty", required_argument, 0, OPT_FREQ}, {"presence-penalty", required_argument, 0, OPT_PRES},
    {"stop", required_argument, 0, OPT_STOP},   {"micro-batches", required_argument, 0, OPT_MICRO},
    {"progress-interval", required_argument, 0, OPT_PROGRESS}, {"chat-template", required_argument, 0, OPT_CHAT},
    {"special-as-text", no_argument, 0, OPT_SPECIAL_TEXT}, {"dp", required_argument, 0, OPT_DP},
    {"kv-dtype", required_argument, 0, OPT_KV_DTYPE},
    {"output-format", required_argument, 0, OPT_OUTPUT_FORMAT},
    {"trace-level", required_argument, 0, OPT_TRACE_LEVEL},
    {"tensors", no_argument, 0, OPT_TENSORS}, {"config", no_argument, 0, OPT_CONFIG},
    {0, 0, 0, 0}};

void run_opts_usage(const char *cmd, FILE *out) {
    if (!strcmp(cmd, "info")) {
        fprintf(out,
                "usage: mpillama info M.h5 [--config] [--tensors]\n"
                "       mpillama info M.h5 --plan [--dp D] --pp P --tp T [--max-seq-len S] [--batch B] [--kv-dtype T]\n"
                "  without options: architecture, parameters, weight type and size, tokenizer, chat template\n"
                "  --config    every config field          --tensors  every tensor (shape, type, bytes), layer by layer\n"
                "  --plan      each rank's layers, heads, FFN columns, weight and KV cache bytes on a grid\n");
        return;
    }
    fprintf(out,
            "usage: mpirun -n N mpillama %s --model M.h5 --prompts IN --output OUT.jsonl [options]\n"
            "  IN: JSONL ({\"custom_id\", \"prompt\" | \"prompt_ids\" | \"messages\"}, or OpenAI batch lines) or plain\n"
            "      text, one prompt a line\n"
            "  --dp D --pp P --tp T replicas x pipeline stages x tensor-parallel ranks (D*P*T = N; default:\n"
            "                       the smallest replica whose weights and KV cache fit a node, as many\n"
            "                       replicas as the ranks allow)\n"
            "  --batch B            sequences per micro-batch (default 16); B x M are in flight\n"
            "  --max-seq-len S      KV cache positions per sequence (default: model's, at most 4096)\n"
            "  --prefill-chunk C    prompt tokens per sequence per step (default 128)\n"
            "  --micro-batches M    micro-batches in flight (default pp, so every stage is busy; pp + 1\n"
            "                       when the prompts fill them, to absorb uneven micro-batches)\n"
            "  --resume             keep OUT's finished records and run the rest (error and interrupted\n"
            "                       records run again)\n"
            "  --overwrite          replace OUT's records (without it or --resume, a non-empty OUT is refused)\n"
            "  --trace DIR          write DIR/summary.json and DIR/trace.json (Perfetto)\n"
            "  --trace-level L      what trace.json holds: summary (no trace.json), steps (default: each rank's\n"
            "                       steps and waits) or kernels (also kernels, all-reduces, sends, sampling, I/O)\n"
            "  --grace S            after SIGTERM/SIGUSR1, finish in-flight requests for S seconds (default 30),\n"
            "                       then record them as interrupted and exit 75 (rerun with --resume)\n"
            "  --progress-interval S  seconds between progress lines in logs (default 10; the first\n"
            "                       comes with the first micro-batch)\n"
            "  --kv-dtype T         KV cache elements: f32 or bf16 (default: bf16 for bf16 and q8 weights,\n"
            "                       f32 for f32 weights)\n"
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
                "  --special-as-text    special tokens written in prompt text (\"<|eot_id|>\") stay text (default: their ids)\n"
                "  --output-format F    native (default) or openai: OpenAI batch output lines in OUT, failed\n"
                "                       requests in OUT's name with .errors.jsonl\n"
                "  Each JSONL request may override: max_tokens, temperature, top_k, top_p, min_p,\n"
                "  repetition_penalty, frequency_penalty, presence_penalty, seed, stop, stop_token_ids, ignore_eos;\n"
                "  and ask for n completions and logprobs (k top alternatives).\n");
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

int run_opts_parse(const char *cmd, int argc, char **argv, run_opts *o) {
    memset(o, 0, sizeof(*o));
    o->cmd = cmd;
    o->mode = !strcmp(cmd, "score") ? RUN_SCORE : !strcmp(cmd, "info") ? RUN_INFO : RUN_GENERATE;
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
    o->progress_interval = 10.0f;
    o->kv_dtype = -1;
    o->trace_level = TRACE_LEVEL_STEPS;
    int quiet = util_rank() != 0, c, bad = 0, level_given = 0;
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
            if (!quiet) run_opts_usage(cmd, stdout);
            if (quiet) fclose(stderr), stderr = saved;
            return 1;
        case OPT_PP: bad = parse_int("--pp", optarg, 1, &o->pp); break;
        case OPT_DP: bad = parse_int("--dp", optarg, 1, &o->dp); break;
        case OPT_TP: bad = parse_int("--tp", optarg, 1, &o->tp); break;
        case OPT_BATCH: bad = parse_int("--batch", optarg, 1, &o->batch); break;
        case OPT_MAXSEQ: bad = parse_int("--max-seq-len", optarg, 2, &o->max_seq_len); break;
        case OPT_CHUNK: bad = parse_int("--prefill-chunk", optarg, 1, &o->prefill_chunk); break;
        case OPT_MAXTOK: bad = parse_int("--max-tokens", optarg, 0, &o->max_tokens); break;
        case OPT_TEMP: bad = parse_float("--temperature", optarg, 0, 100, &o->sp.temperature); break;
        case OPT_TOPK: bad = parse_int("--top-k", optarg, 0, &o->sp.top_k); break;
        case OPT_TOPP: bad = parse_float("--top-p", optarg, 1e-6f, 1, &o->sp.top_p); break;
        case OPT_SEED: {
            int s = 0;
            bad = parse_int("--seed", optarg, 0, &s);
            o->seed = s;
            break;
        }
        case OPT_IGNORE_EOS: o->ignore_eos = 1; break;
        case OPT_SPECIAL_TEXT: o->special_as_text = 1; break;
        case OPT_RESUME: o->resume = 1; break;
        case OPT_OVERWRITE: o->overwrite = 1; break;
        case OPT_PLAN: o->plan = 1; break;
        case OPT_TRACE: o->trace_dir = optarg; break;
        case OPT_TRACE_LEVEL: {
            trace_level l;
            if (trace_level_parse(optarg, &l) != 0) bad = error("--trace-level: '%s' is not summary, steps or kernels", optarg);
            else o->trace_level = (int)l, level_given = 1;
            break;
        }
        case OPT_TENSORS:
        case OPT_CONFIG:
            if (o->mode != RUN_INFO) bad = error("%s: '%s' is an option of 'mpillama info'", cmd, argv[optind - 1]);
            else *(c == OPT_TENSORS ? &o->tensors : &o->config) = 1;
            break;
        case OPT_GRACE: bad = parse_float("--grace", optarg, 0, 1e6, &o->grace); break;
        case OPT_MINP: bad = parse_float("--min-p", optarg, 0, 1, &o->sp.min_p); break;
        case OPT_REP: bad = parse_float("--repetition-penalty", optarg, 1e-3f, 100, &o->sp.repetition_penalty); break;
        case OPT_FREQ: bad = parse_float("--frequency-penalty", optarg, -2, 2, &o->sp.frequency_penalty); break;
        case OPT_PRES: bad = parse_float("--presence-penalty", optarg, -2, 2, &o->sp.presence_penalty); break;
        case OPT_MICRO: bad = parse_int("--micro-batches", optarg, 1, &o->micro_batches); break;
        case OPT_PROGRESS: bad = parse_float("--progress-interval", optarg, 0.1f, 1e6, &o->progress_interval); break;
        case OPT_KV_DTYPE: {
            kern_dtype t;
            if (dtype_parse(optarg, &t) != 0 || t == KERN_Q8) bad = error("--kv-dtype: '%s' is not f32 or bf16", optarg);
            else o->kv_dtype = (int)t;
            break;
        }
        case OPT_OUTPUT_FORMAT:
            if (!strcmp(optarg, "openai")) o->openai_output = 1;
            else if (strcmp(optarg, "native") != 0) bad = error("--output-format: '%s' is not native or openai", optarg);
            break;
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
            run_opts_usage(cmd, stderr);
            bad = 1;
        }
    } else if (!bad) {
        if (optind < argc) {
            error("%s: unexpected argument '%s'", cmd, argv[optind]);
            bad = 1;
        } else if (o->resume && o->overwrite) {
            error("%s: --resume keeps OUT's records and --overwrite replaces them: give one", cmd);
            bad = 1;
        } else if (level_given && !o->trace_dir) {
            error("%s: --trace-level says what --trace DIR writes: give --trace DIR too", cmd);
            bad = 1;
        } else if (o->openai_output && o->mode == RUN_SCORE) {
            error("%s: --output-format openai is for generate (OpenAI's batch output has no score records)", cmd);
            bad = 1;
        } else if (!o->model || !o->prompts || !o->output) {
            error("%s: --model, --prompts and --output are required (see 'mpillama %s --help')", cmd, cmd);
            bad = 1;
        }
    }
    if (quiet) fclose(stderr), stderr = saved;
    util_set_verbose(o->verbose);
    return bad ? 2 : 0;
}

int run_opts_seq_len(const run_opts *o, int model_max) {
    return o->max_seq_len ? o->max_seq_len : (model_max < 4096 ? model_max : 4096);
}
