/* writer: the records of a job (world rank 0): a completion or score record from each finished
 * request, an error record for each request that cannot run, and the progress lines. The bytes
 * go through outfile (one whole line at a time, synced). */
#ifndef MPILLAMA_WRITER_H
#define MPILLAMA_WRITER_H

#include <stdint.h>

#include "outfile.h"
#include "prompts.h"
#include "run_opts.h"
#include "scheduler.h"
#include "tokenizer.h"

typedef struct writer_pending writer_pending;

typedef struct {
    const run_opts *o;
    outfile out;
    outfile err;               /* --output-format openai: the error file (OUT.errors.jsonl), when OUT is a file */
    int has_err;
    char fingerprint[17];      /* the model file's (OUT.meta.json; OpenAI's system_fingerprint) */
    const char *model_label;   /* the model file's name without its folder: OpenAI's "model" */
    const tokenizer *tok;      /* spells the log-probs' tokens and score records' tokens (may be NULL) */
    writer_pending **pending;  /* (n_pending) by item: the choices so far of a request of n > 1 */
    int n_pending;
    const prompt_item *items;  /* the prompt list: custom_id and line of each request */
    int completed;             /* records of finished requests (not interrupted) */
    int tty;                   /* stderr is a terminal: a live progress bar */
    double t_start, t_last_progress;
    int n_progress;            /* progress lines so far */
} writer;

/* opens the output under its lock once everything else was checked: with --resume keeps its
 * finished records, after checking (OUT.meta.json) that they come from this command, this model
 * and the same request lines; records what this job's records come from. 0, or -1 after printing
 * why. */
int writer_open(writer *w, const run_opts *o, const intake *in);
/* the prompt list records refer to, and the start of the clock for progress */
void writer_start(writer *w, const prompt_item *items, double t_start);
/* the record of a finished (or interrupted) request */
void writer_result(writer *w, const sched_result *r);
/* the error record of a request that cannot run */
void writer_error(writer *w, int item, const char *why);
/* a progress line at the first call, then every --progress-interval (a live bar when stderr is
 * a terminal), or now with force. ETA "unknown" until a request has finished. */
void writer_progress(writer *w, int total, const sched_stats *st, int force);
void writer_close(writer *w);

#endif
