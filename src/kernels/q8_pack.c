/* kernels/q8_pack.c: the packed layouts of q8 weights (kernels.h: kern_q8_pack), made once at
 * load and read by every q8 matmul, and of bf16 weights for AMX tiles (kern_bf16_pack) */
#include <stdint.h>
#include <string.h>

#include "internal.h"

size_t kern_q8_packed_bytes(int64_t o, int64_t i) {
    const int64_t groups = (o + KERN_Q8_ROWS - 1) / KERN_Q8_ROWS;
    return (size_t)(groups * (i / KERN_Q8_BLOCK) * KERN_Q8_GBLOCK);
}

void kern_q8_pack(void *dst, const int8_t *q, const float *scale, int64_t ld, int64_t o, int64_t i) {
    const int64_t nb = i / KERN_Q8_BLOCK, groups = (o + KERN_Q8_ROWS - 1) / KERN_Q8_ROWS;
    uint8_t *d = dst;
    for (int64_t g = 0; g < groups; g++)
        for (int64_t b = 0; b < nb; b++, d += KERN_Q8_GBLOCK) {
            float *s = (float *)(void *)(d + KERN_Q8_ROWS * KERN_Q8_BLOCK);
            for (int lane = 0; lane < KERN_Q8_ROWS; lane++) {
                const int64_t r = g * KERN_Q8_ROWS + lane;
                const int8_t *src = r < o ? q + r * ld + b * KERN_Q8_BLOCK : NULL;
                for (int k = 0; k < KERN_Q8_BLOCK; k++)
                    d[(k / 4) * 64 + lane * 4 + k % 4] = (uint8_t)((src ? src[k] : 0) ^ 0x80);
                s[lane] = r < o ? scale[r * (ld / KERN_Q8_BLOCK) + b] : 0.0f;
            }
        }
}

void kern_q8_row(float *x, const kern_wmat *w, int64_t r, int64_t i) {
    for (int64_t k = 0; k < i; k++) {
        float s;
        const int8_t q = kern_q8_at(w, i, r, k, &s);
        x[k] = s * (float)q;
    }
}

size_t kern_bf16_packed_bytes(int64_t o, int64_t i) {
    const int64_t groups = (o + 15) / 16;
    return (size_t)(groups * (i / 32) * KERN_BF16_CHUNK);
}

void kern_bf16_pack(void *dst, const uint16_t *src, int64_t ld, int64_t o, int64_t i) {
    const int64_t nc = i / 32, groups = (o + 15) / 16;
    uint16_t *d = dst;
    for (int64_t g = 0; g < groups; g++)
        for (int64_t c = 0; c < nc; c++, d += KERN_BF16_CHUNK / 2)
            for (int n = 0; n < 16; n++) {
                const int64_t r = g * 16 + n;
                for (int k = 0; k < 32; k++) d[(k / 2) * 32 + n * 2 + k % 2] = r < o ? src[r * ld + c * 32 + k] : 0;
            }
}
