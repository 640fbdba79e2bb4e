/* outfile: the output JSONL. Each record is one line, appended whole and made durable at once
 * (write + flush + fsync), so a killed job loses no finished record and tears at most the line
 * being written. --resume keeps the finished records and skips their custom_ids; a torn last
 * line and records of requests that were "interrupted" are dropped (they run again). */
#ifndef MPILLAMA_OUTFILE_H
#define MPILLAMA_OUTFILE_H

#include <cJSON.h>
#include <stdio.h>

typedef struct {
    FILE *f;
    char *path;
    char **done_ids;  /* (n_done) sorted custom_ids already finished in the file */
    int n_done;
    int written, errors, interrupted, dropped;
} outfile;

/* opens path for writing (truncating) or, with resume, keeps its finished records. Dies with a
 * one-line message naming the path when it cannot be opened. */
void outfile_open(outfile *o, const char *path, int resume);
/* 1 when custom_id already has a finished record (resume) */
int outfile_has(const outfile *o, const char *custom_id);
/* appends rec as one line and syncs it; frees rec. Dies naming the path on a write error. */
void outfile_write(outfile *o, cJSON *rec);
/* an error record: custom_id, line, error */
void outfile_error(outfile *o, const char *custom_id, int line, const char *why);
void outfile_close(outfile *o);

#endif
