#include "intake.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "chat.h"
#include "vsample.h"

_Static_assert(PROMPTS_TOP_MAX == VSAMPLE_TOP_MAX, "requests ask for at most the alternatives the sampler keeps");
#include "trace.h"
#include "util.h"

static const prompt_item *g_sort_items; /* qsort's context */
static int cmp_by_id(const void *a, const void *b) {
    return strcmp(g_sort_items[*(const int *)a].custom_id, g_sort_items[*(const int *)b].custom_id);
}

int intake_init(intake *in, const run_opts *o) {
    memset(in, 0, sizeof(*in));
    in->o = o;
    struct stat st;
    if (access(o->prompts, R_OK) != 0) return error("cannot open prompts '%s': %s", o->prompts, strerror(errno));
    if (stat(o->prompts, &st) == 0 && S_ISDIR(st.st_mode)) return error("prompts '%s' is a folder", o->prompts);
    in->n_items = prompts_read(o->prompts, &in->items);
    in->by_id = xmalloc(sizeof(int) * (size_t)(in->n_items + 1));
    for (int i = 0; i < in->n_items; i++) in->by_id[i] = i;
    g_sort_items = in->items;
    qsort(in->by_id, (size_t)in->n_items, sizeof(int), cmp_by_id);
    /* a custom_id given twice makes resume and any join on the ids ambiguous */
    int dups = 0;
    char list[1024] = "";
    size_t at = 0;
    for (int k = 1; k < in->n_items; k++) {
        const prompt_item *a = &in->items[in->by_id[k - 1]], *b = &in->items[in->by_id[k]];
        if (strcmp(a->custom_id, b->custom_id) != 0) continue;
        if (dups++ < 5 && at < sizeof(list))
            at += (size_t)snprintf(list + at, sizeof(list) - at, "%s'%.100s' on lines %d and %d", dups > 1 ? "; " : "",
                                   a->custom_id, a->line < b->line ? a->line : b->line, a->line < b->line ? b->line : a->line);
    }
    if (dups) return error("'%s': %d custom_id(s) given twice: %s%s; each request needs its own", o->prompts, dups, list,
                           dups > 5 ? "; ..." : "");
    return 0;
}

int intake_find(const intake *in, const char *id) {
    int lo = 0, hi = in->n_items - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2, c = strcmp(in->items[in->by_id[mid]].custom_id, id);
        if (c == 0) return in->by_id[mid];
        if (c < 0) lo = mid + 1;
        else hi = mid - 1;
    }
    return -1;
}

void intake_set_model(intake *in, const model_config *cfg, const tokenizer *tok, int ctx, const outfile *done) {
    in->cfg = cfg;
    in->tok = tok;
    in->ctx = ctx;
    in->done = done;
}

void intake_request_free(intake_request *rq) {
    free(rq->ids);
    free(rq->stop_ids);
    free(rq->stop_text);
    memset(rq, 0, sizeof(*rq));
}

/* the prompt's tokens into rq->ids; 0, or -1 with why */
static int prompt_tokens(const intake *in, const prompt_item *it, intake_request *rq, int chat_stop[8], int *n_chat_stop,
                         char *why, size_t why_size) {
    const model_config *c = in->cfg;
    const int ctx = in->ctx;
    if (it->ids) {
        rq->cap = it->n_ids + 16;
        rq->ids = xmalloc(sizeof(int) * rq->cap);
        for (int i = 0; i < it->n_ids; i++) {
            if (it->ids[i] >= c->vocab_size) {
                snprintf(why, why_size, "prompt_ids[%d] = %d is outside the vocabulary (%d)", i, it->ids[i], c->vocab_size);
                return -1;
            }
            rq->ids[rq->n_ids++] = it->ids[i];
        }
        return 0;
    }
    if (!in->tok) {
        snprintf(why, why_size, "the model file has no tokenizer: give 'prompt_ids'");
        return -1;
    }
    rq->cap = ctx + 16;
    rq->ids = xmalloc(sizeof(int) * rq->cap);
    int bos = tok_bos_id(in->tok) >= 0 ? tok_bos_id(in->tok) : c->bos_id;
    if (!it->roles) {
        /* special tokens written in the text (a prompt rendered with a chat template by hand) are
         * their ids, as Hugging Face tokenizers and vLLM parse prompts, unless --special-as-text */
        unsigned flags = in->o->special_as_text ? 0 : TOK_ALLOW_SPECIAL;
        rq->n_ids = tok_encode_ex(in->tok, it->text, bos, flags, rq->ids, ctx + 1); /* may report more than it wrote */
        if (rq->n_ids < 0) {
            snprintf(why, why_size, "the tokenizer's split pattern gave up on this prompt (a PCRE2 limit): no tokens");
            return -1;
        }
        if (bos >= 0 && rq->n_ids >= 2 && rq->ids[0] == bos && rq->ids[1] == bos) { /* the text began with BOS */
            memmove(rq->ids, rq->ids + 1, sizeof(int) * (size_t)(rq->n_ids < ctx + 1 ? rq->n_ids - 1 : ctx));
            rq->n_ids--;
        }
        return 0;
    }
    const char *tmpl = in->o->chat_template ? in->o->chat_template : tok_chat_template(in->tok);
    if (!tmpl || !tmpl[0]) {
        snprintf(why, why_size, "the model has no chat template: give --chat-template llama2|llama3|chatml");
        return -1;
    }
    chat_message *msgs = xmalloc(sizeof(chat_message) * (size_t)it->n_messages);
    for (int k = 0; k < it->n_messages; k++) msgs[k] = (chat_message){it->roles[k], it->contents[k]};
    rq->n_ids = chat_encode(in->tok, tmpl, msgs, it->n_messages, 1, bos, rq->ids, ctx + 1, why, why_size);
    free(msgs);
    if (rq->n_ids < 0) return -1;
    *n_chat_stop = chat_stop_ids(in->tok, tmpl, chat_stop, 8);
    return 0;
}

/* one line into rq; 0, or -1 with why */
static int make_request(const intake *in, int item, intake_request *rq, char *why, size_t why_size) {
    const prompt_item *it = &in->items[item];
    const run_opts *o = in->o;
    memset(rq, 0, sizeof(*rq));
    rq->item = item;
    if (it->error) {
        snprintf(why, why_size, "%s", it->error);
        return -1;
    }
    int chat_stop[8], n_chat_stop = 0;
    if (prompt_tokens(in, it, rq, chat_stop, &n_chat_stop, why, why_size) != 0) return -1;
    const int ctx = in->ctx, limit = o->mode == RUN_GENERATE ? ctx - 1 : ctx;
    if (rq->n_ids > limit) {
        snprintf(why, why_size, "prompt has %d tokens, more than the %d that the context (--max-seq-len %d) allows%s",
                 rq->n_ids, limit, ctx, o->mode == RUN_GENERATE ? " with one generated token" : "");
        return -1;
    }
    if (rq->n_ids == 0) {
        snprintf(why, why_size, "empty prompt (and the model has no BOS token)");
        return -1;
    }
    rq->sp = o->sp;
    if (!isnan(it->temperature)) rq->sp.temperature = it->temperature;
    if (it->top_k >= 0) rq->sp.top_k = it->top_k;
    if (!isnan(it->top_p)) rq->sp.top_p = it->top_p;
    if (!isnan(it->min_p)) rq->sp.min_p = it->min_p;
    if (!isnan(it->repetition_penalty)) rq->sp.repetition_penalty = it->repetition_penalty;
    if (!isnan(it->frequency_penalty)) rq->sp.frequency_penalty = it->frequency_penalty;
    if (!isnan(it->presence_penalty)) rq->sp.presence_penalty = it->presence_penalty;
    rq->ignore_eos = it->ignore_eos >= 0 ? it->ignore_eos : o->ignore_eos;
    rq->max_new = it->max_tokens >= 0 ? it->max_tokens : o->max_tokens;
    rq->seed = it->has_seed ? (uint64_t)it->seed : sampler_seed_for((uint64_t)o->seed, it->custom_id);
    rq->n_choices = it->n > 1 ? it->n : 1;
    rq->logprobs = it->logprobs;
    if (o->mode == RUN_SCORE && (rq->n_choices > 1 || rq->logprobs >= 0)) {
        snprintf(why, why_size, "'n' and 'logprobs' are for generate (score writes every token's log-prob)");
        return -1;
    }
    rq->stop_ids = xmalloc(sizeof(int) * (size_t)(it->n_stop_ids + n_chat_stop + 1));
    for (int j = 0; j < it->n_stop_ids; j++) rq->stop_ids[rq->n_stop_ids++] = it->stop_token_ids[j];
    for (int j = 0; j < n_chat_stop; j++) rq->stop_ids[rq->n_stop_ids++] = chat_stop[j];
    /* the request's stop strings replace the command line's */
    int n_stop = it->n_stop ? it->n_stop : o->n_stop;
    const char *const *stop = it->n_stop ? (const char *const *)it->stop : o->stop;
    for (int k = 0; k < n_stop; k++) rq->stop_bytes += strlen(stop[k]) + 1;
    rq->stop_text = xmalloc(rq->stop_bytes + 1);
    for (size_t at = 0; rq->n_stop < n_stop; rq->n_stop++) {
        size_t l = strlen(stop[rq->n_stop]) + 1;
        memcpy(rq->stop_text + at, stop[rq->n_stop], l);
        at += l;
    }
    return 0;
}

uint64_t intake_choice_seed(uint64_t seed, int k) {
    if (k == 0) return seed;
    char name[32];
    snprintf(name, sizeof(name), "choice %d", k);
    return sampler_seed_for(seed, name);
}

/* a deep copy of rq as choice k */
static void copy_choice(const intake_request *rq, int k, intake_request *out) {
    *out = *rq;
    out->ids = xmalloc(sizeof(int) * (size_t)rq->cap);
    memcpy(out->ids, rq->ids, sizeof(int) * (size_t)rq->n_ids);
    out->stop_ids = xmalloc(sizeof(int) * (size_t)(rq->n_stop_ids + 1));
    memcpy(out->stop_ids, rq->stop_ids, sizeof(int) * (size_t)rq->n_stop_ids);
    out->stop_text = xmalloc(rq->stop_bytes + 1);
    memcpy(out->stop_text, rq->stop_text, rq->stop_bytes);
    out->stop_text[rq->stop_bytes] = 0;
    out->choice = k;
    out->seed = intake_choice_seed(rq->seed, k);
}

intake_status intake_next(intake *in, intake_request *rq, int *item, char *why, size_t why_size) {
    if (in->rep.ids) { /* the other choices of a request of n completions */
        *item = in->rep.item;
        copy_choice(&in->rep, in->rep_next++, rq);
        if (in->rep_next == in->rep.n_choices) intake_request_free(&in->rep);
        return INTAKE_READY;
    }
    while (in->next_item < in->n_items) {
        int i = in->next_item++;
        if (in->done && outfile_has(in->done, in->items[i].custom_id)) {
            in->skipped++;
            continue;
        }
        double t0 = trace_now();
        *item = i;
        if (make_request(in, i, rq, why, why_size) != 0) {
            intake_request_free(rq);
            return INTAKE_ERROR;
        }
        trace_end(TN_IO, TRACE_IO, t0, -1);
        if (rq->n_choices > 1) { /* choice 0 goes now, the others from a copy */
            copy_choice(rq, 0, &in->rep);
            in->rep_next = 1;
        }
        return INTAKE_READY;
    }
    return INTAKE_END;
}

int intake_in_choices(const intake *in) { return in->rep.ids != NULL; }

int intake_more(const intake *in) { return in->next_item < in->n_items || in->rep.ids; }

int intake_total(const intake *in) { return in->n_items - in->skipped; }

void intake_free(intake *in) {
    intake_request_free(&in->rep);
    prompts_free(in->items, in->n_items);
    free(in->by_id);
    memset(in, 0, sizeof(*in));
}
