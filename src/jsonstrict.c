#include "jsonstrict.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util.h"

static int cmp_names(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* the first key that some object under node holds twice, or NULL. Sorting the names keeps a
 * line of many keys O(n log n). */
static const char *duplicate_key(const cJSON *node) {
    if (!cJSON_IsObject(node) && !cJSON_IsArray(node)) return NULL;
    int n = 0;
    for (const cJSON *c = node->child; c; c = c->next) {
        const char *d = duplicate_key(c);
        if (d) return d;
        n++;
    }
    if (!cJSON_IsObject(node) || n < 2) return NULL;
    const char **names = xmalloc(sizeof(*names) * (size_t)n);
    int k = 0;
    for (const cJSON *c = node->child; c; c = c->next) names[k++] = c->string ? c->string : "";
    qsort(names, (size_t)n, sizeof(*names), cmp_names);
    const char *dup = NULL;
    for (int i = 1; i < n && !dup; i++)
        if (strcmp(names[i - 1], names[i]) == 0) dup = names[i];
    free(names);
    return dup;
}

/* the offset of a NUL byte, raw or escaped as \u0000, in text[0..len), or -1: C strings would
 * silently end there (a custom_id "a\u0000b" would become "a") */
static long nul_at(const char *text, size_t len) {
    for (size_t i = 0; i < len; i++) {
        if (text[i] == 0) return (long)i;
        if (text[i] == '\\' && i + 1 < len) {
            if (text[i + 1] == 'u' && i + 5 < len && memcmp(text + i + 2, "0000", 4) == 0) return (long)i;
            i++; /* the escaped character */
        }
    }
    return -1;
}

/* "column C" of byte at (1-based, in bytes) or, in a text of several lines, "line L, column C" */
static void position(const char *text, size_t len, size_t at, char *buf, size_t cap) {
    size_t line = 1, start = 0;
    int lines = len > 1 && memchr(text, '\n', len - 1) != NULL; /* a newline before the last byte */
    for (size_t i = 0; i < at && i < len; i++)
        if (text[i] == '\n') line++, start = i + 1;
    if (lines) snprintf(buf, cap, "line %zu, column %zu", line, at - start + 1);
    else snprintf(buf, cap, "column %zu", at - start + 1);
}

cJSON *json_parse_strict(const char *text, size_t len, char *why, size_t why_cap) {
    const char *end = NULL;
    why[0] = 0;
    long nul = nul_at(text, len);
    if (nul >= 0) {
        char pos[64];
        position(text, len, (size_t)nul, pos, sizeof(pos));
        snprintf(why, why_cap, "a NUL character (at %s): text cannot hold one", pos);
        return NULL;
    }
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        size_t at = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        char pos[64];
        position(text, len, at, pos, sizeof(pos));
        snprintf(why, why_cap, "not valid JSON (at %s)", pos);
        return NULL;
    }
    size_t at = (size_t)(end - text);
    while (at < len && (text[at] == ' ' || text[at] == '\t' || text[at] == '\n' || text[at] == '\r')) at++;
    if (at < len) {
        char pos[64];
        position(text, len, at, pos, sizeof(pos));
        snprintf(why, why_cap, "trailing data after the JSON value (at %s)", pos);
        cJSON_Delete(root);
        return NULL;
    }
    const char *dup = duplicate_key(root);
    if (dup) {
        snprintf(why, why_cap, "duplicate key '%.200s'", dup);
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

int json_get_int(const cJSON *item, int64_t lo, int64_t hi, int64_t *out) {
    if (!cJSON_IsNumber(item)) return 0;
    double v = item->valuedouble;
    /* [-2^63, 2^63) is what the cast can hold; the test also rejects NaN */
    if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0) || v != floor(v)) return 0;
    int64_t r = (int64_t)v;
    if (r < lo || r > hi) return 0;
    *out = r;
    return 1;
}

int json_is_finite_number(const cJSON *item) {
    return cJSON_IsNumber(item) && isfinite(item->valuedouble);
}

/* root (NULL: why says what is wrong) as a JSON object, else die()s naming path */
static cJSON *object_or_die(cJSON *root, const char *why, const char *path) {
    if (!root) die("'%s': %s", path, why);
    if (!cJSON_IsObject(root)) die("'%s': not a JSON object", path);
    return root;
}

cJSON *json_object_or_die(const char *text, size_t len, const char *path) {
    char why[256];
    return object_or_die(json_parse_strict(text, len, why, sizeof why), why, path);
}

cJSON *json_read_object(const char *path) {
    size_t len;
    char *text = util_read_file(path, &len), why[256];
    cJSON *root = json_parse_strict(text, len, why, sizeof why);
    free(text); /* before any die(): the fuzzers' die() returns */
    return object_or_die(root, why, path);
}
