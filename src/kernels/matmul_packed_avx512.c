/* kernels/matmul_packed_avx512.c: weights packed at load in groups of 16 rows, 1 KiB chunks whose
 * 64-byte lines are one step of the 16 rows (kern_pack): bf16 (a line = one pair of inputs)
 * by bf16 activations with AVX512_BF16's vdpbf16ps, on CPUs without AMX (AMD Zen 4 and 5), and
 * f32 (a line = one input) by f32 activations with FMAs. One line is multiplied by
 * the token's pair (or input) broadcast to every lane: a lane is one output element, adding step
 * after step in input order (vdpbf16ps: the odd product, then the even one). No sums across lanes:
 * 16 outputs are stored at once, and the tile's weight and activation loads are shared by R x G
 * accumulators (the dot-product form of matmul_bf16_avx512.c needs a load per accumulator and a
 * sum across lanes per element). k blocks save the sums in the output and take them back exactly,
 * so every element is one fixed chain whatever n, tile, block or thread; where vdpbf16ps is slow
 * the widened FMAs give the same bits (kern_bf16_fma_faster). */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

#define BP_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")))
#define BP_RMAX 8         /* token rows a tile */
#define BP_L2 (512 << 10) /* bytes of weights a block keeps in L2 */
/* the steps of a chunk fully unrolled, but in sanitizer builds, whose instrumentation of 64 such
 * tiles took GCC over 10 minutes (a loop of 16 steps there: the same arithmetic) */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_UNDEFINED__)
#define BP_UNROLL "GCC unroll 1"
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(undefined_behavior_sanitizer)
#define BP_UNROLL "GCC unroll 1"
#endif
#endif
#ifndef BP_UNROLL
#define BP_UNROLL "GCC unroll 16"
#endif
/* Batches of 9 to BP_PAIRS_N token rows (decode, or a short prefill chunk) whose k block of
 * activations stays in L2 (BP_XL2 bytes) go G groups x one k block after another, every tile of
 * token rows over them while the tiles prefetch the next ones into L2 (kern_prefetch_l2): the
 * weights' read from memory overlaps the arithmetic instead of holding up a first pass of its own
 * (as q8's pairs, matmul_q8_avx512.c) */
#define BP_PAIRS_N 64
#define BP_XL2 (384 << 10)
#define BP_KC 64          /* chunks a k block (2048 bf16 or 1024 f32 inputs) when a group's row is longer */

/* how a line is multiplied: vdpbf16ps, its widened FMAs (bf16), FMAs (f32) */
#define BP_DP 0
#define BP_WIDE 1
#define BP_F32 2

/* y (R token rows, ldy apart; 16 G columns, of the last group only `last`) over nc chunks: x the
 * first token row's first step (4 bytes: a bf16 pair or an f32; rows xs steps apart), w the first
 * group's first chunk (groups gb bytes apart); acc_in: start from y (the sums of the k blocks
 * before), else from zero */
static inline __attribute__((always_inline)) BP_AVX512 void bp_tile(float *y, int ldy, const char *x, int64_t xs,
                                                                    const uint8_t *w, int64_t gb, int nc, int acc_in,
                                                                    int last, int pf, const uint8_t *nx, int ngn,
                                                                    int nl, int nn, const int R, const int G,
                                                                    const int OP) {
    const int FMA = OP == BP_WIDE;
    const __mmask16 lm = (__mmask16)((1u << last) - 1);
    __m512 acc[BP_RMAX][4];
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) {
        float *p = y + (int64_t)r * ldy + 16 * g;
        acc[r][g] = !acc_in ? _mm512_setzero_ps() : g == G - 1 ? _mm512_maskz_loadu_ps(lm, p) : _mm512_loadu_ps(p);
    }
    const __m512i hi = _mm512_set1_epi32((int)0xffff0000u);
    for (int c = 0; c < nc; c++) {
        const uint8_t *wc = w + (int64_t)c * KERN_PACK_CHUNK;
        const char *xc = x + (int64_t)c * 64;
        /* the next tiles' (BP_PAIRS_N): nl lines a chunk of each of their ngn groups, nn from nx on */
        for (int g = 0; g < ngn; g++) kern_prefetch_l2(nx + g * gb, (int64_t)c * nl, nl, nn);
        _Pragma(BP_UNROLL) for (int p = 0; p < 16; p++) {
            if (pf) /* the weights' first pass from memory: latency limits the streams (KERN_PF_AHEAD) */
                _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)
                    _mm_prefetch((const char *)(wc + g * gb + p * 64 + KERN_PF_AHEAD), KERN_PF_HINT);
            __m512i wv[4];
            __m512 wo[4], we[4];
            _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) {
                wv[g] = _mm512_loadu_si512(wc + g * gb + p * 64);
                if (FMA) {
                    wo[g] = _mm512_castsi512_ps(_mm512_and_si512(wv[g], hi));
                    we[g] = _mm512_castsi512_ps(_mm512_slli_epi32(wv[g], 16));
                }
            }
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
                const __m512i xv = _mm512_set1_epi32((int)kern_ld32(xc + (r * xs + p) * 4));
                if (OP == BP_F32) {
                    _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)
                        acc[r][g] = _mm512_fmadd_ps(_mm512_castsi512_ps(xv), _mm512_castsi512_ps(wv[g]), acc[r][g]);
                } else if (FMA) {
                    const __m512 xo = _mm512_castsi512_ps(_mm512_and_si512(xv, hi));
                    const __m512 xe = _mm512_castsi512_ps(_mm512_slli_epi32(xv, 16));
                    _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) {
                        acc[r][g] = _mm512_fmadd_ps(xo, wo[g], acc[r][g]);
                        acc[r][g] = _mm512_fmadd_ps(xe, we[g], acc[r][g]);
                    }
                } else {
                    _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)
                        acc[r][g] = _mm512_dpbf16_ps(acc[r][g], (__m512bh)xv, (__m512bh)wv[g]);
                }
            }
        }
    }
    _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) {
        float *p = y + (int64_t)r * ldy + 16 * g;
        if (g == G - 1) _mm512_mask_storeu_ps(p, lm, acc[r][g]);
        else _mm512_storeu_ps(p, acc[r][g]);
    }
}

typedef void (*bp_tile_fn)(float *y, int ldy, const char *x, int64_t xs, const uint8_t *w, int64_t gb, int nc,
                           int acc_in, int last, int pf, const uint8_t *nx, int ngn, int nl, int nn);
#define BP_TILE_F(R, G, F, P)                                                                                   \
    static BP_AVX512 void P##_##R##x##G(float *y, int ldy, const char *x, int64_t xs, const uint8_t *w,           \
                                        int64_t gb, int nc, int acc_in, int last, int pf, const uint8_t *nx,      \
                                        int ngn, int nl, int nn) {                                                \
        bp_tile(y, ldy, x, xs, w, gb, nc, acc_in, last, pf, nx, ngn, nl, nn, R, G, F);                            \
    }
#define BP_TILE(R, G) BP_TILE_F(R, G, BP_DP, bp)
#define BPF_TILE(R, G) BP_TILE_F(R, G, BP_WIDE, bpf)
#define BPS_TILE(R, G) BP_TILE_F(R, G, BP_F32, bps)
#define BPS_TILES3(R) BPS_TILE(R, 1) BPS_TILE(R, 2) BPS_TILE(R, 3)
#define BPS_TILES4(R) BPS_TILES3(R) BPS_TILE(R, 4)
BPS_TILES4(1) BPS_TILES4(2) BPS_TILES4(3) BPS_TILES4(4) BPS_TILES3(5) BPS_TILES3(6) BPS_TILES3(7) BPS_TILES3(8)
#define BP_TILES3(R) BP_TILE(R, 1) BP_TILE(R, 2) BP_TILE(R, 3)
#define BP_TILES4(R) BP_TILES3(R) BP_TILE(R, 4)
#define BPF_TILES2(R) BPF_TILE(R, 1) BPF_TILE(R, 2)
BP_TILES4(1) BP_TILES4(2) BP_TILES4(3) BP_TILES4(4) BP_TILES3(5) BP_TILES3(6) BP_TILES3(7) BP_TILES3(8)
BPF_TILES2(1) BPF_TILES2(2) BPF_TILES2(3) BPF_TILES2(4) BPF_TILES2(5) BPF_TILES2(6) BPF_TILES2(7) BPF_TILES2(8)
BPF_TILE(1, 3) BPF_TILE(1, 4)
#define BP_ROW3(P, R) {NULL, P##_##R##x1, P##_##R##x2, P##_##R##x3}
#define BP_ROW4(P, R) {NULL, P##_##R##x1, P##_##R##x2, P##_##R##x3, P##_##R##x4}
#define BPF_ROW2(R) {NULL, bpf_##R##x1, bpf_##R##x2}

typedef struct {
    int gmax[BP_RMAX + 1]; /* groups a tile of R token rows (none fewer than gmax[BP_RMAX]: bp_range) */
    bp_tile_fn tiles[BP_RMAX + 1][5];
} bp_kern;

/* vdpbf16ps: 32 registers hold R x G sums, G weight lines and the broadcast pair: 8 x 3 (bench_matmul
 * n 32 / 128, weights from memory, alternated: 570-680 / 680-760 GFLOP/s against 6 x 4's 530-620 /
 * 680-730; 32 and 128 token rows are whole 8-row tiles); up to 4 rows take 4 groups, one token row
 * 4 streams as q8 (the pool's ranges: 64 columns up to 4 token rows, else 48) */
static const bp_kern bp_dp = {{0, 4, 4, 4, 4, 3, 3, 3, 3},
                              {{NULL}, BP_ROW4(bp, 1), BP_ROW4(bp, 2), BP_ROW4(bp, 3), BP_ROW4(bp, 4), BP_ROW3(bp, 5),
                               BP_ROW3(bp, 6), BP_ROW3(bp, 7), BP_ROW3(bp, 8)}};
/* f32: as vdpbf16ps's, an FMA a line */
static const bp_kern bp_f32 = {{0, 4, 4, 4, 4, 3, 3, 3, 3},
                               {{NULL}, BP_ROW4(bps, 1), BP_ROW4(bps, 2), BP_ROW4(bps, 3), BP_ROW4(bps, 4),
                                BP_ROW3(bps, 5), BP_ROW3(bps, 6), BP_ROW3(bps, 7), BP_ROW3(bps, 8)}};
/* the widened FMAs: R x G sums, 2 G widened weights, the pair's two halves */
static const bp_kern bp_fma = {{0, 4, 2, 2, 2, 2, 2, 2, 2},
                               {{NULL}, BP_ROW4(bpf, 1), BPF_ROW2(2), BPF_ROW2(3), BPF_ROW2(4), BPF_ROW2(5), BPF_ROW2(6),
                                BPF_ROW2(7), BPF_ROW2(8)}};

/* columns [c0, c1) with c0 a multiple of 16 (the pool's ranges are multiples of 64 or 48), for
 * activations of `steps` 4-byte steps a row */
static void bp_range(const bp_kern *K, float *out, const char *x, const kern_wmat *w, int n, int steps, int o, int c0,
                     int c1) {
    const int nc = steps / 16, g0 = c0 / 16, g1 = (c1 + 15) / 16, i = steps;
    const int64_t gb = (int64_t)nc * KERN_PACK_CHUNK;
    const uint8_t *wd = w->data;
    const int tail = c1 - (g1 - 1) * 16; /* columns of the last group */
    if (n <= BP_RMAX) { /* one tile of token rows: the weights stream once */
        const int G = K->gmax[n];
        for (int g = g0; g < g1; g += G) {
            const int gn = g1 - g < G ? g1 - g : G;
            K->tiles[n][gn](out + g * 16, o, x, i, wd + g * gb, gb, nc, 0, g + gn == g1 ? tail : 16, 1, NULL, 0, 0, 0);
        }
        return;
    }
    const int kc = nc > BP_KC + BP_KC / 2 ? BP_KC : nc, G = K->gmax[BP_RMAX];
    if (n <= BP_PAIRS_N && (int64_t)n * kc * 64 <= BP_XL2) { /* BP_PAIRS_N (the second test: for other BP_KC) */
        const int T = (n + BP_RMAX - 1) / BP_RMAX;
        for (int g = g0; g < g1; g += G) {
            const int gn = g1 - g < G ? g1 - g : G;
            for (int k0 = 0; k0 < nc; k0 += kc) {
                const int kn = nc - k0 < kc ? nc - k0 : kc;
                const uint8_t *nx = NULL; /* the next tiles' weights: this group's next k block, or the next groups' first */
                int ngn = 0, nkn = 0;
                if (k0 + kn < nc) nx = wd + g * gb + (int64_t)(k0 + kn) * KERN_PACK_CHUNK, ngn = gn, nkn = nc - k0 - kn;
                else if (g + gn < g1) nx = wd + (g + gn) * gb, ngn = g1 - g - gn < G ? g1 - g - gn : G, nkn = nc;
                if (nkn > kc) nkn = kc;
                /* tile k takes lines [k kn nl, (k + 1) kn nl) of each group's nkn chunks */
                const int nl = ngn ? (nkn * 16 + T * kn - 1) / (T * kn) : 0;
                /* one tile a row of tiles: G (the 8-row tiles' groups) is every table's fewest */
                for (int t = 0, k = 0; t < n; t += BP_RMAX, k++) {
                    const int R = n - t < BP_RMAX ? n - t : BP_RMAX;
                    K->tiles[R][gn](out + (int64_t)t * o + g * 16, o, x + ((int64_t)t * i + k0 * 16) * 4, i,
                                    wd + g * gb + (int64_t)k0 * KERN_PACK_CHUNK, gb, kn, k0 > 0,
                                    g + gn == g1 ? tail : 16, g == g0 && k0 == 0 && t == 0, /* (nothing before) */
                                    nx ? nx + (int64_t)k * kn * nl * 64 : NULL, ngn, nl, nkn * 16 - k * kn * nl);
                }
            }
        }
        return;
    }
    /* blocks of groups x k blocks that stay in L2 while every tile of token rows passes over them;
     * the first tile of token rows brings them from memory, prefetching ahead in each stream */
    int bw = (int)(BP_L2 / ((int64_t)kc * KERN_PACK_CHUNK)) / G * G;
    if (bw < G) bw = G;
    for (int gs = g0; gs < g1; gs += bw) {
        const int ge = gs + bw < g1 ? gs + bw : g1;
        for (int k0 = 0; k0 < nc; k0 += kc) {
            const int kn = nc - k0 < kc ? nc - k0 : kc;
            for (int t = 0; t < n; t += BP_RMAX) {
                const int R = n - t < BP_RMAX ? n - t : BP_RMAX, GR = K->gmax[R];
                for (int g = gs; g < ge; g += GR) {
                    const int gn = ge - g < GR ? ge - g : GR;
                    K->tiles[R][gn](out + (int64_t)t * o + g * 16, o, x + ((int64_t)t * i + k0 * 16) * 4, i,
                                    wd + g * gb + (int64_t)k0 * KERN_PACK_CHUNK, gb, kn, k0 > 0,
                                    g + gn == g1 ? tail : 16, t == 0, NULL, 0, 0, 0);
                }
            }
        }
    }
}

void kern_bf16p_avx512_range(float *out, const uint16_t *x, const kern_wmat *w, int n, int i, int o, int c0, int c1,
                             int fma) {
    bp_range(fma ? &bp_fma : &bp_dp, out, (const char *)x, w, n, i / 2, o, c0, c1);
}

void kern_f32p_avx512_range(float *out, const kern_act *a, const kern_wmat *w, int n, int i, int o, int c0, int c1) {
    bp_range(&bp_f32, out, (const char *)a->f, w, n, i, o, c0, c1);
}
