#include "model.h"

#include <stdlib.h>
#include <string.h>

#include "kernels.h"
#include "trace.h"
#include "util.h"

/* whether tensors of type t, cols wide, are packed for the kernels: q8 always, bf16 and f32 where
 * the kernels take them so (kern_packs) but f32 for MPILLAMA_WEIGHTS=map, which uses it in place
 * (no copy: the dot-product kernels, slower on batches, their sums rounded in another order) */
static int wmat_packs(kern_dtype t, int64_t cols) {
    return t == KERN_Q8 || (kern_packs(t, cols) && !(t == KERN_F32 && mfile_weights_mode() == MFILE_WEIGHTS_MAP));
}

/* q8, bf16 and f32 where wmat_packs (of the tensor's whole width): rows [r0, r0+nr) x cols [c0,
 * c0+nc) of name (cols wide) into w, packed for the kernels (kern_q8_pack, kern_pack; a bf16
 * or f32 share whose width is no multiple of 32 or 16 stays plain) by the
 * node's owner of this slice, into the arena: these weights always live in the rank's own memory,
 * one copy per node. They are read straight from the file's mapping (one pass, no buffer), or
 * where the tensor is not laid out plainly or the file is not mapped (MPILLAMA_WEIGHTS=hdf5)
 * through HDF5 into a temporary buffer. The calls that reach HDF5 are the plain path's (one
 * dataset open, then the same collective read where it fails), so ranks that pack and ranks that
 * don't (other CPUs, MPILLAMA_MATMUL) still walk the file together. */
static void load_packed(model *m, mfile *f, const char *name, int mine, int64_t cols, kern_wmat *w, kern_dtype t,
                        int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
    const int own = mine && m->shared.owner, q8 = t == KERN_Q8;
    const size_t es = kern_dtype_size(t);
    const int64_t nb = q8 ? nc / KERN_Q8_BLOCK : 0, bytes = nr * (nc * (int64_t)es + 4 * nb);
    const void *src = NULL, *ssrc = NULL;
    void *raw = NULL;
    float *sc = NULL;
    int64_t ld = cols;
    char sname[160];
    snprintf(sname, sizeof(sname), "%s.scale", name);
    if (mfile_map_rows(f, name, r0, own ? nr : 0, es, &src) &&
        (!q8 || mfile_map_rows(f, sname, r0, own ? nr : 0, sizeof(float), &ssrc))) {
        if (own) {
            src = (const char *)src + c0 * (int64_t)es;
            if (q8) ssrc = (const float *)ssrc + c0 / KERN_Q8_BLOCK;
            m->bytes_read += bytes, m->bytes_copied += bytes;
        }
    } else {
        raw = own ? xmalloc((size_t)(nr * nc) * es + 1) : NULL;
        sc = own && q8 ? xmalloc(sizeof(float) * (size_t)(nr * nb) + 1) : NULL;
        m->bytes_read += mfile_read_tensor(f, name, t, r0, own ? nr : 0, c0, own ? nc : 0, raw, sc);
        src = raw, ssrc = sc, ld = nc;
    }
    if (own) {
        if (q8) kern_q8_pack((void *)w->data, src, ssrc, ld, nr, nc);
        else if (w->packed) kern_pack((void *)w->data, src, t, ld, nr, nc);
        else /* a share of columns the packed kernels can't take: plain rows */
            for (int64_t r = 0; r < nr; r++)
                memcpy((char *)w->data + r * nc * (int64_t)es, (const char *)src + r * ld * (int64_t)es, (size_t)nc * es);
    }
    free(raw);
    free(sc);
}

/* rows [r0, r0+nr) x cols [c0, c0+nc) of name (cols wide), stored as t, into w when mine (else
 * nothing). Tensors the kernels take packed (wmat_packs) go packed into the arena (load_packed).
 * Another tensor laid out plainly in the file is copied into the arena at w (MPILLAMA_WEIGHTS=copy,
 * the default: the rank's own memory, on huge pages; 1.1B f32 decoded 7.8 tok/s copied against
 * 4.5-7.4 in place on an Intel VM, where the page cache's small pages cost a TLB walk through two
 * page tables) or, with MPILLAMA_WEIGHTS=map, used in place: w points into the file's mapping (page
 * cache, shared by the node's ranks; no copy) but for a block of columns (a tp rank's share of wo
 * or w2), which is always copied packed: in place its rows would be read with the whole rows'
 * stride, half a row then a jump (at one sequence, 1.1B bf16 at tp 2 decoded 10-11 tok/s in place
 * against 15-21 packed). Otherwise it is read into the arena through HDF5 by the node's owner of
 * this slice. Whether a tensor is laid out plainly depends on the file only, so every rank takes
 * the same path (each path is collective: copies and views open the same datasets in the same
 * order). */
static void load_part(model *m, mfile *f, const char *name, int mine, int64_t cols, kern_wmat *w, kern_dtype t,
                      int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
    kern_dtype stored = mfile_dtype(f, name);
    if (stored != t) die("'%s': tensor '%s' is stored as %s, expected %s like the other layers' (convert again)",
                         mfile_path(f), name, kern_dtype_name(stored), kern_dtype_name(t));
    if (wmat_packs(t, cols)) {
        load_packed(m, f, name, mine, cols, w, t, r0, nr, c0, nc);
        return;
    }
    const void *in_place;
    const size_t es = kern_dtype_size(t);
    const int64_t bytes = nr * nc * (int64_t)es;
    if (nc != cols || mfile_weights_mode() == MFILE_WEIGHTS_COPY) {
        const int own = mine && m->shared.owner;
        if (mfile_copy(f, name, r0, own ? nr : 0, c0, nc, es, (void *)w->data)) {
            if (own) m->bytes_read += bytes, m->bytes_copied += bytes;
            return;
        }
    } else if (mfile_view(f, name, r0, mine ? nr : 0, es, &in_place)) {
        if (mine) w->data = in_place; /* whole rows; read-only: the model never writes its weights */
        if (mine && m->shared.owner) { /* the node's ranks holding this slice share its pages: counted once */
            m->bytes_read += bytes;
            m->bytes_in_place += bytes;
        }
        return;
    }
    mine = mine && m->shared.owner;
    m->bytes_read += mfile_read_tensor(f, name, t, r0, mine ? nr : 0, c0, mine ? nc : 0, (void *)w->data, NULL);
}

/* elements [r0, r0+nr) of the f32 vector name into *dst when mine (in place when plain) */
static void load_f32(model *m, mfile *f, const char *name, int mine, float **dst, int64_t r0, int64_t nr) {
    kern_wmat w = {KERN_F32, *dst, 0, 0};
    load_part(m, f, name, mine, 1, &w, KERN_F32, r0, nr, 0, 1);
    if (mine) *dst = (float *)w.data;
}

/* a (rows, cols) matrix of type t in the arena, a share of a tensor `full` columns wide (bf16 is
 * packed when the whole tensor goes the packed way, load_part, and the share can be) */
static kern_wmat wmat_alloc(arena *a, kern_dtype t, int64_t rows, int64_t cols, int64_t full) {
    kern_wmat w = {t, NULL, 0, 0};
    size_t n = (size_t)(rows * cols);
    w.packed = t != KERN_Q8 && wmat_packs(t, full) && wmat_packs(t, cols);
    w.data = arena_alloc(a, t == KERN_Q8 || w.packed ? kern_packed_bytes(t, rows, cols) : n * kern_dtype_size(t));
    return w;
}

static void check_shape(mfile *f, const char *name, int64_t rows, int64_t cols) {
    int64_t dims[2];
    mfile_shape(f, name, dims);
    if (dims[0] != rows || dims[1] != cols)
        die("'%s': tensor '%s' is [%lld, %lld], the config says [%lld, %lld]", mfile_path(f), name,
            (long long)dims[0], (long long)dims[1], (long long)rows, (long long)cols);
}

void model_check_file(mfile *f, const model_config *cfg) {
    const int64_t dim = cfg->dim, q = config_q_dim(cfg), kv = config_kv_dim(cfg), h = cfg->hidden_dim;
    check_shape(f, "tok_embeddings", cfg->vocab_size, dim);
    char name[128];
    for (int l = 0; l < cfg->n_layers; l++) {
        static const char *const names[9] = {"attention_norm", "wq", "wk", "wv", "wo",
                                             "ffn_norm", "w1", "w2", "w3"};
        const int64_t rows[9] = {dim, q, kv, kv, dim, dim, h, dim, h};
        const int64_t cols[9] = {1, dim, dim, dim, q, 1, dim, h, dim};
        for (int i = 0; i < 9; i++) {
            snprintf(name, sizeof(name), "layers/%d/%s", l, names[i]);
            check_shape(f, name, rows[i], cols[i]);
        }
        const int64_t hs = cfg->head_size;
        const struct {
            int present;
            const char *name;
            int64_t rows;
        } extra[5] = {{cfg->attn_qkv_bias, "bq", q}, {cfg->attn_qkv_bias, "bk", kv}, {cfg->attn_qkv_bias, "bv", kv},
                      {cfg->attn_qk_norm, "q_norm", hs}, {cfg->attn_qk_norm, "k_norm", hs}};
        for (int i = 0; i < 5; i++) {
            if (!extra[i].present) continue;
            snprintf(name, sizeof(name), "layers/%d/%s", l, extra[i].name);
            check_shape(f, name, extra[i].rows, 1);
        }
    }
    check_shape(f, "norm", dim, 1);
    if (!cfg->tied_classifier) check_shape(f, "output", cfg->vocab_size, dim);
}

/* bytes that packing matrices adds to the rank's weights: each padded to whole groups of 16 rows
 * (at most 15 rows more of each, of at most 4 bytes an input: f32; 7 matrices a layer and 2
 * others) */
static size_t pack_padding(const model_config *cfg, const plan_rank *r) {
    int64_t widest = cfg->dim > r->hidden_local ? cfg->dim : r->hidden_local;
    if (config_q_dim(cfg) > widest) widest = config_q_dim(cfg);
    return 15 * 4 * (size_t)widest * (7 * (size_t)r->n_layers_local + 2);
}

void model_load(model *m, mfile *f, const model_config *cfg, const plan_grid *g, const dist_ctx *d) {
    memset(m, 0, sizeof(*m));
    m->cfg = *cfg;
    plan_rank_share(g, cfg, d->world_rank, &m->share);
    const plan_rank *r = &m->share;
    const int64_t dim = cfg->dim, hs = cfg->head_size;
    const int64_t qd = (int64_t)r->n_heads_local * hs, kvd = (int64_t)r->n_kv_local * hs, hl = r->hidden_local;
    int tied_shared = cfg->tied_classifier && r->has_embedding && r->has_classifier;

    model_check_file(f, cfg);
    /* the ranks of this node holding this slice (other replicas') share one copy: the owner reads.
     * 64 bytes of alignment for each of at most 16 arrays per layer and 16 others */
    size_t cap = arena_round((size_t)r->weight_bytes + 64 * (16 + 16 * (size_t)r->n_layers_local) + pack_padding(cfg, r));
    dist_shared_alloc(d, &m->shared, cap);
    arena_init_at(&m->weights, m->shared.base, cap);
    const int *wt = cfg->weight_dtype;
    if (r->has_embedding) m->tok_embeddings = wmat_alloc(&m->weights, wt[CONFIG_W_EMBED], r->vocab_local, dim, dim);
    m->layers = xcalloc(r->n_layers_local > 0 ? r->n_layers_local : 1, sizeof(model_layer));
    for (int l = 0; l < r->n_layers_local; l++) {
        model_layer *L = &m->layers[l];
        L->attention_norm = arena_floats(&m->weights, dim);
        L->wq = wmat_alloc(&m->weights, wt[CONFIG_W_Q], qd, dim, dim);
        L->wk = wmat_alloc(&m->weights, wt[CONFIG_W_K], kvd, dim, dim);
        L->wv = wmat_alloc(&m->weights, wt[CONFIG_W_V], kvd, dim, dim);
        if (cfg->attn_qkv_bias) {
            L->bq = arena_floats(&m->weights, qd);
            L->bk = arena_floats(&m->weights, kvd);
            L->bv = arena_floats(&m->weights, kvd);
        }
        if (cfg->attn_qk_norm) {
            L->q_norm = arena_floats(&m->weights, hs);
            L->k_norm = arena_floats(&m->weights, hs);
        }
        L->wo = wmat_alloc(&m->weights, wt[CONFIG_W_O], dim, qd, config_q_dim(cfg));
        L->ffn_norm = arena_floats(&m->weights, dim);
        L->w1 = wmat_alloc(&m->weights, wt[CONFIG_W_1], hl, dim, dim);
        L->w2 = wmat_alloc(&m->weights, wt[CONFIG_W_2], dim, hl, cfg->hidden_dim);
        L->w3 = wmat_alloc(&m->weights, wt[CONFIG_W_3], hl, dim, dim);
    }
    if (r->has_classifier) {
        m->norm = arena_floats(&m->weights, dim);
        if (tied_shared) m->classifier = m->tok_embeddings;
        else if (cfg->tied_classifier) m->classifier = wmat_alloc(&m->weights, wt[CONFIG_W_EMBED], r->vocab_local, dim, dim);
        else m->classifier = wmat_alloc(&m->weights, wt[CONFIG_W_OUT], r->vocab_local, dim, dim);
    }

    /* every rank walks every tensor in the same order (collective metadata and reads) */
    if (cfg->tied_classifier && r->has_classifier && !r->has_embedding)
        load_part(m, f, "tok_embeddings", 1, dim, &m->classifier, wt[CONFIG_W_EMBED], r->vocab0, r->vocab_local, 0, dim);
    else
        load_part(m, f, "tok_embeddings", r->has_embedding, dim, &m->tok_embeddings, wt[CONFIG_W_EMBED], r->vocab0,
                  r->vocab_local, 0, dim);
    char name[128];
    for (int gl = 0; gl < cfg->n_layers; gl++) {
        int l = gl - r->layer0, mine = l >= 0 && l < r->n_layers_local;
        model_layer *L = mine ? &m->layers[l] : &(model_layer){0};
#define LOAD(t, kind, dst, rows, cols, r0, nr, c0, nc)                \
    do {                                                              \
        snprintf(name, sizeof(name), "layers/%d/" t, gl);             \
        load_part(m, f, name, mine, cols, dst, wt[kind], r0, nr, c0, nc);       \
    } while (0)
#define LOAD_VEC(t, dst, rows, r0, nr)                                \
    do {                                                              \
        snprintf(name, sizeof(name), "layers/%d/" t, gl);             \
        (void)(rows);                                                 \
        load_f32(m, f, name, mine, &(dst), r0, nr);                   \
    } while (0)
        LOAD_VEC("attention_norm", L->attention_norm, dim, 0, dim);
        LOAD("wq", CONFIG_W_Q, &L->wq, config_q_dim(cfg), dim, r->head0 * hs, qd, 0, dim);
        LOAD("wk", CONFIG_W_K, &L->wk, config_kv_dim(cfg), dim, r->kv_head0 * hs, kvd, 0, dim);
        LOAD("wv", CONFIG_W_V, &L->wv, config_kv_dim(cfg), dim, r->kv_head0 * hs, kvd, 0, dim);
        if (cfg->attn_qkv_bias) { /* split with their rows */
            LOAD_VEC("bq", L->bq, config_q_dim(cfg), r->head0 * hs, qd);
            LOAD_VEC("bk", L->bk, config_kv_dim(cfg), r->kv_head0 * hs, kvd);
            LOAD_VEC("bv", L->bv, config_kv_dim(cfg), r->kv_head0 * hs, kvd);
        }
        if (cfg->attn_qk_norm) { /* replicated */
            LOAD_VEC("q_norm", L->q_norm, hs, 0, hs);
            LOAD_VEC("k_norm", L->k_norm, hs, 0, hs);
        }
        LOAD("wo", CONFIG_W_O, &L->wo, dim, config_q_dim(cfg), 0, dim, r->head0 * hs, qd);
        LOAD_VEC("ffn_norm", L->ffn_norm, dim, 0, dim);
        LOAD("w1", CONFIG_W_1, &L->w1, cfg->hidden_dim, dim, r->hidden0, hl, 0, dim);
        LOAD("w2", CONFIG_W_2, &L->w2, dim, cfg->hidden_dim, 0, dim, r->hidden0, hl);
        LOAD("w3", CONFIG_W_3, &L->w3, cfg->hidden_dim, dim, r->hidden0, hl, 0, dim);
#undef LOAD
#undef LOAD_VEC
    }
    load_f32(m, f, "norm", r->has_classifier, &m->norm, 0, dim);
    if (!cfg->tied_classifier) {
        load_part(m, f, "output", r->has_classifier, dim, &m->classifier, wt[CONFIG_W_OUT], r->vocab0, r->vocab_local,
                  0, dim);
    }

    if (tied_shared) m->classifier = m->tok_embeddings; /* it may have moved into the mapping */
    mfile_view_populate(f); /* this rank's ranges, beside the other ranks' */
    dist_shared_ready(d, &m->shared);
    m->vocab_counts = xmalloc(sizeof(int) * g->tp);
    m->vocab_offsets = xmalloc(sizeof(int) * g->tp);
    for (int t = 0; t < g->tp; t++) plan_split(cfg->vocab_size, g->tp, t, &m->vocab_offsets[t], &m->vocab_counts[t]);
    m->inv_freq = xmalloc(sizeof(float) * (cfg->head_size / 2));
    kern_rope_freqs(m->inv_freq, cfg->head_size, cfg->rope_theta, strcmp(cfg->rope_scaling_type, "llama3") == 0,
                    cfg->rope_factor, cfg->rope_low_freq_factor, cfg->rope_high_freq_factor, cfg->rope_original_max_pos);
    if (mfile_has(f, "rope_freqs")) { /* per-frequency divisors (from a GGUF's rope_freqs) */
        float *div = xmalloc(sizeof(float) * (cfg->head_size / 2));
        check_shape(f, "rope_freqs", cfg->head_size / 2, 1);
        mfile_read_f32(f, "rope_freqs", 0, cfg->head_size / 2, 0, 1, div);
        for (int i = 0; i < cfg->head_size / 2; i++) {
            if (!(div[i] > 0)) die("'%s': tensor 'rope_freqs' holds %g, must be > 0", mfile_path(f), div[i]);
            m->inv_freq[i] /= div[i];
        }
        free(div);
    }
}

void model_alloc_state(model *m, int n_slots, int seq_len, int max_tokens) {
    const plan_rank *r = &m->share;
    const model_config *c = &m->cfg;
    const int64_t hs = c->head_size, kvd = (int64_t)r->n_kv_local * hs, qd = (int64_t)r->n_heads_local * hs;
    m->n_slots = n_slots;
    m->seq_len = seq_len;
    m->max_tokens = max_tokens;
    /* the KV cache and the largest activation, checked: --batch and --max-seq-len multiply */
    m->kv_dtype = (kern_dtype)c->kv_dtype;
    const int64_t es = (int64_t)kern_dtype_size(m->kv_dtype);
    int64_t kv_bytes = plan_kv_bytes(r, c, seq_len, n_slots), big;
    const int64_t widest = c->vocab_size > r->hidden_local ? c->vocab_size : r->hidden_local;
    if (kv_bytes < 0 || max_tokens < 1 || !util_mul_ok(max_tokens, widest > qd ? widest : qd, &big) ||
        !util_mul_ok(big, (int64_t)sizeof(float), &big) || (uint64_t)kv_bytes > SIZE_MAX / 2)
        die("%d batch slots x %d positions (%d tokens a step) need more memory than can be "
            "addressed; lower --batch or --max-seq-len", n_slots, seq_len, max_tokens);
    int64_t kv = kv_bytes / 2 / es;
    m->key_cache = xcalloc((size_t)kv, (size_t)es);
    m->value_cache = xcalloc((size_t)kv, (size_t)es);
    m->kv_bytes = 2 * kv * es;
    const size_t rows = (size_t)max_tokens;
    m->x = xcalloc(rows * c->dim, sizeof(float));
    m->xb = xcalloc(rows * c->dim, sizeof(float));
    m->q = xcalloc(rows * qd, sizeof(float));
    m->k = xcalloc(rows * kvd, sizeof(float));
    m->v = xcalloc(rows * kvd, sizeof(float));
    m->att_out = xcalloc(rows * qd, sizeof(float));
    m->hb = xcalloc(rows * r->hidden_local, sizeof(float));
    m->hb2 = xcalloc(rows * r->hidden_local, sizeof(float));
    m->att = xmalloc(sizeof(float) * r->n_heads_local * seq_len);
    if (r->has_classifier) {
        m->logits_local = xcalloc(rows * r->vocab_local, sizeof(float));
        if (m->share.tp_rank == 0) m->gather_scratch = xmalloc(sizeof(float) * rows * (size_t)c->vocab_size);
    }
}

void model_free(model *m) {
    arena_free(&m->weights);
    dist_shared_free(&m->shared);
    free(m->layers);
    free(m->vocab_counts);
    free(m->vocab_offsets);
    free(m->inv_freq);
    free(m->key_cache);
    free(m->value_cache);
    free(m->x);
    free(m->xb);
    free(m->q);
    free(m->k);
    free(m->v);
    free(m->att_out);
    free(m->hb);
    free(m->hb2);
    free(m->att);
    free(m->logits_local);
    free(m->gather_scratch);
    memset(m, 0, sizeof(*m));
}

void model_embed(model *m, dist_ctx *d, const model_batch *b) {
    const plan_rank *r = &m->share;
    const int n = b->n, dim = m->cfg.dim;
    double t0 = trace_now();
    for (int t = 0; t < n; t++) {
        int tok = b->token[t] - r->vocab0;
        float *x = m->x + (int64_t)t * dim;
        if (tok >= 0 && tok < r->vocab_local) kern_wmat_row(x, &m->tok_embeddings, tok, dim);
        else memset(x, 0, sizeof(float) * dim);
    }
    trace_end(TN_EMBED, TRACE_COMPUTE, t0, n);
    dist_allreduce_sum(d, m->x, (int64_t)n * dim); /* vocab-parallel embedding */
}

void model_kv_copy(model *m, int src, int dst, int n) {
    check(src >= 0 && src < m->n_slots && dst >= 0 && dst < m->n_slots && n >= 0 && n <= m->seq_len,
          "KV copy of %d positions from slot %d to %d", n, src, dst);
    const int64_t row = (int64_t)m->share.n_kv_local * m->cfg.head_size * (int64_t)kern_dtype_size(m->kv_dtype);
    for (int l = 0; l < m->share.n_layers_local; l++)
        for (int c = 0; c < 2; c++) {
            char *base = (char *)(c ? m->value_cache : m->key_cache) + (int64_t)l * m->n_slots * m->seq_len * row;
            memcpy(base + (int64_t)dst * m->seq_len * row, base + (int64_t)src * m->seq_len * row, (size_t)(n * row));
        }
}

void model_layers(model *m, dist_ctx *d, const model_batch *b) {
    const model_config *c = &m->cfg;
    const plan_rank *r = &m->share;
    const int n = b->n, dim = c->dim, hs = c->head_size;
    const int qd = r->n_heads_local * hs, kvd = r->n_kv_local * hs, hl = r->hidden_local;
    check(n > 0 && n <= m->max_tokens, "batch of %d tokens exceeds the scratch for %d", n, m->max_tokens);
    for (int t = 0; t < n; t++)
        check(b->pos[t] >= 0 && b->pos[t] < m->seq_len && b->slot[t] >= 0 && b->slot[t] < m->n_slots,
              "token %d: position %d / slot %d outside the KV cache", t, b->pos[t], b->slot[t]);
    kern_attn_dims ad = {r->n_heads_local, r->n_kv_local, hs, m->seq_len, c->n_heads / c->n_kv_heads,
                         r->head0, r->kv_head0, m->kv_dtype, c->sliding_window};
    const size_t es = kern_dtype_size(m->kv_dtype);
    for (int l = 0; l < r->n_layers_local; l++) {
        const model_layer *L = &m->layers[l];
        const int gl = r->layer0 + l;
        char *kc = (char *)m->key_cache + (int64_t)l * m->n_slots * m->seq_len * kvd * es;
        char *vc = (char *)m->value_cache + (int64_t)l * m->n_slots * m->seq_len * kvd * es;
        dist_progress(d); /* the previous micro-batch's send moves on while this one computes */
        double t0 = trace_now();
        kern_rmsnorm(m->xb, m->x, L->attention_norm, n, dim, c->norm_eps);
        {
            float *const out[3] = {m->q, m->k, m->v};
            const kern_wmat *const w[3] = {&L->wq, &L->wk, &L->wv};
            const int o[3] = {qd, kvd, kvd};
            kern_matmul_w_multi(3, out, w, o, m->xb, n, dim);
        }
        if (L->bq) {
            kern_add_bias(m->q, L->bq, n, qd);
            kern_add_bias(m->k, L->bk, n, kvd);
            kern_add_bias(m->v, L->bv, n, kvd);
        }
        if (L->q_norm) { /* every head its own row */
            kern_rmsnorm(m->q, m->q, L->q_norm, n * r->n_heads_local, hs, c->norm_eps);
            kern_rmsnorm(m->k, m->k, L->k_norm, n * r->n_kv_local, hs, c->norm_eps);
        }
        kern_rope(m->q, b->pos, m->inv_freq, n, r->n_heads_local, hs);
        kern_rope(m->k, b->pos, m->inv_freq, n, r->n_kv_local, hs);
        for (int t = 0; t < n; t++) {
            int64_t off = ((int64_t)b->slot[t] * m->seq_len + b->pos[t]) * kvd;
            kern_store_rows(kc + off * es, m->kv_dtype, m->k + (int64_t)t * kvd, kvd);
            kern_store_rows(vc + off * es, m->kv_dtype, m->v + (int64_t)t * kvd, kvd);
        }
        t0 = trace_end(TN_MATMUL, TRACE_COMPUTE, t0, gl);
        kern_attention(m->att_out, m->q, kc, vc, b->pos, b->slot, n, &ad, m->att);
        t0 = trace_end(TN_ATTENTION, TRACE_COMPUTE, t0, gl);
        kern_matmul_w(m->xb, m->att_out, &L->wo, n, qd, dim);
        trace_end(TN_MATMUL, TRACE_COMPUTE, t0, gl);
        dist_allreduce_sum(d, m->xb, (int64_t)n * dim);
        dist_progress(d);
        t0 = trace_now();
        kern_add(m->x, m->xb, (int64_t)n * dim);
        kern_rmsnorm(m->xb, m->x, L->ffn_norm, n, dim, c->norm_eps);
        {
            float *const out[2] = {m->hb, m->hb2};
            const kern_wmat *const w[2] = {&L->w1, &L->w3};
            const int o[2] = {hl, hl};
            kern_matmul_w_multi(2, out, w, o, m->xb, n, dim);
        }
        kern_swiglu(m->hb, m->hb2, (int64_t)n * hl);
        kern_matmul_w(m->xb, m->hb, &L->w2, n, hl, dim);
        trace_end(TN_FFN, TRACE_COMPUTE, t0, gl);
        dist_allreduce_sum(d, m->xb, (int64_t)n * dim);
        kern_add(m->x, m->xb, (int64_t)n * dim);
    }
}

int model_classify(model *m, const model_batch *b) {
    const model_config *c = &m->cfg;
    const int n = b->n, dim = c->dim;
    int nw = 0;
    double t0 = trace_now();
    for (int t = 0; t < n; t++)
        if (b->want[t]) kern_rmsnorm(m->xb + (int64_t)nw++ * dim, m->x + (int64_t)t * dim, m->norm, 1, dim, c->norm_eps);
    if (nw == 0) return 0;
    kern_matmul_w(m->logits_local, m->xb, &m->classifier, nw, dim, m->share.vocab_local);
    trace_end(TN_CLASSIFIER, TRACE_COMPUTE, t0, nw);
    return nw;
}

int model_logits(model *m, dist_ctx *d, const model_batch *b, float *out) {
    const model_config *c = &m->cfg;
    int nw = model_classify(m, b);
    if (nw == 0) return 0;
    dist_gather_logits(d, m->logits_local, nw, m->share.vocab_local, m->vocab_counts, m->vocab_offsets, c->vocab_size,
                       m->gather_scratch, out);
    return nw;
}
