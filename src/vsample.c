#include "vsample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "trace.h"
#include "util.h"

void vsample_init(vsample *v, const model *m, const dist_ctx *d, int rows_max, int score) {
    memset(v, 0, sizeof(*v));
    v->vocab = m->cfg.vocab_size;
    v->vocab0 = m->share.vocab0;
    v->vocab_local = m->share.vocab_local;
    v->n_slots = m->n_slots;
    v->seq_len = m->seq_len;
    v->rows_max = rows_max;
    v->hist = xcalloc((size_t)m->n_slots * m->seq_len, sizeof(int));
    v->seqs = xcalloc((size_t)m->n_slots, sizeof(vsample_seq));
    v->seen = xcalloc((size_t)v->vocab_local, sizeof(int));
    v->val = xmalloc(sizeof(float) * rows_max);
    v->sum = xmalloc(sizeof(float) * rows_max);
    v->idx = xmalloc(sizeof(int) * rows_max);
    v->pack_cap = (int64_t)sizeof(int) * rows_max + (int64_t)sizeof(sampler_candidate) * rows_max * v->vocab_local + 64;
    v->packed = xmalloc((size_t)v->pack_cap);
    if (d->tp_rank == 0) {
        int64_t biggest = (int64_t)sizeof(int) * rows_max +
                          (int64_t)sizeof(sampler_candidate) * rows_max * ((v->vocab + d->tp - 1) / d->tp) + 64;
        v->gather_cap = biggest * d->tp;
        v->gathered = xmalloc((size_t)v->gather_cap);
        if (score) v->logits = xmalloc(sizeof(float) * (size_t)rows_max * v->vocab);
        v->merge = xmalloc(sizeof(sampler_candidate) * v->vocab);
    }
}

void vsample_free(vsample *v) {
    free(v->hist);
    free(v->seqs);
    free(v->seen);
    free(v->val);
    free(v->sum);
    free(v->idx);
    free(v->packed);
    free(v->gathered);
    free(v->merge);
    free(v->logits);
    free(v->raw);
    free(v->lp_parts);
    free(v->lp_gathered);
    free(v->lp_chosen);
    free(v->lp_tokens);
    memset(v, 0, sizeof(*v));
}

void vsample_record(vsample *v, const vsample_seq *seqs, int n, const model_batch *b) {
    for (int i = 0; i < n; i++) {
        check(seqs[i].slot >= 0 && seqs[i].slot < v->n_slots, "sequence record for slot %d of %d", seqs[i].slot, v->n_slots);
        v->seqs[seqs[i].slot] = seqs[i];
        if (seqs[i].copy_len > 0)
            memcpy(v->hist + (int64_t)seqs[i].slot * v->seq_len, v->hist + (int64_t)seqs[i].copy_from * v->seq_len,
                   sizeof(int) * (size_t)seqs[i].copy_len);
    }
    for (int t = 0; t < b->n; t++) v->hist[(int64_t)b->slot[t] * v->seq_len + b->pos[t]] = b->token[t];
}

/* ------------------------------------------------------------------ log-probs */

/* a before b in the top alternatives: larger value, then smaller id */
static int top_before(float va, int ia, float vb, int ib) { return va > vb || (va == vb && ia < ib); }

/* keeps the k best (value, id) pairs in id/val[0..*n), best first */
static void top_insert(int *id, float *val, int *n, int k, int i, float x) {
    if (k == 0 || (*n == k && !top_before(x, i, val[k - 1], id[k - 1]))) return;
    int at = *n < k ? (*n)++ : k - 1;
    while (at > 0 && top_before(x, i, val[at - 1], id[at - 1])) {
        id[at] = id[at - 1];
        val[at] = val[at - 1];
        at--;
    }
    id[at] = i;
    val[at] = x;
}

/* before the penalties: this shard's log-sum-exp parts and top alternatives of each row that
 * asks for log-probs, gathered on tp rank 0; the raw logits are kept for the sampled token */
static void lp_local(vsample *v, model *m, dist_ctx *d, int nw, vsample_seq *const *rows) {
    const int vl = v->vocab_local;
    if (!v->raw) {
        v->raw = xmalloc(sizeof(float) * (size_t)v->rows_max * vl);
        v->lp_parts = xmalloc(sizeof(vsample_lp_part) * (size_t)v->rows_max);
        v->lp_gathered = xmalloc(sizeof(vsample_lp_part) * (size_t)v->rows_max * d->tp);
        v->lp_chosen = xmalloc(sizeof(float) * (size_t)v->rows_max);
        v->lp_tokens = xmalloc(sizeof(int) * (size_t)v->rows_max);
    }
    for (int r = 0; r < nw; r++) {
        vsample_lp_part *p = &v->lp_parts[r];
        memset(p, 0, sizeof(*p));
        if (rows[r]->logprobs < 0) continue;
        const float *L = m->logits_local + (int64_t)r * vl;
        memcpy(v->raw + (int64_t)r * vl, L, sizeof(float) * (size_t)vl);
        float mx = -INFINITY;
        for (int j = 0; j < vl; j++) mx = L[j] > mx ? L[j] : mx;
        double sum = 0.0;
        for (int j = 0; j < vl; j++) sum += exp((double)L[j] - mx);
        p->max = mx;
        p->sum = sum;
        const int k = rows[r]->logprobs < VSAMPLE_TOP_MAX ? rows[r]->logprobs : VSAMPLE_TOP_MAX;
        for (int j = 0; j < vl; j++) top_insert(p->id, p->val, &p->n, k, v->vocab0 + j, L[j]);
    }
    dist_tp_gather_bytes(d, v->lp_parts, (int64_t)sizeof(vsample_lp_part) * nw, v->lp_gathered,
                         (int64_t)sizeof(vsample_lp_part) * v->rows_max * d->tp);
}

/* after the draw: the sampled tokens' raw logits (from the rank that holds each), then on tp rank
 * 0 the log-probs: the whole row's log-sum-exp from every shard's parts, the top alternatives
 * merged, written after out's nw rows */
static void lp_finish(vsample *v, dist_ctx *d, int nw, vsample_seq *const *rows, vsample_out *out) {
    const int vl = v->vocab_local;
    if (d->tp_rank == 0)
        for (int r = 0; r < nw; r++) v->lp_tokens[r] = out[r].token;
    dist_tp_bcast_root(d, v->lp_tokens, sizeof(int) * nw, 0);
    for (int r = 0; r < nw; r++) {
        int j = v->lp_tokens[r] - v->vocab0;
        v->lp_chosen[r] = rows[r]->logprobs >= 0 && j >= 0 && j < vl ? v->raw[(int64_t)r * vl + j] : -INFINITY;
    }
    dist_tp_max(d, v->lp_chosen, nw);
    if (d->tp_rank != 0) return;
    vsample_top *top = (vsample_top *)(out + nw);
    for (int r = 0; r < nw; r++) {
        if (rows[r]->logprobs < 0) continue;
        const int k = rows[r]->logprobs < VSAMPLE_TOP_MAX ? rows[r]->logprobs : VSAMPLE_TOP_MAX;
        float mx = -INFINITY;
        for (int q = 0; q < d->tp; q++) {
            const vsample_lp_part *p = &v->lp_gathered[(int64_t)q * nw + r];
            mx = p->max > mx ? p->max : mx;
        }
        double sum = 0.0;
        int id[VSAMPLE_TOP_MAX], n = 0;
        float val[VSAMPLE_TOP_MAX];
        for (int q = 0; q < d->tp; q++) {
            const vsample_lp_part *p = &v->lp_gathered[(int64_t)q * nw + r];
            sum += p->sum * exp((double)p->max - mx);
            for (int i = 0; i < p->n; i++) top_insert(id, val, &n, k, p->id[i], p->val[i]);
        }
        const double lse = mx + log(sum);
        out[r].logprob = (float)(v->lp_chosen[r] - lse);
        out[r].n_top = n;
        for (int i = 0; i < n; i++) *top++ = (vsample_top){id[i], (float)(val[i] - lse)};
    }
}

int64_t vsample_out_bytes(const vsample_out *out, int nw) {
    int64_t tops = 0;
    for (int r = 0; r < nw; r++) tops += out[r].n_top;
    return (int64_t)sizeof(vsample_out) * nw + (int64_t)sizeof(vsample_top) * tops;
}

int vsample_sample(vsample *v, model *m, dist_ctx *d, const model_batch *b, vsample_out *out) {
    int nw = model_classify(m, b);
    if (nw == 0) return 0;
    check(nw <= v->rows_max, "%d rows to sample, more than the %d planned", nw, v->rows_max);
    double t0 = trace_now();
    const int vl = v->vocab_local;
    int any_temp = 0;
    vsample_seq *rows[nw];
    char draw[nw]; /* rows sampled from candidates: not greedy, and their maximum finite */
    for (int r = 0, t = 0; r < nw; r++, t++) {
        while (!b->want[t]) t++;
        rows[r] = &v->seqs[b->slot[t]];
    }
    int any_lp = 0;
    for (int r = 0; r < nw; r++) any_lp |= rows[r]->logprobs >= 0;
    if (any_lp) lp_local(v, m, d, nw, rows);
    /* 1. penalties on this shard; 2. a NaN or +inf logit: (+inf, -1), which wins the reduction;
     * greedy: the shard's argmax, else its max of logits / T */
    for (int r = 0, t = 0; r < nw; r++, t++) {
        while (!b->want[t]) t++;
        const sampler_params *p = &rows[r]->sp;
        float *L = m->logits_local + (int64_t)r * vl;
        sampler_penalize_shard(L, v->vocab0, vl, p, v->hist + (int64_t)b->slot[t] * v->seq_len, rows[r]->n_prompt,
                               b->pos[t] + 1, v->seen);
        if (!sampler_shard_finite(L, vl)) {
            v->val[r] = INFINITY;
            v->idx[r] = -1;
        } else if (sampler_is_greedy(p)) {
            v->val[r] = sampler_shard_argmax(L, v->vocab0, vl, &v->idx[r]);
        } else {
            v->val[r] = sampler_shard_scale(L, vl, p->temperature);
            v->idx[r] = v->vocab0;
        }
    }
    dist_tp_argmax(d, v->val, v->idx, nw); /* greedy rows: the token; the others: the maximum */
    for (int r = 0; r < nw; r++) { /* a maximum that is not finite: the row cannot be sampled */
        draw[r] = !sampler_is_greedy(&rows[r]->sp) && isfinite(v->val[r]);
        if (!isfinite(v->val[r])) v->idx[r] = SAMPLER_NON_FINITE;
        any_temp |= draw[r];
    }
    char *cur = v->packed + sizeof(int) * nw;
    int *counts = (int *)v->packed;
    if (any_temp) {
        /* 3. the softmax sum in the whole row's order: a chain through the shards */
        for (int r = 0; r < nw; r++) v->sum[r] = 0.0f;
        dist_tp_chain_recv(d, v->sum, nw);
        for (int r = 0; r < nw; r++)
            if (draw[r])
                v->sum[r] = sampler_shard_exp_sum(m->logits_local + (int64_t)r * vl, vl, v->val[r], v->sum[r]);
        dist_tp_chain_send(d, v->sum, nw);
        dist_tp_bcast_root(d, v->sum, sizeof(float) * nw, d->tp - 1);
        /* 4. this shard's candidates */
        for (int r = 0; r < nw; r++) {
            counts[r] = 0;
            if (!draw[r]) continue;
            counts[r] = sampler_shard_candidates(m->logits_local + (int64_t)r * vl, v->vocab0, vl, v->sum[r],
                                                 &rows[r]->sp, (sampler_candidate *)cur);
            cur += sizeof(sampler_candidate) * counts[r];
        }
        dist_tp_gather_bytes(d, v->packed, cur - v->packed, v->gathered, v->gather_cap);
    }
    if (d->tp_rank == 0) {
        /* 5. the draw over every shard's candidates: packets back to back, counts then lists */
        const int *cn[d->tp];
        const sampler_candidate *pk[d->tp];
        const char *q = v->gathered;
        for (int k = 0; k < d->tp && any_temp; k++) {
            cn[k] = (const int *)q;
            pk[k] = (const sampler_candidate *)(q + sizeof(int) * nw);
            int64_t total = 0;
            for (int r = 0; r < nw; r++) total += cn[k][r];
            q += sizeof(int) * nw + sizeof(sampler_candidate) * total;
        }
        for (int r = 0; r < nw; r++) {
            uint64_t rng = (uint64_t)rows[r]->rng_hi << 32 | rows[r]->rng_lo;
            int token = v->idx[r];
            if (draw[r]) {
                int n = 0;
                for (int k = 0; k < d->tp; k++) {
                    memcpy(v->merge + n, pk[k], sizeof(sampler_candidate) * cn[k][r]);
                    n += cn[k][r];
                    pk[k] += cn[k][r];
                }
                token = sampler_draw(v->merge, n, &rows[r]->sp, &rng);
            }
            out[r].token = token;
            out[r].logprob = 0.0f;
            out[r].n_top = 0;
            rows[r]->rng_lo = (uint32_t)rng;
            rows[r]->rng_hi = (uint32_t)(rng >> 32);
        }
    }
    if (any_lp) lp_finish(v, d, nw, rows, out);
    trace_end(TN_SAMPLING, TRACE_SAMPLING, t0, nw);
    return nw;
}

int vsample_score(vsample *v, model *m, dist_ctx *d, const model_batch *b, vsample_out *out) {
    int nw = model_logits(m, d, b, v->logits);
    check(nw <= v->rows_max, "%d rows to score, more than the %d planned", nw, v->rows_max);
    if (nw == 0 || d->tp_rank != 0) return nw;
    double t0 = trace_now();
    const int V = m->cfg.vocab_size;
    for (int r = 0, t = 0; r < nw; r++, t++) {
        while (!b->want[t]) t++;
        out[r].token = b->want[t] - 1;
        out[r].n_top = 0;
        out[r].logprob = kern_log_softmax_at(v->logits + (int64_t)r * V, V, out[r].token);
    }
    trace_end(TN_SAMPLING, TRACE_SAMPLING, t0, nw);
    return nw;
}
