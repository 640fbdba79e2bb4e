/* kernels/matmul_q8.c: the portable q8-weight matmul (any CPU) on the packed weights
 * (kern_q8_pack): per block of 32 the int8 products summed exactly in int32, then added as
 * s = fmaf(sum, scale_w * scale_x, s), block after block (the reference's chain, so every
 * implementation agrees bit for bit). */
#include <math.h>
#include <stdint.h>

#include "internal.h"

/* x (i) int8 with its scales xs (i / 32) by lane `lane` of the packed group g */
__attribute__((noinline)) static float q8_dot_generic(const int8_t *x, const float *xs, const uint8_t *g, int lane,
                                                      int i) {
    float s = 0.0f;
    for (int b = 0; b < i / KERN_Q8_BLOCK; b++, g += KERN_Q8_GBLOCK) {
        int32_t sum = 0;
        for (int k = 0; k < KERN_Q8_BLOCK; k++) sum += (int32_t)x[b * KERN_Q8_BLOCK + k] * kern_q8_blk_q(g, lane, k);
        s = fmaf((float)sum, kern_q8_blk_scale(g, lane) * xs[b], s);
    }
    return s;
}

void kern_q8_generic_range(float *out, const kern_act *a, const kern_wmat *w, int n, int i, int o, int c0, int c1) {
    const uint8_t *wd = w->data;
    const int nb = i / KERN_Q8_BLOCK;
    const int64_t gbytes = (int64_t)nb * KERN_Q8_GBLOCK;
    for (int cb = c0; cb < c1; cb += 64) {
        const int ce = cb + 64 < c1 ? cb + 64 : c1;
        for (int t = 0; t < n; t++)
            for (int c = cb; c < ce; c++)
                out[(int64_t)t * o + c] = q8_dot_generic(a->q + (int64_t)t * i, a->scale + (int64_t)t * nb,
                                                         wd + (c / KERN_Q8_ROWS) * gbytes, c % KERN_Q8_ROWS, i);
    }
}
