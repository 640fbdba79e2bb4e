/* convert_gguf: a GGUF file (llama.cpp) -> the HDF5 model file.
 *
 * Architectures (general.architecture): llama (Llama, Mistral and other Llama-shaped models as
 * llama.cpp writes them), qwen2 (q/k/v biases), qwen3 (per-head q/k norms). The config comes
 * from the "<arch>." keys, every one of which is applied, refused or (unknown) named in a
 * warning; the tokenizer from tokenizer.ggml.* (tok_load_gguf). Tensors F32, F16, BF16, Q8_0,
 * Q4_0, Q4_K, Q5_K and Q6_K are dequantised to f32, then stored as --dtype asks, by default in
 * the type nearest to the source's (see convert_gguf).
 *
 * RoPE row order: llama.cpp's "llama" architecture rotates adjacent pairs (its converter
 * permutes Hugging Face's q/k rows into that order), which is this file's layout: rows are
 * copied as they are. qwen2 and qwen3 use the rotate-half ("NEOX") order, Hugging Face's own:
 * their q/k rows, q/k biases and q/k norms are permuted as convert_hf permutes them. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "convert.h"
#include "gguf.h"
#include "mfile.h"
#include "tokenizer.h"
#include "util.h"

typedef struct {
    const gguf_file *g;
    const char *arch;
} gguf_cfg;

/* "<arch>.<key>", or NULL */
static const gguf_kv *arch_kv(const gguf_cfg *c, const char *key) {
    char full[160];
    snprintf(full, sizeof full, "%s.%s", c->arch, key);
    return gguf_find(c->g, full);
}

/* an integer "<arch>.<key>" in [lo, hi]: required, or def when absent */
static int arch_int(const gguf_cfg *c, const char *key, int required, int def, int lo) {
    const gguf_kv *kv = arch_kv(c, key);
    if (!kv) {
        if (required) die("'%s': missing key '%s.%s'", c->g->path, c->arch, key);
        return def;
    }
    if (kv->type == GGUF_ARRAY)
        die("'%s': key '%s' varies by layer, which is not supported", c->g->path, kv->key);
    int64_t v = gguf_int(c->g, kv);
    if (v < lo || v > INT32_MAX) die("'%s': key '%s' is %" PRId64 ", out of range", c->g->path, kv->key, v);
    return (int)v;
}

static float arch_float(const gguf_cfg *c, const char *key, int required, float def) {
    const gguf_kv *kv = arch_kv(c, key);
    if (!kv) {
        if (required) die("'%s': missing key '%s.%s'", c->g->path, c->arch, key);
        return def;
    }
    return (float)gguf_float(c->g, kv);
}

/* the "<arch>." keys: applied below, or refused unless neutral (0, 1, false, "none");
 * others are named in a warning */
static const char *const arch_keys_applied[] = {
    "context_length", "embedding_length", "feed_forward_length", "block_count",
    "attention.head_count", "attention.head_count_kv", "attention.key_length",
    "attention.value_length", "attention.layer_norm_rms_epsilon", "rope.freq_base",
    "rope.dimension_count", "rope.scaling.type", "rope.scaling.factor",
    "rope.scaling.original_context_length", "rope.scaling.finetuned", "attention.sliding_window",
    "vocab_size",
};
static const char *const arch_keys_refused[] = {
    "expert_count", "expert_used_count", "attention.layer_norm_epsilon", "attention.clamp_kqv",
    "logit_scale", "attn_logit_softcapping", "final_logit_softcapping", "attention.q_lora_rank",
    "attention.kv_lora_rank", "rope.scaling.attn_factor", "embedding_scale", "residual_scale",
    "attention.scale", "rope.dimension_sections", "use_parallel_residual",
};

static int in_keys(const char *k, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!strcmp(k, list[i])) return 1;
    return 0;
}

static void walk_arch_keys(const gguf_cfg *c) {
    size_t pl = strlen(c->arch);
    for (int64_t i = 0; i < c->g->n_kv; i++) {
        const gguf_kv *kv = &c->g->kv[i];
        if (strncmp(kv->key, c->arch, pl) != 0 || kv->key[pl] != '.') continue;
        const char *k = kv->key + pl + 1;
        if (in_keys(k, arch_keys_applied, sizeof arch_keys_applied / sizeof *arch_keys_applied)) continue;
        if (in_keys(k, arch_keys_refused, sizeof arch_keys_refused / sizeof *arch_keys_refused)) {
            int neutral = kv->type != GGUF_ARRAY && kv->type != GGUF_STRING &&
                          (gguf_float(c->g, kv) == 0 || gguf_float(c->g, kv) == 1);
            if (!neutral) die("'%s': key '%s' is not supported", c->g->path, kv->key);
            continue;
        }
        warning("'%s': key '%s' is unknown to this converter and ignored (check that the model "
                "does not depend on it)", c->g->path, kv->key);
    }
}

static void read_config(const gguf_file *g, model_config *cfg) {
    const gguf_kv *ak = gguf_find(g, "general.architecture");
    if (!ak) die("'%s': missing key 'general.architecture'", g->path);
    char *arch = gguf_strdup(g, ak);
    if (strcmp(arch, "llama") != 0 && strcmp(arch, "qwen2") != 0 && strcmp(arch, "qwen3") != 0)
        die("'%s': general.architecture '%s' is not supported (llama, qwen2, qwen3)", g->path, arch);
    gguf_cfg c = {g, arch};
    walk_arch_keys(&c);
    config_init_defaults(cfg);
    snprintf(cfg->architecture, sizeof cfg->architecture, "%s", arch);
    cfg->dim = arch_int(&c, "embedding_length", 1, 0, 1);
    cfg->hidden_dim = arch_int(&c, "feed_forward_length", 1, 0, 1);
    cfg->n_layers = arch_int(&c, "block_count", 1, 0, 1);
    cfg->n_heads = arch_int(&c, "attention.head_count", 1, 0, 1);
    cfg->n_kv_heads = arch_int(&c, "attention.head_count_kv", 0, cfg->n_heads, 1);
    cfg->head_size = arch_int(&c, "attention.key_length", 0, cfg->dim / cfg->n_heads, 1);
    if (arch_int(&c, "attention.value_length", 0, cfg->head_size, 1) != cfg->head_size)
        die("'%s': key '%s.attention.value_length' differs from the key length %d (not supported)",
            g->path, arch, cfg->head_size);
    if (arch_int(&c, "rope.dimension_count", 0, cfg->head_size, 1) != cfg->head_size)
        die("'%s': key '%s.rope.dimension_count' is not the head size %d: partial rotary "
            "embeddings are not supported", g->path, arch, cfg->head_size);
    cfg->max_seq_len = arch_int(&c, "context_length", 1, 0, 1);
    cfg->norm_eps = arch_float(&c, "attention.layer_norm_rms_epsilon", 1, 0);
    cfg->rope_theta = arch_float(&c, "rope.freq_base", 0, 10000.0f);
    const gguf_kv *st = arch_kv(&c, "rope.scaling.type");
    if (st) {
        char *t = gguf_strdup(g, st);
        if (strcmp(t, "none") != 0)
            die("'%s': key '%s' is '%s': RoPE scaling other than none is not supported", g->path,
                st->key, t);
        free(t);
    }
    if (arch_float(&c, "rope.scaling.factor", 0, 1.0f) != 1.0f && st)
        die("'%s': key '%s.rope.scaling.factor' is not supported", g->path, arch);
    cfg->sliding_window = arch_int(&c, "attention.sliding_window", 0, 0, 0);
    cfg->attn_qkv_bias = gguf_find_tensor(g, "blk.0.attn_q.bias") != NULL;
    cfg->attn_qk_norm = gguf_find_tensor(g, "blk.0.attn_q_norm.weight") != NULL;
    cfg->tied_classifier = gguf_find_tensor(g, "output.weight") == NULL;
    const gguf_tensor *emb = gguf_find_tensor(g, "token_embd.weight");
    if (!emb) die("'%s': missing tensor 'token_embd.weight'", g->path);
    cfg->vocab_size = arch_int(&c, "vocab_size", 0, (int)(emb->numel / emb->ne[0]), 1);
    /* BOS and EOS as the tokenizer keys say (a model without them has none) */
    const gguf_kv *bos = gguf_find(g, "tokenizer.ggml.bos_token_id");
    const gguf_kv *add_bos = gguf_find(g, "tokenizer.ggml.add_bos_token");
    cfg->bos_id = bos && (!add_bos || gguf_int(g, add_bos)) ? (int)gguf_int(g, bos) : -1;
    cfg->n_eos = 0;
    const char *eos_keys[] = {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id",
                              "tokenizer.ggml.eom_token_id"};
    for (int i = 0; i < 3; i++) {
        const gguf_kv *kv = gguf_find(g, eos_keys[i]);
        if (!kv) continue;
        int64_t id = gguf_int(g, kv);
        if (id < 0 || id >= cfg->vocab_size)
            die("'%s': key '%s' is %" PRId64 ", outside the vocabulary", g->path, eos_keys[i], id);
        if (!config_is_eos(cfg, (int)id)) cfg->eos_ids[cfg->n_eos++] = (int)id;
    }
    free(arch);
    char why[512];
    if (config_validate(cfg, g->path, why, sizeof why) != 0) die("%s", why);
}

/* one tensor of the model file and its GGUF source */
typedef struct {
    char src[96];
    char name[64];
    int64_t rows, cols; /* cols = 0: a vector */
    int rope_heads;     /* > 0: permute rotate-half rows to adjacent pairs */
} gguf_spec;

static int spec(gguf_spec *v, int n, const char *src, const char *name, int64_t rows, int64_t cols,
                int rope_heads) {
    snprintf(v[n].src, sizeof v[n].src, "%s", src);
    snprintf(v[n].name, sizeof v[n].name, "%s", name);
    v[n].rows = rows;
    v[n].cols = cols;
    v[n].rope_heads = rope_heads;
    return n + 1;
}

static int build_specs(const model_config *c, gguf_spec *v, int neox) {
    int n = 0;
    const int64_t dim = c->dim, hid = c->hidden_dim, q = config_q_dim(c), kv = config_kv_dim(c);
    const int qh = neox ? c->n_heads : 0, kh = neox ? c->n_kv_heads : 0, nh = neox ? 1 : 0;
    n = spec(v, n, "token_embd.weight", "tok_embeddings", c->vocab_size, dim, 0);
    for (int l = 0; l < c->n_layers; l++) {
        char s[96], d[64];
#define T(SRC, NAME, ROWS, COLS, ROPE)                             \
    do {                                                           \
        snprintf(s, sizeof s, "blk.%d.%s", l, SRC);                \
        snprintf(d, sizeof d, "layers/%d/%s", l, NAME);            \
        n = spec(v, n, s, d, ROWS, COLS, ROPE);                    \
    } while (0)
        T("attn_norm.weight", "attention_norm", dim, 0, 0);
        T("attn_q.weight", "wq", q, dim, qh);
        T("attn_k.weight", "wk", kv, dim, kh);
        T("attn_v.weight", "wv", kv, dim, 0);
        if (c->attn_qkv_bias) {
            T("attn_q.bias", "bq", q, 0, qh);
            T("attn_k.bias", "bk", kv, 0, kh);
            T("attn_v.bias", "bv", kv, 0, 0);
        }
        if (c->attn_qk_norm) {
            T("attn_q_norm.weight", "q_norm", c->head_size, 0, nh);
            T("attn_k_norm.weight", "k_norm", c->head_size, 0, nh);
        }
        T("attn_output.weight", "wo", dim, q, 0);
        T("ffn_norm.weight", "ffn_norm", dim, 0, 0);
        T("ffn_gate.weight", "w1", hid, dim, 0);
        T("ffn_down.weight", "w2", dim, hid, 0);
        T("ffn_up.weight", "w3", hid, dim, 0);
#undef T
    }
    n = spec(v, n, "output_norm.weight", "norm", dim, 0, 0);
    if (!c->tied_classifier) n = spec(v, n, "output.weight", "output", c->vocab_size, dim, 0);
    return n;
}

/* the GGUF's own tokenizer (tokenizer.ggml.*) */
static int own_tokenizer(mfile_tokenizer *tok, const void *src, char *why, size_t cap) {
    return tok_load_gguf(tok, src, why, cap);
}

void convert_gguf(const char *path, const char *tokenizer_path, const char *out_path, const char *dtype) {
    gguf_file g;
    gguf_open(&g, path);
    model_config cfg;
    read_config(&g, &cfg);
    /* per-frequency RoPE divisors (llama.cpp's form of Llama 3 scaling): stored as they are */
    const gguf_tensor *freqs = gguf_find_tensor(&g, "rope_freqs.weight");
    if (freqs && (freqs->n_dims != 1 || freqs->numel != cfg.head_size / 2))
        die("'%s': tensor 'rope_freqs.weight' has %" PRId64 " elements, the head size implies %d", path,
            freqs->numel, cfg.head_size / 2);
    const int neox = strcmp(cfg.architecture, "llama") != 0;

    gguf_spec *specs = xcalloc((size_t)(3 + 14 * cfg.n_layers), sizeof *specs);
    int n_specs = build_specs(&cfg, specs, neox);
    const gguf_tensor **src = xcalloc((size_t)n_specs, sizeof *src);
    char *used = xcalloc((size_t)g.n_tensors + 1, 1);
    for (int i = 0; i < n_specs; i++) {
        const gguf_tensor *t = gguf_find_tensor(&g, specs[i].src);
        if (!t) die("'%s': missing tensor '%s'", path, specs[i].src);
        int64_t rows = t->numel / t->ne[0];
        int want_dims = specs[i].cols ? 2 : 1;
        if (t->n_dims != want_dims || t->ne[0] != (specs[i].cols ? specs[i].cols : specs[i].rows) ||
            (want_dims == 2 && rows != specs[i].rows))
            die("'%s': tensor '%s' has shape [%" PRId64 ", %" PRId64 "] (ne), the metadata implies [%" PRId64
                ", %" PRId64 "]", path, t->name, t->ne[0], t->ne[1], specs[i].cols ? specs[i].cols : specs[i].rows,
                specs[i].cols ? specs[i].rows : 1);
        src[i] = t;
        used[t - g.tensors] = 1;
    }
    if (freqs) used[freqs - g.tensors] = 1;
    for (int64_t i = 0; i < g.n_tensors; i++)
        if (!used[i] && !(cfg.tied_classifier && !strcmp(g.tensors[i].name, "output.weight")))
            die("'%s': unexpected tensor '%s' (not part of a %s model with this metadata)", path,
                g.tensors[i].name, cfg.architecture);

    mfile_tokenizer tok;
    const int have_tok = convert_tokenizer(&tok, tokenizer_path, cfg.vocab_size, path, own_tokenizer, &g);

    /* the stored type, unless --dtype asks for one: the nearest to the source's. bf16 when every
     * matrix is BF16 (bit for bit); q8 when every matrix q8 can hold (input columns a multiple of
     * 32, the others stay bf16) is Q8_0 (the same int8 values; each f16 block scale taken again as
     * max|x| / 127, within an f32 rounding of it) and the others are F16 or BF16; else f32, which
     * holds F32 and F16 exactly and the other quantised types dequantised */
    int all_bf16 = 1, all_q8 = 1;
    for (int i = 0; i < n_specs; i++) {
        if (!specs[i].cols) continue;
        ggml_type ty = src[i]->type;
        if (ty != GGML_BF16) all_bf16 = 0;
        if (specs[i].cols % KERN_Q8_BLOCK == 0 ? ty != GGML_Q8_0 : ty != GGML_F16 && ty != GGML_BF16) all_q8 = 0;
    }
    kern_dtype want = all_bf16 ? KERN_BF16 : all_q8 ? KERN_Q8 : KERN_F32;
    if (dtype && dtype_parse(dtype, &want) != 0) die("convert: --dtype '%s' is not f32, bf16 or q8", dtype);
    dtype_set_all(&cfg, want);
    mfile_writer *w = mfile_create(out_path, &cfg);
    int64_t n_quant = 0;
    for (int i = 0; i < n_specs; i++) {
        const gguf_spec *sp = &specs[i];
        const gguf_tensor *t = src[i];
        float *data = xmalloc((size_t)t->numel * sizeof(float));
        gguf_tensor_to_f32(t, 0, t->numel / t->ne[0], data);
        if (t->type != GGML_F32 && t->type != GGML_F16 && t->type != GGML_BF16) n_quant++;
        if (sp->rope_heads > 0) {
            float *perm = xmalloc((size_t)t->numel * sizeof(float));
            convert_unpermute_rope(perm, data, sp->rope_heads, cfg.head_size, sp->cols ? (long)sp->cols : 1);
            free(data);
            data = perm;
        }
        int kind = sp->cols ? dtype_kind_of(sp->name) : -1;
        mfile_write_tensor(w, sp->name, data, sp->rows, sp->cols, kind < 0 ? KERN_F32 : (kern_dtype)cfg.weight_dtype[kind]);
        free(data);
    }
    if (freqs) {
        float *div = xmalloc((size_t)freqs->numel * sizeof(float));
        gguf_tensor_to_f32(freqs, 0, 1, div);
        mfile_write_f32(w, "rope_freqs", div, freqs->numel, 0);
        free(div);
    }
    if (have_tok) mfile_write_tokenizer(w, &tok);
    mfile_close_writer(w);

    struct stat st;
    int64_t out_bytes = stat(out_path, &st) == 0 ? (int64_t)st.st_size : -1;
    printf("converted GGUF v%u %s (%s, %d tensors, %" PRId64 " quantised, stored as %s%s) -> %s: %" PRId64
           " bytes\n", (unsigned)g.version, path, cfg.architecture, n_specs, n_quant, kern_dtype_name(want),
           convert_dtype_note(&cfg, want), out_path, out_bytes);
    if (have_tok)
        printf("tokenizer: %s, %d pieces, bos %d, eos %d, chat template %s\n", tok.type, tok.n, tok.bos_id,
               tok.eos_id, tok.chat_template[0] ? tok.chat_template : "none");
    mfile_tokenizer_free(&tok);
    free(used);
    free(src);
    free(specs);
    gguf_close(&g);
}
