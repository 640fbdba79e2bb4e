/* outfile: the output JSONL. Each record is one line, appended whole and made durable at once
 * (write + fsync), so a killed job loses no finished record and tears at most the line being
 * written; a failed write (a full disk) cuts the file back to its whole records before the job
 * ends. An advisory lock (flock) keeps a second run off a file that a run is writing.
 *
 * Finished work is never destroyed: an existing non-empty file is appended to only with
 * --resume and replaced only with --overwrite. --resume keeps the finished records and skips
 * their custom_ids; a torn last line, records of "interrupted" requests and error records are
 * dropped (those requests run again).
 *
 * Beside a regular output file OUT lives OUT.meta.json: what its records come from (the command,
 * the model file's fingerprint, a hash of each request line by custom_id), so that --resume
 * refuses records of another model or of changed requests. */
#ifndef MPILLAMA_OUTFILE_H
#define MPILLAMA_OUTFILE_H

#include <cJSON.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct {
    int fd;
    char *path;
    int regular;      /* a regular file (else a device or FIFO: no lock file games, no resume) */
    off_t size;       /* bytes of whole records in the file */
    char **done_ids;  /* (n_done) sorted custom_ids already finished in the file */
    int n_done;
    int written, errors, interrupted;
    int dropped;      /* records dropped on --resume: torn, interrupted, errors */
    int dropped_errors;
    char *kept;       /* (n_kept) --resume: the records kept, until outfile_resume_commit */
    size_t n_kept;
} outfile;

/* may a job write path? Refuses (printing why, -1) an existing non-empty file without resume or
 * overwrite, a missing folder, a path that is not writable, a folder. Changes nothing. */
int outfile_check(const char *path, int resume, int overwrite);
/* opens path and takes its lock; with resume indexes the finished records (see above) and
 * changes nothing yet, else empties the file. 0, or -1 after printing why (another run holds the
 * lock, not writable). */
int outfile_open(outfile *o, const char *path, int resume, int overwrite);
/* --resume, once the records were found to belong to this job: drops the torn, interrupted and
 * error records from the file (replacing it atomically). 0, or -1 after printing why. */
int outfile_resume_commit(outfile *o);
/* 1 when custom_id already has a finished record (resume) */
int outfile_has(const outfile *o, const char *custom_id);
/* appends rec as one line and syncs it; frees rec. On a failed write, cuts the file back to its
 * whole records and dies naming the path. */
void outfile_write(outfile *o, cJSON *rec);
/* an error record: custom_id, line, error */
void outfile_error(outfile *o, const char *custom_id, int line, const char *why);
void outfile_close(outfile *o);

/* OUT.meta.json: reads it (NULL when absent; -1 in *bad when unreadable) and writes it
 * atomically (dies on failure) */
cJSON *outfile_meta_read(const outfile *o, int *bad);
void outfile_meta_write(const outfile *o, const cJSON *meta);

#endif
