/* kernels/matmul_w_drive.c: the driver of the vector bf16 matmuls (ISA-neutral: it calls the
 * tiles of matmul_bf16_*.c; q8 has its own layout and driver, matmul_q8_avx512.c). Few token rows (one tile) stream the weights
 * once, tile after tile; more go by blocks of weight rows that stay in L2 while every tile of
 * token rows passes over them. Tiles compute whole elements, so the blocking changes speed,
 * never results. */
#include <stdint.h>

#include "internal.h"

#define W_L2 (512 << 10) /* bytes of weight rows a block keeps in L2 */

void kern_w_drive(const kern_w_kern *K, float *out, const void *x, const kern_wmat *w, int n, int i,
                  int o, int c0, int c1) {
    const int rt = K->rows, cm = K->cols[rt], es = K->esize;
    const char *xb = x, *wb = w->data;
    const int64_t row = (int64_t)i * es, ldw = kern_wmat_ld(w, i), wrow = ldw * es;
    if (n <= rt) {
        const int C = n == 1 && (int64_t)i * es < KERN_LONG_ROW ? 1 : K->cols[n];
        for (int c = c0; c < c1; c += C)
            K->tiles[n][c1 - c < C ? c1 - c : C](out + c, o, xb, wb + c * wrow, ldw, i);
        return;
    }
    /* long rows, where the kernel has k-block tiles: kern_blocks_drive (k blocks in L1) */
    if (K->blocks && kern_blocks_cut(i, es) && kern_blocks_drive(K->blocks, out, x, w->data, ldw, n, i, o, c0, c1))
        return;
    int bw = (int)(W_L2 / row) / cm * cm; /* (the weight rows' own bytes) */
    if (bw < cm) bw = cm;
    for (int cb = c0; cb < c1; cb += bw) {
        const int ce = cb + bw < c1 ? cb + bw : c1;
        for (int t = 0; t < n; t += rt) {
            const int R = n - t < rt ? n - t : rt, C = K->cols[R];
            for (int c = cb; c < ce; c += C)
                K->tiles[R][ce - c < C ? ce - c : C](out + (int64_t)t * o + c, o, xb + t * row, wb + c * wrow, ldw,
                                                     i);
        }
    }
}
