/* kernels/dispatch.c: the matmul entry points; chooses an implementation per weight type by CPU
 * at run time (MPILLAMA_MATMUL=avx512|avx2|generic overrides), prepares the activations of bf16
 * and q8 calls and hands the work to the thread pool. */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

#define MM_XB (4 << 20) /* bytes of token rows per chunk (the chunk stays in the last-level cache) */

/* ---- implementations ---- */

typedef struct {
    const char *name;
    kern_f32_range_fn f32;  /* for KERN_F32 */
    kern_w_range_fn w;      /* for the others, and for f32 packed (kern_pack) */
    int need;               /* KERN_NEED_*: activations the w range reads */
    int (*supported)(void);
    int (*packs)(void);     /* whether its w range takes packed matrices here (NULL: never) */
} mm_impl;

static int mm_always(void) { return 1; }
#ifdef KERN_X86
static int mm_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

static int mm_has_avx512(void) {
    __builtin_cpu_init();
    return mm_has_avx2() && __builtin_cpu_supports("avx512f");
}

static int mm_has_avx512bw(void) {
    return mm_has_avx512() && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
}

static int mm_has_avx512bf16(void) { return mm_has_avx512bw() && __builtin_cpu_supports("avx512bf16"); }
static int mm_has_avx512vnni(void) { return mm_has_avx512bw() && __builtin_cpu_supports("avx512vnni"); }
static int mm_has_amx_bf16(void) { return mm_has_avx512bf16() && kern_amx_bf16_ok(); }
#endif

/* per dtype, in order of preference (the default: the first this CPU runs) */
static const mm_impl mm_f32_impls[] = {
#ifdef KERN_X86
    /* the packed tiles are built for AVX512BW and VL too (their masks) */
    {"avx512", kern_f32_avx512_range, kern_f32p_avx512_range, 0, mm_has_avx512, mm_has_avx512bw},
    {"avx2", kern_f32_avx2_range, NULL, 0, mm_has_avx2, NULL},
#endif
    {"generic", kern_f32_generic_range, NULL, 0, mm_always, NULL},
    {NULL, NULL, NULL, 0, NULL, NULL},
};
static const mm_impl mm_bf16_impls[] = {
#ifdef KERN_X86
    {"amx", NULL, kern_bf16_amx_range, KERN_NEED_BF16, mm_has_amx_bf16, mm_always},
    {"avx512", NULL, kern_bf16_avx512_range, KERN_NEED_BF16, mm_has_avx512bf16, mm_always},
    {"avx2", NULL, kern_bf16_avx2_range, KERN_NEED_BF16, mm_has_avx2, NULL},
#endif
    {"generic", NULL, kern_bf16_generic_range, KERN_NEED_BF16, mm_always, NULL},
    {NULL, NULL, NULL, 0, NULL, NULL},
};
static const mm_impl mm_q8_impls[] = {
#ifdef KERN_X86
    {"avx512", NULL, kern_q8_avx512_range, KERN_NEED_QC, mm_has_avx512vnni, NULL}, /* q8: its own layout */
#endif
    {"generic", NULL, kern_q8_generic_range, KERN_NEED_Q, mm_always, NULL},
    {NULL, NULL, NULL, 0, NULL, NULL},
};
static const mm_impl *const mm_tables[3] = {mm_f32_impls, mm_bf16_impls, mm_q8_impls};
static _Atomic(const mm_impl *) mm_cur[3];

/* the implementation of table dt named name (NULL: the first supported), or NULL */
static const mm_impl *mm_find(int dt, const char *name) {
    for (const mm_impl *m = mm_tables[dt]; m->name; m++)
        if ((!name || !strcmp(name, m->name)) && m->supported()) return m;
    return NULL;
}

/* the row operations (attention's, the activations' preparation), chosen with the matmuls by the
 * same names */
static const kern_row_ops mm_row_impls[] = {
#ifdef KERN_X86
    {"avx512", kern_attn_scores_avx512, kern_attn_mix_avx512, kern_bf16_rows_avx512, kern_q8_rows_avx512,
     kern_q8_corrections_avx512, kern_swiglu_avx512, kern_softmax_avx512},
#endif
    {"generic", kern_attn_scores_generic, kern_attn_mix_generic, kern_bf16_rows_generic, kern_quantize_q8,
     kern_q8_corrections_generic, kern_swiglu_generic, kern_softmax},
    {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL},
};
static int mm_rows_supported(const kern_row_ops *a) {
#ifdef KERN_X86
    if (a->scores == kern_attn_scores_avx512) return mm_has_avx512bw();
#endif
    (void)a;
    return 1;
}
static _Atomic(const kern_row_ops *) mm_rows_cur;

static const kern_row_ops *mm_rows_find(const char *name) {
    for (const kern_row_ops *a = mm_row_impls; a->name; a++)
        if ((!name || !strcmp(name, a->name)) && mm_rows_supported(a)) return a;
    return NULL;
}

int kern_matmul_use(const char *name) {
    int found = 0;
    for (int dt = 0; dt < 3; dt++) {
        const mm_impl *m = mm_find(dt, name);
        if (m) atomic_store(&mm_cur[dt], m), found = 1;
    }
    const kern_row_ops *a = mm_rows_find(name);
    if (a) atomic_store(&mm_rows_cur, a);
    return found ? 0 : -1;
}

const kern_row_ops *kern_rows_get(void) {
    const kern_row_ops *a = atomic_load(&mm_rows_cur);
    if (a) return a;
    const char *env = getenv("MPILLAMA_MATMUL");
    a = env && *env ? mm_rows_find(env) : NULL;
    if (!a) a = mm_rows_find(NULL);
    atomic_store(&mm_rows_cur, a);
    return a;
}

const char *kern_attention_impl(void) { return kern_rows_get()->name; }

static const mm_impl *mm_get(kern_dtype dt) {
    const mm_impl *m = atomic_load(&mm_cur[dt]);
    if (m) return m;
    const char *env = getenv("MPILLAMA_MATMUL");
    m = env && *env ? mm_find(dt, env) : NULL;
    if (!m) m = mm_find(dt, NULL);
    atomic_store(&mm_cur[dt], m);
    return m;
}

const char *kern_matmul_impl(void) { return mm_get(KERN_F32)->name; }

static int mm_packs(const mm_impl *m) { return m->packs && m->packs(); }
int kern_packs(kern_dtype t, int64_t i) {
    return i > 0 && i * (int64_t)kern_dtype_size(t) % 64 == 0 && t != KERN_Q8 && mm_packs(mm_get(t));
}
const char *kern_matmul_impl_w(kern_dtype dt) { return mm_get(dt)->name; }

/* threads worth waking: the work must pay for it (a wake-up costs some 10-50 us) */
static int mm_threads(int n, int i, int o, double elem_bytes, double flops_per_s) {
    const double est = elem_bytes * o * i / 20e9 + 2.0 * n * o * (double)i / flops_per_s; /* seconds on one core */
    return kern_pool_threads(est, o, 48);
}

/* token chunks of nb rows (a multiple of 8) whose input rows stay in the last-level cache */
static int mm_chunk_rows(int i, int elem_bytes) {
    int nb = (int)(MM_XB / ((int64_t)i * elem_bytes)) / 8 * 8;
    return nb < 8 ? 8 : nb;
}

/* ---- f32 ---- */

typedef struct {
    kern_f32_range_fn range;
    float *out;
    const float *in, *w;
    int64_t ldw;
    int i, o;
} mm_f32_job;

static void mm_f32_unit(const void *ctx, int t0, int tn, int c0, int c1) {
    const mm_f32_job *J = ctx;
    J->range(J->out + (int64_t)t0 * J->o, J->in + (int64_t)t0 * J->i, J->w, J->ldw, tn, J->i, J->o, c0, c1);
}

/* kern_matmul with weight rows ldw floats apart */
static void mm_f32(float *out, const float *in, const float *w, int64_t ldw, int n, int i, int o) {
    if (n <= 0 || o <= 0) return;
    const mm_impl *m = mm_get(KERN_F32);
    if (i <= 0) {
        memset(out, 0, sizeof(float) * n * (size_t)o);
        return;
    }
    mm_f32_job J = {m->f32, out, in, w, ldw, i, o};
    kern_pool_run(mm_f32_unit, &J, n, mm_chunk_rows(i, 4), o, 48, mm_threads(n, i, o, 4, 80e9));
}

/* seconds this thread has spent in kern_matmul and kern_matmul_w (bench: matrix work's own rate) */
static __thread double mm_clock;
double kern_matmul_seconds(void) { return mm_clock; }

void kern_matmul(float *out, const float *in, const float *w, int n, int i, int o) {
    const double t0 = kern_now();
    mm_f32(out, in, w, i, n, i, o);
    mm_clock += kern_now() - t0;
}

/* ---- bf16, q8, and f32 packed ---- */

/* up to KERN_MATMUL_MULTI matrices on one input: their outputs' columns one range [0, sum of o)
 * that the pool cuts; a unit that spans two matrices computes its part of each */
typedef struct {
    kern_w_range_fn range;
    kern_act act;
    int i, count;
    float *out[KERN_MATMUL_MULTI];
    const kern_wmat *w[KERN_MATMUL_MULTI];
    int o[KERN_MATMUL_MULTI], at[KERN_MATMUL_MULTI]; /* columns; the first one in the joint range */
} mm_w_job;

static void mm_w_unit(const void *ctx, int t0, int tn, int c0, int c1) {
    const mm_w_job *J = ctx;
    const int64_t off = (int64_t)t0 * J->i;
    kern_act a = {J->act.f + off, J->act.x ? J->act.x + off : NULL, J->act.q ? J->act.q + off : NULL,
                  J->act.qc ? J->act.qc + (int64_t)t0 * KERN_QC_ROW(J->i) : NULL, J->act.scale ? J->act.scale + off / KERN_Q8_BLOCK : NULL};
    for (int k = 0; k < J->count; k++) {
        const int lo = c0 > J->at[k] ? c0 : J->at[k], hi = c1 < J->at[k] + J->o[k] ? c1 : J->at[k] + J->o[k];
        if (lo < hi) J->range(J->out[k] + (int64_t)t0 * J->o[k], &a, J->w[k], tn, J->i, J->o[k], lo - J->at[k], hi - J->at[k]);
    }
}

/* the matrices of the same type and layout, w[0]'s, on the implementation m (w[0] not plain f32);
 * every output's columns but the last's a multiple of 16 (the tiles' groups) */
static void mm_w(const mm_impl *m, int count, float *const out[], const kern_wmat *const w[], const int o[],
                 const float *in, int n, int i) {
    const kern_dtype dt = w[0]->dtype;
    if (dt == KERN_BF16) (void)kern_bf16_fma_faster(); /* measured here, not by the threads */
    const int64_t ni = (int64_t)n * i;
    /* the prepared activations, in the calling thread's room: bf16 x | int8 q | qc | scales */
    size_t bytes = 0;
    const size_t x_at = bytes;
    if (m->need & KERN_NEED_BF16) bytes += (size_t)ni * 2;
    const size_t q_at = bytes;
    if (m->need & KERN_NEED_Q) bytes += (size_t)ni;
    bytes = (bytes + 63) / 64 * 64;
    const size_t qc_at = bytes;
    if (m->need & KERN_NEED_QC) bytes += (size_t)n * (size_t)KERN_QC_ROW(i);
    const size_t s_at = bytes;
    if (m->need & (KERN_NEED_Q | KERN_NEED_QC)) bytes += sizeof(float) * (size_t)(ni / KERN_Q8_BLOCK);
    char *room = bytes ? kern_room(KERN_ROOM_ACT, bytes) : NULL;
    if (bytes && !room) {
        /* out of memory for the activations: the reference needs none */
        for (int k = 0; k < count; k++) kern_matmul_w_ref(out[k], in, w[k], n, i, o[k]);
        return;
    }
    mm_w_job J = {m->w, {in, NULL, NULL, NULL, NULL}, i, count, {NULL}, {NULL}, {0}, {0}};
    int total = 0;
    for (int k = 0; k < count; k++) J.out[k] = out[k], J.w[k] = w[k], J.o[k] = o[k], J.at[k] = total, total += o[k];
    const kern_row_ops *rows = kern_rows_get();
    if (m->need & KERN_NEED_BF16) {
        uint16_t *x = (uint16_t *)(room + x_at);
        rows->bf16_rows(x, in, ni);
        J.act.x = x;
    }
    if (m->need & (KERN_NEED_Q | KERN_NEED_QC)) {
        float *s = (float *)(room + s_at);
        if (m->need & KERN_NEED_Q) {
            int8_t *q = (int8_t *)(room + q_at);
            rows->q8_rows(q, s, in, ni);
            J.act.q = q;
        }
        if (m->need & KERN_NEED_QC) {
            int8_t *qc = (int8_t *)(room + qc_at);
            for (int t = 0; t < n; t++) {
                int8_t *q = qc + (int64_t)t * KERN_QC_ROW(i);
                int32_t *c = (int32_t *)(q + i);
                rows->q8_rows(q, s + (int64_t)t * (i / KERN_Q8_BLOCK), in + (int64_t)t * i, i);
                rows->q8_corr(c, q, i);
            }
            J.act.qc = qc;
        }
        J.act.scale = s;
    }
    const double rate = dt == KERN_F32 ? 80e9 : dt == KERN_BF16 ? 160e9 : 200e9;
    /* column ranges of whole tiles (speed only): packed vdpbf16ps takes 4 groups of 16 rows a tile
     * up to 4 token rows, 3 from 5 (its FMA twin 2, AMX pairs of groups), q8 2 */
    const int align = w[0]->packed ? (n <= 4 ? 64 : 48) : dt == KERN_Q8 ? 32 : 48;
    kern_pool_run(mm_w_unit, &J, n, mm_chunk_rows(i, dt == KERN_F32 ? 4 : 2), total, align,
                  mm_threads(n, i, total, (double)kern_dtype_size(dt), rate));
}

/* the implementation whose w range takes w (n x i by o), or NULL where mm_one's own cases do:
 * plain f32 (mm_f32), nothing to compute, or packed for an implementation chosen since (tests) */
static const mm_impl *mm_w_impl(const kern_wmat *w, int n, int i, int o) {
    if ((w->dtype == KERN_F32 && !w->packed) || n <= 0 || i <= 0 || o <= 0) return NULL;
    const mm_impl *m = mm_get(w->dtype);
    return w->packed && !mm_packs(m) ? NULL : m;
}

/* one matrix, any type and layout */
static void mm_one(float *out, const float *in, const kern_wmat *w, int n, int i, int o) {
    const mm_impl *m = mm_w_impl(w, n, i, o);
    if (m) mm_w(m, 1, &out, &w, &o, in, n, i);
    else if (w->dtype == KERN_F32 && !w->packed) mm_f32(out, in, w->data, kern_wmat_ld(w, i), n, i, o);
    else if (n <= 0 || o <= 0) return;
    else if (i <= 0) memset(out, 0, sizeof(float) * n * (size_t)o);
    else kern_matmul_w_ref(out, in, w, n, i, o); /* packed, then another code chosen (tests) */
}

void kern_matmul_w(float *out, const float *in, const kern_wmat *w, int n, int i, int o) {
    kern_matmul_w_multi(1, &out, &w, &o, in, n, i);
}

void kern_matmul_w_multi(int count, float *const out[], const kern_wmat *const w[], const int o[], const float *in,
                         int n, int i) {
    const double t0 = kern_now();
    /* together where they share a type, a layout and an implementation that takes them, and the
     * outputs but the last are whole groups of 16 (the results are the same either way: every
     * element one chain) */
    const mm_impl *m = count >= 1 && count <= KERN_MATMUL_MULTI ? mm_w_impl(w[0], n, i, o[0]) : NULL;
    for (int k = 1; m && k < count; k++)
        if (w[k]->dtype != w[0]->dtype || w[k]->packed != w[0]->packed || o[k] <= 0 || o[k - 1] % 16) m = NULL;
    if (m) mm_w(m, count, out, w, o, in, n, i);
    else
        for (int k = 0; k < count; k++) mm_one(out[k], in, w[k], n, i, o[k]);
    mm_clock += kern_now() - t0;
}
