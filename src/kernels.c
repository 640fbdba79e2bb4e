#include "kernels.h"

#include <cblas.h>
#include <math.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define MM_X86 1
#endif

void kern_rmsnorm(float *out, const float *in, const float *w, int n, int d, float eps) {
    for (int t = 0; t < n; t++) {
        const float *x = in + (int64_t)t * d;
        float *o = out + (int64_t)t * d;
        float ss = 0.0f;
        for (int j = 0; j < d; j++) ss += x[j] * x[j];
        ss = 1.0f / sqrtf(ss / d + eps);
        for (int j = 0; j < d; j++) o[j] = w[j] * (ss * x[j]);
    }
}

/* ---- kern_matmul ----------------------------------------------------------------------------
 * Every implementation computes out[t][c] = dot(in row t, w row c) as one fixed chain: L lanes
 * (8 for AVX2 and the portable code, 16 for AVX-512), lane l accumulating k = l, l + L, ... in
 * order by fused (vector) or plain (portable) multiply-adds, the last partial vector loaded
 * masked with zeros, then the lanes summed by one fixed tree (mm_hsum*, mm_dot_generic). Tiles
 * of R token rows by C weight rows only share loads between those chains; k blocks save and
 * reload the lanes' partial sums exactly; cache blocks, token chunks and threads only reorder
 * whole chains. Nothing that depends on n, or on the thread count, touches an element's
 * arithmetic: batch invariance holds by construction (and test_kernels checks it).
 *
 * Speed (the vector implementations): few token rows (one tile) stream the weights once, tile
 * after tile, many weight rows a tile (memory-bound decode); more rows go by blocks of weight
 * rows that stay in L2 while every tile of token rows passes over them, k cut in blocks whose
 * input rows are copied to a small contiguous buffer (in L1), the next block prefetched, and
 * the token rows cut in chunks that stay in the last-level cache (compute-bound prefill). */

typedef void (*mm_range_fn)(float *out, const float *in, const float *w, int n, int i, int o, int c0, int c1);

/* portable: one non-inlined function computes every element, so every element runs the same
 * code whatever the compiler does to it */
__attribute__((noinline)) static float mm_dot_generic(const float *x, const float *w, int i) {
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int k = 0;
    for (; k + 8 <= i; k += 8)
        for (int l = 0; l < 8; l++) a[l] += x[k + l] * w[k + l];
    for (int l = 0; k + l < i; l++) a[l] += x[k + l] * w[k + l];
    float b0 = a[0] + a[4], b1 = a[1] + a[5], b2 = a[2] + a[6], b3 = a[3] + a[7];
    b0 += b2;
    b1 += b3;
    return b0 + b1;
}

/* out[:, c0:c1] for n token rows: blocks of 64 weight rows (L2) by token row */
static void mm_generic_range(float *out, const float *in, const float *w, int n, int i, int o, int c0, int c1) {
    for (int cb = c0; cb < c1; cb += 64) {
        const int ce = cb + 64 < c1 ? cb + 64 : c1;
        for (int t = 0; t < n; t++)
            for (int c = cb; c < ce; c++)
                out[(int64_t)t * o + c] = mm_dot_generic(in + (int64_t)t * i, w + (int64_t)c * i, i);
    }
}

#ifdef MM_X86
#define MM_AVX2 __attribute__((target("avx2,fma")))
#define MM_AVX512 __attribute__((target("avx512f,avx2,fma")))

/* A tile computes the chains of R token rows (x, row stride ldx) by C weight rows (w, row stride
 * ldw) over k = 0..kn, x and w pointing at the first k of the block; kn is a multiple of the
 * lanes except in a row's last block, whose rest is loaded masked with zeros. mode: MM_ACC_IN
 * starts from the partial sums saved in acc (else from zero); MM_OUT sums the lanes into y
 * (stride ldy), else the partial sums are saved to acc (element (r, c) at acc + r * lda +
 * c * lanes). Saving and reloading is exact, so cutting k into blocks leaves every chain as it
 * is. */
#define MM_ACC_IN 1
#define MM_OUT 2
typedef void (*mm_tile_fn)(float *y, int ldy, const float *x, int ldx, const float *w, int ldw, int kn, float *acc,
                           int lda, int mode);

static const int32_t mm_masktab[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

static inline MM_AVX2 float mm_hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline MM_AVX512 float mm_hsum512(__m512 v) {
    __m256 h = _mm256_add_ps(_mm512_castps512_ps256(v),
                             _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
    return mm_hsum256(h);
}

/* the tile body for vector type V of L lanes; the input vector is pinned to a register (the asm)
 * so that it is loaded once per row, not once per FMA */
#define MM_TILE_BODY(V, L, ZERO, LOAD, LOADA, STOREA, FMA, MASKDECL, MASKLOAD, HSUM)                  \
    V a[8][8];                                                                                        \
    if (mode & MM_ACC_IN) {                                                                           \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                           \
            _Pragma("GCC unroll 8") for (int c = 0; c < C; c++) a[r][c] = LOADA(acc + (int64_t)r * lda + c * L); \
    } else {                                                                                          \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                           \
            _Pragma("GCC unroll 8") for (int c = 0; c < C; c++) a[r][c] = ZERO();                     \
    }                                                                                                 \
    int k = 0;                                                                                        \
    for (; k + L <= kn; k += L) {                                                                     \
        V wv[8];                                                                                      \
        _Pragma("GCC unroll 8") for (int c = 0; c < C; c++) wv[c] = LOAD(w + (int64_t)c * ldw + k);   \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                                         \
            V xv = LOAD(x + (int64_t)r * ldx + k);                                                    \
            __asm__("" : "+v"(xv));                                                                   \
            _Pragma("GCC unroll 8") for (int c = 0; c < C; c++) a[r][c] = FMA(xv, wv[c], a[r][c]);    \
        }                                                                                             \
    }                                                                                                 \
    if (k < kn) {                                                                                     \
        MASKDECL;                                                                                     \
        V wv[8];                                                                                      \
        _Pragma("GCC unroll 8") for (int c = 0; c < C; c++) wv[c] = MASKLOAD(w + (int64_t)c * ldw + k); \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                                         \
            V xv = MASKLOAD(x + (int64_t)r * ldx + k);                                                \
            _Pragma("GCC unroll 8") for (int c = 0; c < C; c++) a[r][c] = FMA(xv, wv[c], a[r][c]);    \
        }                                                                                             \
    }                                                                                                 \
    if (mode & MM_OUT) {                                                                              \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                           \
            _Pragma("GCC unroll 8") for (int c = 0; c < C; c++) y[(int64_t)r * ldy + c] = HSUM(a[r][c]); \
    } else {                                                                                          \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                           \
            _Pragma("GCC unroll 8") for (int c = 0; c < C; c++) STOREA(acc + (int64_t)r * lda + c * L, a[r][c]); \
    }

#define MM_M256_MASK const __m256i m = _mm256_loadu_si256((const __m256i *)(mm_masktab + 8 - (kn - k)))
#define MM_M256_MASKLOAD(p) _mm256_maskload_ps(p, m)
#define MM_M512_MASK const __mmask16 m = (__mmask16)((1u << (kn - k)) - 1)
#define MM_M512_MASKLOAD(p) _mm512_maskz_loadu_ps(m, p)

static inline __attribute__((always_inline)) MM_AVX2 void
mm_avx2_tile(float *y, int ldy, const float *x, int ldx, const float *w, int ldw, int kn, float *acc, int lda,
             int mode, const int R, const int C) {
    MM_TILE_BODY(__m256, 8, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_load_ps, _mm256_store_ps, _mm256_fmadd_ps,
                 MM_M256_MASK, MM_M256_MASKLOAD, mm_hsum256)
}

static inline __attribute__((always_inline)) MM_AVX512 void
mm_avx512_tile(float *y, int ldy, const float *x, int ldx, const float *w, int ldw, int kn, float *acc, int lda,
               int mode, const int R, const int C) {
    MM_TILE_BODY(__m512, 16, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_load_ps, _mm512_store_ps, _mm512_fmadd_ps,
                 MM_M512_MASK, MM_M512_MASKLOAD, mm_hsum512)
}

#define MM_TILE(isa, ATTR, R, C)                                                                              \
    static ATTR void mm_##isa##_##R##x##C(float *y, int ldy, const float *x, int ldx, const float *w, int ldw, \
                                          int kn, float *acc, int lda, int mode) {                           \
        mm_##isa##_tile(y, ldy, x, ldx, w, ldw, kn, acc, lda, mode, R, C);                                   \
    }
#define MM_TILES3(isa, A, R) MM_TILE(isa, A, R, 1) MM_TILE(isa, A, R, 2) MM_TILE(isa, A, R, 3)
#define MM_TILES4(isa, A, R) MM_TILES3(isa, A, R) MM_TILE(isa, A, R, 4)
#define MM_TILES6(isa, A, R) MM_TILES4(isa, A, R) MM_TILE(isa, A, R, 5) MM_TILE(isa, A, R, 6)
#define MM_TILES8(isa, A, R) MM_TILES6(isa, A, R) MM_TILE(isa, A, R, 7) MM_TILE(isa, A, R, 8)
#define MM_ROW3(isa, R) {NULL, mm_##isa##_##R##x1, mm_##isa##_##R##x2, mm_##isa##_##R##x3}
#define MM_ROW4(isa, R) {NULL, mm_##isa##_##R##x1, mm_##isa##_##R##x2, mm_##isa##_##R##x3, mm_##isa##_##R##x4}
#define MM_ROW6(isa, R)                                                                                   \
    {NULL, mm_##isa##_##R##x1, mm_##isa##_##R##x2, mm_##isa##_##R##x3, mm_##isa##_##R##x4, mm_##isa##_##R##x5, \
     mm_##isa##_##R##x6}
#define MM_ROW8(isa, R)                                                                                   \
    {NULL, mm_##isa##_##R##x1, mm_##isa##_##R##x2, mm_##isa##_##R##x3, mm_##isa##_##R##x4, mm_##isa##_##R##x5, \
     mm_##isa##_##R##x6, mm_##isa##_##R##x7, mm_##isa##_##R##x8}

/* AVX2, 16 registers: R x C accumulators, the input vector and the weight vectors (with R = 1
 * the weights are FMA operands) */
MM_TILES8(avx2, MM_AVX2, 1) MM_TILES6(avx2, MM_AVX2, 2) MM_TILES4(avx2, MM_AVX2, 3) MM_TILES3(avx2, MM_AVX2, 4)
/* AVX-512, 32 registers */
MM_TILES8(avx512, MM_AVX512, 1) MM_TILES8(avx512, MM_AVX512, 2) MM_TILES6(avx512, MM_AVX512, 3)
MM_TILES6(avx512, MM_AVX512, 4) MM_TILES4(avx512, MM_AVX512, 5) MM_TILES4(avx512, MM_AVX512, 6)
MM_TILES3(avx512, MM_AVX512, 7) MM_TILES3(avx512, MM_AVX512, 8)

/* a vector implementation: tiles[R][C] for 1 <= R <= rows, 1 <= C <= cols[R] (the widest,
 * used but at the end of a block) */
typedef struct {
    int lanes, rows;
    int cols[9];
    mm_tile_fn tiles[9][9];
} mm_kern;

static const mm_kern mm_avx2_kern = {
    8, 4, {0, 8, 6, 4, 3}, {{NULL}, MM_ROW8(avx2, 1), MM_ROW6(avx2, 2), MM_ROW4(avx2, 3), MM_ROW3(avx2, 4)}};
static const mm_kern mm_avx512_kern = {
    16, 8, {0, 8, 8, 6, 6, 4, 4, 3, 3},
    {{NULL}, MM_ROW8(avx512, 1), MM_ROW8(avx512, 2), MM_ROW6(avx512, 3), MM_ROW6(avx512, 4), MM_ROW4(avx512, 5),
     MM_ROW4(avx512, 6), MM_ROW3(avx512, 7), MM_ROW3(avx512, 8)}};

/* Blocking, tuned on a 2-core AMD EPYC (Zen 4: 32 KiB L1D, 1 MiB L2 per core, 32 MiB L3); it
 * changes speed, never results */
#define MM_KC 512            /* k block (floats) */
#define MM_L2 (384 << 10)    /* bytes of weight rows (whole rows) a block keeps in L2 */
#define MM_BW_MAX 96         /* weight rows per block at most */
#define MM_BW_MIN 24         /* fewer whole rows fit L2: blocks of MM_BW_LONG rows go k block by k block */
#define MM_BW_LONG 48
#define MM_NS_LONG 64        /* ... over MM_NS_LONG token rows at a time */

/* per-thread room for the partial sums of the k blocks, grown on demand (NULL: out of memory) */
static float *mm_acc_room(size_t floats) {
    static __thread float *room;
    static __thread size_t have;
    if (floats > have) {
        free(room);
        room = aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64);
        have = room ? floats : 0;
    }
    return room;
}

/* out[:, c0:c1] for n token rows (see the section's comment). Blocked, the loops are: blocks of
 * bw weight rows; runs of ns token rows; k blocks; tiles of token rows (their k block copied to
 * xp); tiles of weight rows. With short rows (whole rows of the block fit L2) a run is one tile
 * of token rows; with long ones the block's rows only fit k block by k block, and a run of
 * MM_NS_LONG token rows goes over each, so that neither the weights nor the input rows come
 * back from memory too often. */
static void mm_drive(const mm_kern *K, float *out, const float *in, const float *w, int n, int i, int o, int c0,
                     int c1) {
    const int L = K->lanes, rt = K->rows, cm = K->cols[rt];
    if (n <= rt) { /* one tile of token rows: stream the weights, each row once */
        const int C = K->cols[n];
        for (int c = c0; c < c1; c += C)
            K->tiles[n][c1 - c < C ? c1 - c : C](out + c, o, in, i, w + (int64_t)c * i, i, i, NULL, 0, MM_OUT);
        return;
    }
    const int kc = i > MM_KC + MM_KC / 2 ? MM_KC : i, nk = (i + kc - 1) / kc;
    int bw = MM_L2 / (i * 4) / cm * cm, ns = rt;
    if (bw > MM_BW_MAX) bw = MM_BW_MAX / cm * cm;
    if (bw < MM_BW_MIN && nk > 1) bw = MM_BW_LONG / cm * cm, ns = MM_NS_LONG / rt * rt;
    if (bw < cm) bw = cm;
    float *acc = NULL;
    if (nk > 1 && !(acc = mm_acc_room((size_t)ns * bw * L))) { /* no room: a tile at a time */
        for (int t = 0; t < n; t += rt)
            mm_drive(K, out + (int64_t)t * o, in + (int64_t)t * i, w, n - t < rt ? n - t : rt, i, o, c0, c1);
        return;
    }
    const int ldx = nk > 1 ? kc + 16 : i; /* copied rows one cache line off 4 KiB strides (L1 sets) */
    float xp[8 * (MM_KC + 16)] __attribute__((aligned(64)));
    for (int cb = c0; cb < c1; cb += bw) {
        const int ce = cb + bw < c1 ? cb + bw : c1;
        /* the next block's weights (contiguous) go to L2 a little before every tile */
        const char *pf = (const char *)(w + (int64_t)ce * i);
        const char *pf_end = (const char *)(w + (int64_t)(ce + bw < c1 ? ce + bw : c1) * i);
        const int64_t calls = (int64_t)((n + rt - 1) / rt) * nk * ((ce - cb + cm - 1) / cm);
        const int64_t pf_step = ((pf_end - pf) / calls + 63) / 64 * 64;
        for (int ts = 0; ts < n; ts += ns) {
            const int te = ts + ns < n ? ts + ns : n;
            for (int kb = 0; kb < nk; kb++) {
                const int k0 = kb * kc, kn = kb == nk - 1 ? i - k0 : kc;
                const int mode = (kb > 0 ? MM_ACC_IN : 0) | (kb == nk - 1 ? MM_OUT : 0);
                for (int t = ts; t < te; t += rt) {
                    const int R = te - t < rt ? te - t : rt, C = K->cols[R];
                    const float *x = in + (int64_t)t * i + k0;
                    float *y = out + (int64_t)t * o, *a = acc ? acc + (int64_t)(t - ts) * bw * L : NULL;
                    int lx = i;
                    if (nk > 1) {
                        for (int r = 0; r < R; r++) memcpy(xp + r * ldx, x + (int64_t)r * i, sizeof(float) * kn);
                        x = xp, lx = ldx;
                    }
                    for (int c = cb; c < ce; c += C) {
                        for (int64_t j = 0; j < pf_step && pf < pf_end; j += 64, pf += 64)
                            __builtin_prefetch(pf, 0, 2);
                        K->tiles[R][ce - c < C ? ce - c : C](y + c, o, x, lx, w + (int64_t)c * i + k0, i, kn,
                                                             a ? a + (c - cb) * L : NULL, bw * L, mode);
                    }
                }
            }
        }
    }
}

static void mm_avx2_range(float *out, const float *in, const float *w, int n, int i, int o, int c0, int c1) {
    mm_drive(&mm_avx2_kern, out, in, w, n, i, o, c0, c1);
}
static void mm_avx512_range(float *out, const float *in, const float *w, int n, int i, int o, int c0, int c1) {
    mm_drive(&mm_avx512_kern, out, in, w, n, i, o, c0, c1);
}
#endif /* MM_X86 */

/* ---- implementations and the thread pool ---- */

typedef struct {
    const char *name;
    mm_range_fn range;
    int (*supported)(void);
} mm_impl;

static int mm_always(void) { return 1; }
#ifdef MM_X86
static int mm_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

static int mm_has_avx512(void) {
    __builtin_cpu_init();
    return mm_has_avx2() && __builtin_cpu_supports("avx512f");
}
#endif

static const mm_impl mm_impls[] = {
#ifdef MM_X86
    {"avx2", mm_avx2_range, mm_has_avx2},
    {"avx512", mm_avx512_range, mm_has_avx512},
#endif
    {"generic", mm_generic_range, mm_always},
};
#define MM_NIMPLS ((int)(sizeof(mm_impls) / sizeof(mm_impls[0])))

static _Atomic(const mm_impl *) mm_cur;

int kern_matmul_use(const char *name) {
    for (int k = 0; k < MM_NIMPLS; k++)
        if ((!name || !strcmp(name, mm_impls[k].name)) && mm_impls[k].supported()) {
            atomic_store(&mm_cur, &mm_impls[k]);
            return 0;
        }
    return -1;
}

static const mm_impl *mm_get(void) {
    const mm_impl *m = atomic_load(&mm_cur);
    if (m) return m;
    const char *env = getenv("MPILLAMA_MATMUL");
    if (!env || !*env || kern_matmul_use(env) != 0) kern_matmul_use(NULL);
    return atomic_load(&mm_cur);
}

const char *kern_matmul_impl(void) { return mm_get()->name; }

/* ---- threads: a pool of workers started on first use (they inherit the process's binding) ----
 * The work is cut into units (a chunk of token rows by a range of weight rows) handed out in
 * order through one atomic ticket: the caller works too, and a worker that is late (asleep,
 * descheduled, sharing a core with OpenBLAS's spinning threads) just takes fewer units. */
#define MM_MAX_THREADS 64
#define MM_XB (4 << 20)    /* bytes of token rows per chunk (the chunk stays in the last-level cache) */
#define MM_SPIN_S 200e-6   /* an idle worker spins this long for the next job, then sleeps */

static struct {
    pthread_mutex_t busy; /* one call at a time uses the workers (others compute alone) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* job generation (bits 32..63), units (16..31), next unit (0..15) */
    _Atomic uint64_t ticket;
    atomic_int done;    /* units finished */
    atomic_int parts;   /* threads that may take part, the caller included */
    int nworkers;
    /* the job, written before its ticket */
    mm_range_fn fn;
    float *out;
    const float *in, *w;
    int n, i, o, nb, ub, ucols; /* nb token rows a chunk, ub weight rows a unit, ucols units a chunk */
} mm_pool = {.busy = PTHREAD_MUTEX_INITIALIZER, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static inline void mm_relax(void) {
#ifdef MM_X86
    _mm_pause();
#endif
}

static double mm_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

/* takes and computes units of job gen until none is left */
static void mm_work(uint64_t gen) {
    uint64_t tk = atomic_load_explicit(&mm_pool.ticket, memory_order_acquire);
    for (;;) {
        const unsigned units = (unsigned)(tk >> 16) & 0xffff, u = (unsigned)tk & 0xffff;
        if (tk >> 32 != gen || u >= units) return;
        if (!atomic_compare_exchange_weak_explicit(&mm_pool.ticket, &tk, tk + 1, memory_order_acquire,
                                                   memory_order_acquire))
            continue;
        /* the job can't change before this unit is done */
        const int t0 = (int)(u / mm_pool.ucols) * mm_pool.nb, c0 = (int)(u % mm_pool.ucols) * mm_pool.ub;
        const int tn = mm_pool.n - t0 < mm_pool.nb ? mm_pool.n - t0 : mm_pool.nb;
        const int c1 = c0 + mm_pool.ub < mm_pool.o ? c0 + mm_pool.ub : mm_pool.o;
        mm_pool.fn(mm_pool.out + (int64_t)t0 * mm_pool.o, mm_pool.in + (int64_t)t0 * mm_pool.i, mm_pool.w, tn,
                   mm_pool.i, mm_pool.o, c0, c1);
        atomic_fetch_add_explicit(&mm_pool.done, 1, memory_order_release);
        tk = atomic_load_explicit(&mm_pool.ticket, memory_order_acquire);
    }
}

typedef struct {
    int id;
    uint64_t gen; /* the generation when it was started: it waits for the next */
} mm_worker_arg;

static void *mm_worker(void *argp) {
    const mm_worker_arg arg = *(mm_worker_arg *)argp;
    free(argp);
    sigset_t all; /* the process's signals go to its own threads */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    uint64_t seen = arg.gen;
    for (;;) {
        double t0 = 0;
        for (unsigned spins = 0;; spins++) {
            if (atomic_load_explicit(&mm_pool.ticket, memory_order_acquire) >> 32 != seen) break;
            mm_relax();
            if ((spins & 63) != 63) continue;
            sched_yield(); /* a core shared with other threads (OpenBLAS's) goes to them */
            const double t = mm_now();
            if (t0 == 0) t0 = t;
            else if (t - t0 > MM_SPIN_S) {
                pthread_mutex_lock(&mm_pool.mu);
                while (atomic_load_explicit(&mm_pool.ticket, memory_order_acquire) >> 32 == seen)
                    pthread_cond_wait(&mm_pool.cv, &mm_pool.mu);
                pthread_mutex_unlock(&mm_pool.mu);
            }
        }
        seen = atomic_load_explicit(&mm_pool.ticket, memory_order_acquire) >> 32;
        if (arg.id < atomic_load_explicit(&mm_pool.parts, memory_order_relaxed)) mm_work(seen);
    }
    return NULL;
}

/* starts workers up to nw (holding busy); returns how many there are */
static int mm_grow(int nw) {
    while (mm_pool.nworkers < nw) {
        mm_worker_arg *arg = malloc(sizeof(*arg));
        if (!arg) break;
        arg->id = mm_pool.nworkers + 1;
        arg->gen = atomic_load(&mm_pool.ticket) >> 32;
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        const int rc = pthread_create(&th, &at, mm_worker, arg);
        pthread_attr_destroy(&at);
        if (rc != 0) {
            free(arg);
            break;
        }
        mm_pool.nworkers++;
    }
    return mm_pool.nworkers;
}

/* threads worth waking: the work must pay for it (a wake-up costs some 10-50 us) */
static int mm_threads(int n, int i, int o) {
    int t = openblas_get_num_threads();
    if (t > MM_MAX_THREADS) t = MM_MAX_THREADS;
    const double est = 4.0 * o * i / 20e9 + 2.0 * n * o * (double)i / 80e9; /* seconds on one core, roughly */
    while (t > 1 && (est / t < 20e-6 || o / t < 48)) t--;
    return t < 1 ? 1 : t;
}

void kern_matmul(float *out, const float *in, const float *w, int n, int i, int o) {
    if (n <= 0 || o <= 0) return;
    const mm_impl *m = mm_get();
    if (i <= 0) {
        memset(out, 0, sizeof(float) * n * (size_t)o);
        return;
    }
    /* token chunks: nb rows, a multiple of 8 */
    int nb = (int)(MM_XB / ((int64_t)i * 4)) / 8 * 8;
    if (nb < 8) nb = 8;
    const int chunks = (n + nb - 1) / nb;
    int t = mm_threads(n, i, o);
    if (t <= 1 || chunks > 0xffff || pthread_mutex_trylock(&mm_pool.busy) != 0) {
        for (int t0 = 0; t0 < n; t0 += nb)
            m->range(out + (int64_t)t0 * o, in + (int64_t)t0 * i, w, n - t0 < nb ? n - t0 : nb, i, o, 0, o);
        return;
    }
    const int nw = mm_grow(t - 1);
    if (nw + 1 < t) t = nw + 1;
    /* units: a chunk of token rows by ub weight rows, ub a multiple of 48, about 16 units a thread */
    int ub = (o + 16 * t - 1) / (16 * t);
    ub = (ub + 47) / 48 * 48;
    while ((int64_t)chunks * ((o + ub - 1) / ub) > 0xffff) ub += 48;
    const int ucols = (o + ub - 1) / ub, units = chunks * ucols;
    mm_pool.fn = m->range;
    mm_pool.out = out, mm_pool.in = in, mm_pool.w = w;
    mm_pool.n = n, mm_pool.i = i, mm_pool.o = o, mm_pool.nb = nb, mm_pool.ub = ub, mm_pool.ucols = ucols;
    atomic_store_explicit(&mm_pool.done, 0, memory_order_relaxed);
    atomic_store_explicit(&mm_pool.parts, t, memory_order_relaxed);
    const uint64_t gen = ((atomic_load_explicit(&mm_pool.ticket, memory_order_relaxed) >> 32) + 1) & 0xffffffffu;
    pthread_mutex_lock(&mm_pool.mu);
    atomic_store_explicit(&mm_pool.ticket, gen << 32 | (uint64_t)units << 16, memory_order_release);
    pthread_cond_broadcast(&mm_pool.cv);
    pthread_mutex_unlock(&mm_pool.mu);
    mm_work(gen);
    while (atomic_load_explicit(&mm_pool.done, memory_order_acquire) < units) mm_relax();
    pthread_mutex_unlock(&mm_pool.busy);
}

void kern_rope_freqs(float *inv_freq, int head_size, float theta, int llama3, float factor,
                     float low_freq_factor, float high_freq_factor, int original_max_pos) {
    for (int j = 0; j < head_size / 2; j++) {
        float f = 1.0f / powf(theta, (float)(2 * j) / (float)head_size);
        if (llama3) {
            float low_wavelen = original_max_pos / low_freq_factor;
            float high_wavelen = original_max_pos / high_freq_factor;
            float wavelen = 2.0f * (float)M_PI / f;
            if (wavelen > low_wavelen) {
                f = f / factor;
            } else if (wavelen >= high_wavelen) {
                float smooth = (original_max_pos / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                f = (1.0f - smooth) * f / factor + smooth * f;
            }
        }
        inv_freq[j] = f;
    }
}

void kern_rope(float *x, const int *pos, const float *inv_freq, int n, int n_heads, int head_size) {
    for (int t = 0; t < n; t++) {
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((int64_t)t * n_heads + h) * head_size;
            for (int j = 0; j < head_size / 2; j++) {
                float a = pos[t] * inv_freq[j];
                float c = cosf(a), s = sinf(a);
                float v0 = v[2 * j], v1 = v[2 * j + 1];
                v[2 * j] = v0 * c - v1 * s;
                v[2 * j + 1] = v0 * s + v1 * c;
            }
        }
    }
}

void kern_attention(float *out, const float *q, const float *kcache, const float *vcache,
                    const int *pos, const int *slot, int n, const kern_attn_dims *dd, float *att) {
    const int hs = dd->head_size, kvd = dd->n_kv * hs;
    const float scale = 1.0f / sqrtf((float)hs);
    for (int t = 0; t < n; t++) {
        const int len = pos[t] + 1;
        const float *kbase = kcache + (int64_t)slot[t] * dd->seq_len * kvd;
        const float *vbase = vcache + (int64_t)slot[t] * dd->seq_len * kvd;
        for (int h = 0; h < dd->n_heads; h++) {
            const int kvh = (dd->head0 + h) / dd->kv_mul - dd->kv_head0;
            const float *qh = q + ((int64_t)t * dd->n_heads + h) * hs;
            float *a = att + (int64_t)h * dd->seq_len;
            /* scores (len) = K (len, hs; row stride kvd) . q */
            cblas_sgemv(CblasRowMajor, CblasNoTrans, len, hs, scale, kbase + kvh * hs, kvd, qh, 1, 0.0f, a, 1);
            kern_softmax(a, len);
            /* out (hs) = V^T (hs, len) . a */
            cblas_sgemv(CblasRowMajor, CblasTrans, len, hs, 1.0f, vbase + kvh * hs, kvd, a, 1, 0.0f,
                        out + ((int64_t)t * dd->n_heads + h) * hs, 1);
        }
    }
}

void kern_swiglu(float *gate, const float *up, int64_t len) {
    for (int64_t i = 0; i < len; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void kern_add(float *x, const float *y, int64_t len) {
    for (int64_t i = 0; i < len; i++) x[i] += y[i];
}

void kern_softmax(float *x, int n) {
    float m = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > m) m = x[i];
    float s = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        s += x[i];
    }
    for (int i = 0; i < n; i++) x[i] /= s;
}

float kern_log_softmax_at(const float *x, int n, int idx) {
    double m = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > m) m = x[i];
    double s = 0.0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - m);
    return (float)((double)x[idx] - m - log(s));
}
