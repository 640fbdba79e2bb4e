#include "outfile.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static void sync_or_die(FILE *f, const char *path) {
    if (fflush(f) != 0) die_errno("cannot write output '%s'", path);
    if (fsync(fileno(f)) != 0 && errno != EINVAL && errno != EROFS) die_errno("cannot sync output '%s'", path);
}

/* keeps the finished records of an earlier run; rewrites the file (atomically) when some are dropped */
static void load_existing(outfile *o) {
    size_t len;
    char *buf = util_read_file(o->path, &len);
    size_t keep_len = len;
    while (keep_len > 0 && buf[keep_len - 1] != '\n') keep_len--;
    o->dropped = keep_len != len; /* a torn last record */
    int cap = 64;
    o->done_ids = xmalloc(sizeof(char *) * cap);
    char *kept = xmalloc(keep_len + 1);
    size_t nk = 0;
    for (char *line = buf, *nl; line < buf + keep_len; line = nl + 1) {
        nl = memchr(line, '\n', (size_t)(buf + keep_len - line));
        *nl = 0;
        cJSON *j = cJSON_Parse(line);
        cJSON *id = j ? cJSON_GetObjectItemCaseSensitive(j, "custom_id") : NULL;
        cJSON *fr = j ? cJSON_GetObjectItemCaseSensitive(j, "finish_reason") : NULL;
        int interrupted = cJSON_IsString(fr) && !strcmp(fr->valuestring, "interrupted");
        if (!j || interrupted) {
            o->dropped++;
        } else {
            if (cJSON_IsString(id)) {
                if (o->n_done == cap) o->done_ids = xrealloc(o->done_ids, sizeof(char *) * (cap *= 2));
                o->done_ids[o->n_done++] = xstrdup(id->valuestring);
            }
            size_t l = (size_t)(nl - line);
            memcpy(kept + nk, line, l);
            kept[nk + l] = '\n';
            nk += l + 1;
        }
        cJSON_Delete(j);
    }
    qsort(o->done_ids, (size_t)o->n_done, sizeof(char *), cmp_str);
    if (o->dropped) {
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.resume-tmp", o->path);
        FILE *f = fopen(tmp, "wb");
        if (!f) die_errno("cannot write '%s'", tmp);
        if (nk && fwrite(kept, 1, nk, f) != nk) die_errno("cannot write '%s'", tmp);
        sync_or_die(f, tmp);
        fclose(f);
        if (rename(tmp, o->path) != 0) die_errno("cannot replace '%s'", o->path);
    }
    free(kept);
    free(buf);
}

void outfile_open(outfile *o, const char *path, int resume) {
    memset(o, 0, sizeof(*o));
    o->path = xstrdup(path);
    if (resume && access(path, F_OK) == 0) {
        load_existing(o);
        fprintf(stderr, "mpillama: resuming '%s': %d finished records kept (their prompts are skipped), %d dropped\n",
                path, o->n_done, o->dropped);
        o->f = fopen(path, "ab");
    } else {
        o->f = fopen(path, "wb");
    }
    if (!o->f) die_errno("cannot open output '%s'", path);
}

int outfile_has(const outfile *o, const char *id) {
    return o->n_done && bsearch(&id, o->done_ids, (size_t)o->n_done, sizeof(char *), cmp_str) != NULL;
}

void outfile_write(outfile *o, cJSON *rec) {
    char *s = cJSON_PrintUnformatted(rec);
    if (!s) die("out of memory printing a record");
    size_t n = strlen(s);
    s[n] = '\n'; /* cJSON's buffer has room: the NUL becomes the newline */
    if (fwrite(s, 1, n + 1, o->f) != n + 1) die_errno("cannot write output '%s'", o->path);
    sync_or_die(o->f, o->path);
    free(s);
    cJSON_Delete(rec);
    o->written++;
}

void outfile_error(outfile *o, const char *custom_id, int line, const char *why) {
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "custom_id", custom_id);
    cJSON_AddNumberToObject(r, "line", line);
    cJSON_AddStringToObject(r, "error", why);
    outfile_write(o, r);
    o->errors++;
}

void outfile_close(outfile *o) {
    if (o->f && fclose(o->f) != 0) die_errno("cannot close output '%s'", o->path);
    for (int i = 0; i < o->n_done; i++) free(o->done_ids[i]);
    free(o->done_ids);
    free(o->path);
    memset(o, 0, sizeof(*o));
}
