#include "openai.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

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

cJSON *openai_choice(const prompt_item *it, int index, const sched_result *r, const tokenizer *tok) {
    (void)tok;
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
    cJSON_AddNullToObject(c, "logprobs");
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

cJSON *openai_error(const prompt_item *it, const char *why) {
    cJSON *r = line_head(it);
    cJSON *resp = cJSON_AddObjectToObject(r, "response");
    cJSON_AddNumberToObject(resp, "status_code", 400);
    char id[64];
    make_id(id, sizeof id, "req_", it, 2);
    cJSON_AddStringToObject(resp, "request_id", id);
    cJSON *e = cJSON_AddObjectToObject(cJSON_AddObjectToObject(resp, "body"), "error");
    char msg[600];
    snprintf(msg, sizeof msg, "line %d: %s", it->line, why);
    cJSON_AddStringToObject(e, "message", msg);
    cJSON_AddStringToObject(e, "type", "invalid_request_error");
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
