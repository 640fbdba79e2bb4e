/* kernels/matmul_f32_avx2.c: f32 matmul tiles with AVX2 + FMA (8 lanes) */
#include "matmul_f32_tile.h"

static inline __attribute__((always_inline)) MM_AVX2 void
mm_avx2_tile(float *y, int ldy, const float *x, int ldx, const float *w, int64_t ldw, int kn, float *acc, int lda,
             int mode, const int R, const int C) {
    MM_TILE_BODY(__m256, 8, _mm256_setzero_ps, _mm256_loadu_ps, _mm256_load_ps, _mm256_store_ps, _mm256_fmadd_ps,
                 MM_M256_MASK, MM_M256_MASKLOAD, mm_hsum256)
}

/* AVX2, 16 registers: R x C accumulators, the input vector and the weight vectors (with R = 1
 * the weights are FMA operands) */
MM_TILES8(avx2, MM_AVX2, 1) MM_TILES6(avx2, MM_AVX2, 2) MM_TILES4(avx2, MM_AVX2, 3) MM_TILES3(avx2, MM_AVX2, 4)

static const kern_blocks mm_avx2_kern = {
    4, 8, 4, 384 << 10, {0, 8, 6, 4, 3}, {{NULL}, MM_ROW8(avx2, 1), MM_ROW6(avx2, 2), MM_ROW4(avx2, 3), MM_ROW3(avx2, 4)}};

void kern_f32_avx2_range(float *out, const float *in, const float *w, int64_t ldw, int n, int i, int o, int c0,
        int c1) {
    kern_f32_drive(&mm_avx2_kern, out, in, w, ldw, n, i, o, c0, c1);
}
