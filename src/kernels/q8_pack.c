/* kernels/q8_pack.c: the packed layouts of q8 weights (kernels.h: kern_q8_pack), made once at
 * load and read by every q8 matmul, and of bf16 and f32 weights for the packed kernels
 * (kern_pack); a row of any weight matrix as f32 (kern_wmat_row) */
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
    if (w->dtype == KERN_F32 && !w->packed) {
        memcpy(x, (const float *)w->data + r * kern_wmat_ld(w, (int)i), sizeof(float) * (size_t)i);
        return;
    }
    for (int64_t k = 0; k < i; k++) x[k] = kern_wmat_at(w, i, r, k);
}

size_t kern_packed_bytes(kern_dtype t, int64_t o, int64_t i) {
    if (t == KERN_Q8) return kern_q8_packed_bytes(o, i);
    return (size_t)((o + 15) / 16 * (i * (int64_t)kern_dtype_size(t) / 64) * KERN_PACK_CHUNK);
}

void kern_pack(void *dst, const void *src, kern_dtype t, int64_t ld, int64_t o, int64_t i) {
    const int64_t es = (int64_t)kern_dtype_size(t), nc = i * es / 64, groups = (o + 15) / 16;
    uint32_t *d = dst; /* step p of row n of a chunk: 4 bytes at (p * 16 + n) * 4 */
    for (int64_t g = 0; g < groups; g++)
        for (int64_t c = 0; c < nc; c++, d += KERN_PACK_CHUNK / 4)
            for (int n = 0; n < 16; n++) {
                const int64_t r = g * 16 + n;
                const uint8_t *row = r < o ? (const uint8_t *)src + (r * ld * es) + c * 64 : NULL;
                for (int p = 0; p < 16; p++) d[p * 16 + n] = row ? kern_ld32(row + p * 4) : 0;
            }
}
