/* kernels/matmul_q8_avx512.c: int8 weights by int8 activations with AVX512_VNNI's vpdpbusd
 * (unsigned x signed bytes, 4 products a lane). The weights go in as w + 128 (w xor 0x80,
 * unsigned), the activations q as they are (kern_act.qc: each row's q, then its -128 x the sum of
 * every 4 of q as int32); each lane's sum of (w + 128) * q, started from that correction, is the
 * exact int32 sum of q * w of its 4 columns. The correction depends on the activations only, so
 * it is made once a call, not once per weight row. A 512-bit step covers two blocks of 32 (lanes 0-7 and 8-15); each lane's integer sum
 * times scale_w * scale_x of its block is added to the lane's f32 accumulator by one fused
 * multiply-add, step after step, a last single block in lanes 0-7; the lanes are then summed by
 * one fixed tree (mm_hsum512): one chain per element, whatever R, C, block or thread. */
#include "matmul_f32_tile.h"

#define Q8_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")))

/* lanes 0-7: s[0], lanes 8-15: s[1] (only s[0] and zeros with one = 1) */
static inline __attribute__((always_inline)) Q8_AVX512 __m512 q8_scales(const float *s, int one) {
    const __m512i idx = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
    if (one) return _mm512_maskz_permutexvar_ps(0x00ff, idx, _mm512_castps128_ps512(_mm_load_ss(s)));
    return _mm512_permutexvar_ps(idx, _mm512_castps128_ps512(_mm_castpd_ps(_mm_load_sd((const double *)s))));
}

static inline __attribute__((always_inline)) Q8_AVX512 void q8_tile(float *y, int ldy, const int8_t *x,
                                                                    const float *xs, const int8_t *w,
                                                                    const float *ws, int64_t ldw, int i,
                                                                    const int R, const int C) {
    const int nb = i / KERN_Q8_BLOCK;
    const int64_t wnb = ldw / KERN_Q8_BLOCK;
    const __m512i k128 = _mm512_set1_epi8((char)0x80);
    __m512 a[4][6];
    _Pragma("GCC unroll 6") for (int r = 0; r < R; r++) _Pragma("GCC unroll 6") for (int c = 0; c < C; c++)
        a[r][c] = _mm512_setzero_ps();
    for (int k = 0; k < i; k += 64) {
        const int b = k / KERN_Q8_BLOCK, one = k + 64 > i; /* one: a last single block */
        const __mmask64 m = one ? 0xffffffffull : ~0ull;
        __m512i wv[6];
        __m512 sw[6];
        _Pragma("GCC unroll 6") for (int c = 0; c < C; c++) {
            wv[c] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, w + c * ldw + k), k128);
            if (R == 1) { /* decode: memory latency, not the core, limits a row's stream (see the kern) */
                _mm_prefetch((const char *)(w + c * ldw + k + KERN_PF_AHEAD), _MM_HINT_T0);
                if (!(k & 511)) _mm_prefetch((const char *)(ws + c * wnb + b + KERN_PF_AHEAD / 32), _MM_HINT_T0);
            }
            sw[c] = q8_scales(ws + c * wnb + b, one);
        }
        _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) {
            const int8_t *xr = x + (int64_t)r * 2 * i;
            const __m512i xv = _mm512_maskz_loadu_epi8(m, xr + k);
            const __m512i nc = _mm512_maskz_loadu_epi8(m, xr + i + k); /* -128 x (sum of the lane's 4) */
            const __m512 sx = q8_scales(xs + (int64_t)r * nb + b, one);
            _Pragma("GCC unroll 6") for (int c = 0; c < C; c++) {
                const __m512i t = _mm512_dpbusd_epi32(nc, wv[c], xv);
                a[r][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), _mm512_mul_ps(sx, sw[c]), a[r][c]);
            }
        }
    }
    _Pragma("GCC unroll 4") for (int r = 0; r < R; r++) _Pragma("GCC unroll 6") for (int c = 0; c < C; c++)
        y[(int64_t)r * ldy + c] = mm_hsum512(a[r][c]);
}

#define Q8_TILE(R, C)                                                                                          \
    static Q8_AVX512 void q8_##R##x##C(float *y, int ldy, const void *x, const float *xs, const void *w,      \
                                       const float *ws, int64_t ldw, int i) {                                \
        q8_tile(y, ldy, x, xs, w, ws, ldw, i, R, C);                                                              \
    }
#define Q8_TILES3(R) Q8_TILE(R, 1) Q8_TILE(R, 2) Q8_TILE(R, 3)
#define Q8_TILES4(R) Q8_TILES3(R) Q8_TILE(R, 4)
Q8_TILE(1, 1) Q8_TILE(1, 2) Q8_TILES4(2) Q8_TILES4(3) Q8_TILES3(4)
#define Q8_ROW3(R) {NULL, q8_##R##x1, q8_##R##x2, q8_##R##x3}
#define Q8_ROW4(R) {NULL, q8_##R##x1, q8_##R##x2, q8_##R##x3, q8_##R##x4}

/* 32 registers: R x C accumulators; per weight row its vector and scales; one token row (decode)
 * takes one or two weight rows (KERN_LONG_ROW) */
static const kern_w_kern q8_kern = {1, 2, 4, {0, 2, 4, 4, 3},
                                    {{NULL}, {NULL, q8_1x1, q8_1x2}, Q8_ROW4(2),
                                     Q8_ROW4(3), Q8_ROW3(4)},
                                    NULL};

void kern_q8_avx512_range(float *out, const kern_act *a, const kern_wmat *w, int n, int i, int o, int c0, int c1) {
    kern_w_drive(&q8_kern, out, a->qc, a->scale, w, n, i, o, c0, c1);
}
