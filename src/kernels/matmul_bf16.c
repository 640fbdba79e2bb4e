/* kernels/matmul_bf16.c: the portable bf16-weight matmul (any CPU). The activations come rounded
 * to bf16 (kern_act.x); every product of two bf16 is exact in f32. */
#include <stdint.h>

#include "internal.h"

/* one non-inlined function computes every element: 8 lanes (lane l sums k = l, l + 8, ...), then
 * a fixed tree */
__attribute__((noinline)) static float bf16_dot_generic(const uint16_t *x, const uint16_t *w, int i) {
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int k = 0;
    for (; k + 8 <= i; k += 8)
        for (int l = 0; l < 8; l++) a[l] += kern_bf16_to_f32(x[k + l]) * kern_bf16_to_f32(w[k + l]);
    for (int l = 0; k + l < i; l++) a[l] += kern_bf16_to_f32(x[k + l]) * kern_bf16_to_f32(w[k + l]);
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

void kern_bf16_generic_range(float *out, const kern_act *a, const kern_wmat *w, int n, int i, int o, int c0, int c1) {
    const uint16_t *wd = w->data;
    const int64_t ldw = kern_wmat_ld(w, i);
    for (int cb = c0; cb < c1; cb += 64) {
        const int ce = cb + 64 < c1 ? cb + 64 : c1;
        for (int t = 0; t < n; t++)
            for (int c = cb; c < ce; c++)
                out[(int64_t)t * o + c] = bf16_dot_generic(a->x + (int64_t)t * i, wd + c * ldw, i);
    }
}
