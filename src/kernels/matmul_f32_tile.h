/* kernels/matmul_f32_tile.h: the vector f32 matmul's tiles (R token rows by C weight rows), shared
 * by the AVX2 and AVX-512 files, and the driver that runs them over cache blocks
 * (matmul_f32_drive.c). See matmul_f32_drive.c for the chain every output element is. */
#ifndef MPILLAMA_KERNELS_MATMUL_F32_TILE_H
#define MPILLAMA_KERNELS_MATMUL_F32_TILE_H

#include <immintrin.h>
#include <stdint.h>

#include "internal.h"

#define MM_AVX2 __attribute__((target("avx2,fma")))
#define MM_AVX512 __attribute__((target("avx512f,avx2,fma")))

/* The tiles are kern_blocks' k-block tiles (internal.h): MM_ACC_IN and MM_OUT are its modes */
#define MM_ACC_IN KERN_ACC_IN
#define MM_OUT KERN_OUT

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

#define MM_TILE(isa, ATTR, R, C)                                                                              \
    static ATTR void mm_##isa##_##R##x##C(float *y, int ldy, const void *x, int ldx, const void *w, int64_t ldw,  \
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

/* out[:, c0:c1] for n token rows with the f32 tiles of K */
void kern_f32_drive(const kern_blocks *K, float *out, const float *in, const float *w, int64_t ldw, int n, int i,
                    int o, int c0, int c1);

#endif
