/* kernels/matmul_w_drive.c: the driver of the vector bf16 and q8 matmuls (ISA-neutral: it calls
 * the tiles of matmul_bf16_*.c and matmul_q8_*.c). Few token rows (one tile) stream the weights
 * once, tile after tile; more go by blocks of weight rows that stay in L2 while every tile of
 * token rows passes over them. Tiles compute whole elements, so the blocking changes speed,
 * never results. */
#include <stdint.h>
#include <string.h>

#include "matmul_f32_tile.h"

#define W_L2 (512 << 10) /* bytes of weight rows a block keeps in L2 */
/* with k blocks (kernels that have k-block tiles), as kern_f32_drive's: */
#define W_KC 2048      /* bytes of a row's k block */
#define W_BW_MAX 96    /* weight rows a block at most */
#define W_BW_MIN 24    /* fewer whole rows fit W_L2: blocks of W_BW_LONG rows, k block by k block, */
#define W_BW_LONG 48
#define W_NS_LONG 64   /* ... over W_NS_LONG token rows at a time */

/* Long rows (many token rows): k cut in blocks of W_KC bytes, each tile's input rows of a block
 * copied to a small contiguous buffer (in L1) that all the block's weight tiles reuse, the
 * partial sums kept exactly between blocks (as kern_f32_drive does, whose loops these are:
 * blocks of bw weight rows, runs of ns token rows, k blocks, token tiles, weight tiles; the next
 * block's weights prefetched to L2 a little before every tile). Returns 0 without room for the
 * partial sums (the caller then goes without k blocks). */
static int w_drive_kblocks(const kern_w_kern *K, float *out, const void *x, const kern_wmat *w, int n, int i, int o,
                           int c0, int c1) {
    const int rt = K->rows, cm = K->cols[rt], es = K->esize, kc = W_KC / es, nk = (i + kc - 1) / kc;
    const int64_t ldw = kern_wmat_ld(w, i);
    int bw = (int)(W_L2 / ((int64_t)i * es)) / cm * cm, ns = rt;
    if (bw > W_BW_MAX) bw = W_BW_MAX / cm * cm;
    if (bw < W_BW_MIN) bw = W_BW_LONG / cm * cm, ns = W_NS_LONG / rt * rt;
    if (bw < cm) bw = cm;
    float *acc = kern_room(KERN_ROOM_ACC, sizeof(float) * 16 * (size_t)ns * bw);
    if (!acc) return 0;
    const int ldx = kc + 64 / es; /* copied rows one cache line off 4 KiB strides (L1 sets) */
    char xp[8 * (W_KC + 64)] __attribute__((aligned(64)));
    const char *xb = x, *wb = w->data;
    for (int cb = c0; cb < c1; cb += bw) {
        const int ce = cb + bw < c1 ? cb + bw : c1;
        const char *pf = wb + ce * ldw * es;
        const char *pf_end = ldw == i ? wb + (ce + bw < c1 ? ce + bw : c1) * ldw * es : pf;
        const int64_t calls = (int64_t)((n + rt - 1) / rt) * nk * ((ce - cb + cm - 1) / cm);
        const int64_t pf_step = ((pf_end - pf) / calls + 63) / 64 * 64;
        for (int ts = 0; ts < n; ts += ns) {
            const int te = ts + ns < n ? ts + ns : n;
            for (int kb = 0; kb < nk; kb++) {
                const int k0 = kb * kc, kn = kb == nk - 1 ? i - k0 : kc;
                const int mode = (kb > 0 ? MM_ACC_IN : 0) | (kb == nk - 1 ? MM_OUT : 0);
                for (int t = ts; t < te; t += rt) {
                    const int R = te - t < rt ? te - t : rt, C = K->cols[R];
                    for (int r = 0; r < R; r++)
                        memcpy(xp + (int64_t)r * ldx * es, xb + ((int64_t)(t + r) * i + k0) * es, (size_t)kn * es);
                    float *y = out + (int64_t)t * o, *a = acc + (int64_t)(t - ts) * bw * 16;
                    for (int c = cb; c < ce; c += C) {
                        for (int64_t j = 0; j < pf_step && pf < pf_end; j += 64, pf += 64) __builtin_prefetch(pf, 0, 2);
                        K->ktiles[R][ce - c < C ? ce - c : C](y + c, o, xp, ldx, wb + (c * ldw + k0) * es, ldw, kn,
                                                              a + (c - cb) * 16, bw * 16, mode);
                    }
                }
            }
        }
    }
    return 1;
}

void kern_w_drive(const kern_w_kern *K, float *out, const void *x, const float *xs, const kern_wmat *w, int n, int i,
                  int o, int c0, int c1) {
    const int rt = K->rows, cm = K->cols[rt], es = K->esize, nb = i / KERN_Q8_BLOCK;
    const char *xb = x, *wb = w->data;
    const int64_t row = (int64_t)i * es * K->xmul, ldw = kern_wmat_ld(w, i), wrow = ldw * es, wnb = ldw / KERN_Q8_BLOCK;
    if (n <= rt) {
        const int C = n == 1 && (int64_t)i * es < KERN_LONG_ROW ? 1 : K->cols[n];
        for (int c = c0; c < c1; c += C)
            K->tiles[n][c1 - c < C ? c1 - c : C](out + c, o, xb, xs, wb + c * wrow, w->scale ? w->scale + c * wnb : NULL,
                                                 ldw, i);
        return;
    }
    if (K->ktiles[rt][cm] && (int64_t)i * es > W_KC + W_KC / 2 && w_drive_kblocks(K, out, x, w, n, i, o, c0, c1))
        return;
    int bw = (int)(W_L2 / row) / cm * cm; /* (the weight rows' own bytes) */
    if (bw < cm) bw = cm;
    for (int cb = c0; cb < c1; cb += bw) {
        const int ce = cb + bw < c1 ? cb + bw : c1;
        for (int t = 0; t < n; t += rt) {
            const int R = n - t < rt ? n - t : rt, C = K->cols[R];
            for (int c = cb; c < ce; c += C)
                K->tiles[R][ce - c < C ? ce - c : C](out + (int64_t)t * o + c, o, xb + t * row,
                                                     xs ? xs + (int64_t)t * nb : NULL, wb + c * wrow,
                                                     w->scale ? w->scale + c * wnb : NULL, ldw, i);
        }
    }
}
