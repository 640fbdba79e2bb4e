#include "util.h"

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>
#include <time.h>

static int g_rank = 0;
static void (*g_abort)(int) = NULL;
#ifdef NDEBUG
static int g_verbose = 0;
#else
static int g_verbose = 1; /* a debug build always shows where */
#endif

void util_set_verbose(int verbose) {
    if (verbose) g_verbose = 1;
}

/* die()'s prefix: for the user one line without source paths; with --verbose or in a debug
 * build the rank and where */
static void die_prefix(char *buf, size_t cap, const char *file, int line) {
    if (g_verbose) snprintf(buf, cap, "[rank %d] %s:%d: ", g_rank, file, line);
    else snprintf(buf, cap, "mpillama: error: ");
}

void util_set_rank(int rank) { g_rank = rank; }
int util_rank(void) { return g_rank; }
void util_set_abort(void (*abort_fn)(int)) { g_abort = abort_fn; }

static sigjmp_buf *g_try; /* the innermost util_try's return point */

static void try_abort(int code) {
    (void)code;
    siglongjmp(*g_try, 1);
}

int util_try(void (*fn)(void *arg), void *arg) {
    sigjmp_buf here, *const outer = g_try;
    void (*const hook)(int) = g_abort;
    volatile int rc = -1;
    g_try = &here;
    g_abort = try_abort;
    if (sigsetjmp(here, 0) == 0) {
        fn(arg);
        rc = 0;
    }
    g_try = outer;
    g_abort = hook;
    return rc;
}

/* prints the whole message with one write, so that ranks dying together don't interleave, and
 * aborts. Ranks other than 0 wait a moment first: when every rank meets the same bad input,
 * rank 0's abort ends the job and its one message is what the user reads. */
static void __attribute__((noreturn)) finish_die(const char *msg) {
    fflush(stdout);
    if (g_rank != 0) {
        struct timespec ts = {0, 300 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    fputs(msg, stderr);
    fflush(stderr);
    if (g_abort) g_abort(1);
    exit(1);
}

static void vformat(char *buf, size_t cap, const char *prefix, const char *fmt, va_list ap, const char *suffix) {
    size_t n = (size_t)snprintf(buf, cap, "%s", prefix);
    if (n < cap) n += (size_t)vsnprintf(buf + n, cap - n, fmt, ap);
    if (n < cap) snprintf(buf + n, cap - n, "%s\n", suffix);
    else snprintf(buf + cap - 5, 5, "...\n");
}

void util_die(const char *file, int line, const char *fmt, ...) {
    char prefix[256], buf[4096];
    die_prefix(prefix, sizeof(prefix), file, line);
    va_list ap;
    va_start(ap, fmt);
    vformat(buf, sizeof(buf), prefix, fmt, ap, "");
    va_end(ap);
    finish_die(buf);
}

void util_die_errno(const char *file, int line, const char *fmt, ...) {
    int e = errno;
    char prefix[256], suffix[256], buf[4096];
    die_prefix(prefix, sizeof(prefix), file, line);
    snprintf(suffix, sizeof(suffix), ": %s", strerror(e));
    va_list ap;
    va_start(ap, fmt);
    vformat(buf, sizeof(buf), prefix, fmt, ap, suffix);
    va_end(ap);
    finish_die(buf);
}

int error(const char *fmt, ...) {
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vformat(buf, sizeof(buf), "mpillama: error: ", fmt, ap, "");
    va_end(ap);
    fputs(buf, stderr);
    return -1;
}

void warning(const char *fmt, ...) {
    char buf[4096];
    va_list ap;
    va_start(ap, fmt);
    vformat(buf, sizeof(buf), "mpillama: warning: ", fmt, ap, "");
    va_end(ap);
    fputs(buf, stderr);
}

void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) die("out of memory allocating %zu bytes", n);
    return p;
}

void *xcalloc(size_t count, size_t size) {
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p) die("out of memory allocating %zu x %zu bytes", count, size);
    return p;
}

void *xrealloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) die("out of memory reallocating %zu bytes", n);
    return q;
}

char *xstrdup(const char *s) {
    char *d = strdup(s);
    if (!d) die("out of memory");
    return d;
}

FILE *xfopen(const char *path, const char *mode) {
    FILE *f = fopen(path, mode);
    if (!f) die_errno("cannot open '%s'", path);
    return f;
}

char *util_read_file(const char *path, size_t *len) {
    FILE *f = xfopen(path, "rb");
    size_t cap = 1 << 16, n = 0;
    char *buf = xmalloc(cap);
    for (;;) {
        if (n + 1 >= cap) buf = xrealloc(buf, cap *= 2);
        size_t r = fread(buf + n, 1, cap - n - 1, f);
        n += r;
        if (r == 0) break;
    }
    if (ferror(f)) die_errno("cannot read '%s'", path);
    fclose(f);
    buf[n] = 0;
    if (len) *len = n;
    return buf;
}

int util_product_ok(const int64_t *factors, int n, int64_t *out) {
    int64_t r = 1;
    for (int i = 0; i < n; i++)
        if (!util_mul_ok(r, factors[i], &r)) return 0;
    *out = r;
    return 1;
}

double util_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

uint16_t util_f32_to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN */
    u += 0x7fffu + ((u >> 16) & 1); /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float util_bf16_to_f32(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float util_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, u;
    if (exp == 0) {
        if (mant == 0) {
            u = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) {
                mant <<= 1;
                exp--;
            }
            mant &= 0x3ff;
            u = sign | (exp << 23) | (mant << 13);
        }
    } else if (exp == 31) {
        u = sign | 0x7f800000u | (mant << 13);
    } else {
        u = sign | ((exp - 15 + 127) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

uint64_t util_fnv1a64(const void *p, size_t n, uint64_t h) {
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

void util_advise_huge(void *p, size_t bytes) {
#ifdef MADV_HUGEPAGE
    if (bytes >= UTIL_HUGE_PAGE) madvise(p, bytes / UTIL_HUGE_PAGE * UTIL_HUGE_PAGE, MADV_HUGEPAGE);
#else
    (void)p, (void)bytes;
#endif
}

void *util_alloc_huge(size_t bytes) {
    void *p = NULL;
    if (posix_memalign(&p, UTIL_HUGE_PAGE, bytes ? bytes : 1) != 0) return NULL;
    util_advise_huge(p, bytes);
    return p;
}
