/* util: fatal errors, checked libc wrappers, timing. No MPI here: the distributed
 * layer registers an abort hook so that die() takes the whole job down. */
#ifndef MPILLAMA_UTIL_H
#define MPILLAMA_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* die(): print "[rank r] file:line: message" to stderr and abort the job (through the hook
 * registered with util_set_abort, else exit(1)). Use for every unrecoverable error. */
#define die(...) util_die(__FILE__, __LINE__, __VA_ARGS__)
/* die_errno(): like die(), with ": strerror(errno)" appended. */
#define die_errno(...) util_die_errno(__FILE__, __LINE__, __VA_ARGS__)
/* check(cond, ...): stays on in release builds; dies with the message when cond is false. */
#define check(cond, ...)                   \
    do {                                   \
        if (!(cond)) die(__VA_ARGS__);     \
    } while (0)

void util_die(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
void util_die_errno(const char *file, int line, const char *fmt, ...)
    __attribute__((noreturn, format(printf, 3, 4)));
/* error(): print "mpillama: message" and return -1, so callers write `return error(...)`. */
int error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void warning(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* the rank printed by die(); the hook is called with exit code 1 and must not return */
void util_set_rank(int rank);
int util_rank(void);
void util_set_abort(void (*abort_fn)(int code));

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
FILE *xfopen(const char *path, const char *mode);
/* read a whole file; dies naming the path on failure. *len gets the byte count. */
char *util_read_file(const char *path, size_t *len);

double util_now(void); /* seconds, monotonic */
uint16_t util_f32_to_bf16(float f);
float util_bf16_to_f32(uint16_t h);
float util_f16_to_f32(uint16_t h);

#endif
