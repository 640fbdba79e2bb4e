/* kernels/ref.c: plain reference twins of the optimised kernels: obvious loops, no BLAS, no
 * threads, no scratch but what the caller gives */
#include <math.h>
#include <stdint.h>

#include "internal.h"

static float ref_dot_f32(const float *x, const float *w, int i) {
    float s = 0.0f;
    for (int j = 0; j < i; j++) s += w[j] * x[j];
    return s;
}

void kern_matmul_ref(float *out, const float *in, const float *w, int n, int i, int o) {
    for (int t = 0; t < n; t++)
        for (int r = 0; r < o; r++) out[(int64_t)t * o + r] = ref_dot_f32(in + (int64_t)t * i, w + (int64_t)r * i, i);
}

/* f32 and bf16 weights in any layout (kern_wmat_at), summed in k order; bf16: the activations
 * rounded to bf16, exact products */
static float ref_dot_w(const float *x, const kern_wmat *w, int64_t r, int i) {
    const int bf16 = w->dtype == KERN_BF16;
    float s = 0.0f;
    for (int j = 0; j < i; j++) s += (bf16 ? kern_bf16_to_f32(kern_f32_to_bf16(x[j])) : x[j]) * kern_wmat_at(w, i, r, j);
    return s;
}

/* q8: activations quantised per block of 32, each block's integer sum scaled and added by one
 * fused multiply-add, blocks in order (w: row r of the packed matrix) */
static float ref_dot_q8(const float *x, const kern_wmat *w, int64_t r, int i) {
    float s = 0.0f;
    for (int b = 0; b < i / KERN_Q8_BLOCK; b++) {
        int8_t q[KERN_Q8_BLOCK];
        float xs, ws = 0.0f;
        kern_quantize_q8(q, &xs, x + b * KERN_Q8_BLOCK, KERN_Q8_BLOCK);
        int32_t sum = 0;
        for (int k = 0; k < KERN_Q8_BLOCK; k++) sum += (int32_t)q[k] * kern_q8_at(w, i, r, b * KERN_Q8_BLOCK + k, &ws);
        s = fmaf((float)sum, ws * xs, s);
    }
    return s;
}

void kern_matmul_w_ref(float *out, const float *in, const kern_wmat *w, int n, int i, int o) {
    const int64_t ld = kern_wmat_ld(w, i);
    if (w->dtype == KERN_F32 && ld == i && !w->packed) {
        kern_matmul_ref(out, in, w->data, n, i, o);
        return;
    }
    for (int t = 0; t < n; t++)
        for (int r = 0; r < o; r++) {
            const float *x = in + (int64_t)t * i;
            out[(int64_t)t * o + r] = w->dtype == KERN_Q8 ? ref_dot_q8(x, w, r, i) : ref_dot_w(x, w, r, i);
        }
}

static float ref_load(const void *cache, kern_dtype dt, int64_t k) {
    return dt == KERN_BF16 ? kern_bf16_to_f32(((const uint16_t *)cache)[k]) : ((const float *)cache)[k];
}

void kern_attention_ref(float *out, const float *q, const void *kcache, const void *vcache, const int *pos,
                        const int *slot, int n, const kern_attn_dims *dd, float *att) {
    const int hs = dd->head_size, kvd = dd->n_kv * hs;
    for (int t = 0; t < n; t++) {
        const int p0 = dd->window > 0 && pos[t] - dd->window + 1 > 0 ? pos[t] - dd->window + 1 : 0;
        for (int h = 0; h < dd->n_heads; h++) {
            const int kvh = (dd->head0 + h) / dd->kv_mul - dd->kv_head0;
            const float *qh = q + ((int64_t)t * dd->n_heads + h) * hs;
            float *a = att + (int64_t)h * dd->seq_len;
            for (int p = p0; p <= pos[t]; p++) {
                const int64_t k0 = ((int64_t)slot[t] * dd->seq_len + p) * kvd + kvh * hs;
                float s = 0.0f;
                for (int j = 0; j < hs; j++) s += qh[j] * ref_load(kcache, dd->kv_dtype, k0 + j);
                a[p] = s / sqrtf((float)hs);
            }
            kern_softmax(a + p0, pos[t] + 1 - p0);
            float *o = out + ((int64_t)t * dd->n_heads + h) * hs;
            for (int j = 0; j < hs; j++) o[j] = 0.0f;
            for (int p = p0; p <= pos[t]; p++) {
                const int64_t v0 = ((int64_t)slot[t] * dd->seq_len + p) * kvd + kvh * hs;
                for (int j = 0; j < hs; j++) o[j] += a[p] * ref_load(vcache, dd->kv_dtype, v0 + j);
            }
        }
    }
}
