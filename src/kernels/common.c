/* kernels/common.c: the element-wise and per-row kernels (norms, RoPE, SwiGLU, softmax) and the
 * type conversions */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "internal.h"

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


const char *kern_dtype_name(kern_dtype dt) { return dt == KERN_BF16 ? "bf16" : dt == KERN_Q8 ? "q8" : "f32"; }

size_t kern_dtype_size(kern_dtype dt) { return dt == KERN_BF16 ? 2 : dt == KERN_Q8 ? 1 : 4; }

uint16_t kern_f32_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* NaN stays quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1); /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float kern_bf16_to_f32(uint16_t h) {
    const uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

void kern_quantize_q8(int8_t *q, float *scale, const float *x, int64_t n) {
    for (int64_t b = 0; b < n / KERN_Q8_BLOCK; b++) {
        const float *xb = x + b * KERN_Q8_BLOCK;
        float amax = 0.0f;
        for (int k = 0; k < KERN_Q8_BLOCK; k++) amax = fmaxf(amax, fabsf(xb[k]));
        const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
        scale[b] = amax / 127.0f;
        for (int k = 0; k < KERN_Q8_BLOCK; k++) q[b * KERN_Q8_BLOCK + k] = (int8_t)nearbyintf(xb[k] * inv);
    }
}

void kern_bf16_rows_generic(uint16_t *dst, const float *src, int64_t n) {
    for (int64_t k = 0; k < n; k++) dst[k] = kern_f32_to_bf16(src[k]);
}

void kern_q8_corrections_generic(int32_t *c, const int8_t *q, int i) {
    for (int b = 0; b < i / KERN_Q8_BLOCK; b++) {
        int32_t sum = 0;
        for (int k = 0; k < KERN_Q8_BLOCK; k++) sum += q[b * KERN_Q8_BLOCK + k];
        c[b] = -128 * sum;
    }
}

void kern_store_rows(void *dst, kern_dtype dt, const float *src, int64_t n) {
    if (dt == KERN_BF16) {
        kern_rows_get()->bf16_rows(dst, src, n);
    } else {
        memcpy(dst, src, sizeof(float) * (size_t)n);
    }
}

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

typedef struct {
    float *gate;
    const float *up;
} swiglu_job;

static void swiglu_unit(const void *ctx, int t0, int tn, int c0, int c1) {
    (void)t0, (void)tn;
    const swiglu_job *J = ctx;
    kern_rows_get()->swiglu(J->gate + c0, J->up + c0, c1 - c0);
}

void kern_swiglu_generic(float *gate, const float *up, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        const float g = gate[i];
        gate[i] = g / (1.0f + expf(-g)) * up[i];
    }
}

/* element by element, so the threads (the matmuls' pool, when the work pays for waking them:
 * a batch's prefill, ~4 ns an element with expf, under 1 vectorised) change nothing but the time */
void kern_swiglu(float *gate, const float *up, int64_t len) {
    for (int64_t at = 0; at < len; at += 1 << 30) {
        const int part = len - at < (1 << 30) ? (int)(len - at) : 1 << 30;
        const swiglu_job J = {gate + at, up + at};
        const double per = kern_rows_get()->swiglu == kern_swiglu_generic ? 4e-9 : 1e-9; /* s an element */
        kern_pool_run(swiglu_unit, &J, 1, 1, part, 64, kern_pool_threads(part * per, part, 4096));
    }
}

void kern_add_bias(float *x, const float *b, int n, int d) {
    for (int t = 0; t < n; t++)
        for (int j = 0; j < d; j++) x[(int64_t)t * d + j] += b[j];
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
