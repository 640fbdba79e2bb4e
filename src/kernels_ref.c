/* plain reference twins of the optimised kernels: obvious loops, no BLAS */
#include <math.h>

#include "kernels.h"

void kern_matmul_ref(float *out, const float *in, const float *w, int n, int i, int o) {
    for (int t = 0; t < n; t++)
        for (int r = 0; r < o; r++) {
            float s = 0.0f;
            for (int j = 0; j < i; j++) s += w[(int64_t)r * i + j] * in[(int64_t)t * i + j];
            out[(int64_t)t * o + r] = s;
        }
}

void kern_attention_ref(float *out, const float *q, const float *kcache, const float *vcache,
                        const int *pos, const int *slot, int n, const kern_attn_dims *dd, float *att) {
    const int hs = dd->head_size, kvd = dd->n_kv * hs;
    for (int t = 0; t < n; t++) {
        for (int h = 0; h < dd->n_heads; h++) {
            const int kvh = (dd->head0 + h) / dd->kv_mul - dd->kv_head0;
            const float *qh = q + ((int64_t)t * dd->n_heads + h) * hs;
            float *a = att + (int64_t)h * dd->seq_len;
            for (int p = 0; p <= pos[t]; p++) {
                const float *k = kcache + ((int64_t)slot[t] * dd->seq_len + p) * kvd + kvh * hs;
                float s = 0.0f;
                for (int j = 0; j < hs; j++) s += qh[j] * k[j];
                a[p] = s / sqrtf((float)hs);
            }
            kern_softmax(a, pos[t] + 1);
            float *o = out + ((int64_t)t * dd->n_heads + h) * hs;
            for (int j = 0; j < hs; j++) o[j] = 0.0f;
            for (int p = 0; p <= pos[t]; p++) {
                const float *v = vcache + ((int64_t)slot[t] * dd->seq_len + p) * kvd + kvh * hs;
                for (int j = 0; j < hs; j++) o[j] += a[p] * v[j];
            }
        }
    }
}
