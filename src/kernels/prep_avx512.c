/* kernels/prep_avx512.c: the activations' preparation for the bf16 and q8 matmuls with AVX-512
 * (16 floats a step), bit for bit the portable code's (common.c: kern_f32_to_bf16,
 * kern_quantize_q8): rounding to bf16 by the same integer steps; per block of 32 the same
 * maximum (exact in any order), scale and products, rounded to the nearest even integer as
 * nearbyintf does in the default rounding mode. */
#include <stdint.h>

#include "internal.h"
#include <immintrin.h>

#define PR_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

/* 16 floats to bf16 bits: NaN stays a quiet NaN, else round to nearest even */
static inline __attribute__((always_inline)) PR_AVX512 __m256i pr_bf16(__m512i u) {
    const __m512i one = _mm512_set1_epi32(1), half = _mm512_set1_epi32(0x7fff);
    const __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(_mm512_add_epi32(u, half), _mm512_and_si512(_mm512_srli_epi32(u, 16), one)), 16);
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                                  _mm512_set1_epi32(0x7f800000));
    const __m512i q = _mm512_or_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(0x40));
    return _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, r, q));
}

PR_AVX512 void kern_bf16_rows_avx512(uint16_t *dst, const float *src, int64_t n) {
    int64_t k = 0;
    for (; k + 16 <= n; k += 16)
        _mm256_storeu_si256((__m256i *)(dst + k), pr_bf16(_mm512_loadu_si512(src + k)));
    if (k < n) {
        const __mmask16 m = kern_tail16(n - k);
        _mm256_mask_storeu_epi16(dst + k, m, pr_bf16(_mm512_maskz_loadu_epi32(m, src + k)));
    }
}

/* one block of 32: q (32 int8) and its scale */
static inline __attribute__((always_inline)) PR_AVX512 void pr_q8_block(int8_t *q, float *scale, const float *x) {
    const __m512 a = _mm512_loadu_ps(x), b = _mm512_loadu_ps(x + 16);
    const float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(a), _mm512_abs_ps(b)));
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    *scale = amax / 127.0f;
    const __m512 v = _mm512_set1_ps(inv);
    const __m512i qa = _mm512_cvtps_epi32(_mm512_mul_ps(a, v)), qb = _mm512_cvtps_epi32(_mm512_mul_ps(b, v));
    _mm_storeu_si128((__m128i *)q, _mm512_cvtepi32_epi8(qa));
    _mm_storeu_si128((__m128i *)(q + 16), _mm512_cvtepi32_epi8(qb));
}

PR_AVX512 void kern_q8_rows_avx512(int8_t *q, float *scale, const float *x, int64_t n) {
    for (int64_t b = 0; b < n / KERN_Q8_BLOCK; b++)
        pr_q8_block(q + b * KERN_Q8_BLOCK, scale + b, x + b * KERN_Q8_BLOCK);
}

PR_AVX512 void kern_q8_corrections_avx512(int32_t *c, const int8_t *q, int i) {
    const __m512i ones8 = _mm512_set1_epi8(1), ones16 = _mm512_set1_epi16(1);
    int k = 0;
    for (; k + 64 <= i; k += 64) { /* 64 q: 16 sums of 4, then each block's 8 of them */
        const __m512i s = _mm512_madd_epi16(_mm512_maddubs_epi16(ones8, _mm512_loadu_si512(q + k)), ones16);
        c[k / 32] = -128 * _mm512_mask_reduce_add_epi32(0x00ff, s);
        c[k / 32 + 1] = -128 * _mm512_mask_reduce_add_epi32(0xff00, s);
    }
    for (; k < i; k += KERN_Q8_BLOCK) {
        int32_t sum = 0;
        for (int j = 0; j < KERN_Q8_BLOCK; j++) sum += q[k + j];
        c[k / 32] = -128 * sum;
    }
}

/* e^y for 16 floats: y = k ln 2 + r (k nearest, r within ln 2 / 2, ln 2 in two parts), e^r by
 * its Taylor polynomial to r^7 (Horner, FMAs), times 2^k by vscalefps (infinity past the top,
 * zero past the bottom): within 2 ulp of expf */
static inline __attribute__((always_inline)) PR_AVX512 __m512 pr_exp(__m512 y) {
    /* y within [-104, 89] (e^y 0 below, infinity above, as expf's): r stays small; NaN kept (the
     * constant first: max and min return their second operand when one is NaN) */
    y = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), y));
    const __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(y, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145751953125f), y);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.428606765330187045e-06f), r);
    __m512 p = _mm512_set1_ps(1.0f / 5040);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, k);
}

/* every element through the same vector code (the last partial vector masked): an element's
 * value never depends on where a range of the pool's cut falls */
PR_AVX512 void kern_swiglu_avx512(float *gate, const float *up, int64_t n) {
    for (int64_t k = 0; k < n; k += 16) {
        const __mmask16 m = kern_tail16(n - k);
        const __m512 g = _mm512_maskz_loadu_ps(m, gate + k), u = _mm512_maskz_loadu_ps(m, up + k);
        const __m512 e = pr_exp(_mm512_sub_ps(_mm512_setzero_ps(), g));
        _mm512_mask_storeu_ps(gate + k, m, _mm512_mul_ps(_mm512_div_ps(g, _mm512_add_ps(_mm512_set1_ps(1.0f), e)), u));
    }
}

/* kern_softmax's steps on 16 lanes: the maximum (exact in any order), e^(x - max) by pr_exp, the
 * lanes' sums (position p in lane p % 16, in position order) added by _mm512_reduce_add_ps, then a
 * division; one row is one call, so an element's value never depends on the batch or the thread */
PR_AVX512 void kern_softmax_avx512(float *x, int n) {
    if (n <= 0) return;
    __m512 mv = _mm512_set1_ps(x[0]);
    for (int k = 0; k < n; k += 16) {
        const __mmask16 m = kern_tail16(n - k);
        mv = _mm512_mask_max_ps(mv, m, mv, _mm512_maskz_loadu_ps(m, x + k));
    }
    const __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
    __m512 sv = _mm512_setzero_ps();
    for (int k = 0; k < n; k += 16) {
        const __mmask16 m = kern_tail16(n - k);
        const __m512 e = pr_exp(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + k), mx));
        _mm512_mask_storeu_ps(x + k, m, e);
        sv = _mm512_mask_add_ps(sv, m, sv, e);
    }
    const __m512 s = _mm512_set1_ps(_mm512_reduce_add_ps(sv));
    for (int k = 0; k < n; k += 16) {
        const __mmask16 m = kern_tail16(n - k);
        _mm512_mask_storeu_ps(x + k, m, _mm512_div_ps(_mm512_maskz_loadu_ps(m, x + k), s));
    }
}
