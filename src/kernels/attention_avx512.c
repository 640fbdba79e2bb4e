/* kernels/attention_avx512.c: the attention's operations with AVX-512 (16 lanes): a dot product
 * of a query head with a cache row, and a cache row added to an output row times a weight; f32 or
 * bf16 rows (widened exactly), the last partial vector masked. A head's scores and its mix of
 * values go over all its positions in one call (no call per position; the output row stays in
 * registers while the values are added, in position order: the same sums as row by row). */
#include <stdint.h>

#include "internal.h"
#include <immintrin.h>

#define AT_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl,avx2,fma")))

static inline __attribute__((always_inline)) AT_AVX512 __m512 at_load(const void *row, kern_dtype dt, int j,
                                                                       __mmask16 m) {
    if (dt == KERN_BF16)
        return _mm512_castsi512_ps(
            _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, (const uint16_t *)row + j)), 16));
    return _mm512_maskz_loadu_ps(m, (const float *)row + j);
}

AT_AVX512 float kern_attn_dot_avx512(const float *q, const void *row, kern_dtype dt, int hs) {
    __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
    int j = 0;
    for (; j + 32 <= hs; j += 32) {
        a = _mm512_fmadd_ps(_mm512_loadu_ps(q + j), at_load(row, dt, j, 0xffff), a);
        b = _mm512_fmadd_ps(_mm512_loadu_ps(q + j + 16), at_load(row, dt, j + 16, 0xffff), b);
    }
    for (; j < hs; j += 16) {
        const __mmask16 m = hs - j >= 16 ? 0xffff : (__mmask16)((1u << (hs - j)) - 1);
        a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + j), at_load(row, dt, j, m), a);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a, b));
}

AT_AVX512 void kern_attn_axpy_avx512(float *o, float w, const void *row, kern_dtype dt, int hs) {
    const __m512 wv = _mm512_set1_ps(w);
    for (int j = 0; j < hs; j += 16) {
        const __mmask16 m = hs - j >= 16 ? 0xffff : (__mmask16)((1u << (hs - j)) - 1);
        _mm512_mask_storeu_ps(o + j, m, _mm512_fmadd_ps(wv, at_load(row, dt, j, m), _mm512_maskz_loadu_ps(m, o + j)));
    }
}

AT_AVX512 void kern_attn_scores_avx512(float *a, const float *q, const void *rows, int64_t stride, kern_dtype dt,
                                       int hs, int len, float scale) {
    const size_t es = kern_dtype_size(dt);
    for (int p = 0; p < len; p++) a[p] = kern_attn_dot_avx512(q, (const char *)rows + p * stride * es, dt, hs) * scale;
}

/* o (16 NV) = the sum over positions of a[p] x row p, each lane's FMAs in position order */
static inline __attribute__((always_inline)) AT_AVX512 void at_mix(float *o, const float *a, const void *rows,
                                                                   int64_t stride, kern_dtype dt, int len, const int NV) {
    __m512 acc[8];
    _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) acc[v] = _mm512_setzero_ps();
    const size_t es = kern_dtype_size(dt);
    for (int p = 0; p < len; p++) {
        const void *row = (const char *)rows + p * stride * es;
        const __m512 wv = _mm512_set1_ps(a[p]);
        _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++)
            acc[v] = _mm512_fmadd_ps(wv, at_load(row, dt, 16 * v, 0xffff), acc[v]);
    }
    _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) _mm512_storeu_ps(o + 16 * v, acc[v]);
}

AT_AVX512 void kern_attn_mix_avx512(float *o, const float *a, const void *rows, int64_t stride, kern_dtype dt, int hs,
                                    int len) {
    if (hs == 64) {
        at_mix(o, a, rows, stride, dt, len, 4);
    } else if (hs == 128) {
        at_mix(o, a, rows, stride, dt, len, 8);
    } else {
        const size_t es = kern_dtype_size(dt);
        for (int j = 0; j < hs; j++) o[j] = 0.0f;
        for (int p = 0; p < len; p++) kern_attn_axpy_avx512(o, a[p], (const char *)rows + p * stride * es, dt, hs);
    }
}
