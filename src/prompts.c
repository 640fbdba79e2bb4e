#include "prompts.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "jsonstrict.h"
#include "util.h"

static char *fmt_error(const char *fmt, const char *arg) {
    char buf[512];
    snprintf(buf, sizeof(buf), fmt, arg);
    return xstrdup(buf);
}

/* a message's content: a string, or OpenAI's array of {"type": "text", "text": ...} parts
 * (joined); NULL otherwise */
static char *message_content(const cJSON *c) {
    if (cJSON_IsString(c)) return xstrdup(c->valuestring);
    if (!cJSON_IsArray(c)) return NULL;
    size_t len = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(part, "type");
        const cJSON *text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsString(type) || strcmp(type->valuestring, "text") != 0 || !cJSON_IsString(text)) return NULL;
        len += strlen(text->valuestring);
    }
    char *s = xmalloc(len + 1);
    s[0] = 0;
    cJSON_ArrayForEach(part, c) strcat(s, cJSON_GetObjectItemCaseSensitive(part, "text")->valuestring);
    return s;
}

/* an OpenAI Batch API line's envelope: sets it->api and *body; 0, or -1 with it->error set */
static int parse_openai(prompt_item *it, const cJSON *o, const cJSON **body) {
    const cJSON *v;
    cJSON_ArrayForEach(v, o) {
        if (strcmp(v->string, "custom_id") && strcmp(v->string, "method") && strcmp(v->string, "url") &&
            strcmp(v->string, "body")) {
            it->error = fmt_error("unsupported field '%s' in an OpenAI batch line (custom_id, method, url, body)", v->string);
            return -1;
        }
    }
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(o, "method");
    const cJSON *url = cJSON_GetObjectItemCaseSensitive(o, "url");
    *body = cJSON_GetObjectItemCaseSensitive(o, "body");
    if (!cJSON_IsString(method) || strcmp(method->valuestring, "POST") != 0) {
        it->error = fmt_error("'method' %s is not supported: OpenAI batch lines are \"POST\"",
                              cJSON_IsString(method) ? method->valuestring : "(missing or not a string)");
        return -1;
    }
    if (cJSON_IsString(url) && !strcmp(url->valuestring, "/v1/chat/completions")) it->api = PROMPTS_CHAT;
    else if (cJSON_IsString(url) && !strcmp(url->valuestring, "/v1/completions")) it->api = PROMPTS_COMPLETIONS;
    else {
        char b[200];
        snprintf(b, sizeof b, "'url' %.100s is not supported: /v1/chat/completions or /v1/completions",
                 cJSON_IsString(url) ? url->valuestring : "(missing or not a string)");
        it->error = xstrdup(b);
        return -1;
    }
    if (!cJSON_IsObject(*body)) {
        it->error = xstrdup("'body' must be an object (the request)");
        return -1;
    }
    return 0;
}

void prompts_parse_json(prompt_item *it, const char *line, size_t len) {
    char why[256];
    cJSON *o = json_parse_strict(line, len, why, sizeof why);
    if (!o || !cJSON_IsObject(o)) {
        it->error = xstrdup(o ? "not a JSON object" : why);
        cJSON_Delete(o);
        return;
    }
    cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "custom_id");
    if (cJSON_IsString(id)) {
        if (!id->valuestring[0]) {
            it->error = xstrdup("'custom_id' must not be empty");
            goto done;
        }
        free(it->custom_id);
        it->custom_id = xstrdup(id->valuestring);
    } else if (cJSON_IsNumber(id)) {
        if (!isfinite(id->valuedouble)) {
            it->error = xstrdup("'custom_id' must be a string or a finite number");
            goto done;
        }
        char buf[64];
        snprintf(buf, sizeof(buf), "%.17g", id->valuedouble);
        free(it->custom_id);
        it->custom_id = xstrdup(buf);
    } else if (id) {
        it->error = xstrdup("'custom_id' must be a string or a number");
        goto done;
    }
    /* f: the request's fields, the line itself or an OpenAI line's body */
    const cJSON *f = o;
    const int openai = cJSON_GetObjectItemCaseSensitive(o, "body") || cJSON_GetObjectItemCaseSensitive(o, "url") ||
                       cJSON_GetObjectItemCaseSensitive(o, "method");
    if (openai && parse_openai(it, o, &f) != 0) goto done;
    cJSON *p = cJSON_GetObjectItemCaseSensitive(f, "prompt");
    cJSON *ids = openai ? NULL : cJSON_GetObjectItemCaseSensitive(f, "prompt_ids");
    cJSON *msgs = cJSON_GetObjectItemCaseSensitive(f, "messages");
    if (it->api == PROMPTS_COMPLETIONS && cJSON_IsArray(p)) { /* a list of token ids, or of one string */
        if (cJSON_GetArraySize(p) == 1 && cJSON_IsString(p->child)) p = p->child;
        else if (p->child && cJSON_IsString(p->child)) {
            it->error = xstrdup("'prompt' holds several prompts: give one prompt a line (a string or a list of token ids)");
            goto done;
        } else ids = p, p = NULL;
    }
    if (it->api == PROMPTS_CHAT && !msgs) {
        it->error = xstrdup("a /v1/chat/completions request needs 'messages' in its body");
    } else if (it->api == PROMPTS_COMPLETIONS && !p && !ids) {
        it->error = xstrdup("a /v1/completions request needs 'prompt' in its body");
    } else if ((p != NULL) + (ids != NULL) + (msgs != NULL) > 1) {
        it->error = xstrdup(openai ? "give one of 'prompt' (/v1/completions) and 'messages' (/v1/chat/completions)"
                                   : "give one of 'prompt', 'prompt_ids' and 'messages'");
    } else if (msgs) {
        int n = cJSON_IsArray(msgs) ? cJSON_GetArraySize(msgs) : 0;
        if (n == 0) {
            it->error = xstrdup("'messages' must be a non-empty array of {\"role\", \"content\"}");
            goto done;
        }
        it->roles = xcalloc((size_t)n, sizeof(char *));
        it->contents = xcalloc((size_t)n, sizeof(char *));
        cJSON *m;
        cJSON_ArrayForEach(m, msgs) {
            cJSON *role = cJSON_GetObjectItemCaseSensitive(m, "role");
            char *content = message_content(cJSON_GetObjectItemCaseSensitive(m, "content"));
            if (!cJSON_IsString(role) || !content) {
                free(content);
                char idx[16];
                snprintf(idx, sizeof(idx), "%d", it->n_messages);
                it->error = fmt_error("'messages[%s]' needs string 'role' and 'content' (a string or text parts)", idx);
                goto done;
            }
            it->roles[it->n_messages] = xstrdup(role->valuestring);
            it->contents[it->n_messages++] = content;
        }
    } else if (p) {
        if (!cJSON_IsString(p)) it->error = xstrdup("'prompt' must be a string");
        else it->text = xstrdup(p->valuestring);
    } else if (ids) {
        const char *name = openai ? "prompt" : "prompt_ids";
        if (!cJSON_IsArray(ids)) {
            it->error = fmt_error("'%s' must be an array of token ids", name);
            goto done;
        }
        int n = cJSON_GetArraySize(ids);
        it->ids = xmalloc(sizeof(int) * (n > 0 ? n : 1));
        it->n_ids = n;
        int i = 0;
        cJSON *e;
        cJSON_ArrayForEach(e, ids) {
            int64_t idv;
            if (!json_get_int(e, 0, INT32_MAX, &idv)) {
                char b[160];
                snprintf(b, sizeof(b), "'%s[%d]' must be a non-negative integer", name, i);
                it->error = xstrdup(b);
                break;
            }
            it->ids[i++] = (int)idv;
        }
    } else {
        it->error = xstrdup("no 'prompt', 'prompt_ids' or 'messages'");
    }
    if (it->error) goto done; /* the first error is the one reported (and none is overwritten) */
    cJSON *v;
    static const char *const known[] = {"custom_id", "prompt", "prompt_ids", "messages", "max_tokens", "temperature", "top_k",
                                        "top_p", "min_p", "repetition_penalty", "frequency_penalty",
                                        "presence_penalty", "seed", "stop", "stop_token_ids", "ignore_eos", "n",
                                        "logprobs", NULL};
    /* an OpenAI body: OpenAI's fields we apply, and vLLM's sampling extras */
    static const char *const known_openai[] = {"model", "prompt", "messages", "max_tokens", "max_completion_tokens",
                                               "temperature", "top_p", "stop", "seed", "n", "logprobs",
                                               "top_logprobs", "frequency_penalty", "presence_penalty", "top_k",
                                               "min_p", "repetition_penalty", "ignore_eos", "stop_token_ids", "stream", NULL};
    const char *const *names = openai ? known_openai : known;
    cJSON_ArrayForEach(v, f) {
        int k = 0;
        while (names[k] && strcmp(names[k], v->string)) k++;
        if (!names[k]) {
            it->error = fmt_error(openai ? "unsupported field 'body.%s' (README, \"OpenAI batch files\", lists those applied)"
                                         : "unknown field '%s'",
                                  v->string);
            goto done;
        }
    }
#define NUM(field, lo, hi, dst)                                                                    \
    if ((v = cJSON_GetObjectItemCaseSensitive(f, field))) {                                        \
        if (!cJSON_IsNumber(v) || !(v->valuedouble >= (lo) && v->valuedouble <= (hi))) {           \
            char b_[160];                                                                          \
            snprintf(b_, sizeof(b_), "'%s' must be a number in [%g, %g]", field, (double)(lo), (double)(hi)); \
            it->error = xstrdup(b_);                                                               \
            goto done;                                                                             \
        }                                                                                          \
        dst = v->valuedouble;                                                                      \
    }
/* an integer field: a fraction is refused, not truncated */
#define INT(field, lo, hi, dst)                                                                    \
    if ((v = cJSON_GetObjectItemCaseSensitive(f, field))) {                                        \
        int64_t i_;                                                                                \
        if (!json_get_int(v, (int64_t)(lo), (int64_t)(hi), &i_)) {                                 \
            char b_[160];                                                                          \
            snprintf(b_, sizeof(b_), "'%s' must be an integer in [%.0f, %.0f]", field, (double)(lo), (double)(hi)); \
            it->error = xstrdup(b_);                                                               \
            goto done;                                                                             \
        }                                                                                          \
        dst = i_;                                                                                  \
    }
    INT("max_tokens", 0, 1000000000, it->max_tokens);
    if (openai && (v = cJSON_GetObjectItemCaseSensitive(f, "max_completion_tokens"))) {
        if (cJSON_GetObjectItemCaseSensitive(f, "max_tokens")) {
            it->error = xstrdup("give one of 'max_tokens' and 'max_completion_tokens'");
            goto done;
        }
        INT("max_completion_tokens", 0, 1000000000, it->max_tokens);
    }
    NUM("temperature", 0, 100, it->temperature);
    if (openai && (v = cJSON_GetObjectItemCaseSensitive(f, "top_k")) && cJSON_IsNumber(v) && v->valuedouble == -1)
        it->top_k = 0; /* vLLM's "off" */
    else INT("top_k", 0, 1000000000, it->top_k);
    NUM("top_p", 1e-6, 1, it->top_p);
    NUM("min_p", 0, 1, it->min_p);
    NUM("repetition_penalty", 1e-3, 100, it->repetition_penalty);
    NUM("frequency_penalty", -2, 2, it->frequency_penalty);
    NUM("presence_penalty", -2, 2, it->presence_penalty);
    INT("seed", 0, INT64_C(9007199254740991), it->seed);
    INT("n", 1, PROMPTS_N_MAX, it->n);
    if (it->api == PROMPTS_CHAT) {
        /* chat: logprobs true|false, top_logprobs k (needs logprobs true) */
        if ((v = cJSON_GetObjectItemCaseSensitive(f, "logprobs"))) {
            if (!cJSON_IsBool(v)) {
                it->error = xstrdup("'logprobs' must be true or false (chat; the alternatives are 'top_logprobs')");
                goto done;
            }
            it->logprobs = cJSON_IsTrue(v) ? 0 : -1;
        }
        int top = -1;
        INT("top_logprobs", 0, PROMPTS_TOP_MAX, top);
        if (top >= 0 && it->logprobs < 0) {
            it->error = xstrdup("'top_logprobs' needs 'logprobs': true");
            goto done;
        }
        if (top >= 0) it->logprobs = top;
    } else {
        if (it->api == PROMPTS_NATIVE && cJSON_GetObjectItemCaseSensitive(f, "top_logprobs")) {
            it->error = xstrdup("unknown field 'top_logprobs' ('logprobs': k asks for k alternatives)");
            goto done;
        }
        INT("logprobs", 0, PROMPTS_TOP_MAX, it->logprobs);
    }
#undef NUM
#undef INT
    if ((v = cJSON_GetObjectItemCaseSensitive(f, "stream")) && !cJSON_IsFalse(v)) {
        it->error = xstrdup("'stream' must be false: a batch job writes whole records");
        goto done;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(f, "model"))) {
        if (!cJSON_IsString(v)) {
            it->error = xstrdup("'model' must be a string");
            goto done;
        }
        it->model_name = xstrdup(v->valuestring);
    }
    if (cJSON_GetObjectItemCaseSensitive(f, "seed")) it->has_seed = 1;
    if ((v = cJSON_GetObjectItemCaseSensitive(f, "ignore_eos"))) {
        if (!cJSON_IsBool(v)) {
            it->error = xstrdup("'ignore_eos' must be true or false");
            goto done;
        }
        it->ignore_eos = cJSON_IsTrue(v);
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(f, "stop")) && !cJSON_IsNull(v)) {
        if (cJSON_IsString(v)) {
            it->stop = xmalloc(sizeof(char *));
            it->stop[it->n_stop++] = xstrdup(v->valuestring);
        } else if (cJSON_IsArray(v)) {
            it->stop = xmalloc(sizeof(char *) * (size_t)(cJSON_GetArraySize(v) + 1));
            cJSON *e;
            cJSON_ArrayForEach(e, v) {
                if (!cJSON_IsString(e) || !e->valuestring[0]) {
                    it->error = xstrdup("'stop' must be a string or an array of non-empty strings");
                    goto done;
                }
                it->stop[it->n_stop++] = xstrdup(e->valuestring);
            }
        } else {
            it->error = xstrdup("'stop' must be a string or an array of strings");
            goto done;
        }
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(f, "stop_token_ids"))) {
        if (!cJSON_IsArray(v)) {
            it->error = xstrdup("'stop_token_ids' must be an array of token ids");
            goto done;
        }
        it->stop_token_ids = xmalloc(sizeof(int) * (size_t)(cJSON_GetArraySize(v) + 1));
        cJSON *e;
        cJSON_ArrayForEach(e, v) {
            int64_t idv;
            if (!json_get_int(e, 0, INT32_MAX, &idv)) {
                it->error = xstrdup("'stop_token_ids' must hold non-negative integers");
                goto done;
            }
            it->stop_token_ids[it->n_stop_ids++] = (int)idv;
        }
    }
done:
    if (it->error) {
        free(it->text);
        free(it->ids);
        it->text = NULL;
        it->ids = NULL;
        it->n_ids = 0;
    }
    cJSON_Delete(o);
}

void prompts_item_defaults(prompt_item *it, int lineno) {
    memset(it, 0, sizeof(*it));
    char idbuf[32];
    snprintf(idbuf, sizeof(idbuf), "%d", lineno);
    it->custom_id = xstrdup(idbuf);
    it->line = lineno;
    it->max_tokens = -1;
    it->temperature = NAN;
    it->top_k = -1;
    it->top_p = NAN;
    it->min_p = NAN;
    it->repetition_penalty = NAN;
    it->frequency_penalty = NAN;
    it->presence_penalty = NAN;
    it->ignore_eos = -1;
    it->n = 1;
    it->logprobs = -1;
}

int prompts_read(const char *path, prompt_item **out) {
    FILE *f = xfopen(path, "rb");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int n = 0, ncap = 16, lineno = 0, jsonl = -1;
    prompt_item *items = xcalloc((size_t)ncap, sizeof(*items));
    while ((len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = 0;
        const char *s = line;
        while (*s == ' ' || *s == '\t') s++;
        if (jsonl < 0) {
            if (!*s) continue; /* leading blank lines */
            jsonl = *s == '{';
        }
        if (jsonl && !*s) continue; /* blank lines between JSON records */
        if (n == ncap) items = xrealloc(items, sizeof(*items) * (size_t)(ncap *= 2));
        prompt_item *it = &items[n++];
        prompts_item_defaults(it, lineno);
        it->hash = util_fnv1a64(line, (size_t)len, UTIL_FNV1A64_INIT);
        if ((size_t)len != strlen(line)) it->error = xstrdup("line holds a NUL byte");
        else if (jsonl) prompts_parse_json(it, line, (size_t)len);
        else it->text = xstrdup(line);
    }
    if (ferror(f)) die_errno("cannot read prompts '%s'", path);
    free(line);
    fclose(f);
    *out = items;
    return n;
}

void prompts_free(prompt_item *items, int n) {
    for (int i = 0; i < n; i++) {
        free(items[i].custom_id);
        free(items[i].text);
        free(items[i].ids);
        free(items[i].error);
        free(items[i].model_name);
        for (int k = 0; k < items[i].n_messages; k++) free(items[i].roles[k]), free(items[i].contents[k]);
        free(items[i].roles);
        free(items[i].contents);
        for (int k = 0; k < items[i].n_stop; k++) free(items[i].stop[k]);
        free(items[i].stop);
        free(items[i].stop_token_ids);
    }
    free(items);
}
