#include "openai.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

cJSON *openai_logprob_number(float lp) {
    char buf[32];
    if (isfinite(lp)) snprintf(buf, sizeof buf, "%.6f", lp);
    else snprintf(buf, sizeof buf, "null");
    return cJSON_CreateRaw(buf);
}

char *openai_errors_path(const char *output) {
    size_t n = strlen(output);
    if (n > 6 && !strcmp(output + n - 6, ".jsonl")) n -= 6;
    char *p = xmalloc(n + 16);
    memcpy(p, output, n);
    strcpy(p + n, ".errors.jsonl");
    return p;
}

static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

/* prefix + 24 hex digits from the custom_id: the same request gets the same ids in every run */
static void make_id(char *buf, size_t cap, const char *prefix, const prompt_item *it, uint64_t salt) {
    uint64_t h = mix64(util_fnv1a64(it->custom_id, strlen(it->custom_id), UTIL_FNV1A64_INIT) + salt);
    snprintf(buf, cap, "%s%016llx%08llx", prefix, (unsigned long long)h, (unsigned long long)(mix64(h) >> 32));
}

static int is_chat(const prompt_item *it) { return it->api == PROMPTS_CHAT || (it->api == PROMPTS_NATIVE && it->roles); }

/* the envelope shared by every line: id, custom_id */
static cJSON *line_head(const prompt_item *it) {
    char id[64];
    make_id(id, sizeof id, "batch_req_", it, 1);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "id", id);
    cJSON_AddStringToObject(r, "custom_id", it->custom_id);
    return r;
}

/* s with each byte that does not start or continue a valid UTF-8 sequence as U+FFFD (malloc'd) */
static char *utf8_clean(const char *s) {
    size_t n = strlen(s), o = 0;
    char *out = xmalloc(3 * n + 1);
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        int len = u[i] < 0x80 ? 1 : (u[i] >> 5) == 6 ? 2 : (u[i] >> 4) == 14 ? 3 : (u[i] >> 3) == 30 ? 4 : 0;
        int ok = len > 0 && i + (size_t)len <= n && !(len == 2 && u[i] < 0xc2) && !(len == 4 && u[i] > 0xf4);
        for (int k = 1; ok && k < len; k++) ok = (u[i + k] & 0xc0) == 0x80;
        if (ok && len == 3) ok = !(u[i] == 0xe0 && u[i + 1] < 0xa0) && !(u[i] == 0xed && u[i + 1] >= 0xa0);
        if (ok && len == 4) ok = !(u[i] == 0xf0 && u[i + 1] < 0x90) && !(u[i] == 0xf4 && u[i + 1] >= 0x90);
        if (ok) {
            memcpy(out + o, s + i, (size_t)len);
            o += (size_t)len;
            i += (size_t)len;
        } else {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        }
    }
    out[o] = 0;
    return out;
}

/* token id's text after token prev (raw bytes, malloc'd): "token_id:N" without a tokenizer */
static char *token_bytes(const tokenizer *tok, int prev, int id) {
    char *t = tok ? tok_decode(tok, prev, &id, 1, tok_bos_id(tok)) : NULL;
    if (!t) {
        t = xmalloc(32);
        snprintf(t, 32, "token_id:%d", id);
    }
    return t;
}

/* {"token", "logprob", "bytes"} of OpenAI's chat log-probs; the token's length in *len */
static cJSON *chat_token(const tokenizer *tok, int prev, int id, float lp, size_t *len) {
    char *raw = token_bytes(tok, prev, id), *clean = utf8_clean(raw);
    cJSON *e = cJSON_CreateObject();
    cJSON_AddStringToObject(e, "token", clean);
    cJSON_AddItemToObject(e, "logprob", openai_logprob_number(lp));
    cJSON *b = cJSON_AddArrayToObject(e, "bytes");
    for (const unsigned char *p = (const unsigned char *)raw; *p; p++) cJSON_AddItemToArray(b, cJSON_CreateNumber(*p));
    if (len) *len = strlen(clean);
    free(raw);
    free(clean);
    return e;
}

/* the choice's "logprobs": chat {"content": [...], "refusal": null}; completions {"tokens",
 * "token_logprobs", "top_logprobs", "text_offset" (within the completion's text)} */
static cJSON *choice_logprobs(const prompt_item *it, const sched_result *r, const tokenizer *tok) {
    const int nc = r->n - r->n_prompt, k = r->n_top;
    cJSON *lp = cJSON_CreateObject();
    if (is_chat(it)) {
        cJSON *content = cJSON_AddArrayToObject(lp, "content");
        for (int i = 0; i < nc; i++) {
            const int prev = r->ids[r->n_prompt + i - 1], id = r->ids[r->n_prompt + i];
            cJSON *e = chat_token(tok, prev, id, r->token_logprobs[i], NULL);
            cJSON *top = cJSON_AddArrayToObject(e, "top_logprobs");
            for (int j = 0; j < k; j++) {
                const vsample_top *t = &r->top[(int64_t)i * k + j];
                if (t->id >= 0) cJSON_AddItemToArray(top, chat_token(tok, prev, t->id, t->logprob, NULL));
            }
            cJSON_AddItemToArray(content, e);
        }
        cJSON_AddNullToObject(lp, "refusal");
        return lp;
    }
    cJSON *tokens = cJSON_AddArrayToObject(lp, "tokens"), *lps = cJSON_AddArrayToObject(lp, "token_logprobs");
    cJSON *tops = k > 0 ? cJSON_AddArrayToObject(lp, "top_logprobs") : NULL;
    if (!tops) cJSON_AddNullToObject(lp, "top_logprobs");
    cJSON *offsets = cJSON_AddArrayToObject(lp, "text_offset");
    size_t at = 0;
    for (int i = 0; i < nc; i++) {
        const int prev = r->ids[r->n_prompt + i - 1], id = r->ids[r->n_prompt + i];
        char *raw = token_bytes(tok, prev, id), *clean = utf8_clean(raw);
        cJSON_AddItemToArray(tokens, cJSON_CreateString(clean));
        cJSON_AddItemToArray(lps, openai_logprob_number(r->token_logprobs[i]));
        cJSON_AddItemToArray(offsets, cJSON_CreateNumber((double)at));
        at += strlen(clean);
        free(raw);
        free(clean);
        if (!tops) continue;
        cJSON *d = cJSON_CreateObject();
        for (int j = 0; j < k; j++) {
            const vsample_top *t = &r->top[(int64_t)i * k + j];
            if (t->id < 0) continue;
            char *traw = token_bytes(tok, prev, t->id), *tclean = utf8_clean(traw);
            if (!cJSON_GetObjectItemCaseSensitive(d, tclean)) /* two tokens of one text: the likelier */
                cJSON_AddItemToObject(d, tclean, openai_logprob_number(t->logprob));
            free(traw);
            free(tclean);
        }
        cJSON_AddItemToArray(tops, d);
    }
    return lp;
}

cJSON *openai_choice(const prompt_item *it, int index, const sched_result *r, const tokenizer *tok) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddNumberToObject(c, "index", index);
    const char *text = r->text ? r->text : "";
    if (is_chat(it)) {
        cJSON *m = cJSON_AddObjectToObject(c, "message");
        cJSON_AddStringToObject(m, "role", "assistant");
        cJSON_AddStringToObject(m, "content", text);
        cJSON_AddNullToObject(m, "refusal");
    } else {
        cJSON_AddStringToObject(c, "text", text);
    }
    if (r->token_logprobs) cJSON_AddItemToObject(c, "logprobs", choice_logprobs(it, r, tok));
    else cJSON_AddNullToObject(c, "logprobs");
    cJSON_AddStringToObject(c, "finish_reason", r->reason);
    return c;
}

cJSON *openai_response(const prompt_item *it, cJSON *choices, int prompt_tokens, int completion_tokens,
                       const char *model, const char *fingerprint, long long created) {
    cJSON *r = line_head(it);
    cJSON *resp = cJSON_AddObjectToObject(r, "response");
    cJSON_AddNumberToObject(resp, "status_code", 200);
    char id[64];
    make_id(id, sizeof id, "req_", it, 2);
    cJSON_AddStringToObject(resp, "request_id", id);
    cJSON *b = cJSON_AddObjectToObject(resp, "body");
    const int chat = is_chat(it);
    make_id(id, sizeof id, chat ? "chatcmpl-" : "cmpl-", it, 3);
    cJSON_AddStringToObject(b, "id", id);
    cJSON_AddStringToObject(b, "object", chat ? "chat.completion" : "text_completion");
    cJSON_AddNumberToObject(b, "created", (double)created);
    cJSON_AddStringToObject(b, "model", it->model_name ? it->model_name : model);
    cJSON_AddItemToObject(b, "choices", choices);
    cJSON *u = cJSON_AddObjectToObject(b, "usage");
    cJSON_AddNumberToObject(u, "prompt_tokens", prompt_tokens);
    cJSON_AddNumberToObject(u, "completion_tokens", completion_tokens);
    cJSON_AddNumberToObject(u, "total_tokens", prompt_tokens + completion_tokens);
    char fp[40];
    snprintf(fp, sizeof fp, "fp_%s", fingerprint);
    cJSON_AddStringToObject(b, "system_fingerprint", fp);
    cJSON_AddNullToObject(r, "error");
    return r;
}

cJSON *openai_error(const prompt_item *it, const char *why, int server) {
    cJSON *r = line_head(it);
    cJSON *resp = cJSON_AddObjectToObject(r, "response");
    cJSON_AddNumberToObject(resp, "status_code", server ? 500 : 400);
    char id[64];
    make_id(id, sizeof id, "req_", it, 2);
    cJSON_AddStringToObject(resp, "request_id", id);
    cJSON *e = cJSON_AddObjectToObject(cJSON_AddObjectToObject(resp, "body"), "error");
    char msg[600];
    snprintf(msg, sizeof msg, "line %d: %s", it->line, why);
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", server ? "server_error" : "invalid_request_error");
    cJSON_AddNullToObject(e, "param");
    cJSON_AddNullToObject(e, "code");
    cJSON_AddNullToObject(r, "error");
    return r;
}

cJSON *openai_interrupted(const prompt_item *it) {
    cJSON *r = line_head(it);
    cJSON_AddNullToObject(r, "response");
    cJSON *e = cJSON_AddObjectToObject(r, "error");
    cJSON_AddStringToObject(e, "code", "interrupted");
    cJSON_AddStringToObject(e, "message", "the job was stopped (SIGTERM or SIGUSR1) before this request finished: rerun "
                                          "with --resume");
    return r;
}
