#include "outfile.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* writes all n bytes (retrying after signals); 0, or -1 with errno */
static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int sync_fd(int fd) {
    while (fsync(fd) != 0) {
        if (errno == EINTR) continue;
        if (errno == EINVAL || errno == EROFS) return 0; /* a device or FIFO */
        return -1;
    }
    return 0;
}

static void meta_path(const char *path, char *buf, size_t n) { snprintf(buf, n, "%s.meta.json", path); }

int outfile_check(const char *path, int resume, int overwrite) {
    struct stat st;
    if (stat(path, &st) == 0) {
        if (S_ISDIR(st.st_mode)) return error("output '%s' is a folder", path);
        if (access(path, W_OK) != 0) return error("output '%s' is not writable: %s", path, strerror(errno));
        if (S_ISREG(st.st_mode) && st.st_size > 0 && !resume && !overwrite)
            return error("output '%s' already holds records: give --resume to keep them and run the rest, "
                         "or --overwrite to replace them", path);
        if (!S_ISREG(st.st_mode) && resume) return error("--resume: output '%s' is not a regular file", path);
        return 0;
    }
    if (errno != ENOENT) return error("cannot open output '%s': %s", path, strerror(errno));
    char *copy = xstrdup(path);
    const char *dir = dirname(copy);
    int rc = 0;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        rc = error("cannot create output '%s': folder '%s' does not exist", path, dir);
    else if (access(dir, W_OK | X_OK) != 0)
        rc = error("cannot create output '%s': folder '%s' is not writable", path, dir);
    free(copy);
    return rc;
}

/* takes fd's lock for output path; -1 after printing why when another run holds it (a file
 * system without locks: a warning, 0) */
static int lock_fd(int fd, const char *path) {
    if (flock(fd, LOCK_EX | LOCK_NB) == 0) return 0;
    if (errno == EWOULDBLOCK)
        return error("output '%s' is being written by another mpillama run (it holds the file's lock); "
                     "wait for it to end or give another --output", path);
    warning("cannot lock output '%s' (%s): another run could write it at the same time", path, strerror(errno));
    return 0;
}

/* opens path for appending and takes its lock; -1 after printing why */
static int open_locked(const char *path, int *fd_out) {
    int fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    if (fd < 0) return error("cannot open output '%s': %s", path, strerror(errno));
    if (lock_fd(fd, path) != 0) return close(fd), -1;
    *fd_out = fd;
    return 0;
}

/* indexes the finished records of an earlier run and keeps them aside (o->kept) for
 * outfile_resume_commit */
static void scan_existing(outfile *o) {
    size_t len;
    char *buf = util_read_file(o->path, &len);
    size_t keep_len = len;
    while (keep_len > 0 && buf[keep_len - 1] != '\n') keep_len--;
    o->dropped = keep_len != len; /* a torn last record */
    int cap = 64;
    o->done_ids = xmalloc(sizeof(char *) * cap);
    o->kept = xmalloc(keep_len + 1);
    for (char *line = buf, *nl; line < buf + keep_len; line = nl + 1) {
        nl = memchr(line, '\n', (size_t)(buf + keep_len - line));
        *nl = 0;
        cJSON *j = cJSON_Parse(line);
        cJSON *id = j ? cJSON_GetObjectItemCaseSensitive(j, "custom_id") : NULL;
        cJSON *fr = j ? cJSON_GetObjectItemCaseSensitive(j, "finish_reason") : NULL;
        int interrupted = cJSON_IsString(fr) && !strcmp(fr->valuestring, "interrupted");
        const cJSON *err = j ? cJSON_GetObjectItemCaseSensitive(j, "error") : NULL;
        int is_error = err && !cJSON_IsNull(err); /* an OpenAI output line holds "error": null */
        if (!j || interrupted || is_error) {
            o->dropped++;
            o->dropped_errors += is_error;
        } else {
            if (cJSON_IsString(id)) {
                if (o->n_done == cap) o->done_ids = xrealloc(o->done_ids, sizeof(char *) * (cap *= 2));
                o->done_ids[o->n_done++] = xstrdup(id->valuestring);
            }
            size_t l = (size_t)(nl - line);
            memcpy(o->kept + o->n_kept, line, l);
            o->kept[o->n_kept + l] = '\n';
            o->n_kept += l + 1;
        }
        cJSON_Delete(j);
    }
    qsort(o->done_ids, (size_t)o->n_done, sizeof(char *), cmp_str);
    o->size = (off_t)len;
    free(buf);
}

int outfile_resume_commit(outfile *o) {
    int rc = 0;
    if (o->dropped) {
        /* replaced atomically. The new file is locked before the rename makes it the output, so
         * that no other run can take its lock in between (the old file's lock is ours until then) */
        char tmp[4096];
        snprintf(tmp, sizeof(tmp), "%s.resume-tmp", o->path);
        int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0666);
        if (fd >= 0 && lock_fd(fd, tmp) != 0) {
            rc = -1;
            close(fd);
        } else if (fd < 0 || write_all(fd, o->kept, o->n_kept) != 0 || sync_fd(fd) != 0) {
            rc = error("cannot write '%s' (to drop %d records before resuming): %s", tmp, o->dropped, strerror(errno));
            if (fd >= 0) close(fd), unlink(tmp);
        } else if (rename(tmp, o->path) != 0) {
            rc = error("cannot replace '%s': %s", o->path, strerror(errno));
            close(fd);
            unlink(tmp);
        } else { /* the old file's lock goes with its descriptor */
            close(o->fd);
            o->fd = fd;
            o->size = (off_t)o->n_kept;
        }
    }
    if (rc == 0 && o->kept)
        fprintf(stderr, "mpillama: resuming '%s': %d finished records kept (their prompts are skipped), %d dropped "
                        "(torn, interrupted or errors: those run again)\n", o->path, o->n_done, o->dropped);
    free(o->kept);
    o->kept = NULL;
    return rc;
}

int outfile_open(outfile *o, const char *path, int resume, int overwrite) {
    memset(o, 0, sizeof(*o));
    o->fd = -1;
    o->path = xstrdup(path);
    if (open_locked(path, &o->fd) != 0) return -1;
    struct stat st;
    if (fstat(o->fd, &st) != 0) return error("cannot open output '%s': %s", path, strerror(errno));
    o->regular = S_ISREG(st.st_mode);
    if (!o->regular) return 0;
    if (resume) {
        if (st.st_size > 0) scan_existing(o);
        return 0;
    }
    /* checked before the model was loaded; checked again under the lock */
    if (st.st_size > 0 && !overwrite)
        return error("output '%s' already holds records: give --resume to keep them and run the rest, "
                     "or --overwrite to replace them", path);
    if (st.st_size > 0 && (ftruncate(o->fd, 0) != 0 || sync_fd(o->fd) != 0))
        return error("cannot empty output '%s': %s", path, strerror(errno));
    return 0;
}

int outfile_has(const outfile *o, const char *id) {
    return o->n_done && bsearch(&id, o->done_ids, (size_t)o->n_done, sizeof(char *), cmp_str) != NULL;
}

void outfile_write(outfile *o, cJSON *rec) {
    char *s = cJSON_PrintUnformatted(rec);
    if (!s) die("out of memory printing a record");
    size_t n = strlen(s);
    s[n] = '\n'; /* cJSON's buffer has room: the NUL becomes the newline */
    if (write_all(o->fd, s, n + 1) != 0 || sync_fd(o->fd) != 0) {
        int e = errno;
        if (o->regular && ftruncate(o->fd, o->size) == 0) sync_fd(o->fd); /* only whole records stay */
        errno = e;
        die_errno("cannot write output '%s' (it keeps its %d whole records of this run and those before; rerun "
                  "with --resume once the cause is fixed)", o->path, o->written);
    }
    o->size += (off_t)(n + 1);
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
    if (o->fd >= 0 && close(o->fd) != 0) die_errno("cannot close output '%s'", o->path);
    for (int i = 0; i < o->n_done; i++) free(o->done_ids[i]);
    free(o->done_ids);
    free(o->kept);
    free(o->path);
    memset(o, 0, sizeof(*o));
    o->fd = -1;
}

cJSON *outfile_meta_read(const outfile *o, int *bad) {
    char path[4096];
    meta_path(o->path, path, sizeof(path));
    *bad = 0;
    if (access(path, F_OK) != 0) return NULL;
    size_t len;
    char *buf = util_read_file(path, &len);
    cJSON *j = cJSON_ParseWithLength(buf, len);
    free(buf);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        *bad = -1;
        return NULL;
    }
    return j;
}

void outfile_meta_write(const outfile *o, const cJSON *meta) {
    char path[4096], tmp[4200];
    meta_path(o->path, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    char *s = cJSON_PrintUnformatted(meta);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    if (fd < 0 || write_all(fd, s, strlen(s)) != 0 || write_all(fd, "\n", 1) != 0 || sync_fd(fd) != 0)
        die_errno("cannot write '%s'", tmp);
    close(fd);
    if (rename(tmp, path) != 0) die_errno("cannot replace '%s'", path);
    free(s);
}
