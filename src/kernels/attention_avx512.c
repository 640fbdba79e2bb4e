/* kernels/attention_avx512.c: the attention's row operations with AVX-512 (16 lanes), f32 or bf16
 * cache rows (widened exactly). The query heads that share a KV head go together: each cache row
 * is loaded and widened once for all of them.
 *   scores: a position's products for a head are one 16-lane vector (an FMA chain over the
 *   head's 16-element pieces); the vectors of 16 positions are summed lane by lane by one tree
 *   of shuffles (at_sum16) that gives every position the same order of additions, whichever
 *   slot, block, length or group it falls in.
 *   mix: a head's output stays in registers while the value rows are added, each lane's FMAs in
 *   position order from zero (the same sums as row by row).
 * Other head sizes than 64 and 128 go head by head, row by row. */
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

/* ---- any head size: a head, a row at a time ---- */

static AT_AVX512 float at_dot(const float *q, const void *row, kern_dtype dt, int hs) {
    __m512 a = _mm512_setzero_ps(), b = _mm512_setzero_ps();
    int j = 0;
    for (; j + 32 <= hs; j += 32) {
        a = _mm512_fmadd_ps(_mm512_loadu_ps(q + j), at_load(row, dt, j, 0xffff), a);
        b = _mm512_fmadd_ps(_mm512_loadu_ps(q + j + 16), at_load(row, dt, j + 16, 0xffff), b);
    }
    for (; j < hs; j += 16) {
        const __mmask16 m = kern_tail16(hs - j);
        a = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, q + j), at_load(row, dt, j, m), a);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(a, b));
}

static AT_AVX512 void at_axpy(float *o, float w, const void *row, kern_dtype dt, int hs) {
    const __m512 wv = _mm512_set1_ps(w);
    for (int j = 0; j < hs; j += 16) {
        const __mmask16 m = kern_tail16(hs - j);
        _mm512_mask_storeu_ps(o + j, m, _mm512_fmadd_ps(wv, at_load(row, dt, j, m), _mm512_maskz_loadu_ps(m, o + j)));
    }
}

/* ---- head sizes 16 NV (NV = 4, 8) ---- */

/* the slot of position p (of 16) in at_sum16's input, so that lane p of its output is p's sum (an
 * involution: the tree's output lanes, in order, hold inputs 0 2 1 3, 8 10 9 11, 4 6 5 7, 12 14 13 15) */
static const int AT_SLOT[16] = {0, 2, 1, 3, 8, 10, 9, 11, 4, 6, 5, 7, 12, 14, 13, 15};

/* lane l of the result: the sum of the 16 lanes of v[AT_SLOT[l]], every input by the same tree
 * (lanes l and l + 8, then l and l + 4, then l and l + 2, then l and l + 1) */
static inline __attribute__((always_inline)) AT_AVX512 __m512 at_sum16(const __m512 *v) {
    __m512 w[8], x[4], y[2];
    for (int j = 0; j < 8; j++)
        w[j] = _mm512_add_ps(_mm512_shuffle_f32x4(v[j], v[j + 8], 0x44), _mm512_shuffle_f32x4(v[j], v[j + 8], 0xee));
    for (int j = 0; j < 4; j++)
        x[j] = _mm512_add_ps(_mm512_shuffle_f32x4(w[j], w[j + 4], 0x88), _mm512_shuffle_f32x4(w[j], w[j + 4], 0xdd));
    for (int j = 0; j < 2; j++)
        y[j] = _mm512_add_ps(_mm512_shuffle_ps(x[j], x[j + 2], 0x44), _mm512_shuffle_ps(x[j], x[j + 2], 0xee));
    return _mm512_add_ps(_mm512_shuffle_ps(y[0], y[1], 0x88), _mm512_shuffle_ps(y[0], y[1], 0xdd));
}

#define AT_HB 4 /* query heads a pass of scores */

static inline __attribute__((always_inline)) AT_AVX512 void at_scores(float *a, int64_t lda, const float *q, int nq,
                                                                      const void *rows, int64_t stride, kern_dtype dt,
                                                                      int len, float scale, const int NV) {
    const size_t es = kern_dtype_size(dt);
    const __m512 sv = _mm512_set1_ps(scale);
    __m512 buf[AT_HB][16];
    for (int h0 = 0; h0 < nq; h0 += AT_HB) {
        const int nh = nq - h0 < AT_HB ? nq - h0 : AT_HB;
        const float *qg = q + (int64_t)h0 * 16 * NV;
        for (int p0 = 0; p0 < len; p0 += 16) {
            const int np = len - p0 < 16 ? len - p0 : 16;
            for (int pp = 0; pp < 16; pp++) {
                if (pp >= np) {
                    for (int h = 0; h < nh; h++) buf[h][AT_SLOT[pp]] = _mm512_setzero_ps();
                    continue;
                }
                const void *row = (const char *)rows + (int64_t)(p0 + pp) * stride * es;
                __m512 kv[8];
                _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) kv[v] = at_load(row, dt, 16 * v, 0xffff);
                _Pragma("GCC unroll 4") for (int h = 0; h < AT_HB; h++) if (h < nh) {
                    const float *qh = qg + h * 16 * NV;
                    __m512 t = _mm512_mul_ps(_mm512_loadu_ps(qh), kv[0]);
                    _Pragma("GCC unroll 8") for (int v = 1; v < NV; v++) t = _mm512_fmadd_ps(_mm512_loadu_ps(qh + 16 * v), kv[v], t);
                    buf[h][AT_SLOT[pp]] = t;
                }
            }
            for (int h = 0; h < nh; h++)
                _mm512_mask_storeu_ps(a + (h0 + h) * lda + p0, kern_tail16(np), _mm512_mul_ps(at_sum16(buf[h]), sv));
        }
    }
}

/* o (nq heads, 16 NV each) = per head the sum over positions of a[h][p] x row p */
static inline __attribute__((always_inline)) AT_AVX512 void at_mix(float *o, const float *a, int64_t lda, int nq,
                                                                   const void *rows, int64_t stride, kern_dtype dt,
                                                                   int len, const int NV) {
    const size_t es = kern_dtype_size(dt);
    enum { HM = 16 }; /* accumulators a pass: HM / NV heads */
    const int hb = HM / NV;
    for (int h0 = 0; h0 < nq; h0 += hb) {
        const int nh = nq - h0 < hb ? nq - h0 : hb;
        __m512 acc[HM];
        _Pragma("GCC unroll 16") for (int k = 0; k < HM; k++) acc[k] = _mm512_setzero_ps();
        for (int p = 0; p < len; p++) {
            const void *row = (const char *)rows + (int64_t)p * stride * es;
            __m512 kv[8];
            _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) kv[v] = at_load(row, dt, 16 * v, 0xffff);
            _Pragma("GCC unroll 4") for (int h = 0; h < HM / NV; h++) if (h < nh) {
                const __m512 wv = _mm512_set1_ps(a[(h0 + h) * lda + p]);
                _Pragma("GCC unroll 8") for (int v = 0; v < NV; v++) acc[h * NV + v] = _mm512_fmadd_ps(wv, kv[v], acc[h * NV + v]);
            }
        }
        for (int h = 0; h < nh; h++)
            for (int v = 0; v < NV; v++) _mm512_storeu_ps(o + (int64_t)(h0 + h) * 16 * NV + 16 * v, acc[h * NV + v]);
    }
}

AT_AVX512 void kern_attn_scores_avx512(float *a, int64_t lda, const float *q, int nq, const void *rows, int64_t stride,
                                       kern_dtype dt, int hs, int len, float scale) {
    if (hs == 64) {
        at_scores(a, lda, q, nq, rows, stride, dt, len, scale, 4);
    } else if (hs == 128) {
        at_scores(a, lda, q, nq, rows, stride, dt, len, scale, 8);
    } else {
        const size_t es = kern_dtype_size(dt);
        for (int h = 0; h < nq; h++)
            for (int p = 0; p < len; p++)
                a[h * lda + p] = at_dot(q + (int64_t)h * hs, (const char *)rows + p * stride * es, dt, hs) * scale;
    }
}

AT_AVX512 void kern_attn_mix_avx512(float *o, const float *a, int64_t lda, int nq, const void *rows, int64_t stride,
                                    kern_dtype dt, int hs, int len) {
    if (hs == 64) {
        at_mix(o, a, lda, nq, rows, stride, dt, len, 4);
    } else if (hs == 128) {
        at_mix(o, a, lda, nq, rows, stride, dt, len, 8);
    } else {
        const size_t es = kern_dtype_size(dt);
        for (int h = 0; h < nq; h++) {
            float *oh = o + (int64_t)h * hs;
            for (int j = 0; j < hs; j++) oh[j] = 0.0f;
            for (int p = 0; p < len; p++) at_axpy(oh, a[h * lda + p], (const char *)rows + p * stride * es, dt, hs);
        }
    }
}
