/* kernels/matmul_f32_avx512.c: f32 matmul tiles with AVX-512F (16 lanes) */
#include "matmul_f32_tile.h"

static inline __attribute__((always_inline)) MM_AVX512 void
mm_avx512_tile(float *y, int ldy, const float *x, int ldx, const float *w, int64_t ldw, int kn, float *acc, int lda,
               int mode, const int R, const int C) {
    MM_TILE_BODY(__m512, 16, _mm512_setzero_ps, _mm512_loadu_ps, _mm512_load_ps, _mm512_store_ps, _mm512_fmadd_ps,
                 MM_M512_MASK, MM_M512_MASKLOAD, mm_hsum512)
}

/* AVX-512, 32 registers; one token row (decode) takes one or two weight rows (KERN_LONG_ROW) */
MM_TILE(avx512, MM_AVX512, 1, 1) MM_TILE(avx512, MM_AVX512, 1, 2) MM_TILES8(avx512, MM_AVX512, 2) MM_TILES6(avx512, MM_AVX512, 3)
MM_TILES6(avx512, MM_AVX512, 4) MM_TILES4(avx512, MM_AVX512, 5) MM_TILES4(avx512, MM_AVX512, 6)
MM_TILES3(avx512, MM_AVX512, 7) MM_TILES3(avx512, MM_AVX512, 8)


static const kern_blocks mm_avx512_kern = {
    4, 16, 8, 384 << 10, {0, 2, 8, 6, 6, 4, 4, 3, 3},
    {{NULL}, {NULL, mm_avx512_1x1, mm_avx512_1x2}, MM_ROW8(avx512, 2), MM_ROW6(avx512, 3), MM_ROW6(avx512, 4), MM_ROW4(avx512, 5),
     MM_ROW4(avx512, 6), MM_ROW3(avx512, 7), MM_ROW3(avx512, 8)}};

void kern_f32_avx512_range(float *out, const float *in, const float *w, int64_t ldw, int n, int i, int o, int c0,
          int c1) {
    kern_f32_drive(&mm_avx512_kern, out, in, w, ldw, n, i, o, c0, c1);
}
