/* kernels/matmul_bf16_amx.c: bf16 weights on AMX-BF16 tiles (Intel Sapphire Rapids and later),
 * for matrices packed at load (kern_pack: AMX's B layout, 1 KiB chunks of 32 inputs x 16
 * rows). One tdpbf16ps adds 32 inputs' products of up to 16 token rows by 16 weight rows to a tile
 * of f32 sums; the chunks go in order, so each output element is one fixed chain (the tile unit's
 * own arithmetic, not vdpbf16ps's) whatever the number of token rows, the tiling or the thread:
 * every call on a packed matrix takes this code, one token row included (batch invariance). */
#include <cpuid.h>
#include <immintrin.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "internal.h"

#define AMXB_T __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512vl,avx2,fma")))
#define AMXB_AHEAD 4 /* chunks a weight stream is prefetched ahead (one token tile: decode) */

int kern_amx_bf16_ok(void) {
    static _Atomic int ok = -1; /* the kernel must grant the tile data state once per process */
    const int seen = ok;
    if (seen >= 0) return seen;
    unsigned a, b, c, d;
    const int v = __get_cpuid_count(7, 0, &a, &b, &c, &d) && (d >> 22 & 1) && (d >> 24 & 1) &&
                  syscall(SYS_arch_prctl, 0x1023 /* ARCH_REQ_XCOMP_PERM */, 18 /* XFEATURE_XTILEDATA */) == 0;
    ok = v;
    return v;
}

typedef struct {
    uint8_t palette, start;
    uint8_t reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} amxb_config;

/* tiles 0-3: sums (m token rows x 16 f32); 4, 5: activations (m rows x 32 bf16); 6, 7: weights
 * (16 pair rows x 64 bytes) */
static AMXB_T void amxb_configure(int m) {
    amxb_config c;
    memset(&c, 0, sizeof(c));
    c.palette = 1;
    for (int t = 0; t < 6; t++) c.rows[t] = (uint8_t)m, c.colsb[t] = 64;
    for (int t = 6; t < 8; t++) c.rows[t] = 16, c.colsb[t] = 64;
    /* GCC 12 does not see ldtilecfg read c and drops the stores at -O2 (then ldtilecfg faults):
     * an asm that reads c keeps them */
    __asm__ volatile("" : : "m"(c));
    _tile_loadconfig(&c);
}

/* out (TR x 16 token rows, TG groups of 16 columns; rows o apart) for the token rows at x (rows
 * xs bytes apart; m rows a tile; rows padded off 4 KiB strides measured within the noise) and the groups at w (gb bytes apart) over nc chunks; of the last
 * group only `cols` columns are stored */
static inline __attribute__((always_inline)) AMXB_T void amxb_block(float *out, int o, const uint16_t *x, int64_t xs,
                                                                   const uint8_t *w, int64_t gb, int nc, int m,
                                                                   int cols, const int TR, const int TG) {
    _tile_zero(0);
    if (TG == 2) _tile_zero(1);
    if (TR == 2) _tile_zero(2);
    if (TR == 2 && TG == 2) _tile_zero(3);
    const char *x1 = (const char *)x + 16 * xs;
    for (int c = 0; c < nc; c++) {
        const uint8_t *wc = w + (int64_t)c * KERN_PACK_CHUNK;
        /* one token tile (decode): a tile load that misses stalls the in-order tile unit, and the
         * weights come from memory; with two, prefetching (L2 to L1) measured 10-20% slower, and
         * loading the next chunk's tiles between this chunk's products gained nothing */
        if (TR == 1 && c + AMXB_AHEAD < nc)
            for (int g = 0; g < TG; g++)
                for (int l = 0; l < KERN_PACK_CHUNK / 64; l++)
                    _mm_prefetch((const char *)(wc + g * gb + AMXB_AHEAD * KERN_PACK_CHUNK + l * 64), _MM_HINT_T0);
        _tile_loadd(4, x + (int64_t)c * 32, xs);
        _tile_loadd(6, wc, 64);
        _tile_dpbf16ps(0, 4, 6);
        if (TG == 2) {
            _tile_loadd(7, wc + gb, 64);
            _tile_dpbf16ps(1, 4, 7);
        }
        if (TR == 2) {
            _tile_loadd(5, x1 + (int64_t)c * 64, xs);
            _tile_dpbf16ps(2, 5, 6);
            if (TG == 2) _tile_dpbf16ps(3, 5, 7);
        }
    }
    _Alignas(64) float tmp[16 * 16];
    const int64_t so = (int64_t)o * 4;
#define AMXB_STORE(T, r0, g)                                                                                   \
    do {                                                                                                       \
        float *dst = out + (int64_t)(r0) * o + (g) * 16;                                                       \
        if ((g) < TG - 1 || cols == 16) {                                                                      \
            _tile_stored(T, dst, so);                                                                          \
        } else {                                                                                               \
            _tile_stored(T, tmp, 64);                                                                          \
            for (int r = 0; r < m; r++) memcpy(dst + (int64_t)r * o, tmp + r * 16, sizeof(float) * cols);     \
        }                                                                                                      \
    } while (0)
    AMXB_STORE(0, 0, 0);
    if (TG == 2) AMXB_STORE(1, 0, 1);
    if (TR == 2) AMXB_STORE(2, 16, 0);
    if (TR == 2 && TG == 2) AMXB_STORE(3, 16, 1);
#undef AMXB_STORE
}

typedef void (*amxb_fn)(float *out, int o, const uint16_t *x, int64_t xs, const uint8_t *w, int64_t gb, int nc, int m,
                        int cols);
#define AMXB_BLOCK(TR, TG)                                                                                     \
    static AMXB_T void amxb_##TR##x##TG(float *out, int o, const uint16_t *x, int64_t xs, const uint8_t *w,      \
                                        int64_t gb, int nc, int m, int cols) {                                \
        amxb_block(out, o, x, xs, w, gb, nc, m, cols, TR, TG);                                                 \
    }
AMXB_BLOCK(1, 1) AMXB_BLOCK(1, 2) AMXB_BLOCK(2, 1) AMXB_BLOCK(2, 2)
/* [token tiles - 1][groups - 1] */
static const amxb_fn amxb_blocks[2][2] = {{amxb_1x1, amxb_1x2}, {amxb_2x1, amxb_2x2}};

/* token rows [t0, t1) in tiles of m rows (m = 16, or the one short tile), by groups in pairs */
static AMXB_T void amxb_rows(float *out, const uint16_t *x, const uint8_t *w, int i, int o, int c0, int c1, int t0,
                             int t1, int m) {
    const int nc = i / 32, g0 = c0 / 16, g1 = (c1 + 15) / 16;
    const int64_t gb = (int64_t)nc * KERN_PACK_CHUNK, xs = (int64_t)i * 2;
    const int tail = c1 - (g1 - 1) * 16;
    amxb_configure(m);
    for (int g = g0; g < g1; g += 2) { /* a pair of groups stays in L2 while the token rows pass */
        const int two = g + 1 < g1, cols = g + (two ? 2 : 1) == g1 ? tail : 16;
        for (int t = t0; t < t1;) {
            const int tt = t + 32 <= t1 && m == 16;
            float *ot = out + (int64_t)t * o + g * 16;
            amxb_blocks[tt][two](ot, o, x + (int64_t)t * i, xs, w + g * gb, gb, nc, m, cols);
            t += tt ? 32 : m;
        }
    }
}

AMXB_T void kern_bf16_amx_range(float *out, const kern_act *a, const kern_wmat *w, int n, int i, int o, int c0,
                                int c1) {
    if (!w->packed) { /* a matrix not packed (i % 32 != 0): the vdpbf16ps code, for every n */
        kern_bf16_avx512_range(out, a, w, n, i, o, c0, c1);
        return;
    }
    const int n16 = n / 16 * 16;
    if (n16) amxb_rows(out, a->x, w->data, i, o, c0, c1, 0, n16, 16);
    if (n16 < n) amxb_rows(out, a->x, w->data, i, o, c0, c1, n16, n, n - n16);
    _tile_release();
}

/* the peak: 4 independent tiles of sums, AMX_PEAK_TRIPS x 4 tdpbf16ps on tiles held in registers */
AMXB_T float kern_amx_bf16_peak(void) {
    _Alignas(64) static const uint16_t one[16 * 32] = {0};
    _Alignas(64) float out[16 * 16];
    amxb_configure(16);
    _tile_loadd(4, one, 64);
    _tile_loadd(5, one, 64);
    _tile_loadd(6, one, 64);
    _tile_loadd(7, one, 64);
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int it = 0; it < KERN_AMX_PEAK_TRIPS; it++) {
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, out, 64);
    _tile_release();
    return out[0];
}
