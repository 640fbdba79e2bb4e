/* convert_hf: a Hugging Face Llama model directory -> the HDF5 model file.
 *
 * Reads config.json (cJSON), then the safetensors weights: model.safetensors, or the shards
 * named by model.safetensors.index.json. Every header is parsed and checked (length, JSON,
 * dtypes, shapes against the config, data offsets inside the file) before the output is
 * created, so a bad or truncated input fails with one line naming the file and writes nothing.
 * Tensors are then streamed one at a time with fseeko/fread in small chunks: peak memory is the
 * largest tensor as f32 (twice the q/k projection while its rows are permuted) plus a chunk, plus
 * its stored form when that is bf16 or q8 (half or a quarter more). BF16 sources go through f32
 * exactly and back, so a bf16 file holds their bits unchanged. */
#include "convert.h"

#include <cjson/cJSON.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "config.h"
#include "jsonstrict.h"
#include "mfile.h"
#include "tokenizer.h"
#include "util.h"

#define ST_MAX_RANK 8
#define ST_MAX_HEADER 100000000ull /* the safetensors library's own limit */
#define ST_CHUNK (1 << 20)         /* bytes read per fread while streaming a tensor */

/* ---------------------------------------------------------------------------------------------
 * RoPE layout */

void convert_unpermute_rope(float *out, const float *in, int n_heads, int head_size, long cols) {
    check(n_heads > 0 && head_size > 0 && head_size % 2 == 0 && cols > 0,
          "convert_unpermute_rope: bad shape (%d heads, head size %d, %ld cols)", n_heads,
          head_size, cols);
    int half = head_size / 2;
    size_t row_bytes = (size_t)cols * sizeof(float);
    for (int h = 0; h < n_heads; h++) {
        const float *src = in + (size_t)h * head_size * cols;
        float *dst = out + (size_t)h * head_size * cols;
        for (int i = 0; i < half; i++)
            for (int j = 0; j < 2; j++)
                memcpy(dst + (size_t)(2 * i + j) * cols, src + (size_t)(j * half + i) * cols,
                       row_bytes);
    }
}

/* ---------------------------------------------------------------------------------------------
 * small helpers */

static char *path_join(const char *dir, const char *name) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;
    char *p = xmalloc(n + 1 + strlen(name) + 1);
    memcpy(p, dir, n);
    p[n] = '/';
    strcpy(p + n + 1, name);
    return p;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

#define json_int64 json_get_int

/* ---------------------------------------------------------------------------------------------
 * config.json */

typedef struct {
    const char *path; /* config.json, for messages */
    const cJSON *root;
} cfg_json;

/* the item, or NULL when absent or JSON null */
static const cJSON *cfg_item(const cJSON *obj, const char *key) {
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(obj, key);
    return (it && !cJSON_IsNull(it)) ? it : NULL;
}

/* prefix is "" or "rope_scaling." for nested fields, so messages name the full field; the
 * value must be an integer (1.5 and 2.0e0 with a fraction are refused, not truncated) in
 * [lo, hi] */
static int cfg_int_in(const cfg_json *c, const cJSON *obj, const char *prefix, const char *key,
                      int required, int def, int64_t lo, int64_t hi) {
    const cJSON *it = cfg_item(obj, key);
    if (!it) {
        if (required) die("'%s': missing field '%s%s'", c->path, prefix, key);
        return def;
    }
    int64_t v;
    if (!json_int64(it, INT32_MIN, INT32_MAX, &v))
        die("'%s': field '%s%s' must be an integer", c->path, prefix, key);
    if (v < lo || v > hi)
        die("'%s': field '%s%s' is %lld, must be in [%lld, %lld]", c->path, prefix, key,
            (long long)v, (long long)lo, (long long)hi);
    return (int)v;
}

static int cfg_int(const cfg_json *c, const cJSON *obj, const char *prefix, const char *key,
                   int required, int def) {
    return cfg_int_in(c, obj, prefix, key, required, def, INT32_MIN, INT32_MAX);
}

static float cfg_float(const cfg_json *c, const cJSON *obj, const char *prefix, const char *key,
                       int required, float def) {
    const cJSON *it = cfg_item(obj, key);
    if (!it) {
        if (required) die("'%s': missing field '%s%s'", c->path, prefix, key);
        return def;
    }
    if (!cJSON_IsNumber(it)) die("'%s': field '%s%s' must be a number", c->path, prefix, key);
    float v = (float)it->valuedouble;
    if (!isfinite(v)) die("'%s': field '%s%s' is not a finite float", c->path, prefix, key);
    return v;
}

static int cfg_bool(const cfg_json *c, const char *key, int def) {
    const cJSON *it = cfg_item(c->root, key);
    if (!it) return def;
    if (cJSON_IsBool(it)) return cJSON_IsTrue(it);
    int64_t v;
    if (json_int64(it, 0, 1, &v)) return (int)v;
    die("'%s': field '%s' must be true or false", c->path, key);
}

/* RoPE: transformers 4 writes rope_theta and rope_scaling ({rope_type or type, factor, ...}),
 * transformers 5 one rope_parameters object ({rope_type, rope_theta, factor, ...}). Both are
 * read; when both are given they must agree. Every key of the object is applied or refused. */
static void parse_rope_object(const cfg_json *c, const cJSON *rs, const char *field,
                              model_config *cfg) {
    char p[64];
    snprintf(p, sizeof p, "%s.", field);
    if (!cJSON_IsObject(rs)) die("'%s': field '%s' must be an object or null", c->path, field);
    const cJSON *it;
    cJSON_ArrayForEach(it, rs) {
        if (cJSON_IsObject(it))
            die("'%s': field '%s%s': rope parameters per layer type are not supported", c->path, p,
                it->string);
    }
    const cJSON *type = cfg_item(rs, "rope_type");
    const char *type_key = "rope_type";
    if (!type) {
        type = cfg_item(rs, "type");
        type_key = "type";
    }
    const char *t = "default";
    if (type) {
        if (!cJSON_IsString(type)) die("'%s': field '%s%s' must be a string", c->path, p, type_key);
        t = type->valuestring;
    } else if (strcmp(field, "rope_scaling") == 0) {
        die("'%s': missing field 'rope_scaling.rope_type'", c->path);
    }
    int llama3 = strcmp(t, "llama3") == 0;
    if (!llama3 && strcmp(t, "default") != 0)
        die("'%s': field '%s%s' is '%s': only 'default' and 'llama3' RoPE are supported", c->path,
            p, type_key, t);
    cJSON_ArrayForEach(it, rs) {
        const char *k = it->string;
        if (!strcmp(k, "rope_type") || !strcmp(k, "type")) continue;
        if (!strcmp(k, "rope_theta")) {
            cfg->rope_theta = cfg_float(c, rs, p, k, 1, 0);
        } else if (!strcmp(k, "partial_rotary_factor")) {
            if (cfg_float(c, rs, p, k, 1, 0) != 1.0f)
                die("'%s': field '%s%s': partial rotary embeddings are not supported", c->path, p, k);
        } else if (llama3 && (!strcmp(k, "factor") || !strcmp(k, "low_freq_factor") ||
                              !strcmp(k, "high_freq_factor") ||
                              !strcmp(k, "original_max_position_embeddings"))) {
            continue; /* read below */
        } else if (!cJSON_IsNull(it)) {
            die("'%s': field '%s%s' is not supported with rope type '%s'", c->path, p, k, t);
        }
    }
    if (!llama3) return;
    snprintf(cfg->rope_scaling_type, sizeof cfg->rope_scaling_type, "llama3");
    cfg->rope_factor = cfg_float(c, rs, p, "factor", 1, 0);
    cfg->rope_low_freq_factor = cfg_float(c, rs, p, "low_freq_factor", 1, 0);
    cfg->rope_high_freq_factor = cfg_float(c, rs, p, "high_freq_factor", 1, 0);
    cfg->rope_original_max_pos = cfg_int(c, rs, p, "original_max_position_embeddings", 1, 0);
}

static void parse_rope(const cfg_json *c, model_config *cfg) {
    const cJSON *params = cfg_item(c->root, "rope_parameters");
    const cJSON *scaling = cfg_item(c->root, "rope_scaling");
    float theta4 = cfg_float(c, c->root, "", "rope_theta", 0, 10000.0f);
    cfg->rope_theta = theta4;
    if (!params) {
        if (scaling) parse_rope_object(c, scaling, "rope_scaling", cfg);
        return;
    }
    parse_rope_object(c, params, "rope_parameters", cfg);
    if (cfg_item(c->root, "rope_theta") && cfg->rope_theta != theta4)
        die("'%s': fields 'rope_theta' (%g) and 'rope_parameters.rope_theta' (%g) disagree",
            c->path, theta4, cfg->rope_theta);
    if (scaling) {
        model_config other = *cfg;
        config_init_defaults(&other);
        parse_rope_object(c, scaling, "rope_scaling", &other);
        if (strcmp(other.rope_scaling_type, cfg->rope_scaling_type) != 0 ||
            other.rope_factor != cfg->rope_factor ||
            other.rope_low_freq_factor != cfg->rope_low_freq_factor ||
            other.rope_high_freq_factor != cfg->rope_high_freq_factor ||
            other.rope_original_max_pos != cfg->rope_original_max_pos)
            die("'%s': fields 'rope_scaling' and 'rope_parameters' disagree", c->path);
    }
}

/* sliding-window attention. Mistral: sliding_window (null: none) on every layer. Qwen2 / Qwen3:
 * only with use_sliding_window, on layers from max_window_layers on. transformers 5 also writes
 * layer_types (full_attention / sliding_attention per layer), which must agree. One window on
 * every layer or none is supported; a mix is refused. */
static void parse_sliding_window(const cfg_json *c, model_config *cfg) {
    const char *arch = cfg->architecture;
    int n_sliding = 0; /* layers with the window, by the architecture's own fields */
    int window = cfg_int(c, c->root, "", "sliding_window", 0, 0);
    if (cfg_item(c->root, "sliding_window") && window <= 0)
        die("'%s': field 'sliding_window' is %d, must be > 0 or null", c->path, window);
    if (!strcmp(arch, "mistral")) {
        n_sliding = window > 0 ? cfg->n_layers : 0;
    } else if (!strcmp(arch, "qwen2") || !strcmp(arch, "qwen3")) {
        if (cfg_bool(c, "use_sliding_window", 0)) {
            if (window <= 0) die("'%s': use_sliding_window is set without a sliding_window", c->path);
            int first = cfg_int(c, c->root, "", "max_window_layers", 1, 0);
            n_sliding = first < 0 ? cfg->n_layers : first >= cfg->n_layers ? 0 : cfg->n_layers - first;
        }
    } else if (window > 0) {
        die("'%s': field 'sliding_window' is not supported for model_type '%s'", c->path, arch);
    }
    const cJSON *types = cfg_item(c->root, "layer_types");
    if (types) {
        if (!cJSON_IsArray(types) || cJSON_GetArraySize(types) != cfg->n_layers)
            die("'%s': field 'layer_types' must list one type for each of the %d layers", c->path,
                cfg->n_layers);
        int n = 0, l = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, types) {
            const char *t = cJSON_IsString(it) ? it->valuestring : "?";
            if (!strcmp(t, "sliding_attention")) n++;
            else if (strcmp(t, "full_attention") != 0)
                die("'%s': field 'layer_types' names '%s' for layer %d (only full_attention and "
                    "sliding_attention are supported)", c->path, t, l);
            l++;
        }
        if (n > 0 && window <= 0)
            die("'%s': field 'layer_types' has sliding_attention layers but no sliding_window", c->path);
        if (n != n_sliding)
            die("'%s': field 'layer_types' has %d sliding_attention layers, the other fields "
                "imply %d", c->path, n, n_sliding);
    }
    if (n_sliding != 0 && n_sliding != cfg->n_layers)
        die("'%s': sliding-window attention on %d of %d layers is not supported (all or none)",
            c->path, n_sliding, cfg->n_layers);
    cfg->sliding_window = n_sliding ? window : 0;
}

/* every top-level field of config.json by name: applied (read in convert_hf_read_config),
 * without effect on the math (ignored), or refused unless it holds its neutral value (null,
 * false, 0 or 1, empty). A field in none of these lists converts with a warning naming it. */
static const char *const cfg_fields_applied[] = {
    "model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
    "num_attention_heads", "num_key_value_heads", "head_dim", "max_position_embeddings",
    "rms_norm_eps", "rope_theta", "rope_scaling", "rope_parameters", "hidden_act",
    "attention_bias", "mlp_bias", "tie_word_embeddings", "bos_token_id", "eos_token_id",
    "sliding_window", "use_sliding_window", "max_window_layers", "layer_types",
};
static const char *const cfg_fields_ignored[] = {
    "architectures", "transformers_version", "_name_or_path", "initializer_range", "use_cache",
    "pad_token_id", "attention_dropout", "dtype", "torch_dtype", "pretraining_tp",
    "output_attentions", "output_hidden_states", "return_dict", "tokenizer_class", "auto_map",
    "mlp_dropout", "hidden_dropout", "embd_pdrop", "resid_pdrop", "use_return_dict",
};
static const char *const cfg_fields_refused[] = {
    "quantization_config", "partial_rotary_factor", "attn_logit_softcapping",
    "final_logit_softcapping", "num_experts", "num_local_experts", "n_routed_experts",
    "num_experts_per_tok", "embedding_multiplier", "residual_multiplier", "logits_scaling",
    "attention_multiplier", "query_pre_attn_scalar", "use_qk_norm", "qk_layernorm",
    "no_rope_layers", "sliding_window_pattern", "use_parallel_residual", "rope_interleaved",
    "moe_intermediate_size", "decoder_sparse_step", "mlp_only_layers", "use_mrope",
};

static int in_list(const char *key, const char *const *list, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(key, list[i]) == 0) return 1;
    return 0;
}
#define IN_LIST(key, list) in_list(key, list, sizeof(list) / sizeof(list[0]))

static int json_is_neutral(const cJSON *it) {
    if (cJSON_IsNull(it) || cJSON_IsFalse(it)) return 1;
    if (cJSON_IsNumber(it)) return it->valuedouble == 0 || it->valuedouble == 1;
    if (cJSON_IsArray(it) || cJSON_IsObject(it)) return cJSON_GetArraySize(it) == 0;
    return 0;
}

static void walk_fields(const cfg_json *c) {
    const cJSON *it;
    cJSON_ArrayForEach(it, c->root) {
        const char *k = it->string;
        if (IN_LIST(k, cfg_fields_applied) || IN_LIST(k, cfg_fields_ignored)) continue;
        if (IN_LIST(k, cfg_fields_refused)) {
            if (!json_is_neutral(it)) die("'%s': field '%s' is not supported", c->path, k);
            continue;
        }
        warning("'%s': field '%s' is unknown to this converter and ignored (check that the model "
                "does not depend on it)", c->path, k);
    }
}

static void parse_token_ids(const cfg_json *c, model_config *cfg) {
    const cJSON *bos = cJSON_GetObjectItemCaseSensitive(c->root, "bos_token_id");
    if (bos) cfg->bos_id = cJSON_IsNull(bos) ? -1 : cfg_int(c, c->root, "", "bos_token_id", 1, -1);
    const cJSON *eos = cJSON_GetObjectItemCaseSensitive(c->root, "eos_token_id");
    if (!eos) return;
    if (cJSON_IsNull(eos)) {
        cfg->n_eos = 0;
    } else if (cJSON_IsArray(eos)) {
        int n = cJSON_GetArraySize(eos);
        if (n > CONFIG_MAX_EOS)
            die("'%s': field 'eos_token_id' lists %d ids, at most %d are supported", c->path, n,
                CONFIG_MAX_EOS);
        cfg->n_eos = 0;
        const cJSON *it;
        cJSON_ArrayForEach(it, eos) {
            int64_t v;
            if (!json_int64(it, 0, INT32_MAX, &v))
                die("'%s': field 'eos_token_id' must hold non-negative integers", c->path);
            cfg->eos_ids[cfg->n_eos++] = (int)v;
        }
    } else {
        cfg->n_eos = 1;
        cfg->eos_ids[0] = cfg_int(c, c->root, "", "eos_token_id", 1, 0);
    }
}

void convert_hf_read_config(const char *path, model_config *cfg, int shape_only) {
    size_t len;
    char *text = util_read_file(path, &len);
    convert_hf_parse_config(text, len, path, cfg, shape_only);
    free(text);
}

void convert_hf_parse_config(const char *text, size_t len, const char *path, model_config *cfg,
                             int shape_only) {
    cJSON *root = json_object_or_die(text, len, path);
    cfg_json c = {path, root};

    const cJSON *mt = cfg_item(root, "model_type");
    const char *arch = "llama";
    if (mt) {
        arch = cJSON_IsString(mt) ? mt->valuestring : "?";
        if (strcmp(arch, "llama") != 0 && strcmp(arch, "mistral") != 0 &&
            strcmp(arch, "qwen2") != 0 && strcmp(arch, "qwen3") != 0)
            die("'%s': model_type '%s' is not supported (" CONFIG_ARCHITECTURES ")", path, arch);
    }
    walk_fields(&c);
    const cJSON *act = cfg_item(root, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0))
        die("'%s': hidden_act '%s' is not supported (only 'silu')", path,
            cJSON_IsString(act) ? act->valuestring : "?");
    /* Llama, Mistral and Qwen3's attention_bias puts a bias on o_proj too; Qwen2 has q/k/v
     * biases always and no such field */
    if (strcmp(arch, "qwen2") != 0 && cfg_bool(&c, "attention_bias", 0))
        die("'%s': attention_bias is not supported for model_type '%s'", path, arch);
    if (cfg_bool(&c, "mlp_bias", 0)) die("'%s': mlp_bias is not supported", path);
    const cJSON *dt = cfg_item(root, "dtype") ? cfg_item(root, "dtype") : cfg_item(root, "torch_dtype");
    if (dt && !cJSON_IsString(dt)) die("'%s': field 'dtype' must be a string", path);

    config_init_defaults(cfg);
    snprintf(cfg->architecture, sizeof cfg->architecture, "%s", arch);
    cfg->attn_qkv_bias = strcmp(arch, "qwen2") == 0;
    cfg->attn_qk_norm = strcmp(arch, "qwen3") == 0;
    /* sizes are bounded before anything is derived from them (config.h, CONFIG_MAX_*) */
    cfg->dim = cfg_int_in(&c, root, "", "hidden_size", 1, 0, 1, CONFIG_MAX_DIM);
    cfg->hidden_dim = cfg_int_in(&c, root, "", "intermediate_size", 1, 0, 1, CONFIG_MAX_HIDDEN_DIM);
    cfg->n_layers = cfg_int_in(&c, root, "", "num_hidden_layers", 1, 0, 1, CONFIG_MAX_LAYERS);
    cfg->n_heads = cfg_int_in(&c, root, "", "num_attention_heads", 1, 0, 1, CONFIG_MAX_HEADS);
    cfg->n_kv_heads = cfg_int_in(&c, root, "", "num_key_value_heads", 0, cfg->n_heads, 1, CONFIG_MAX_HEADS);
    cfg->vocab_size = cfg_int_in(&c, root, "", "vocab_size", 1, 0, 1, CONFIG_MAX_VOCAB);
    /* no guessing for real weights: a wrong context length or epsilon would silently change the
     * results; random weights (shape_only) don't care */
    cfg->max_seq_len = cfg_int_in(&c, root, "", "max_position_embeddings", !shape_only, 4096, 1,
                                  CONFIG_MAX_SEQ_LEN);
    cfg->norm_eps = cfg_float(&c, root, "", "rms_norm_eps", !shape_only, 1e-5f);
    if (cfg_item(root, "head_dim")) {
        cfg->head_size = cfg_int_in(&c, root, "", "head_dim", 1, 0, 1, CONFIG_MAX_HEAD_SIZE);
    } else {
        if (cfg->n_heads <= 0 || cfg->dim % cfg->n_heads != 0)
            die("'%s': hidden_size %d is not a multiple of num_attention_heads %d and head_dim "
                "is not given", path, cfg->dim, cfg->n_heads);
        cfg->head_size = cfg->dim / cfg->n_heads;
    }
    parse_rope(&c, cfg);
    parse_sliding_window(&c, cfg);
    cfg->tied_classifier = cfg_bool(&c, "tie_word_embeddings", 0);
    parse_token_ids(&c, cfg);

    cJSON_Delete(root);
    char why[512];
    if (config_validate(cfg, path, why, sizeof(why)) != 0) die("%s", why);
    if (cfg->head_size % 2 != 0)
        die("'%s': head_dim %d is odd; rotary embeddings need an even head size", path,
            cfg->head_size);
}

/* ---------------------------------------------------------------------------------------------
 * safetensors */

typedef enum { ST_F32, ST_F16, ST_BF16 } st_dtype;
static const char *const st_dtype_names[] = {"F32", "F16", "BF16"};
static const int st_dtype_size[] = {4, 2, 2};

typedef struct {
    char *name;
    int file;     /* index into st_set.paths */
    st_dtype dtype;
    int rank;
    int64_t shape[ST_MAX_RANK];
    int64_t numel;
    int64_t offset; /* absolute byte offset of the data in the file */
    int64_t nbytes;
    int used;
} st_tensor;

typedef struct {
    char **paths;
    int n_files;
    st_tensor *tensors; /* sorted by name after loading */
    int n_tensors, cap;
    FILE *fp; /* the file open for reading, fp_file its index (-1: none) */
    int fp_file;
    unsigned char *chunk; /* ST_CHUNK bytes */
} st_set;

static int st_add_file(st_set *s, const char *path) {
    for (int i = 0; i < s->n_files; i++)
        if (strcmp(s->paths[i], path) == 0) return i;
    s->paths = xrealloc(s->paths, (size_t)(s->n_files + 1) * sizeof *s->paths);
    s->paths[s->n_files] = xstrdup(path);
    return s->n_files++;
}

static int64_t file_size(FILE *f, const char *path) {
    if (fseeko(f, 0, SEEK_END) != 0) die_errno("cannot seek in '%s'", path);
    off_t size = ftello(f);
    if (size < 0) die_errno("cannot seek in '%s'", path);
    if (fseeko(f, 0, SEEK_SET) != 0) die_errno("cannot seek in '%s'", path);
    return (int64_t)size;
}

/* parses one entry of a header: {"dtype": "BF16", "shape": [..], "data_offsets": [b, e]} */
static void st_parse_entry(st_set *s, int file, const cJSON *e, int64_t data_start,
                           int64_t data_size) {
    const char *path = s->paths[file], *name = e->string;
    if (!cJSON_IsObject(e)) die("'%s': safetensors entry '%s' is not an object", path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *offs = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(dt) || !cJSON_IsArray(shape) || !cJSON_IsArray(offs))
        die("'%s': safetensors entry '%s' lacks dtype, shape or data_offsets", path, name);

    st_tensor t = {0};
    int d;
    for (d = 0; d < 3; d++)
        if (strcmp(dt->valuestring, st_dtype_names[d]) == 0) break;
    if (d == 3)
        die("'%s': tensor '%s' has dtype %s; only F32, F16 and BF16 are supported", path, name,
            dt->valuestring);
    t.dtype = (st_dtype)d;
    t.rank = cJSON_GetArraySize(shape);
    if (t.rank > ST_MAX_RANK) die("'%s': tensor '%s' has rank %d", path, name, t.rank);
    for (int i = 0; i < t.rank; i++)
        if (!json_int64(cJSON_GetArrayItem(shape, i), 0, INT64_MAX, &t.shape[i]))
            die("'%s': tensor '%s' has a bad shape (dimension %d is not a non-negative integer)",
                path, name, i);
    if (!util_product_ok(t.shape, t.rank, &t.numel) || t.numel > (INT64_C(1) << 40) ||
        !util_mul_ok(t.numel, st_dtype_size[d], &t.nbytes))
        die("'%s': tensor '%s' is too large (its shape's element count is over 2^40)", path, name);
    int64_t b, en;
    if (cJSON_GetArraySize(offs) != 2 || !json_int64(cJSON_GetArrayItem(offs, 0), 0, INT64_MAX, &b) ||
        !json_int64(cJSON_GetArrayItem(offs, 1), 0, INT64_MAX, &en) || en < b)
        die("'%s': tensor '%s' has bad data_offsets", path, name);
    if (en - b != t.nbytes)
        die("'%s': tensor '%s' spans %" PRId64 " bytes, its shape and dtype need %" PRId64, path,
            name, en - b, t.nbytes);
    if (en > data_size)
        die("'%s': tensor '%s' ends at byte %" PRId64 " of the data, which has only %" PRId64
            " bytes (file truncated?)", path, name, en, data_size);
    t.offset = data_start + b;
    t.file = file;
    t.name = xstrdup(name);
    if (s->n_tensors == s->cap) {
        s->cap = s->cap ? 2 * s->cap : 64;
        s->tensors = xrealloc(s->tensors, (size_t)s->cap * sizeof *s->tensors);
    }
    s->tensors[s->n_tensors++] = t;
}

/* the header length from a file's first 8 bytes (little-endian u64), checked against the file
 * size and the limit */
static int64_t st_header_len(const unsigned char lenbuf[8], int64_t size, const char *path) {
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | lenbuf[i];
    if (n < 2 || n > (uint64_t)(size - 8))
        die("'%s': safetensors header length %" PRIu64 " does not fit the file of %" PRId64
            " bytes (truncated or not safetensors)", path, n, size);
    if (n > ST_MAX_HEADER)
        die("'%s': safetensors header length %" PRIu64 " is over the limit of %llu bytes", path,
            n, ST_MAX_HEADER);
    return (int64_t)n;
}

static int st_cmp_offset(const void *a, const void *b) {
    const st_tensor *x = *(const st_tensor *const *)a, *y = *(const st_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* parses the JSON header hdr[0..n) of a file of size bytes: every entry checked on its own,
 * then the file's tensors against each other (no two share a byte) */
static void st_parse_header(st_set *s, int file, const char *hdr, int64_t n, int64_t size) {
    const char *path = s->paths[file];
    char why[256];
    cJSON *root = json_parse_strict(hdr, (size_t)n, why, sizeof why);
    if (!root) die("'%s': safetensors header: %s", path, why);
    if (!cJSON_IsObject(root)) die("'%s': the safetensors header is not a JSON object", path);
    int64_t data_start = 8 + n, data_size = size - data_start;
    int first = s->n_tensors;
    const cJSON *e;
    cJSON_ArrayForEach(e, root) {
        if (strcmp(e->string, "__metadata__") == 0) continue;
        st_parse_entry(s, file, e, data_start, data_size);
    }
    cJSON_Delete(root);
    int count = s->n_tensors - first;
    if (count == 0) die("'%s': the safetensors header lists no tensors", path);
    const st_tensor **by_offset = xmalloc(sizeof(*by_offset) * (size_t)count);
    for (int i = 0; i < count; i++) by_offset[i] = &s->tensors[first + i];
    qsort(by_offset, (size_t)count, sizeof(*by_offset), st_cmp_offset);
    for (int i = 1; i < count; i++) {
        const st_tensor *a = by_offset[i - 1], *b = by_offset[i];
        if (b->offset < a->offset + a->nbytes)
            die("'%s': tensors '%s' and '%s' overlap in the data (data_offsets [%" PRId64
                ", %" PRId64 ") and [%" PRId64 ", %" PRId64 "))", path, a->name, b->name,
                a->offset - data_start, a->offset - data_start + a->nbytes, b->offset - data_start,
                b->offset - data_start + b->nbytes);
    }
    free(by_offset);
}

static void st_read_header(st_set *s, int file) {
    const char *path = s->paths[file];
    FILE *f = xfopen(path, "rb");
    int64_t size = file_size(f, path);
    unsigned char lenbuf[8];
    if (size < 8 || fread(lenbuf, 1, 8, f) != 8)
        die("'%s': not a safetensors file (%" PRId64 " bytes)", path, size);
    int64_t n = st_header_len(lenbuf, size, path);
    char *hdr = xmalloc((size_t)n);
    if (fread(hdr, 1, (size_t)n, f) != (size_t)n) die_errno("cannot read '%s'", path);
    fclose(f);
    st_parse_header(s, file, hdr, n, size);
    free(hdr);
}

static int st_cmp(const void *a, const void *b) {
    return strcmp(((const st_tensor *)a)->name, ((const st_tensor *)b)->name);
}

static st_tensor *st_find(st_set *s, const char *name) {
    if (s->n_tensors == 0) return NULL;
    st_tensor key = {0};
    key.name = (char *)name;
    return bsearch(&key, s->tensors, (size_t)s->n_tensors, sizeof *s->tensors, st_cmp);
}

static void st_sort(st_set *s) {
    if (s->n_tensors == 0) return;
    qsort(s->tensors, (size_t)s->n_tensors, sizeof *s->tensors, st_cmp);
    for (int i = 1; i < s->n_tensors; i++)
        if (strcmp(s->tensors[i - 1].name, s->tensors[i].name) == 0)
            die("'%s': tensor '%s' appears twice (also in '%s')", s->paths[s->tensors[i].file],
                s->tensors[i].name, s->paths[s->tensors[i - 1].file]);
}

/* model.safetensors.index.json: {"weight_map": {tensor: shard file}} */
static void st_open_index(st_set *s, const char *dir, const char *index_path) {
    cJSON *root = json_read_object(index_path);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(map)) die("'%s': missing field 'weight_map'", index_path);
    const cJSON *e;
    cJSON_ArrayForEach(e, map) {
        if (!cJSON_IsString(e) || !e->valuestring[0] || strchr(e->valuestring, '/'))
            die("'%s': weight_map entry '%s' is not a shard file name", index_path, e->string);
        char *p = path_join(dir, e->valuestring);
        st_add_file(s, p);
        free(p);
    }
    if (s->n_files == 0) die("'%s': weight_map is empty", index_path);
    for (int i = 0; i < s->n_files; i++) st_read_header(s, i);
    st_sort(s);
    cJSON_ArrayForEach(e, map) {
        st_tensor *t = st_find(s, e->string);
        char *p = path_join(dir, e->valuestring);
        if (!t || strcmp(s->paths[t->file], p) != 0)
            die("'%s': weight_map puts tensor '%s' in '%s', which does not hold it", index_path,
                e->string, e->valuestring);
        free(p);
    }
    cJSON_Delete(root);
}

static void st_close(st_set *s) {
    if (s->fp) fclose(s->fp);
    for (int i = 0; i < s->n_tensors; i++) free(s->tensors[i].name);
    for (int i = 0; i < s->n_files; i++) free(s->paths[i]);
    free(s->tensors);
    free(s->paths);
    free(s->chunk);
    memset(s, 0, sizeof *s);
}

static int host_is_little_endian(void) {
    const uint16_t one = 1;
    unsigned char b;
    memcpy(&b, &one, 1);
    return b == 1;
}

/* streams tensor t into out (numel floats), converting to f32 chunk by chunk */
static void st_load_f32(st_set *s, const st_tensor *t, float *out) {
    const char *path = s->paths[t->file];
    if (s->fp_file != t->file) {
        if (s->fp) fclose(s->fp);
        s->fp = xfopen(path, "rb");
        s->fp_file = t->file;
    }
    if (!s->chunk) s->chunk = xmalloc(ST_CHUNK);
    if (fseeko(s->fp, (off_t)t->offset, SEEK_SET) != 0) die_errno("cannot seek in '%s'", path);
    const int es = st_dtype_size[t->dtype];
    const int little = host_is_little_endian();
    int64_t done = 0; /* elements */
    while (done < t->numel) {
        int64_t n = t->numel - done;
        if (n > ST_CHUNK / es) n = ST_CHUNK / es;
        size_t got = fread(s->chunk, (size_t)es, (size_t)n, s->fp);
        if (got != (size_t)n) {
            if (ferror(s->fp)) die_errno("cannot read tensor '%s' from '%s'", t->name, path);
            die("'%s': file ended inside tensor '%s' (truncated?)", path, t->name);
        }
        const unsigned char *c = s->chunk;
        float *o = out + done;
        if (t->dtype == ST_F32) {
            if (little) {
                memcpy(o, c, (size_t)n * 4);
            } else {
                for (int64_t i = 0; i < n; i++) {
                    uint32_t u = (uint32_t)c[4 * i] | (uint32_t)c[4 * i + 1] << 8 |
                                 (uint32_t)c[4 * i + 2] << 16 | (uint32_t)c[4 * i + 3] << 24;
                    memcpy(o + i, &u, 4);
                }
            }
        } else {
            for (int64_t i = 0; i < n; i++) {
                uint16_t h = (uint16_t)(c[2 * i] | c[2 * i + 1] << 8);
                o[i] = t->dtype == ST_BF16 ? util_bf16_to_f32(h) : util_f16_to_f32(h);
            }
        }
        done += n;
    }
}

int convert_hf_check_safetensors(const unsigned char *bytes, size_t len, const char *path) {
    st_set s = {0};
    s.fp_file = -1;
    st_add_file(&s, path);
    if (len < 8) die("'%s': not a safetensors file (%zu bytes)", path, len);
    int64_t n = st_header_len(bytes, (int64_t)len, path);
    st_parse_header(&s, 0, (const char *)bytes + 8, n, (int64_t)len);
    st_sort(&s);
    int count = s.n_tensors;
    st_close(&s);
    return count;
}

/* ---------------------------------------------------------------------------------------------
 * the conversion */

typedef struct {
    char hf[160];   /* Hugging Face tensor name */
    char name[64];  /* dataset in the model file */
    int64_t rows;   /* shape (rows, cols); cols = 0 for a vector */
    int64_t cols;
    int rope_heads; /* > 0: q/k rows to permute from rotate-half to adjacent pairs */
    int kind;       /* CONFIG_W_* of a matrix, -1 for a norm */
    st_tensor *t;
} tensor_spec;

static int add_spec(tensor_spec *v, int n, const char *hf, const char *name, int64_t rows,
                    int64_t cols, int rope_heads, int kind) {
    tensor_spec *s = &v[n];
    memset(s, 0, sizeof *s);
    snprintf(s->hf, sizeof s->hf, "%s", hf);
    snprintf(s->name, sizeof s->name, "%s", name);
    s->rows = rows;
    s->cols = cols;
    s->rope_heads = rope_heads;
    s->kind = kind;
    return n + 1;
}

/* the tensors in the order they are written */
static int build_specs(const model_config *c, tensor_spec *v) {
    int n = 0;
    int64_t dim = c->dim, hid = c->hidden_dim, q = config_q_dim(c), kv = config_kv_dim(c);
    n = add_spec(v, n, "model.embed_tokens.weight", "tok_embeddings", c->vocab_size, dim, 0, CONFIG_W_EMBED);
    for (int l = 0; l < c->n_layers; l++) {
        char hf[160], name[64];
#define LAYER(HF, NAME, ROWS, COLS, ROPE, KIND)                            \
    do {                                                                   \
        snprintf(hf, sizeof hf, "model.layers.%d.%s", l, HF);              \
        snprintf(name, sizeof name, "layers/%d/%s", l, NAME);              \
        n = add_spec(v, n, hf, name, ROWS, COLS, ROPE, KIND);              \
    } while (0)
        LAYER("input_layernorm.weight", "attention_norm", dim, 0, 0, -1);
        LAYER("self_attn.q_proj.weight", "wq", q, dim, c->n_heads, CONFIG_W_Q);
        LAYER("self_attn.k_proj.weight", "wk", kv, dim, c->n_kv_heads, CONFIG_W_K);
        LAYER("self_attn.v_proj.weight", "wv", kv, dim, 0, CONFIG_W_V);
        if (c->attn_qkv_bias) { /* permuted with their rows */
            LAYER("self_attn.q_proj.bias", "bq", q, 0, c->n_heads, -1);
            LAYER("self_attn.k_proj.bias", "bk", kv, 0, c->n_kv_heads, -1);
            LAYER("self_attn.v_proj.bias", "bv", kv, 0, 0, -1);
        }
        if (c->attn_qk_norm) { /* one head's weights, permuted like each head's rows */
            LAYER("self_attn.q_norm.weight", "q_norm", c->head_size, 0, 1, -1);
            LAYER("self_attn.k_norm.weight", "k_norm", c->head_size, 0, 1, -1);
        }
        LAYER("self_attn.o_proj.weight", "wo", dim, q, 0, CONFIG_W_O);
        LAYER("post_attention_layernorm.weight", "ffn_norm", dim, 0, 0, -1);
        LAYER("mlp.gate_proj.weight", "w1", hid, dim, 0, CONFIG_W_1);
        LAYER("mlp.down_proj.weight", "w2", dim, hid, 0, CONFIG_W_2);
        LAYER("mlp.up_proj.weight", "w3", hid, dim, 0, CONFIG_W_3);
#undef LAYER
    }
    n = add_spec(v, n, "model.norm.weight", "norm", dim, 0, 0, -1);
    if (!c->tied_classifier) n = add_spec(v, n, "lm_head.weight", "output", c->vocab_size, dim, 0, CONFIG_W_OUT);
    return n;
}

static void format_shape(char *buf, size_t size, const int64_t *shape, int rank) {
    size_t used = (size_t)snprintf(buf, size, "[");
    for (int i = 0; i < rank && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%" PRId64, i ? ", " : "", shape[i]);
    if (used < size) snprintf(buf + used, size - used, "]");
}

/* finds every spec's tensor and checks its shape; rejects tensors this converter would drop */
static void match_tensors(st_set *s, tensor_spec *v, int n, const char *dir,
                          const model_config *cfg) {
    for (int i = 0; i < n; i++) {
        st_tensor *t = st_find(s, v[i].hf);
        if (!t) die("'%s': missing tensor '%s'", dir, v[i].hf);
        int64_t want[2] = {v[i].rows, v[i].cols};
        int want_rank = v[i].cols ? 2 : 1;
        if (t->rank != want_rank || t->shape[0] != want[0] ||
            (want_rank == 2 && t->shape[1] != want[1])) {
            char got_s[128], want_s[64];
            format_shape(got_s, sizeof got_s, t->shape, t->rank);
            format_shape(want_s, sizeof want_s, want, want_rank);
            die("'%s': tensor '%s' has shape %s, config.json implies %s", s->paths[t->file],
                v[i].hf, got_s, want_s);
        }
        t->used = 1;
        v[i].t = t;
    }
    for (int i = 0; i < s->n_tensors; i++) {
        st_tensor *t = &s->tensors[i];
        if (t->used) continue;
        size_t len = strlen(t->name);
        const char *inv = "rotary_emb.inv_freq"; /* a buffer older exports saved; recomputed */
        if (len >= strlen(inv) && strcmp(t->name + len - strlen(inv), inv) == 0) continue;
        if (cfg->tied_classifier && strcmp(t->name, "lm_head.weight") == 0) continue;
        die("'%s': unexpected tensor '%s' (not part of a %s model with this config.json)",
            s->paths[t->file], t->name, cfg->architecture);
    }
}

/* the directory's own tokenizer (tokenizer.json or tokenizer.model, with tokenizer_config.json) */
static int own_tokenizer(mfile_tokenizer *tok, const void *src, char *why, size_t cap) {
    return tok_load_hf_dir(tok, src, why, cap);
}

void convert_hf(const char *dir, const char *tokenizer_path, const char *out_path, const char *dtype) {
    struct stat st;
    if (stat(dir, &st) != 0) die_errno("cannot open '%s'", dir);
    if (!S_ISDIR(st.st_mode)) die("'%s': not a directory", dir);

    model_config cfg;
    char *config_path = path_join(dir, "config.json");
    convert_hf_read_config(config_path, &cfg, 0);

    st_set s = {0};
    s.fp_file = -1;
    char *single = path_join(dir, "model.safetensors");
    char *index = path_join(dir, "model.safetensors.index.json");
    if (file_exists(single)) {
        st_add_file(&s, single);
        st_read_header(&s, 0);
        st_sort(&s);
    } else if (file_exists(index)) {
        st_open_index(&s, dir, index);
    } else {
        die("'%s': no model.safetensors or model.safetensors.index.json (only safetensors "
            "weights are supported)", dir);
    }

    int n_specs = 2 + 14 * cfg.n_layers + (cfg.tied_classifier ? 0 : 1);
    tensor_spec *specs = xcalloc((size_t)n_specs, sizeof *specs);
    n_specs = build_specs(&cfg, specs);
    match_tensors(&s, specs, n_specs, dir, &cfg);

    /* the tokenizer is checked before the output is created: the one given, else the
     * directory's own (tokenizer.json or tokenizer.model, with tokenizer_config.json) */
    mfile_tokenizer tok;
    const int have_tok = convert_tokenizer(&tok, tokenizer_path, cfg.vocab_size, dir, own_tokenizer, dir);
    /* BOS stays as the tokenizer has it (Qwen2's config.json names one its tokenizer never adds); a
     * missing EOS of the directory's own tokenizer is the config's first */
    if (have_tok && !tokenizer_path && tok.eos_id < 0 && cfg.n_eos > 0) tok.eos_id = cfg.eos_ids[0];

    /* the stored type: asked for, else the source's own (bf16 when every matrix is BF16, so
     * they stay bit for bit; else f32, which holds F16 and F32 exactly) */
    kern_dtype want = KERN_BF16;
    for (int i = 0; i < n_specs; i++)
        if (specs[i].cols > 0 && specs[i].t->dtype != ST_BF16) want = KERN_F32;
    if (dtype && dtype_parse(dtype, &want) != 0) die("convert: --dtype '%s' is not f32, bf16 or q8", dtype);
    dtype_set_all(&cfg, want);

    mfile_writer *w = mfile_create(out_path, &cfg);
    for (int i = 0; i < n_specs; i++) {
        const tensor_spec *sp = &specs[i];
        kern_dtype t = sp->kind < 0 ? KERN_F32 : (kern_dtype)cfg.weight_dtype[sp->kind];
        float *data = xmalloc((size_t)sp->t->numel * sizeof(float));
        st_load_f32(&s, sp->t, data);
        if (sp->rope_heads > 0) {
            float *perm = xmalloc((size_t)sp->t->numel * sizeof(float));
            convert_unpermute_rope(perm, data, sp->rope_heads, cfg.head_size,
                                   sp->cols ? (long)sp->cols : 1);
            free(data);
            data = perm;
        }
        mfile_write_tensor(w, sp->name, data, sp->rows, sp->cols, t);
        free(data);
    }
    char *tok_json = path_join(dir, "tokenizer.json");
    if (file_exists(tok_json)) {
        size_t len;
        char *text = util_read_file(tok_json, &len);
        mfile_write_blob(w, "tokenizer.json", text, (int64_t)len);
        free(text);
    }
    if (have_tok) mfile_write_tokenizer(w, &tok);
    mfile_close_writer(w);

    int64_t out_bytes = stat(out_path, &st) == 0 ? (int64_t)st.st_size : -1;
    printf("converted %s -> %s: %d tensors, %" PRId64 " bytes, %s weights%s\n", dir, out_path, n_specs,
           out_bytes, kern_dtype_name(want), convert_dtype_note(&cfg, want));
    if (have_tok)
        printf("tokenizer: %s, %d pieces, bos %d, eos %d, chat template %s\n", tok.type, tok.n,
               tok.bos_id, tok.eos_id, tok.chat_template[0] ? tok.chat_template : "none");
    mfile_tokenizer_free(&tok);

    free(tok_json);
    free(specs);
    st_close(&s);
    free(single);
    free(index);
    free(config_path);
}
