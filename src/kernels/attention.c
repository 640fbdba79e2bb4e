/* kernels/attention.c: grouped-query attention over the KV cache (f32 or bf16), in the kernels'
 * thread pool. A unit is one token by a range of KV heads: the query heads of a KV head read its
 * keys and values together. Each (token, head) output is one fixed computation (scores in
 * position order, the row operations' softmax, values summed in position order), whatever the
 * unit or thread. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

typedef struct {
    float *out;
    const float *q;
    const void *kc, *vc;
    const int *pos, *slot;
    const kern_attn_dims *d;
} attn_job;

/* the f32 value of row element k of a cache row of type dt */
static inline float attn_load(const void *row, kern_dtype dt, int k) {
    return dt == KERN_BF16 ? kern_bf16_to_f32(((const uint16_t *)row)[k]) : ((const float *)row)[k];
}

/* portable: 8 lanes summed by a fixed tree */
static float attn_dot(const float *q, const void *row, kern_dtype dt, int hs) {
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int j = 0;
    for (; j + 8 <= hs; j += 8)
        for (int l = 0; l < 8; l++) a[l] += q[j + l] * attn_load(row, dt, j + l);
    for (int l = 0; j + l < hs; l++) a[l] += q[j + l] * attn_load(row, dt, j + l);
    return ((a[0] + a[4]) + (a[2] + a[6])) + ((a[1] + a[5]) + (a[3] + a[7]));
}

static void attn_axpy(float *o, float w, const void *row, kern_dtype dt, int hs) {
    for (int j = 0; j < hs; j++) o[j] += w * attn_load(row, dt, j);
}

void kern_attn_scores_generic(float *a, int64_t lda, const float *q, int nq, const void *rows, int64_t stride,
                              kern_dtype dt, int hs, int len, float scale) {
    const size_t es = kern_dtype_size(dt);
    for (int h = 0; h < nq; h++)
        for (int p = 0; p < len; p++)
            a[h * lda + p] = attn_dot(q + (int64_t)h * hs, (const char *)rows + p * stride * es, dt, hs) * scale;
}

void kern_attn_mix_generic(float *o, const float *a, int64_t lda, int nq, const void *rows, int64_t stride,
                           kern_dtype dt, int hs, int len) {
    const size_t es = kern_dtype_size(dt);
    for (int h = 0; h < nq; h++) {
        float *oh = o + (int64_t)h * hs;
        for (int j = 0; j < hs; j++) oh[j] = 0.0f;
        for (int p = 0; p < len; p++) attn_axpy(oh, a[h * lda + p], (const char *)rows + p * stride * es, dt, hs);
    }
}

#define ATTN_GROUP 8 /* query heads of one KV head a call (the scores' room) */

static void attn_unit(const void *ctx, int t0, int tn, int g0, int g1) {
    const attn_job *J = ctx;
    const kern_attn_dims *d = J->d;
    const int hs = d->head_size, kvd = d->n_kv * hs;
    const kern_dtype dt = d->kv_dtype;
    const size_t es = kern_dtype_size(dt);
    const kern_row_ops *ops = kern_rows_get();
    const float scale = 1.0f / sqrtf((float)hs);
    float *a = kern_room(KERN_ROOM_ATT, sizeof(float) * (size_t)d->seq_len * ATTN_GROUP);
    if (!a) {
        fprintf(stderr, "mpillama: out of memory for attention scores (%d positions)\n", d->seq_len);
        abort();
    }
    for (int t = t0; t < t0 + tn; t++) {
        /* positions p0..pos[t]: all, or the last window of them */
        const int p0 = d->window > 0 && J->pos[t] + 1 > d->window ? J->pos[t] + 1 - d->window : 0;
        const int len = J->pos[t] + 1 - p0;
        const char *kb = (const char *)J->kc + ((int64_t)J->slot[t] * d->seq_len + p0) * kvd * es;
        const char *vb = (const char *)J->vc + ((int64_t)J->slot[t] * d->seq_len + p0) * kvd * es;
        /* heads h..e-1 share KV head g (up to ATTN_GROUP a call) */
        for (int h = 0, e; h < d->n_heads; h = e) {
            const int g = (d->head0 + h) / d->kv_mul - d->kv_head0;
            e = h + 1;
            while (e < d->n_heads && e - h < ATTN_GROUP && (d->head0 + e) / d->kv_mul - d->kv_head0 == g) e++;
            if (g < g0 || g >= g1) continue;
            const int64_t at = ((int64_t)t * d->n_heads + h) * hs;
            ops->scores(a, len, J->q + at, e - h, kb + (int64_t)g * hs * es, kvd, dt, hs, len, scale);
            for (int k = 0; k < e - h; k++) ops->softmax(a + (int64_t)k * len, len);
            ops->mix(J->out + at, a, len, e - h, vb + (int64_t)g * hs * es, kvd, dt, hs, len);
        }
    }
}

void kern_attention(float *out, const float *q, const void *kcache, const void *vcache, const int *pos,
                    const int *slot, int n, const kern_attn_dims *d, float *att) {
    (void)att;
    if (n <= 0) return;
    attn_job J = {out, q, kcache, vcache, pos, slot, d};
    double flops = 0;
    for (int t = 0; t < n; t++)
        flops += 4.0 * (d->window > 0 && pos[t] + 1 > d->window ? d->window : pos[t] + 1) * d->n_heads * d->head_size;
    const int threads = kern_pool_threads(flops / 10e9, d->n_kv, 1);
    kern_pool_run(attn_unit, &J, n, 1, d->n_kv, 1, threads);
}
