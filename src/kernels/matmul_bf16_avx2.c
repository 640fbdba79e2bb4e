/* kernels/matmul_bf16_avx2.c: bf16 weights on CPUs with AVX2 + FMA but no AVX512_BF16: both
 * operands widened to f32 (exact) and multiplied-added in 8 lanes (lane l: columns l, l + 8, ...
 * in order), the last partial vector masked with zeros, the lanes summed by one fixed tree
 * (mm_hsum256). */
#include "matmul_f32_tile.h"

#define BF_AVX2 __attribute__((target("avx2,fma")))

static inline __attribute__((always_inline)) BF_AVX2 __m256 bf_widen(__m128i h) {
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static inline __attribute__((always_inline)) BF_AVX2 void bf2_tile(float *y, int ldy, const uint16_t *x,
                                                                   const uint16_t *w, int64_t ldw, int i,
                                                                   const int R, const int C) {
    __m256 a[4][4];
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) _Pragma("GCC unroll 4") for (int c = 0; c < C; c++)
        a[r][c] = _mm256_setzero_ps();
    uint16_t xt[4][8], wt[4][8];
    for (int k = 0; k < i; k += 8) {
        const uint16_t *xr[4], *wr[4];
        int ld = i;
        if (k + 8 > i) { /* the last partial vector, zero-padded through a small copy */
            for (int r = 0; r < R; r++)
                for (int l = 0; l < 8; l++) xt[r][l] = k + l < i ? x[(int64_t)r * i + k + l] : 0;
            for (int c = 0; c < C; c++)
                for (int l = 0; l < 8; l++) wt[c][l] = k + l < i ? w[c * ldw + k + l] : 0;
            ld = -1;
        }
        for (int r = 0; r < R; r++) xr[r] = ld < 0 ? xt[r] : x + (int64_t)r * i + k;
        for (int c = 0; c < C; c++) wr[c] = ld < 0 ? wt[c] : w + c * ldw + k;
        __m256 wv[4];
        _Pragma("GCC unroll 4") for (int c = 0; c < C; c++) wv[c] = bf_widen(_mm_loadu_si128((const __m128i *)wr[c]));
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const __m256 xv = bf_widen(_mm_loadu_si128((const __m128i *)xr[r]));
            _Pragma("GCC unroll 4") for (int c = 0; c < C; c++) a[r][c] = _mm256_fmadd_ps(xv, wv[c], a[r][c]);
        }
    }
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) _Pragma("GCC unroll 4") for (int c = 0; c < C; c++)
        y[(int64_t)r * ldy + c] = mm_hsum256(a[r][c]);
}

#define BF2_TILE(R, C)                                                                                         \
    static BF_AVX2 void bf2_##R##x##C(float *y, int ldy, const void *x, const void *w, int64_t ldw,       \
                                      int i) {                                                               \
        bf2_tile(y, ldy, x, w, ldw, i, R, C);                                                                      \
    }
#define BF2_TILES4(R) BF2_TILE(R, 1) BF2_TILE(R, 2) BF2_TILE(R, 3) BF2_TILE(R, 4)
BF2_TILES4(1) BF2_TILES4(2) BF2_TILE(3, 1) BF2_TILE(3, 2) BF2_TILE(3, 3)
#define BF2_ROW4(R) {NULL, bf2_##R##x1, bf2_##R##x2, bf2_##R##x3, bf2_##R##x4}

/* 16 registers: R x C accumulators, C weight vectors, the input vector */
static const kern_w_kern bf2_kern = {
    2, 3, {0, 4, 4, 3}, {{NULL}, BF2_ROW4(1), BF2_ROW4(2), {NULL, bf2_3x1, bf2_3x2, bf2_3x3}}, NULL};

void kern_bf16_avx2_range(float *out, const kern_act *a, const kern_wmat *w, int n, int i, int o, int c0, int c1) {
    kern_w_drive(&bf2_kern, out, a->x, w, n, i, o, c0, c1);
}
