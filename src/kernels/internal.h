/* kernels/internal.h: what the files of src/kernels/ share (not part of the public API) */
#ifndef MPILLAMA_KERNELS_INTERNAL_H
#define MPILLAMA_KERNELS_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "kernels.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define KERN_X86 1
#endif

/* Decode (one token row) streams each weight once, C rows side by side: C streams for the
 * hardware prefetchers. Rows shorter than this go one at a time (read at ascending addresses),
 * longer ones two at a time (two independent chains, streams long enough to follow). Measured
 * (bench_matmul, n 1, 2 threads, medians of 8 alternated runs, GB/s of weights, 1 row / 2 rows /
 * the 6-8 rows before): 32000x2048 f32 29.4 / 27.2 / 31.9, bf16 33.4 / 26.2 / 30.4, q8 28.3 /
 * 19.1 / 18-26; 2048x8192 f32 31.9 / 39.7, bf16 42.7 / 49.3. */
#define KERN_LONG_ROW (16 << 10)
/* decode (one token row) in the q8 and packed kernels prefetches its weights this many bytes
 * ahead in each stream: the out-of-order window alone keeps too few lines in flight (q8,
 * bench_matmul --cold, n 1, medians of 5 alternated runs, GB/s: 2048x8192 25.2 against 19.4
 * without, 2048x2048 22.5 / 19.5, 32000x2048 32.0 / 26.4; 8 KiB ahead did worse). Distance and
 * hint are settable with -D to try others: on 2026-12-02's Zen 4, 2 and 8 KiB ahead and the T1 and
 * NTA hints streamed no faster (4-5 alternated rounds, every type). */
#ifndef KERN_PF_AHEAD
#define KERN_PF_AHEAD 4096
#endif
#ifndef KERN_PF_HINT
#define KERN_PF_HINT _MM_HINT_T0
#endif
#ifdef KERN_X86
#include <immintrin.h>
/* Batches of a few tiles of token rows (the q8 and packed kernels' Q8_PAIRS_N / BP_PAIRS_N) bring
 * the next tiles' weights into L2 while these compute, each tile a share, `count` lines a step:
 * lines [at, at + count) of the region from p on, none at or past its end-th. Always inlined: a
 * call that GCC declines to inline (the tiles are large) is one without effects to its eyes, and
 * it drops it (seen: every prefetch gone, q8 decode 32 10% slower). */
static inline __attribute__((always_inline)) void kern_prefetch_l2(const uint8_t *p, int64_t at, int count, int64_t end) {
    for (int l = 0; l < count && at + l < end; l++) _mm_prefetch((const char *)(p + (at + l) * 64), _MM_HINT_T1);
}
#endif

/* ---- matmul implementations ----
 * A range function computes out[:, c0:c1] (row stride o) for n token rows; the input rows (row
 * stride i) are f32 for f32 weights and the prepared activations otherwise (see kern_act). */
typedef void (*kern_f32_range_fn)(float *out, const float *in, const float *w, int64_t ldw, int n, int i, int o,
                                  int c0, int c1);

void kern_f32_generic_range(float *out, const float *in, const float *w, int64_t ldw, int n, int i, int o, int c0,
           int c1);
#ifdef KERN_X86
void kern_f32_avx2_range(float *out, const float *in, const float *w, int64_t ldw, int n, int i, int o, int c0,
        int c1);
void kern_f32_avx512_range(float *out, const float *in, const float *w, int64_t ldw, int n, int i, int o, int c0,
          int c1);
#endif

/* element (r, k) of the packed bf16 or f32 matrix w (i inputs) as f32 */
static inline float kern_packed_at(const kern_wmat *w, int64_t i, int64_t r, int64_t k) {
    const int64_t es = (int64_t)kern_dtype_size(w->dtype), b = k * es, steps = i * es / 4; /* 4-byte steps a row */
    const uint8_t *p = (const uint8_t *)w->data + ((r / 16) * (steps / 16) + b / 64) * (int64_t)KERN_PACK_CHUNK +
                       (b % 64 / 4) * 64 + (r % 16) * 4 + b % 4;
    if (es == 4) {
        float v;
        memcpy(&v, p, 4);
        return v;
    }
    uint16_t h;
    memcpy(&h, p, 2);
    return kern_bf16_to_f32(h);
}

/* element (r, k) of w (i inputs, any dtype or layout) as f32 (q8: scale x q) */
static inline float kern_wmat_at(const kern_wmat *w, int64_t i, int64_t r, int64_t k) {
    if (w->dtype == KERN_Q8) {
        float s;
        const int8_t q = kern_q8_at(w, i, r, k, &s);
        return s * (float)q;
    }
    if (w->packed) return kern_packed_at(w, i, r, k);
    const int64_t at = r * kern_wmat_ld(w, (int)i) + k;
    return w->dtype == KERN_BF16 ? kern_bf16_to_f32(((const uint16_t *)w->data)[at]) : ((const float *)w->data)[at];
}

/* the mask of a 16-lane vector's first min(left, 16) lanes (a row's last, partial vector) */
static inline uint16_t kern_tail16(int64_t left) { return left >= 16 ? 0xffff : (uint16_t)((1u << left) - 1); }

/* 4 bytes at p, whatever their alignment (a broadcast operand) */
static inline uint32_t kern_ld32(const void *p) {
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* activations for the w ranges, prepared once per call for bf16 and q8 weights:
 *   bf16: x (n, i) bf16 bits (the rounded activations)
 *   q8:   q (n, i) int8 (kern_quantize_q8) or qc (q with its corrections, for unsigned x signed
 *         dot products), scale (n, i / 32) */
typedef struct {
    const float *f;    /* (n, i) f32: the activations as given */
    const uint16_t *x; /* (n, i) bf16 */
    const int8_t *q;   /* (n, i) */
    const int8_t *qc;  /* (n, KERN_QC_ROW(i)): row t is q's row t (i bytes), then (i / 32) int32
                          -128 x the sum of each block of its q (vpdpbusd's correction for weights
                          stored + 128) */
    const float *scale; /* (n, i / 32) */
} kern_act;

#define KERN_QC_ROW(i) ((int64_t)(i) + (i) / 8) /* bytes of a row of kern_act.qc */

typedef void (*kern_w_range_fn)(float *out, const kern_act *a, const kern_wmat *w, int n, int i, int o, int c0,
                                int c1);
/* the preparation an implementation needs */
#define KERN_NEED_BF16 1
#define KERN_NEED_Q 2
#define KERN_NEED_QC 4

void kern_bf16_generic_range(float *out, const kern_act *a, const kern_wmat *w, int n, int i, int o, int c0, int c1);
void kern_q8_generic_range(float *out, const kern_act *a, const kern_wmat *w, int n, int i, int o, int c0, int c1);
#ifdef KERN_X86
void kern_bf16_avx2_range(float *out, const kern_act *a, const kern_wmat *w, int n, int i, int o, int c0, int c1);
void kern_bf16_avx512_range(float *out, const kern_act *a, const kern_wmat *w, int n, int i, int o, int c0, int c1);
/* the vdpbf16ps code on matrices packed at load (kern_pack; matmul_packed_avx512.c): x the
 * bf16 activations, fma: the widened FMAs in place of vdpbf16ps (the caller sets DAZ | FTZ) */
void kern_bf16p_avx512_range(float *out, const uint16_t *x, const kern_wmat *w, int n, int i, int o, int c0, int c1,
                             int fma);
/* f32 on matrices packed at load (kern_pack): one FMA a line, a fixed chain over the inputs in
 * order per element (a->f) */
void kern_f32p_avx512_range(float *out, const kern_act *a, const kern_wmat *w, int n, int i, int o, int c0, int c1);
/* AMX-BF16 tiles on packed matrices (the vdpbf16ps code on the others); kern_amx_bf16_ok: the CPU
 * has AMX-BF16 and the kernel lets this process use it */
void kern_bf16_amx_range(float *out, const kern_act *a, const kern_wmat *w, int n, int i, int o, int c0, int c1);
int kern_amx_bf16_ok(void);
/* kern_peak_gops's loop for AMX-BF16: KERN_AMX_PEAK_TRIPS x 4 tdpbf16ps of 16 x 16 x 32 */
#define KERN_AMX_PEAK_TRIPS 2000
float kern_amx_bf16_peak(void);
/* whether the AVX-512 bf16 code's tiles of several token rows emulate vdpbf16ps with f32 FMAs on
 * the widened operands (the same bits: vdpbf16ps adds a lane's odd product, then its even one,
 * each exact and rounded once, as an FMA does; denormals flushed on both sides, DAZ | FTZ while
 * the FMAs run, but for a denormal product added to a tiny sum, which vdpbf16ps flushes before
 * the addition): where the CPU runs FMAs over 2.5x as fast as
 * vdpbf16ps (measured once a process, peak.c; MPILLAMA_BF16_FMA=0|1 overrides). kern_bf16_fma_use
 * forces it for tests (-1: measure) */
int kern_bf16_fma_faster(void);
void kern_bf16_fma_use(int on);
void kern_q8_avx512_range(float *out, const kern_act *a, const kern_wmat *w, int n, int i, int o, int c0, int c1);
#endif

/* The vector bf16 matmuls' driver (matmul_w_drive.c) goes over tiles of R token rows by C weight
 * rows, each tile computing its R x C elements over the whole input dimension (a fixed chain per
 * element: no k blocks). x: the tile's first activation row (row stride i elements of esize
 * bytes); w the first weight row (row stride ldw elements). */
typedef void (*kern_w_tile_fn)(float *y, int ldy, const void *x, const void *w, int64_t ldw, int i);
/* ---- the blocked driver (matmul_f32_drive.c) for tiles that take k blocks (f32, bf16) ----
 * A k-block tile computes the chains of R token rows (x, row stride ldx elements) by C weight
 * rows (w, row stride ldw elements) over k = 0..kn, x and w pointing at the block's first k; kn
 * is a multiple of the lanes except in a row's last block, whose rest is loaded masked with
 * zeros. mode: KERN_ACC_IN starts from the partial sums saved in acc (else from zero); KERN_OUT
 * sums the lanes into y (stride ldy), else the partial sums are saved to acc (element (r, c) at
 * acc + r * lda + c * lanes). Saving and reloading is exact, so cutting k into blocks leaves every
 * chain as it is. */
#define KERN_ACC_IN 1
#define KERN_OUT 2
typedef void (*kern_ktile_fn)(float *y, int ldy, const void *x, int ldx, const void *w, int64_t ldw, int kn,
                              float *acc, int lda, int mode);
/* a set of them: tiles[R][C] for 1 <= R <= rows, 1 <= C <= cols[R] (the widest, used but at the
 * end of a block) */
typedef struct {
    int esize;  /* bytes of an input and of a weight element */
    int lanes;  /* f32 partial sums an element keeps between k blocks */
    int rows;   /* R at most */
    int l2;     /* bytes of whole weight rows a block keeps in L2 */
    int cols[9];
    kern_ktile_fn tiles[9][9];
} kern_blocks;
/* out[:, c0:c1] for n token rows (more than one tile's) by blocks of weight rows kept in L2, k
 * blocks whose input rows are copied to L1, the next block prefetched; 0 when there is no room for
 * the partial sums (nothing done) */
int kern_blocks_drive(const kern_blocks *K, float *out, const void *in, const void *w, int64_t ldw, int n, int i,
                      int o, int c0, int c1);
/* whether rows of i elements of esize bytes are cut in k blocks */
int kern_blocks_cut(int i, int esize);

typedef struct {
    int esize;            /* bytes of an activation and of a weight element */
    int rows;             /* R at most */
    int cols[9];          /* C at most for each R */
    kern_w_tile_fn tiles[9][9];
    const kern_blocks *blocks; /* its tiles that take k blocks, for long rows (NULL: none) */
} kern_w_kern;
void kern_w_drive(const kern_w_kern *K, float *out, const void *x, const kern_wmat *w, int n, int i,
                  int o, int c0, int c1);

/* ---- row operations: attention's (attention.c; attention_avx512.c) and the activations'
 * preparation (common.c; prep_avx512.c), every implementation bit for bit the portable one's but
 * for the attention's sums and SwiGLU's exponential ----
 * scores: a head's scaled dot products with its cache rows (dot: q (hs) . row (hs of type dt)); mix: the
 * sum of its value rows by weight (axpy: o (hs) += w * row); bf16_rows: dst (n) = src rounded
 * to bf16 (kern_f32_to_bf16 each); q8_rows: x (n, a multiple of 32) quantised per block
 * (kern_quantize_q8); q8_corr: c (i / 32) = -128 x the sum of each block of 32 of q (i) */
typedef struct {
    const char *name;
    /* for nq query heads that share a KV head (q: nq rows of hs): a[h][p] (rows lda apart, len) =
     * scale x q[h] . row p, rows `stride` elements apart (a dot product's order of the
     * implementation, the same for every position, head and group) */
    void (*scores)(float *a, int64_t lda, const float *q, int nq, const void *rows, int64_t stride, kern_dtype dt,
                   int hs, int len, float scale);
    /* o[h] (nq rows of hs) = the sum of a[h][p] x row p over p < len, each element from zero in
     * position order */
    void (*mix)(float *o, const float *a, int64_t lda, int nq, const void *rows, int64_t stride, kern_dtype dt, int hs,
                int len);
    void (*bf16_rows)(uint16_t *dst, const float *src, int64_t n);
    void (*q8_rows)(int8_t *q, float *scale, const float *x, int64_t n);
    void (*q8_corr)(int32_t *c, const int8_t *q, int i);
    /* gate (n) = silu(gate) x up (kern_swiglu's rows: the AVX-512 code's own e^x, within 2 ulp of expf) */
    void (*swiglu)(float *gate, const float *up, int64_t n);
    /* x (n) = softmax(x) (kern_softmax's steps: the maximum, e^(x - max), their sum, a division;
     * the AVX-512 code's own e^x and a sum by lanes) */
    void (*softmax)(float *x, int n);
} kern_row_ops;
#ifdef KERN_X86
void kern_attn_scores_avx512(float *a, int64_t lda, const float *q, int nq, const void *rows, int64_t stride,
                             kern_dtype dt, int hs, int len, float scale);
void kern_attn_mix_avx512(float *o, const float *a, int64_t lda, int nq, const void *rows, int64_t stride,
                          kern_dtype dt, int hs, int len);
void kern_bf16_rows_avx512(uint16_t *dst, const float *src, int64_t n);
void kern_q8_rows_avx512(int8_t *q, float *scale, const float *x, int64_t n);
void kern_q8_corrections_avx512(int32_t *c, const int8_t *q, int i);
void kern_swiglu_avx512(float *gate, const float *up, int64_t n);
void kern_softmax_avx512(float *x, int n);
#endif
void kern_attn_scores_generic(float *a, int64_t lda, const float *q, int nq, const void *rows, int64_t stride,
                              kern_dtype dt, int hs, int len, float scale);
void kern_attn_mix_generic(float *o, const float *a, int64_t lda, int nq, const void *rows, int64_t stride,
                           kern_dtype dt, int hs, int len);
void kern_bf16_rows_generic(uint16_t *dst, const float *src, int64_t n);
void kern_swiglu_generic(float *gate, const float *up, int64_t n);
void kern_q8_corrections_generic(int32_t *c, const int8_t *q, int i);
/* the row operations in use (dispatch.c: chosen with the matmuls) */
const kern_row_ops *kern_rows_get(void);

/* ---- the thread pool (kernels/pool.c) ----
 * Runs fn over units that cover rows [0, n) in chunks of nb and columns [0, o) in ranges of ub
 * (a multiple of align, about 16 units a thread), on up to `threads` threads, the caller
 * included; returns when every unit is done. Units only split the work: each computes whole
 * output elements, so results never depend on the thread count. One call at a time uses the
 * workers: a concurrent caller computes alone. */
typedef void (*kern_unit_fn)(const void *ctx, int t0, int tn, int c0, int c1);
void kern_pool_run(kern_unit_fn fn, const void *ctx, int n, int nb, int o, int align, int threads);
/* threads worth waking for work of `seconds` on one core over o columns (at least min_cols each) */
int kern_pool_threads(double seconds, int o, int min_cols);

/* per-thread scratch, 64-byte aligned, grown to the largest size asked (never shrunk); slot
 * names one of KERN_ROOM_* buffers; NULL when out of memory */
enum { KERN_ROOM_ACC, KERN_ROOM_ACT, KERN_ROOM_ATT, KERN_ROOM_N };
void *kern_room(int slot, size_t bytes);

double kern_now(void);

#endif
