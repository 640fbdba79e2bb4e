/* run_opts: the options of generate, score and info: defaults, usage text, parsing. Every rank
 * parses the same command line; only rank 0 prints. */
#ifndef MPILLAMA_RUN_OPTS_H
#define MPILLAMA_RUN_OPTS_H

#include <stdio.h>

#include "sampler.h"

typedef enum { RUN_GENERATE, RUN_SCORE, RUN_INFO } run_mode;

typedef struct {
    const char *cmd;            /* "generate", "score" or "info" */
    run_mode mode;
    const char *model, *prompts, *output;
    int dp, pp, tp;             /* replicas x stages x tp ranks; 0 = default (plan_default) */
    int batch;                  /* sequences in flight */
    int max_seq_len;            /* KV cache length per sequence; 0 = min(model, 4096) */
    int prefill_chunk;          /* prompt tokens per sequence per step */
    int max_tokens;             /* generated tokens per request (capped by the context) */
    sampler_params sp;
    long long seed;
    int ignore_eos, resume, overwrite, verbose;
    int special_as_text;        /* --special-as-text: "<|eot_id|>" in prompt text stays text */
    const char *trace_dir;      /* --trace DIR: summary.json + trace.json */
    int trace_level;            /* --trace-level: a trace_level (default TRACE_LEVEL_STEPS) */
    float grace;                /* seconds to finish in-flight requests after SIGTERM */
    int micro_batches;          /* 0 = pp */
    float progress_interval;    /* seconds between progress lines when stderr is not a terminal */
    const char *chat_template;  /* --chat-template NAME: overrides the model's */
    const char *stop[16];       /* --stop STRING (repeatable) */
    int n_stop;
    int openai_output;          /* --output-format openai: OpenAI batch output lines and an error file */
    int kv_dtype;               /* --kv-dtype: KERN_F32, KERN_BF16, or -1: by the weights (dtype_default_kv) */
    /* info */
    int plan;
    int tensors, config;        /* --tensors: every tensor; --config: every config field */
} run_opts;

/* fills o from the command line of cmd (argv[0] is the command name). Returns 0, 1 for --help
 * (printed on stdout), or 2 on a usage error (printed by rank 0 only). */
int run_opts_parse(const char *cmd, int argc, char **argv, run_opts *o);
/* the usage text of cmd */
void run_opts_usage(const char *cmd, FILE *out);
/* KV cache positions per sequence before the model's limit applies: --max-seq-len, else
 * min(model_max, 4096) */
int run_opts_seq_len(const run_opts *o, int model_max);

#endif
