/* util: fatal errors, checked libc wrappers, timing. No MPI here: the distributed
 * layer registers an abort hook so that die() takes the whole job down. */
#ifndef MPILLAMA_UTIL_H
#define MPILLAMA_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* die(): print "mpillama: error: message" to stderr and abort the job (through the hook
 * registered with util_set_abort, else exit(1)). With util_set_verbose or in a debug build the
 * prefix is "[rank r] file:line: ". Use for every unrecoverable error. */
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
/* die() messages name the rank and source line (--verbose) */
void util_set_verbose(int verbose);
int util_rank(void);
void util_set_abort(void (*abort_fn)(int code));
/* runs fn(arg) with die() turned into a return: 0, or -1 after die() printed its one line. What
 * fn had allocated or opened when it died stays so: for checks made before a process exits. */
int util_try(void (*fn)(void *arg), void *arg);

/* Memory the kernels stream (weights): aligned to a huge page and advised to use them
 * (MADV_HUGEPAGE; transparent huge pages in "madvise" mode), so that reading it costs a TLB miss
 * a 2 MiB page instead of one a 4 KiB page: on a virtual machine, where a miss walks two page
 * tables, a 2-thread read measured 55 GB/s on huge pages against 31-32 on small ones. */
#define UTIL_HUGE_PAGE ((size_t)2 << 20)
void util_advise_huge(void *p, size_t bytes);
/* bytes (at least one) of such memory, huge-page aligned and advised; NULL when out of memory
 * (free() releases it) */
void *util_alloc_huge(size_t bytes);

void *xmalloc(size_t n);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
FILE *xfopen(const char *path, const char *mode);
/* read a whole file; dies naming the path on failure. *len gets the byte count. */
char *util_read_file(const char *path, size_t *len);

/* checked arithmetic for sizes that come from files: 1 with *out set when the result fits,
 * 0 (and *out untouched) on overflow or a negative operand. Use these, not ad-hoc checks,
 * wherever a count read from an untrusted header is multiplied or added. */
static inline int util_mul_ok(int64_t a, int64_t b, int64_t *out) {
    int64_t r;
    if (a < 0 || b < 0 || __builtin_mul_overflow(a, b, &r)) return 0;
    *out = r;
    return 1;
}
static inline int util_add_ok(int64_t a, int64_t b, int64_t *out) {
    int64_t r;
    if (a < 0 || b < 0 || __builtin_add_overflow(a, b, &r)) return 0;
    *out = r;
    return 1;
}
/* a * b * c ... of n non-negative factors; 0 on overflow */
int util_product_ok(const int64_t *factors, int n, int64_t *out);
/* FNV-1a, 64 bits, continuing from h (UTIL_FNV1A64_INIT to start): an identity, not a checksum
 * against an adversary */
#define UTIL_FNV1A64_INIT 0xcbf29ce484222325ULL
uint64_t util_fnv1a64(const void *p, size_t n, uint64_t h);

double util_now(void); /* seconds, monotonic */
uint16_t util_f32_to_bf16(float f);
float util_bf16_to_f32(uint16_t h);
float util_f16_to_f32(uint16_t h);

#endif
