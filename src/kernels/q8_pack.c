/* kernels/q8_pack.c: the packed layouts of q8 weights (kernels.h: kern_q8_pack), made once at
 * load and read by every q8 matmul, and of bf16 and f32 weights for the packed kernels
 * (kern_bf16_pack, kern_f32_pack); a row of any weight matrix as f32 (kern_wmat_row) */
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
            uint32_t *d4 = (uint32_t *)(void *)d; /* step s, lane r: 4 bytes at (s * 16 + r) * 4 */
            float *s = (float *)(void *)(d + KERN_Q8_ROWS * KERN_Q8_BLOCK);
            for (int lane = 0; lane < KERN_Q8_ROWS; lane++) {
                const int64_t r = g * KERN_Q8_ROWS + lane;
                for (int st = 0; st < KERN_Q8_BLOCK / 4; st++) {
                    uint32_t v = 0;
                    if (r < o) memcpy(&v, q + r * ld + b * KERN_Q8_BLOCK + 4 * st, 4);
                    d4[st * KERN_Q8_ROWS + lane] = v ^ 0x80808080u;
                }
                s[lane] = r < o ? scale[r * (ld / KERN_Q8_BLOCK) + b] : 0.0f;
            }
        }
}

void kern_wmat_row(float *x, const kern_wmat *w, int64_t r, int64_t i) {
    const int64_t ld = kern_wmat_ld(w, (int)i);
    if (w->dtype == KERN_F32) {
        if (w->packed)
            for (int64_t k = 0; k < i; k++) x[k] = kern_f32_at(w, i, r, k);
        else memcpy(x, (const float *)w->data + r * ld, sizeof(float) * (size_t)i);
        return;
    }
    for (int64_t k = 0; k < i; k++) {
        if (w->dtype == KERN_Q8) {
            float s;
            const int8_t q = kern_q8_at(w, i, r, k, &s);
            x[k] = s * (float)q;
        } else {
            x[k] = kern_bf16_to_f32(w->packed ? kern_bf16_at(w, i, r, k) : ((const uint16_t *)w->data)[r * ld + k]);
        }
    }
}

size_t kern_bf16_packed_bytes(int64_t o, int64_t i) {
    const int64_t groups = (o + 15) / 16;
    return (size_t)(groups * (i / 32) * KERN_BF16_CHUNK);
}

void kern_bf16_pack(void *dst, const uint16_t *src, int64_t ld, int64_t o, int64_t i) {
    const int64_t nc = i / 32, groups = (o + 15) / 16;
    uint32_t *d = dst; /* pair p of row n of a chunk: 4 bytes at (p * 16 + n) * 4 */
    for (int64_t g = 0; g < groups; g++)
        for (int64_t c = 0; c < nc; c++, d += KERN_BF16_CHUNK / 4)
            for (int n = 0; n < 16; n++) {
                const int64_t r = g * 16 + n;
                const uint16_t *row = r < o ? src + r * ld + c * 32 : NULL;
                for (int p = 0; p < 16; p++) {
                    uint32_t v = 0;
                    if (row) memcpy(&v, row + 2 * p, 4);
                    d[p * 16 + n] = v;
                }
            }
}

size_t kern_f32_packed_bytes(int64_t o, int64_t i) {
    const int64_t groups = (o + 15) / 16;
    return (size_t)(groups * (i / 16) * KERN_F32_CHUNK);
}

void kern_f32_pack(void *dst, const float *src, int64_t ld, int64_t o, int64_t i) {
    const int64_t nc = i / 16, groups = (o + 15) / 16;
    float *d = dst; /* input p of row n of a chunk: at p * 16 + n */
    for (int64_t g = 0; g < groups; g++)
        for (int64_t c = 0; c < nc; c++, d += KERN_F32_CHUNK / 4)
            for (int n = 0; n < 16; n++) {
                const int64_t r = g * 16 + n;
                for (int p = 0; p < 16; p++) d[p * 16 + n] = r < o ? src[r * ld + c * 16 + p] : 0.0f;
            }
}
