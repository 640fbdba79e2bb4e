#include "plan.h"

#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dtype.h"
#include "util.h"

void plan_split(int n, int parts, int i, int *start, int *count) {
    int base = n / parts, rem = n % parts;
    *start = i * base + (i < rem ? i : rem);
    *count = base + (i < rem ? 1 : 0);
}

int plan_check_grid(const model_config *c, int pp, int tp, char *why, size_t cap) {
    why[0] = 0;
    if (pp < 1 || tp < 1) {
        snprintf(why, cap, "pp and tp must be >= 1");
        return -1;
    }
    if (pp > c->n_layers || pp > PLAN_MAX_PP) {
        snprintf(why, cap, "pp %d exceeds the model's %d layers", pp, c->n_layers);
        return -1;
    }
    if (c->n_heads % tp != 0) {
        snprintf(why, cap, "tp %d does not divide n_heads %d", tp, c->n_heads);
        return -1;
    }
    if (c->n_kv_heads >= tp ? c->n_kv_heads % tp != 0 : tp % c->n_kv_heads != 0) {
        snprintf(why, cap, "tp %d and n_kv_heads %d: one must divide the other", tp, c->n_kv_heads);
        return -1;
    }
    if (tp > c->hidden_dim || tp > c->vocab_size) {
        snprintf(why, cap, "tp %d exceeds hidden_dim or vocab_size", tp);
        return -1;
    }
    /* q8 blocks run along the input columns: a tp split of wo's and w2's columns must fall on them */
    if (c->weight_dtype[CONFIG_W_O] == KERN_Q8 && (c->n_heads / tp * c->head_size) % KERN_Q8_BLOCK != 0) {
        snprintf(why, cap, "tp %d gives each rank %d of wo's input columns, not whole q8 blocks of %d", tp,
                 c->n_heads / tp * c->head_size, KERN_Q8_BLOCK);
        return -1;
    }
    for (int r = 0; c->weight_dtype[CONFIG_W_2] == KERN_Q8 && r < tp; r++) {
        int h0, hn;
        plan_split(c->hidden_dim, tp, r, &h0, &hn);
        if (h0 % KERN_Q8_BLOCK != 0 || hn % KERN_Q8_BLOCK != 0) {
            snprintf(why, cap, "tp %d splits w2's %d input columns off its q8 blocks of %d (rank %d gets %d-%d)",
                     tp, c->hidden_dim, KERN_Q8_BLOCK, r, h0, h0 + hn - 1);
            return -1;
        }
    }
    return 0;
}

void plan_list_valid(const model_config *c, int world, char *buf, size_t cap) {
    size_t used = 0;
    char why[256];
    buf[0] = 0;
    for (int tp = 1; tp <= world; tp++) {
        if (world % tp) continue;
        int pp = world / tp;
        if (plan_check_grid(c, pp, tp, why, sizeof(why)) != 0) continue;
        used += snprintf(buf + used, used < cap ? cap - used : 0, "%s--pp %d --tp %d", used ? ", " : "", pp, tp);
    }
    if (!buf[0]) snprintf(buf, cap, "none");
}

/* bytes of a rank's slice of one layer: q_local query and kv_local key/value dimensions,
 * h_local FFN columns, in the model's storage types (norms and biases f32) */
static int64_t layer_share_bytes(const model_config *c, int64_t q_local, int64_t kv_local, int64_t h_local) {
    const int *t = c->weight_dtype;
    int64_t d = c->dim;
    int64_t vectors = 2 * d + (c->attn_qkv_bias ? q_local + 2 * kv_local : 0) + (c->attn_qk_norm ? 2LL * c->head_size : 0);
    return 4 * vectors + dtype_bytes(t[CONFIG_W_Q], q_local, d) + dtype_bytes(t[CONFIG_W_K], kv_local, d) +
           dtype_bytes(t[CONFIG_W_V], kv_local, d) + dtype_bytes(t[CONFIG_W_O], d, q_local) +
           dtype_bytes(t[CONFIG_W_1], h_local, d) + dtype_bytes(t[CONFIG_W_2], d, h_local) +
           dtype_bytes(t[CONFIG_W_3], h_local, d);
}

static int64_t layer_bytes(const model_config *c) {
    return layer_share_bytes(c, config_q_dim(c), config_kv_dim(c), c->hidden_dim);
}

void plan_make(plan_grid *g, const model_config *c, int pp, int tp) {
    memset(g, 0, sizeof(*g));
    g->dp = 1;
    g->pp = pp;
    g->tp = tp;
    int L = c->n_layers;
    int64_t lb = layer_bytes(c), emb = dtype_bytes(c->weight_dtype[CONFIG_W_EMBED], c->vocab_size, c->dim);
    int64_t out = dtype_bytes(c->weight_dtype[CONFIG_W_OUT], c->vocab_size, c->dim);
    int64_t first = emb, last = 4LL * c->dim + (c->tied_classifier && pp > 1 ? emb : c->tied_classifier ? 0 : out);
    /* best[s][l]: minimal max stage cost placing layers [0, l) on stages [0, s) (DP, L small) */
    static int64_t best[PLAN_MAX_PP + 1][1025];
    static int cut[PLAN_MAX_PP + 1][1025];
    if (L > 1024) { /* beyond the DP table: even split */
        for (int s = 0; s <= pp; s++) {
            int st, n;
            plan_split(L, pp, s < pp ? s : pp - 1, &st, &n);
            g->layer_start[s] = s < pp ? st : L;
        }
        return;
    }
    for (int s = 0; s <= pp; s++)
        for (int l = 0; l <= L; l++) best[s][l] = INT64_MAX;
    best[0][0] = 0;
    for (int s = 1; s <= pp; s++) {
        for (int l = s; l <= L - (pp - s); l++) {
            for (int k = s - 1; k < l; k++) {
                if (best[s - 1][k] == INT64_MAX) continue;
                int64_t cost = (l - k) * lb + (s == 1 ? first : 0) + (s == pp ? last : 0);
                int64_t m = cost > best[s - 1][k] ? cost : best[s - 1][k];
                if (m < best[s][l]) {
                    best[s][l] = m;
                    cut[s][l] = k;
                }
            }
        }
    }
    g->layer_start[pp] = L;
    for (int s = pp, l = L; s > 0; s--) {
        l = cut[s][l];
        g->layer_start[s - 1] = l;
    }
}

void plan_rank_share(const plan_grid *g, const model_config *c, int world_rank, plan_rank *r) {
    memset(r, 0, sizeof(*r));
    int tp = g->tp, q = world_rank % (g->pp * tp);
    r->world_rank = world_rank;
    r->replica = world_rank / (g->pp * tp);
    r->stage = q / tp;
    r->tp_rank = q % tp;
    r->layer0 = g->layer_start[r->stage];
    r->n_layers_local = g->layer_start[r->stage + 1] - r->layer0;
    r->n_heads_local = c->n_heads / tp;
    r->head0 = r->tp_rank * r->n_heads_local;
    if (c->n_kv_heads >= tp) {
        r->n_kv_local = c->n_kv_heads / tp;
        r->kv_head0 = r->tp_rank * r->n_kv_local;
    } else { /* replicated: tp / n_kv_heads ranks share each KV head */
        r->n_kv_local = 1;
        r->kv_head0 = r->tp_rank / (tp / c->n_kv_heads);
    }
    plan_split(c->hidden_dim, tp, r->tp_rank, &r->hidden0, &r->hidden_local);
    plan_split(c->vocab_size, tp, r->tp_rank, &r->vocab0, &r->vocab_local);
    r->has_embedding = r->stage == 0;
    r->has_classifier = r->stage == g->pp - 1;
    int64_t d = c->dim, hs = c->head_size;
    int64_t b = layer_share_bytes(c, r->n_heads_local * hs, r->n_kv_local * hs, r->hidden_local) * r->n_layers_local;
    const int *t = c->weight_dtype;
    if (r->has_embedding) b += dtype_bytes(t[CONFIG_W_EMBED], r->vocab_local, d);
    if (r->has_classifier) {
        b += 4 * d;
        if (c->tied_classifier && !r->has_embedding) b += dtype_bytes(t[CONFIG_W_EMBED], r->vocab_local, d);
        else if (!c->tied_classifier) b += dtype_bytes(t[CONFIG_W_OUT], r->vocab_local, d);
    }
    r->weight_bytes = b;
}

int64_t plan_kv_bytes(const plan_rank *r, const model_config *c, int max_seq, int batch) {
    const int64_t f[] = {2 * (int64_t)kern_dtype_size((kern_dtype)c->kv_dtype), r->n_layers_local, batch, max_seq,
                         r->n_kv_local, c->head_size};
    int64_t bytes;
    return util_product_ok(f, (int)(sizeof f / sizeof f[0]), &bytes) ? bytes : -1;
}

void plan_make_dp(plan_grid *g, const model_config *c, int dp, int pp, int tp) {
    plan_make(g, c, pp, tp);
    g->dp = dp;
}

void plan_list_layouts(const model_config *c, int world, char *buf, size_t cap) {
    size_t used = 0;
    char why[256];
    buf[0] = 0;
    for (int r = 1; r <= world; r++) { /* replica size */
        if (world % r) continue;
        for (int tp = r; tp >= 1; tp--) {
            if (r % tp || plan_check_grid(c, r / tp, tp, why, sizeof(why)) != 0) continue;
            used += snprintf(buf + used, used < cap ? cap - used : 0, "%s--dp %d --pp %d --tp %d", used ? ", " : "",
                             world / r, r / tp, tp);
            if (used >= cap) {
                if (cap > 4) snprintf(buf + cap - 5, 5, "...");
                return;
            }
        }
    }
    if (!buf[0]) snprintf(buf, cap, "none");
}

int plan_micro_batches(int pp, int batch, int64_t requests) {
    if (pp <= 1) return 1;
    return requests < 0 || requests >= (int64_t)(pp + 1) * batch ? pp + 1 : pp;
}

int plan_slots(int batch, int micro, int pp) {
    const int64_t slots = (int64_t)batch * (micro > 0 ? micro : plan_micro_batches(pp, batch, -1));
    return slots <= INT32_MAX ? (int)slots : -1;
}

void plan_node_bytes(const plan_grid *g, const model_config *c, int node, int node_size, int max_seq, int batch,
                     int micro, int shared, plan_node_mem *out) {
    const int R = g->pp * g->tp, world = g->dp * R, slots = plan_slots(batch, micro, g->pp);
    char *held = shared ? calloc((size_t)R, 1) : NULL; /* slices already counted on this node */
    memset(out, 0, sizeof(*out));
    for (int w = node * node_size; w < (node + 1) * node_size && w < world; w++) {
        plan_rank r;
        plan_rank_share(g, c, w, &r);
        int slice = r.stage * g->tp + r.tp_rank;
        if (!held || !held[slice]) out->weight_bytes += r.weight_bytes;
        if (held) held[slice] = 1;
        int64_t kv = plan_kv_bytes(&r, c, max_seq, slots);
        /* beyond int64 (absurd --batch x --max-seq-len): saturates, so that it fits nowhere */
        if (kv < 0 || !util_add_ok(out->kv_bytes, kv, &out->kv_bytes)) out->kv_bytes = INT64_MAX;
    }
    free(held);
}

int plan_default(const model_config *c, int world, int node_size, int64_t node_mem, int max_seq, int batch, int micro,
                 int *dp, int *pp, int *tp) {
    char why[256];
    if (node_size < 1) node_size = 1;
    const int n_nodes = (world + node_size - 1) / node_size;
    for (int r = 1; r <= world; r++) { /* the smallest replica first */
        if (world % r) continue;
        /* tp inside a node (its all-reduces stay off the network), the pipeline across nodes */
        for (int t = r < node_size ? r : node_size; t >= 1; t--) {
            if (r % t || plan_check_grid(c, r / t, t, why, sizeof(why)) != 0) continue;
            plan_grid g;
            plan_make_dp(&g, c, world / r, r / t, t);
            int fits = 1;
            for (int n = 0; n < n_nodes && fits; n++) {
                plan_node_mem nm;
                plan_node_bytes(&g, c, n, node_size, max_seq, batch, micro, 1, &nm);
                fits = (double)nm.weight_bytes + (double)nm.kv_bytes <= 0.85 * (double)node_mem;
            }
            if (fits) {
                *dp = world / r, *pp = r / t, *tp = t;
                return 0;
            }
            break; /* a smaller tp of the same replica size holds the same bytes per node */
        }
    }
    /* nothing fits: one replica, tp = ranks per node and pp = nodes, else the largest valid tp */
    int t = node_size <= world && world % node_size == 0 ? node_size : 1;
    while (t > 1 && (world % t || plan_check_grid(c, world / t, t, why, sizeof(why)) != 0)) t--;
    *dp = 1, *tp = t, *pp = world / t;
    return -1;
}
