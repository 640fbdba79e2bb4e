/* kernels/matmul_q8.c: the portable q8-weight matmul (any CPU): per block of 32 the int8 products
 * summed exactly in int32, then scale_w * scale_x * sum added in f32, block after block (the
 * reference's order, so the two agree bit for bit). */
#include <stdint.h>

#include "internal.h"

__attribute__((noinline)) static float q8_dot_generic(const int8_t *x, const float *xs, const int8_t *w,
                                                      const float *ws, int i) {
    float s = 0.0f;
    for (int b = 0; b < i / KERN_Q8_BLOCK; b++) {
        int32_t sum = 0;
        for (int k = 0; k < KERN_Q8_BLOCK; k++) sum += (int32_t)x[b * KERN_Q8_BLOCK + k] * w[b * KERN_Q8_BLOCK + k];
        s += ws[b] * xs[b] * (float)sum;
    }
    return s;
}

void kern_q8_generic_range(float *out, const kern_act *a, const kern_wmat *w, int n, int i, int o, int c0, int c1) {
    const int8_t *wd = w->data;
    const int nb = i / KERN_Q8_BLOCK;
    const int64_t ldw = kern_wmat_ld(w, i);
    for (int cb = c0; cb < c1; cb += 64) {
        const int ce = cb + 64 < c1 ? cb + 64 : c1;
        for (int t = 0; t < n; t++)
            for (int c = cb; c < ce; c++)
                out[(int64_t)t * o + c] = q8_dot_generic(a->q + (int64_t)t * i, a->scale + (int64_t)t * nb,
                                                         wd + c * ldw, w->scale + c * (ldw / KERN_Q8_BLOCK), i);
    }
}
