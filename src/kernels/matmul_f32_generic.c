/* kernels/matmul_f32_generic.c: the portable f32 matmul (any CPU) */
#include <stdint.h>

#include "internal.h"

/* portable: one non-inlined function computes every element, so every element runs the same
 * code whatever the compiler does to it */
__attribute__((noinline)) static float mm_dot_generic(const float *x, const float *w, int i) {
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int k = 0;
    for (; k + 8 <= i; k += 8)
        for (int l = 0; l < 8; l++) a[l] += x[k + l] * w[k + l];
    for (int l = 0; k + l < i; l++) a[l] += x[k + l] * w[k + l];
    float b0 = a[0] + a[4], b1 = a[1] + a[5], b2 = a[2] + a[6], b3 = a[3] + a[7];
    b0 += b2;
    b1 += b3;
    return b0 + b1;
}

/* out[:, c0:c1] for n token rows: blocks of 64 weight rows (L2) by token row */
void kern_f32_generic_range(float *out, const float *in, const float *w, int64_t ldw, int n, int i, int o, int c0,
                            int c1) {
    for (int cb = c0; cb < c1; cb += 64) {
        const int ce = cb + 64 < c1 ? cb + 64 : c1;
        for (int t = 0; t < n; t++)
            for (int c = cb; c < ce; c++)
                out[(int64_t)t * o + c] = mm_dot_generic(in + (int64_t)t * i, w + (int64_t)c * ldw, i);
    }
}
