/* kernels/matmul_q8_avx512.c: int8 weights by int8 activations with AVX512_VNNI's vpdpbusd
 * (unsigned x signed bytes, 4 products a lane) on the packed weights (kern_q8_pack): a 64-byte
 * load is 4 inputs of 16 weight rows (stored + 128, unsigned), multiplied by the token's 4
 * int8 activations broadcast to every lane. A lane is one output element: its 8 steps sum the
 * block's 32 products exactly in int32, started from the token's correction for the + 128
 * (kern_act.qc: -128 x the block's sum of q), then one fused multiply-add adds sum x (scale_w x
 * scale_x) to the element's f32 sum: block after block, the portable code's chain bit for bit,
 * whatever R, G, block or thread. No sum across lanes: 16 outputs are stored at once. */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

#define Q8_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))
#define Q8_QBYTES (KERN_Q8_ROWS * KERN_Q8_BLOCK) /* a group block's quants; its scales follow */
#define Q8_L2 (512 << 10)                        /* bytes of weight groups a block keeps in L2 */
/* Batches of 7 to Q8_PAIRS_N token rows (decode, or a short prefill chunk) whose activations stay
 * in L2 (Q8_XL2 bytes, and two pairs of groups beside them in Q8_L2 + Q8_XL2) go pair of groups
 * after pair, every tile of token rows over one pair, while the tiles prefetch the next pair into
 * L2 (kern_prefetch_l2), so that the weights' read from memory overlaps the arithmetic instead of
 * holding up a first pass of its own. bench_matmul --cold q8 n 32, alternated runs (medians of 5): 16384x2048
 * 3.43 against 3.79 ms, 2048x8192 1.78 against 1.87; 2048x2048 tied (a pool unit is 2 pairs there);
 * n 128 tied or slower, so prefill keeps the L2 blocks below. */
#define Q8_PAIRS_N 64
#define Q8_XL2 (384 << 10)

/* y (R, 16 G; row stride ldy) for R token rows by G groups of weight rows; of the last group only
 * the first `last` columns are stored. x: the first token row of kern_act.qc (rows KERN_QC_ROW(i)
 * bytes apart), xs its scales (rows i / 32 apart); w: the first group, groups gb bytes apart. */
static inline __attribute__((always_inline)) Q8_AVX512 void q8_tile(float *y, int ldy, const int8_t *x,
                                                                    const float *xs, const uint8_t *w, int64_t gb,
                                                                    int i, int last, const uint8_t *pf, int pfb,
                                                                    int64_t pfn, const int R, const int G) {
    const int nb = i / KERN_Q8_BLOCK;
    const int64_t xr = KERN_QC_ROW(i);
    __m512 acc[6][4];
    _Pragma("GCC unroll 6") for (int r = 0; r < R; r++) _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)
        acc[r][g] = _mm512_setzero_ps();
    for (int b = 0; b < nb; b++) {
        const uint8_t *wb = w + (int64_t)b * KERN_Q8_GBLOCK;
        __m512i s[6][4];
        _Pragma("GCC unroll 6") for (int r = 0; r < R; r++) {
            const __m512i c = _mm512_set1_epi32((int32_t)kern_ld32(x + r * xr + i + 4 * b));
            _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) s[r][g] = c;
        }
        kern_prefetch_l2(pf, (int64_t)b * pfb, pfb, pfn); /* the next tiles' (Q8_PAIRS_N) */
        if (R == 1) /* decode: memory latency, not the core, limits the streams (see KERN_PF_AHEAD) */
            _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) _Pragma("GCC unroll 9") for (int l = 0; l < 9; l++)
                _mm_prefetch((const char *)(wb + g * gb + l * 64 + KERN_PF_AHEAD), KERN_PF_HINT);
        _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++) {
            __m512i wv[4];
            _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) wv[g] = _mm512_loadu_si512(wb + g * gb + j * 64);
            _Pragma("GCC unroll 6") for (int r = 0; r < R; r++) {
                const __m512i xv = _mm512_set1_epi32((int32_t)kern_ld32(x + r * xr + b * KERN_Q8_BLOCK + 4 * j));
                _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) s[r][g] = _mm512_dpbusd_epi32(s[r][g], wv[g], xv);
            }
        }
        __m512 ws[4];
        _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) ws[g] = _mm512_loadu_ps(wb + g * gb + Q8_QBYTES);
        _Pragma("GCC unroll 6") for (int r = 0; r < R; r++) {
            const __m512 sx = _mm512_set1_ps(xs[r * nb + b]);
            _Pragma("GCC unroll 4") for (int g = 0; g < G; g++)
                acc[r][g] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[r][g]), _mm512_mul_ps(ws[g], sx), acc[r][g]);
        }
    }
    const __mmask16 lm = (__mmask16)((1u << last) - 1);
    _Pragma("GCC unroll 6") for (int r = 0; r < R; r++) _Pragma("GCC unroll 4") for (int g = 0; g < G; g++) {
        if (g == G - 1) _mm512_mask_storeu_ps(y + (int64_t)r * ldy + 16 * g, lm, acc[r][g]);
        else _mm512_storeu_ps(y + (int64_t)r * ldy + 16 * g, acc[r][g]);
    }
}

typedef void (*q8_tile_fn)(float *y, int ldy, const int8_t *x, const float *xs, const uint8_t *w, int64_t gb, int i,
                           int last, const uint8_t *pf, int pfb, int64_t pfn);
#define Q8_TILE(R, G)                                                                                          \
    static Q8_AVX512 void q8_##R##x##G(float *y, int ldy, const int8_t *x, const float *xs, const uint8_t *w,  \
                                       int64_t gb, int i, int last, const uint8_t *pf, int pfb, int64_t pfn) { \
        q8_tile(y, ldy, x, xs, w, gb, i, last, pf, pfb, pfn, R, G);                                            \
    }
Q8_TILE(1, 1) Q8_TILE(1, 2) Q8_TILE(1, 3) Q8_TILE(1, 4)
Q8_TILE(2, 1) Q8_TILE(2, 2) Q8_TILE(2, 3)
Q8_TILE(3, 1) Q8_TILE(3, 2)
Q8_TILE(4, 1) Q8_TILE(4, 2)
Q8_TILE(5, 1) Q8_TILE(5, 2)
Q8_TILE(6, 1) Q8_TILE(6, 2)

/* tiles[R][G]: 32 registers hold R x G integer sums and as many f32 sums, G weight vectors and
 * G scale vectors. bench_matmul q8 n 32 and 128, 2048x2048 and 2048x8192, alternated runs:
 * 6 x 2 0.97-1.10 TOP/s, 4 x 2 0.88-1.01, 10 x 1 0.87-0.95. One token row takes 4 groups (4
 * streams): --cold n 1, GB/s of weights, G 1 / 2 / 4: 32000x2048 42-43 / 47 / 47-48, 2048x8192
 * 45-46 / 49-50 / 50-52 */
#define Q8_RMAX 6
static const int q8_gmax[Q8_RMAX + 1] = {0, 4, 3, 2, 2, 2, 2};
static const q8_tile_fn q8_tiles[Q8_RMAX + 1][5] = {{NULL},
                                                    {NULL, q8_1x1, q8_1x2, q8_1x3, q8_1x4},
                                                    {NULL, q8_2x1, q8_2x2, q8_2x3},
                                                    {NULL, q8_3x1, q8_3x2},
                                                    {NULL, q8_4x1, q8_4x2},
                                                    {NULL, q8_5x1, q8_5x2},
                                                    {NULL, q8_6x1, q8_6x2}};

/* columns [c0, c1) with c0 a multiple of 16 (the pool's ranges are multiples of 32) */
void kern_q8_avx512_range(float *out, const kern_act *a, const kern_wmat *w, int n, int i, int o, int c0, int c1) {
    const int nb = i / KERN_Q8_BLOCK, g0 = c0 / KERN_Q8_ROWS, g1 = (c1 + KERN_Q8_ROWS - 1) / KERN_Q8_ROWS;
    const int64_t gb = (int64_t)nb * KERN_Q8_GBLOCK, xr = KERN_QC_ROW(i);
    const uint8_t *wd = w->data;
    const int tail = c1 - (g1 - 1) * KERN_Q8_ROWS; /* columns of the last group */
    if (n <= Q8_RMAX) { /* one tile of token rows: the weights stream once */
        const int G = q8_gmax[n];
        for (int g = g0; g < g1; g += G) {
            const int gn = g1 - g < G ? g1 - g : G;
            q8_tiles[n][gn](out + g * KERN_Q8_ROWS, o, a->qc, a->scale, wd + g * gb, gb, i,
                            g + gn == g1 ? tail : KERN_Q8_ROWS, NULL, 0, 0);
        }
        return;
    }
    if (n <= Q8_PAIRS_N && (int64_t)n * xr <= Q8_XL2 && 4 * gb + (int64_t)n * xr <= Q8_L2 + Q8_XL2) { /* Q8_PAIRS_N */
        const int tiles = (n + Q8_RMAX - 1) / Q8_RMAX;
        for (int g = g0; g < g1; g += 2) {
            const int gn = g1 - g < 2 ? g1 - g : 2, nn = g1 - g - gn < 2 ? g1 - g - gn : 2;
            const int64_t lines = nn * gb / 64; /* the next pair's, tile k taking [k nb pfb, (k + 1) nb pfb) */
            const int pfb = (int)((lines + (int64_t)tiles * nb - 1) / ((int64_t)tiles * nb));
            const uint8_t *next = wd + (g + gn) * gb;
            for (int t = 0, k = 0; t < n; t += Q8_RMAX, k++) {
                const int R = n - t < Q8_RMAX ? n - t : Q8_RMAX;
                q8_tiles[R][gn](out + (int64_t)t * o + g * KERN_Q8_ROWS, o, a->qc + t * xr, a->scale + (int64_t)t * nb,
                                wd + g * gb, gb, i, g + gn == g1 ? tail : KERN_Q8_ROWS,
                                next + (int64_t)k * nb * pfb * 64, pfb, lines - (int64_t)k * nb * pfb);
            }
        }
        return;
    }
    /* blocks of groups that stay in L2 while every tile of token rows passes over them */
    int bw = (int)(Q8_L2 / gb) / 2 * 2;
    if (bw < 2) bw = 2;
    for (int gs = g0; gs < g1; gs += bw) {
        const int ge = gs + bw < g1 ? gs + bw : g1;
        for (int t = 0; t < n; t += Q8_RMAX) {
            const int R = n - t < Q8_RMAX ? n - t : Q8_RMAX, G = q8_gmax[R];
            for (int g = gs; g < ge; g += G) {
                const int gn = ge - g < G ? ge - g : G;
                q8_tiles[R][gn](out + (int64_t)t * o + g * KERN_Q8_ROWS, o, a->qc + t * xr, a->scale + (int64_t)t * nb,
                                wd + g * gb, gb, i, g + gn == g1 ? tail : KERN_Q8_ROWS, NULL, 0, 0);
            }
        }
    }
}
