/* kernels/matmul_bf16_avx512.c: bf16 weights by bf16 activations with AVX512_BF16's vdpbf16ps:
 * each of 16 lanes accumulates the products of its pair of columns (2l, 2l + 1) of every 32
 * columns in order (vdpbf16ps adds the pair to the lane in a fixed way, denormals flushed), the
 * last partial vector loaded masked with zeros, then the lanes summed by one fixed tree
 * (mm_hsum512): one chain per element, whatever R, C, block or thread. */
#include "matmul_f32_tile.h"

#define BF_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16,avx2,fma")))

/* a[r][c] += the 16 pair products of xv and wv[c] as vdpbf16ps adds them; with FMA (the widened
 * twin, bf16_fma below) wv holds C odd, then C even widened weight vectors */
#define BF_DP(r, c, xv, xo, xe)                                                                             \
    do {                                                                                                    \
        if (FMA) {                                                                                          \
            a[r][c] = _mm512_fmadd_ps(xo, wf[c], a[r][c]);                                                  \
            a[r][c] = _mm512_fmadd_ps(xe, wf[C + c], a[r][c]);                                              \
        } else {                                                                                            \
            a[r][c] = _mm512_dpbf16_ps(a[r][c], (__m512bh)xv, (__m512bh)wv[c]);                             \
        }                                                                                                   \
    } while (0)

/* the odd (high half) and even (low half, shifted up) bf16 of each 32-bit lane as f32 */
static inline __attribute__((always_inline)) BF_AVX512 __m512 bf_odd(__m512i v) {
    return _mm512_castsi512_ps(_mm512_and_si512(v, _mm512_set1_epi32((int)0xffff0000u)));
}
static inline __attribute__((always_inline)) BF_AVX512 __m512 bf_even(__m512i v) {
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
}

static inline __attribute__((always_inline)) BF_AVX512 void bf_tile(float *y, int ldy, const uint16_t *x, int ldx,
                                                                    const uint16_t *w, int64_t ldw, int kn,
                                                                    float *acc, int lda, int mode, const int R,
                                                                    const int C, const int FMA) {
    __m512 a[4][8];
    if (mode & MM_ACC_IN) {
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) _Pragma("GCC unroll 8") for (int c = 0; c < C; c++)
            a[r][c] = _mm512_load_ps(acc + (int64_t)r * lda + c * 16);
    } else {
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) _Pragma("GCC unroll 8") for (int c = 0; c < C; c++)
            a[r][c] = _mm512_setzero_ps();
    }
    int k = 0;
    for (; k + 32 <= kn; k += 32) {
        __m512i wv[8];
        __m512 wf[16];
        _Pragma("GCC unroll 8") for (int c = 0; c < C; c++) {
            wv[c] = _mm512_loadu_si512(w + c * ldw + k);
            if (FMA) wf[c] = bf_odd(wv[c]), wf[C + c] = bf_even(wv[c]);
        }
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
            __m512i xv = _mm512_loadu_si512(x + (int64_t)r * ldx + k);
            __asm__("" : "+v"(xv));
            const __m512 xo = FMA ? bf_odd(xv) : _mm512_setzero_ps(), xe = FMA ? bf_even(xv) : xo;
            _Pragma("GCC unroll 8") for (int c = 0; c < C; c++) BF_DP(r, c, xv, xo, xe);
        }
    }
    if (k < kn) {
        const __mmask32 m = (__mmask32)((1ull << (kn - k)) - 1);
        __m512i wv[8];
        __m512 wf[16];
        _Pragma("GCC unroll 8") for (int c = 0; c < C; c++) {
            wv[c] = _mm512_maskz_loadu_epi16(m, w + c * ldw + k);
            if (FMA) wf[c] = bf_odd(wv[c]), wf[C + c] = bf_even(wv[c]);
        }
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {
            const __m512i xv = _mm512_maskz_loadu_epi16(m, x + (int64_t)r * ldx + k);
            const __m512 xo = FMA ? bf_odd(xv) : _mm512_setzero_ps(), xe = FMA ? bf_even(xv) : xo;
            _Pragma("GCC unroll 8") for (int c = 0; c < C; c++) BF_DP(r, c, xv, xo, xe);
        }
    }
    if (mode & MM_OUT) {
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) _Pragma("GCC unroll 8") for (int c = 0; c < C; c++)
            y[(int64_t)r * ldy + c] = mm_hsum512(a[r][c]);
    } else {
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) _Pragma("GCC unroll 8") for (int c = 0; c < C; c++)
            _mm512_store_ps(acc + (int64_t)r * lda + c * 16, a[r][c]);
    }
}

#define BF_TILE_F(R, C, F, P)                                                                                 \
    __attribute__((unused)) static BF_AVX512 void P##_##R##x##C(float *y, int ldy, const void *x, const void *w,    \
                                                                int64_t ldw, int i) {                          \
        bf_tile(y, ldy, x, i, w, ldw, i, NULL, 0, MM_OUT, R, C, F);                                               \
    }                                                                                                          \
    static BF_AVX512 void P##k_##R##x##C(float *y, int ldy, const void *x, int ldx, const void *w, int64_t ldw,  \
                                         int kn, float *acc, int lda, int mode) {                             \
        bf_tile(y, ldy, x, ldx, w, ldw, kn, acc, lda, mode, R, C, F);                                           \
    }
#define BF_TILE(R, C) BF_TILE_F(R, C, 0, bf)
#define BFF_TILE(R, C) BF_TILE_F(R, C, 1, bff)
#define BF_TILES6(R) BF_TILE(R, 1) BF_TILE(R, 2) BF_TILE(R, 3) BF_TILE(R, 4) BF_TILE(R, 5) BF_TILE(R, 6)
#define BF_TILES8(R) BF_TILES6(R) BF_TILE(R, 7) BF_TILE(R, 8)
BF_TILE(1, 1) BF_TILE(1, 2) BF_TILES8(2) BF_TILES6(3) BF_TILES6(4)
#define BFF_TILES4(R) BFF_TILE(R, 1) BFF_TILE(R, 2) BFF_TILE(R, 3) BFF_TILE(R, 4)
BFF_TILE(1, 1) BFF_TILE(1, 2) BFF_TILES4(2) BFF_TILES4(3) BFF_TILES4(4)
#define BF_ROW6(R) {NULL, bf_##R##x1, bf_##R##x2, bf_##R##x3, bf_##R##x4, bf_##R##x5, bf_##R##x6}
#define BF_ROW8(R) {NULL, bf_##R##x1, bf_##R##x2, bf_##R##x3, bf_##R##x4, bf_##R##x5, bf_##R##x6, bf_##R##x7, bf_##R##x8}
#define BFK_ROW6(R) {NULL, bfk_##R##x1, bfk_##R##x2, bfk_##R##x3, bfk_##R##x4, bfk_##R##x5, bfk_##R##x6}
#define BFK_ROW8(R) {NULL, bfk_##R##x1, bfk_##R##x2, bfk_##R##x3, bfk_##R##x4, bfk_##R##x5, bfk_##R##x6, bfk_##R##x7, bfk_##R##x8}
#define BFF_ROW4(R) {NULL, bff_##R##x1, bff_##R##x2, bff_##R##x3, bff_##R##x4}
#define BFFK_ROW4(R) {NULL, bffk_##R##x1, bffk_##R##x2, bffk_##R##x3, bffk_##R##x4}

/* 32 registers: R x C accumulators, C weight vectors and the input vector; one token row
 * (decode) takes one or two weight rows (KERN_LONG_ROW) */
static const kern_blocks bf_blocks = {2, 16, 4, 512 << 10, {0, 2, 8, 6, 6},
                                      {{NULL}, {NULL, bfk_1x1, bfk_1x2}, BFK_ROW8(2), BFK_ROW6(3), BFK_ROW6(4)}};
static const kern_w_kern bf_kern = {2, 4, {0, 2, 8, 6, 6},
                                    {{NULL}, {NULL, bf_1x1, bf_1x2}, BF_ROW8(2), BF_ROW6(3), BF_ROW6(4)}, &bf_blocks};
/* the widened twin: R x C accumulators, 2 C widened weight vectors, the input's two halves */
static const kern_blocks bff_blocks = {2, 16, 4, 512 << 10, {0, 2, 4, 4, 4},
                                       {{NULL}, {NULL, bffk_1x1, bffk_1x2}, BFFK_ROW4(2), BFFK_ROW4(3), BFFK_ROW4(4)}};
static const kern_w_kern bff_kern = {2, 4, {0, 2, 4, 4, 4},
                                     {{NULL}, {NULL, bf_1x1, bf_1x2}, BFF_ROW4(2), BFF_ROW4(3), BFF_ROW4(4)}, &bff_blocks};

static int bf_fma_forced = -1;
void kern_bf16_fma_use(int on) { bf_fma_forced = on; }

void kern_bf16_avx512_range(float *out, const kern_act *a, const kern_wmat *w, int n, int i, int o, int c0, int c1) {
    const int fma = bf_fma_forced >= 0 ? bf_fma_forced : kern_bf16_fma_faster();
    if (!fma) {
        if (w->packed) kern_bf16p_avx512_range(out, a->x, w, n, i, o, c0, c1, 0);
        else kern_w_drive(&bf_kern, out, a->x, w, n, i, o, c0, c1);
        return;
    }
    /* vdpbf16ps treats denormal inputs as zero and flushes denormal results whatever MXCSR says:
     * the FMAs do so too while they stand in for it (DAZ | FTZ), on this thread, for this call */
    const unsigned csr = _mm_getcsr();
    _mm_setcsr(csr | 0x8040);
    if (w->packed) kern_bf16p_avx512_range(out, a->x, w, n, i, o, c0, c1, 1);
    else kern_w_drive(&bff_kern, out, a->x, w, n, i, o, c0, c1);
    _mm_setcsr(csr);
}
