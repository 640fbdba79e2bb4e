/* kernels/matmul_f32_drive.c: the vector f32 matmuls' driver over cache blocks (ISA-neutral: it
 * calls the tiles of matmul_f32_avx2.c or matmul_f32_avx512.c), and its blocked loops
 * (kern_blocks_drive), which bf16's long rows take too (matmul_w_drive.c) */
#include <string.h>

#include "matmul_f32_tile.h"

/* ---- kern_matmul ----------------------------------------------------------------------------
 * Every implementation computes out[t][c] = dot(in row t, w row c) as one fixed chain: L lanes
 * (8 for AVX2 and the portable code, 16 for AVX-512), lane l accumulating k = l, l + L, ... in
 * order by fused (vector) or plain (portable) multiply-adds, the last partial vector loaded
 * masked with zeros, then the lanes summed by one fixed tree (mm_hsum*, mm_dot_generic). Tiles
 * of R token rows by C weight rows only share loads between those chains; k blocks save and
 * reload the lanes' partial sums exactly; cache blocks, token chunks and threads only reorder
 * whole chains. Nothing that depends on n, or on the thread count, touches an element's
 * arithmetic: batch invariance holds by construction (and test_kernels checks it).
 *
 * Speed (the vector implementations): few token rows (one tile) stream the weights once, tile
 * after tile, many weight rows a tile (memory-bound decode); more rows go by blocks of weight
 * rows that stay in L2 while every tile of token rows passes over them, k cut in blocks whose
 * input rows are copied to a small contiguous buffer (in L1), the next block prefetched, and
 * the token rows cut in chunks that stay in the last-level cache (compute-bound prefill). */

/* Blocking, tuned on a 2-core AMD EPYC (Zen 4: 32 KiB L1D, 1 MiB L2 per core, 32 MiB L3); it
 * changes speed, never results. The weight rows a block keeps in L2 are each kern_blocks' own. */
#define MM_KC_BYTES 2048     /* k block (bytes of a row: 512 f32, 1024 bf16) */
#define MM_BW_MAX 96         /* weight rows per block at most */
#define MM_BW_MIN 24         /* fewer whole rows fit L2: blocks of MM_BW_LONG rows go k block by k block */
#define MM_BW_LONG 48
#define MM_NS_LONG 64        /* ... over MM_NS_LONG token rows at a time */

int kern_blocks_cut(int i, int esize) { return (int64_t)i * esize > MM_KC_BYTES + MM_KC_BYTES / 2; }

/* The loops: blocks of bw weight rows; runs of ns token rows; k blocks; tiles of token rows (their
 * k block copied to xp); tiles of weight rows. With short rows (whole rows of the block fit L2) a
 * run is one tile of token rows; with long ones the block's rows only fit k block by k block, and
 * a run of MM_NS_LONG token rows goes over each, so that neither the weights nor the input rows
 * come back from memory too often. Everything is counted in elements of K->esize bytes. */
int kern_blocks_drive(const kern_blocks *K, float *out, const void *in, const void *w, int64_t ldw, int n, int i,
                      int o, int c0, int c1) {
    const int L = K->lanes, rt = K->rows, cm = K->cols[rt], es = K->esize;
    const int nk_cut = kern_blocks_cut(i, es), kc = nk_cut ? MM_KC_BYTES / es : i, nk = (i + kc - 1) / kc;
    int bw = (int)(K->l2 / ((int64_t)i * es)) / cm * cm, ns = rt;
    if (bw > MM_BW_MAX) bw = MM_BW_MAX / cm * cm;
    if (bw < MM_BW_MIN && nk > 1) bw = MM_BW_LONG / cm * cm, ns = MM_NS_LONG / rt * rt;
    if (bw < cm) bw = cm;
    /* per-thread room for the partial sums of the k blocks */
    float *acc = NULL;
    if (nk > 1 && !(acc = kern_room(KERN_ROOM_ACC, sizeof(float) * (size_t)ns * bw * L))) return 0;
    const int ldx = nk > 1 ? kc + 64 / es : i; /* copied rows one cache line off 4 KiB strides (L1 sets) */
    char xp[8 * (MM_KC_BYTES + 64)] __attribute__((aligned(64)));
    const char *xb = in, *wb = w;
    for (int cb = c0; cb < c1; cb += bw) {
        const int ce = cb + bw < c1 ? cb + bw : c1;
        /* the next block's weights go to L2 a little before every tile: pf counts bytes of its
         * rows' own elements, at pf_off in the row at pf_row, so that a column block (ldw > i) is
         * prefetched row by row too */
        const int64_t rb = (int64_t)i * es, pf_end = (int64_t)((ce + bw < c1 ? ce + bw : c1) - ce) * rb;
        const int64_t calls = (int64_t)((n + rt - 1) / rt) * nk * ((ce - cb + cm - 1) / cm);
        const int64_t pf_step = (pf_end / calls + 63) / 64 * 64;
        int64_t pf = 0, pf_off = 0;
        const char *pf_row = wb + ce * ldw * es;
        for (int ts = 0; ts < n; ts += ns) {
            const int te = ts + ns < n ? ts + ns : n;
            for (int kb = 0; kb < nk; kb++) {
                const int k0 = kb * kc, kn = kb == nk - 1 ? i - k0 : kc;
                const int mode = (kb > 0 ? KERN_ACC_IN : 0) | (kb == nk - 1 ? KERN_OUT : 0);
                for (int t = ts; t < te; t += rt) {
                    const int R = te - t < rt ? te - t : rt, C = K->cols[R];
                    const char *x = xb + ((int64_t)t * i + k0) * es;
                    float *y = out + (int64_t)t * o, *a = acc ? acc + (int64_t)(t - ts) * bw * L : NULL;
                    if (nk > 1) {
                        for (int r = 0; r < R; r++)
                            memcpy(xp + (int64_t)r * ldx * es, x + (int64_t)r * i * es, (size_t)kn * es);
                        x = xp;
                    }
                    for (int c = cb; c < ce; c += C) {
                        for (int64_t j = 0; j < pf_step && pf < pf_end; j += 64, pf += 64) {
                            __builtin_prefetch(pf_row + pf_off, 0, 2);
                            if ((pf_off += 64) >= rb) pf_off -= rb, pf_row += ldw * es;
                        }
                        K->tiles[R][ce - c < C ? ce - c : C](y + c, o, x, ldx, wb + (c * ldw + k0) * es, ldw, kn,
                                                             a ? a + (c - cb) * L : NULL, bw * L, mode);
                    }
                }
            }
        }
    }
    return 1;
}

/* out[:, c0:c1] for n token rows (see the section's comment) */
void kern_f32_drive(const kern_blocks *K, float *out, const float *in, const float *w, int64_t ldw, int n, int i,
                    int o, int c0, int c1) {
    const int rt = K->rows;
    if (n <= rt) { /* one tile of token rows: stream the weights, each row once */
        const int C = n == 1 && (int64_t)i * 4 < KERN_LONG_ROW ? 1 : K->cols[n];
        for (int c = c0; c < c1; c += C)
            K->tiles[n][c1 - c < C ? c1 - c : C](out + c, o, in, i, w + c * ldw, ldw, i, NULL, 0, KERN_OUT);
        return;
    }
    if (kern_blocks_drive(K, out, in, w, ldw, n, i, o, c0, c1)) return;
    for (int t = 0; t < n; t += rt) /* no room for the partial sums: a tile of token rows at a time */
        kern_f32_drive(K, out + (int64_t)t * o, in + (int64_t)t * i, w, ldw, n - t < rt ? n - t : rt, i, o, c0, c1);
}
