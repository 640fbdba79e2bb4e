/* intake: from the prompt file to requests a scheduler can run (world rank 0). Reads the prompt
 * file, skips requests already finished in the output (--resume), tokenizes text or renders chat
 * messages, resolves the per-request sampling parameters against the command line and checks
 * the request against the model (too long, ids outside the vocabulary). A request is flat
 * (arrays and numbers, no pointers into the prompt list), so it can be sent to another rank. */
#ifndef MPILLAMA_INTAKE_H
#define MPILLAMA_INTAKE_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "outfile.h"
#include "prompts.h"
#include "run_opts.h"
#include "sampler.h"
#include "tokenizer.h"

typedef struct {
    int item;           /* index into the prompt list (custom_id, line): the writer's key */
    int *ids;           /* (cap) the prompt's tokens (n_ids); the scheduler appends the completion */
    int n_ids, cap;
    int max_new;        /* tokens to generate at most */
    int ignore_eos;
    sampler_params sp;
    uint64_t seed;      /* this choice's sampling stream (also written in its record) */
    int choice, n_choices; /* which of the request's n completions this is (n > 1: one request each) */
    int logprobs;       /* log-probs of the completion with this many top alternatives; -1: none */
    int *stop_ids;      /* (n_stop_ids) tokens that end the completion besides EOS: the request's
                         * stop_token_ids, then the chat template's end-of-turn tokens */
    int n_stop_ids;
    char *stop_text;    /* (stop_bytes) n_stop stop strings, each NUL-terminated, back to back */
    int n_stop;
    size_t stop_bytes;
} intake_request;

typedef enum { INTAKE_END, INTAKE_READY, INTAKE_ERROR } intake_status;

typedef struct {
    const run_opts *o;
    const model_config *cfg;
    const tokenizer *tok;   /* NULL when the model file has none */
    int ctx;                /* KV cache positions per sequence */
    const outfile *done;    /* finished records (--resume), or NULL */
    prompt_item *items;     /* (n_items) the prompt file */
    int n_items;
    int next_item;          /* the next line to hand out */
    int skipped;            /* lines skipped because their record is finished */
    int *by_id;             /* (n_items) item indices sorted by custom_id */
    intake_request rep;     /* a request of n > 1 completions, while its choices are handed out */
    int rep_next;           /* its next choice */
} intake;

/* reads the prompt file; refuses (-1, after printing why) a file that cannot be read and
 * custom_ids given twice (with their line numbers) */
int intake_init(intake *in, const run_opts *o);
/* the item whose custom_id is id, or -1 */
int intake_find(const intake *in, const char *id);
/* what requests are checked against, once the model is open */
void intake_set_model(intake *in, const model_config *cfg, const tokenizer *tok, int ctx, const outfile *done);
/* the seed of choice k of a request whose seed is seed: seed itself for choice 0, so that n = 1
 * and the first of n completions agree; an independent stream for each other choice */
uint64_t intake_choice_seed(uint64_t seed, int k);
/* the next request (a request of n completions comes n times, choice 0 .. n-1, each with its
 * own seed stream): INTAKE_READY with rq filled, INTAKE_ERROR with *item and why set (the line
 * cannot run; the caller records the error), or INTAKE_END when the file is exhausted */
intake_status intake_next(intake *in, intake_request *rq, int *item, char *why, size_t why_size);
/* 1 while the choices of a request of n are being handed out (the next one is its sibling) */
int intake_in_choices(const intake *in);
/* 1 while lines are left to hand out */
int intake_more(const intake *in);
/* lines still to run: the file's less the skipped ones */
int intake_total(const intake *in);
void intake_request_free(intake_request *rq);
void intake_free(intake *in);

#endif
