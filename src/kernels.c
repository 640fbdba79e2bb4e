#include "kernels.h"

#include <cblas.h>
#include <math.h>

void kern_rmsnorm(float *out, const float *in, const float *w, int n, int d, float eps) {
    for (int t = 0; t < n; t++) {
        const float *x = in + (int64_t)t * d;
        float *o = out + (int64_t)t * d;
        float ss = 0.0f;
        for (int j = 0; j < d; j++) ss += x[j] * x[j];
        ss = 1.0f / sqrtf(ss / d + eps);
        for (int j = 0; j < d; j++) o[j] = w[j] * (ss * x[j]);
    }
}

void kern_matmul(float *out, const float *in, const float *w, int n, int i, int o) {
    if (n <= 0 || o <= 0) return;
    for (int r = 0; r < n; r += KERN_ROWS)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, KERN_ROWS, o, i, 1.0f, in + (int64_t)r * i, i, w, i,
                    0.0f, out + (int64_t)r * o, o);
}

const char *kern_matmul_impl(void) { return "sgemm in chunks of 8 rows (baseline)"; }

void kern_rope_freqs(float *inv_freq, int head_size, float theta, int llama3, float factor,
                     float low_freq_factor, float high_freq_factor, int original_max_pos) {
    for (int j = 0; j < head_size / 2; j++) {
        float f = 1.0f / powf(theta, (float)(2 * j) / (float)head_size);
        if (llama3) {
            float low_wavelen = original_max_pos / low_freq_factor;
            float high_wavelen = original_max_pos / high_freq_factor;
            float wavelen = 2.0f * (float)M_PI / f;
            if (wavelen > low_wavelen) {
                f = f / factor;
            } else if (wavelen >= high_wavelen) {
                float smooth = (original_max_pos / wavelen - low_freq_factor) / (high_freq_factor - low_freq_factor);
                f = (1.0f - smooth) * f / factor + smooth * f;
            }
        }
        inv_freq[j] = f;
    }
}

void kern_rope(float *x, const int *pos, const float *inv_freq, int n, int n_heads, int head_size) {
    for (int t = 0; t < n; t++) {
        for (int h = 0; h < n_heads; h++) {
            float *v = x + ((int64_t)t * n_heads + h) * head_size;
            for (int j = 0; j < head_size / 2; j++) {
                float a = pos[t] * inv_freq[j];
                float c = cosf(a), s = sinf(a);
                float v0 = v[2 * j], v1 = v[2 * j + 1];
                v[2 * j] = v0 * c - v1 * s;
                v[2 * j + 1] = v0 * s + v1 * c;
            }
        }
    }
}

void kern_attention(float *out, const float *q, const float *kcache, const float *vcache,
                    const int *pos, const int *slot, int n, const kern_attn_dims *dd, float *att) {
    const int hs = dd->head_size, kvd = dd->n_kv * hs;
    const float scale = 1.0f / sqrtf((float)hs);
    for (int t = 0; t < n; t++) {
        const int len = pos[t] + 1;
        const float *kbase = kcache + (int64_t)slot[t] * dd->seq_len * kvd;
        const float *vbase = vcache + (int64_t)slot[t] * dd->seq_len * kvd;
        for (int h = 0; h < dd->n_heads; h++) {
            const int kvh = (dd->head0 + h) / dd->kv_mul - dd->kv_head0;
            const float *qh = q + ((int64_t)t * dd->n_heads + h) * hs;
            float *a = att + (int64_t)h * dd->seq_len;
            /* scores (len) = K (len, hs; row stride kvd) . q */
            cblas_sgemv(CblasRowMajor, CblasNoTrans, len, hs, scale, kbase + kvh * hs, kvd, qh, 1, 0.0f, a, 1);
            kern_softmax(a, len);
            /* out (hs) = V^T (hs, len) . a */
            cblas_sgemv(CblasRowMajor, CblasTrans, len, hs, 1.0f, vbase + kvh * hs, kvd, a, 1, 0.0f,
                        out + ((int64_t)t * dd->n_heads + h) * hs, 1);
        }
    }
}

void kern_swiglu(float *gate, const float *up, int64_t len) {
    for (int64_t i = 0; i < len; i++) {
        float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

void kern_add(float *x, const float *y, int64_t len) {
    for (int64_t i = 0; i < len; i++) x[i] += y[i];
}

void kern_softmax(float *x, int n) {
    float m = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > m) m = x[i];
    float s = 0.0f;
    for (int i = 0; i < n; i++) {
        x[i] = expf(x[i] - m);
        s += x[i];
    }
    for (int i = 0; i < n; i++) x[i] /= s;
}

float kern_log_softmax_at(const float *x, int n, int idx) {
    double m = x[0];
    for (int i = 1; i < n; i++)
        if (x[i] > m) m = x[i];
    double s = 0.0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - m);
    return (float)((double)x[idx] - m - log(s));
}
