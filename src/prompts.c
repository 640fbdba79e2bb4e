#include "prompts.h"

#include <cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static char *fmt_error(const char *fmt, const char *arg) {
    char buf[512];
    snprintf(buf, sizeof(buf), fmt, arg);
    return xstrdup(buf);
}

static void parse_json_line(prompt_item *it, const char *line) {
    cJSON *o = cJSON_Parse(line);
    if (!o || !cJSON_IsObject(o)) {
        it->error = xstrdup("not a JSON object");
        cJSON_Delete(o);
        return;
    }
    cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "custom_id");
    if (cJSON_IsString(id)) {
        free(it->custom_id);
        it->custom_id = xstrdup(id->valuestring);
    } else if (cJSON_IsNumber(id)) {
        char buf[64];
        snprintf(buf, sizeof(buf), "%.17g", id->valuedouble);
        free(it->custom_id);
        it->custom_id = xstrdup(buf);
    } else if (id) {
        it->error = xstrdup("'custom_id' must be a string or a number");
        goto done;
    }
    cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "prompt");
    cJSON *ids = cJSON_GetObjectItemCaseSensitive(o, "prompt_ids");
    if (p && ids) {
        it->error = xstrdup("give 'prompt' or 'prompt_ids', not both");
    } else if (p) {
        if (!cJSON_IsString(p)) it->error = xstrdup("'prompt' must be a string");
        else it->text = xstrdup(p->valuestring);
    } else if (ids) {
        if (!cJSON_IsArray(ids)) {
            it->error = xstrdup("'prompt_ids' must be an array of token ids");
            goto done;
        }
        int n = cJSON_GetArraySize(ids);
        it->ids = xmalloc(sizeof(int) * (n > 0 ? n : 1));
        it->n_ids = n;
        int i = 0;
        cJSON *e;
        cJSON_ArrayForEach(e, ids) {
            if (!cJSON_IsNumber(e) || e->valuedouble != floor(e->valuedouble) || e->valuedouble < 0 || e->valuedouble > 2e9) {
                it->error = xstrdup("'prompt_ids' must hold non-negative integers");
                break;
            }
            it->ids[i++] = (int)e->valuedouble;
        }
    } else {
        it->error = xstrdup("no 'prompt' or 'prompt_ids'");
    }
    cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "max_tokens"))) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 0) it->error = fmt_error("'%s' must be a non-negative integer", "max_tokens");
        else it->max_tokens = (int)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "temperature"))) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 0) it->error = fmt_error("'%s' must be a number >= 0", "temperature");
        else it->temperature = (float)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "top_k"))) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 0) it->error = fmt_error("'%s' must be a non-negative integer", "top_k");
        else it->top_k = (int)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "top_p"))) {
        if (!cJSON_IsNumber(v) || v->valuedouble <= 0 || v->valuedouble > 1) it->error = fmt_error("'%s' must be in (0, 1]", "top_p");
        else it->top_p = (float)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "seed"))) {
        if (!cJSON_IsNumber(v) || v->valuedouble < 0) it->error = fmt_error("'%s' must be a non-negative integer", "seed");
        else {
            it->seed = (long long)v->valuedouble;
            it->has_seed = 1;
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
        memset(it, 0, sizeof(*it));
        char idbuf[32];
        snprintf(idbuf, sizeof(idbuf), "%d", lineno);
        it->custom_id = xstrdup(idbuf);
        it->line = lineno;
        it->max_tokens = -1;
        it->temperature = NAN;
        it->top_k = -1;
        it->top_p = NAN;
        if ((size_t)len != strlen(line)) it->error = xstrdup("line holds a NUL byte");
        else if (jsonl) parse_json_line(it, line);
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
    }
    free(items);
}
