/* synth: deterministic random weights in the shapes of real models, written in parallel.
 *
 * Weights: element e (row-major) of tensor number id is a pure function of (seed, id, e):
 * a splitmix64-style mix of a per-tensor key and e/2 gives 64 bits, whose high (even e) or low
 * (odd e) 32 bits are a uniform u in [-1, 1). Matrices hold u / sqrt(fan_in) (fan_in = columns),
 * norm weights 1 + u / 16. Tensor numbers do not depend on --layers (tok_embeddings 0, norm 1,
 * output 2, layer L's tensors 3 + 9 L ...), so a truncated model is a prefix of the full one,
 * and no value depends on the number of ranks.
 *
 * Writing: one tensor at a time; a big tensor's rows are split evenly over the ranks and each
 * rank generates and writes its rows in blocks of at most SYNTH_BLOCK_BYTES (collective
 * transfers, the same number of calls on every rank); a small tensor is written whole by one
 * rank (tensor number modulo ranks). Memory per rank: one block. */
#include "synth.h"

#include <getopt.h>
#include <libgen.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "convert.h"
#include "dist.h"
#include "mfile.h"
#include "util.h"

#define SYNTH_BLOCK_BYTES ((int64_t)64 << 20)  /* per rank per write call */
#define SYNTH_SMALL_BYTES ((int64_t)4 << 20)   /* tensors below: one rank writes them whole */
#define GOLDEN UINT64_C(0x9E3779B97F4A7C15)

/* ------------------------------------------------------------------ shapes */

typedef struct {
    const char *name;
    int dim, hidden, layers, heads, kv_heads, head_size, vocab, max_seq, tied;
    int llama3; /* 1: Llama 3 tokens, theta 500000, llama3 RoPE scaling with rope_factor */
    float rope_factor;
} shape_def;

static const shape_def shapes[] = {
    /* name            dim   hidden layers heads kv head  vocab  max_seq tied llama3 factor */
    {"llama-3.2-1b",   2048, 8192,  16,    32,   8,  64,  128256, 131072, 1, 1, 32.0f},
    {"llama-3.2-3b",   3072, 8192,  28,    24,   8,  128, 128256, 131072, 1, 1, 32.0f},
    {"llama-3.1-8b",   4096, 14336, 32,    32,   8,  128, 128256, 131072, 0, 1, 8.0f},
    {"llama-3.1-70b",  8192, 28672, 80,    64,   8,  128, 128256, 131072, 0, 1, 8.0f},
    /* the benchmarks' 1.1B shape (issue 9): Llama 3.2 1B's layers, a 32000-token vocabulary */
    {"llama-1.1b",     2048, 8192,  16,    32,   8,  64,  32000,  2048,   0, 0, 1.0f},
    /* test shapes: "tiny" is stories260K's shape */
    {"tiny",           64,   172,   5,     8,    4,  8,   512,    512,    1, 0, 1.0f},
    {"small",          256,  768,   8,     8,    2,  32,  2048,   1024,   0, 0, 1.0f},
    {"medium",         1024, 2816,  8,     16,   4,  64,  8192,   2048,   0, 0, 1.0f},
};
#define N_SHAPES ((int)(sizeof(shapes) / sizeof(shapes[0])))

int synth_shape(const char *name, model_config *c) {
    for (int i = 0; i < N_SHAPES; i++) {
        const shape_def *s = &shapes[i];
        if (strcmp(s->name, name) != 0) continue;
        config_init_defaults(c);
        c->dim = s->dim;
        c->hidden_dim = s->hidden;
        c->n_layers = s->layers;
        c->n_heads = s->heads;
        c->n_kv_heads = s->kv_heads;
        c->head_size = s->head_size;
        c->vocab_size = s->vocab;
        c->max_seq_len = s->max_seq;
        c->tied_classifier = s->tied;
        if (s->llama3) {
            c->rope_theta = 500000.0f;
            snprintf(c->rope_scaling_type, sizeof(c->rope_scaling_type), "llama3");
            c->rope_factor = s->rope_factor;
            c->rope_low_freq_factor = 1.0f;
            c->rope_high_freq_factor = 4.0f;
            c->rope_original_max_pos = 8192;
            c->bos_id = 128000;
            c->n_eos = 3;
            c->eos_ids[0] = 128001;
            c->eos_ids[1] = 128008;
            c->eos_ids[2] = 128009;
        }
        return 0;
    }
    return -1;
}

/* ------------------------------------------------------------------ config.json */

/* a Hugging Face config.json, or a directory holding one, read as convert reads it; fields a
 * real checkpoint needs but random weights do not may be absent */
static void shape_from_hf_config(const char *arg, model_config *c) {
    char path[4096];
    struct stat st;
    if (stat(arg, &st) == 0 && S_ISDIR(st.st_mode)) snprintf(path, sizeof(path), "%s/config.json", arg);
    else snprintf(path, sizeof(path), "%s", arg);
    convert_hf_read_config(path, c, 1);
}

/* ------------------------------------------------------------------ generator */

static inline uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * UINT64_C(0xBF58476D1CE4E5B9);
    z = (z ^ (z >> 27)) * UINT64_C(0x94D049BB133111EB);
    return z ^ (z >> 31);
}

static inline uint64_t tensor_key(uint64_t seed, int id) {
    return mix64(mix64(seed + GOLDEN) ^ ((uint64_t)(id + 1) * UINT64_C(0xD1B54A32D192ED03)));
}

static inline float to_unit(uint32_t bits) { return (float)(int32_t)bits * 0x1p-31f; }

static inline uint32_t elem_bits(uint64_t key, int64_t e) {
    uint64_t h = mix64(key + (uint64_t)(e >> 1) * GOLDEN);
    return (e & 1) ? (uint32_t)h : (uint32_t)(h >> 32);
}

float synth_uniform(uint64_t seed, int tensor_id, int64_t e) {
    return to_unit(elem_bits(tensor_key(seed, tensor_id), e));
}

/* out[i] = offset + scale * u(e0 + i), i < n */
static void generate(float *out, uint64_t key, int64_t e0, int64_t n, float scale, float offset) {
    int64_t i = 0, e = e0;
    if (n > 0 && (e & 1)) out[i++] = offset + scale * to_unit(elem_bits(key, e++));
    for (; i + 1 < n; i += 2, e += 2) {
        uint64_t h = mix64(key + (uint64_t)(e >> 1) * GOLDEN);
        out[i] = offset + scale * to_unit((uint32_t)(h >> 32));
        out[i + 1] = offset + scale * to_unit((uint32_t)h);
    }
    if (i < n) out[i] = offset + scale * to_unit(elem_bits(key, e));
}

/* ------------------------------------------------------------------ tensors */

typedef struct {
    char name[48];
    int id;
    int64_t rows, cols; /* cols = 0: a vector */
    int is_norm;        /* 1: a norm's weights (1 + small); 2: a bias (small) */
    kern_dtype dtype;   /* stored type (vectors f32) */
} synth_tensor;

/* the model's tensors in file order (as the converters write them); returns the count */
static int list_tensors(const model_config *c, synth_tensor **out) {
    int n = 0, cap = 3 + 14 * c->n_layers;
    synth_tensor *t = xcalloc((size_t)cap, sizeof(*t));
    const int64_t D = c->dim, H = c->hidden_dim, V = c->vocab_size, q = config_q_dim(c), kv = config_kv_dim(c);
/* NORM: 0 a matrix, 1 a norm, 2 a bias; KIND: CONFIG_W_* of a matrix, -1 for a vector (f32) */
#define ADD(ID, ROWS, COLS, NORM, KIND, ...)                            \
    do {                                                                \
        snprintf(t[n].name, sizeof(t[n].name), __VA_ARGS__);            \
        t[n].id = (ID), t[n].rows = (ROWS), t[n].cols = (COLS), t[n].is_norm = (NORM); \
        t[n].dtype = (KIND) < 0 ? KERN_F32 : (kern_dtype)c->weight_dtype[(KIND) < 0 ? 0 : (KIND)]; \
        n++;                                                            \
    } while (0)
    ADD(0, V, D, 0, CONFIG_W_EMBED, "tok_embeddings");
    static const char *names[9] = {"attention_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3"};
    static const int kinds[9] = {-1, CONFIG_W_Q, CONFIG_W_K, CONFIG_W_V, CONFIG_W_O, -1, CONFIG_W_1, CONFIG_W_2, CONFIG_W_3};
    for (int l = 0; l < c->n_layers; l++) {
        const int64_t rows[9] = {D, q, kv, kv, D, D, H, D, H}, cols[9] = {0, D, D, D, q, 0, D, H, D};
        for (int i = 0; i < 9; i++)
            ADD(3 + 9 * l + i, rows[i], cols[i], cols[i] == 0, kinds[i], "layers/%d/%s", l, names[i]);
        /* Qwen2's biases (small, around 0) and Qwen3's per-head norms (around 1); ids after
         * every Llama tensor's, so those keep their values */
        const int id = 3 + 9 * c->n_layers + 5 * l;
        if (c->attn_qkv_bias) {
            ADD(id, q, 0, 2, -1, "layers/%d/bq", l);
            ADD(id + 1, kv, 0, 2, -1, "layers/%d/bk", l);
            ADD(id + 2, kv, 0, 2, -1, "layers/%d/bv", l);
        }
        if (c->attn_qk_norm) {
            ADD(id + 3, c->head_size, 0, 1, -1, "layers/%d/q_norm", l);
            ADD(id + 4, c->head_size, 0, 1, -1, "layers/%d/k_norm", l);
        }
    }
    ADD(1, D, 0, 1, -1, "norm");
    if (!c->tied_classifier) ADD(2, V, D, 0, CONFIG_W_OUT, "output");
#undef ADD
    *out = t;
    return n;
}

/* generates and writes one tensor: this rank's rows, in blocks; collective */
static void write_tensor(mfile_writer *w, const synth_tensor *t, uint64_t seed, int rank, int size,
                         float *buf, int64_t buf_floats) {
    mfile_create_tensor(w, t->name, t->rows, t->cols, t->dtype);
    const int64_t R = t->rows, C = t->cols > 0 ? t->cols : 1;
    int64_t my0, my1, share;
    if (R * C * (int64_t)sizeof(float) < SYNTH_SMALL_BYTES) {
        int owner = t->id % size;
        my0 = rank == owner ? 0 : R;
        my1 = R;
        share = R;
    } else {
        my0 = R * rank / size;
        my1 = R * (rank + 1) / size;
        share = (R + size - 1) / size;
    }
    int64_t block = buf_floats / C;
    if (block < 1) block = 1;
    const int64_t rounds = share > 0 ? (share + block - 1) / block : 0;
    const uint64_t key = tensor_key(seed, t->id);
    const float scale = t->is_norm ? 1.0f / 16 : 1.0f / sqrtf((float)C);
    const float offset = t->is_norm == 1 ? 1.0f : 0.0f;
    float *big = NULL;
    if (block * C > buf_floats) big = xmalloc((size_t)(block * C) * sizeof(float)); /* a single row over the block size */
    for (int64_t k = 0; k < rounds; k++) {
        int64_t r0 = my0 + k * block, n = my1 - r0;
        if (n > block) n = block;
        if (n < 0) n = 0;
        float *dst = big ? big : buf;
        if (n > 0) generate(dst, key, r0 * C, n * C, scale, offset);
        mfile_write_f32_rows(w, t->name, n > 0 ? r0 : 0, n, dst);
    }
    free(big);
}

/* ------------------------------------------------------------------ command */

static void usage(FILE *out) {
    fprintf(out,
            "usage: [mpirun -n N] mpillama synth --shape NAME -o M.h5 [--layers N] [--seed S] [--dtype T]\n"
            "  random weights (deterministic in the seed, whatever N) in the exact shapes of a model;\n"
            "  every rank writes its share. No tokenizer: give prompts as prompt_ids.\n"
            "  --shape NAME   one of:");
    for (int i = 0; i < N_SHAPES; i++) fprintf(out, " %s", shapes[i].name);
    fprintf(out, "\n"
                 "                 or a Hugging Face config.json (or the directory holding one)\n"
                 "  --layers N     keep the first N layers (same weights as the full model's)\n"
                 "  --seed S       (default 1)\n"
                 "  --dtype T      f32 (default), bf16 or q8: the stored type of weight matrices, as\n"
                 "                 'mpillama convert --dtype' (the f32 values rounded or quantised)\n");
}

static int looks_like_path(const char *s) {
    size_t n = strlen(s);
    struct stat st;
    return strchr(s, '/') || (n > 5 && strcmp(s + n - 5, ".json") == 0) || stat(s, &st) == 0;
}

int synth_main(int argc, char **argv) {
    static const struct option opts[] = {{"shape", required_argument, 0, 's'},
                                         {"output", required_argument, 0, 'o'},
                                         {"layers", required_argument, 0, 'l'},
                                         {"seed", required_argument, 0, 'S'},
                                         {"dtype", required_argument, 0, 'd'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    dist_ctx d;
    dist_ctx_init(&d);
    const int root = d.world_rank == 0;
    const char *shape = NULL, *out = NULL, *dtype = "f32";
    long layers = 0;
    unsigned long long seed = 1;
    int c, bad = 0;
    char *end;
    opterr = 0;
    optind = 1;
    while (!bad && (c = getopt_long(argc, argv, "s:o:h", opts, NULL)) != -1) {
        switch (c) {
        case 's': shape = optarg; break;
        case 'o': out = optarg; break;
        case 'l':
            layers = strtol(optarg, &end, 10);
            if (*end || end == optarg || layers < 1) bad = root ? error("synth: --layers '%s' is not an integer >= 1", optarg) : -1;
            break;
        case 'S':
            seed = strtoull(optarg, &end, 10);
            if (*end || end == optarg || optarg[0] == '-') bad = root ? error("synth: --seed '%s' is not a non-negative integer", optarg) : -1;
            break;
        case 'd': dtype = optarg; break;
        case 'h':
            if (root) usage(stdout);
            dist_ctx_free(&d);
            return 0;
        default:
            bad = root ? error("synth: unknown or incomplete option '%s' (see 'mpillama synth --help')", argv[optind - 1]) : -1;
        }
    }
    if (!bad && (!shape || !out || optind != argc)) {
        if (root) usage(stderr);
        bad = 1;
    }
    kern_dtype want = KERN_F32;
    if (!bad && dtype_parse(dtype, &want) != 0) {
        bad = 1;
        if (root) error("synth: --dtype '%s' is not f32, bf16 or q8", dtype);
    }
    model_config cfg;
    if (!bad && synth_shape(shape, &cfg) != 0) {
        if (looks_like_path(shape)) {
            if (root) shape_from_hf_config(shape, &cfg); /* dies on a bad file */
            dist_bcast(&d, &cfg, sizeof(cfg), 0);
        } else {
            bad = 1;
            if (root) {
                error("synth: unknown shape '%s'; known shapes:", shape);
                for (int i = 0; i < N_SHAPES; i++) fprintf(stderr, "  %s\n", shapes[i].name);
                fprintf(stderr, "  (or the path of a Hugging Face config.json)\n");
            }
        }
    }
    if (bad) {
        dist_ctx_free(&d);
        return 2;
    }
    const int full_layers = cfg.n_layers;
    if (layers > cfg.n_layers) {
        if (root) error("synth: --layers %ld exceeds the shape's %d layers", layers, cfg.n_layers);
        dist_ctx_free(&d);
        return 2;
    }
    if (layers > 0) cfg.n_layers = (int)layers;
    char why[512];
    if (config_validate(&cfg, shape, why, sizeof(why)) != 0) die("synth: %s", why);
    dtype_set_all(&cfg, want);

    synth_tensor *t;
    int nt = list_tensors(&cfg, &t);
    int64_t params = 0, bytes = 0;
    for (int i = 0; i < nt; i++) {
        params += t[i].rows * (t[i].cols > 0 ? t[i].cols : 1);
        bytes += dtype_bytes(t[i].dtype, t[i].rows, t[i].cols > 0 ? t[i].cols : 1);
    }

    if (root) { /* fail before writing, not after hours of writing */
        char *tmp = xstrdup(out);
        struct statvfs vfs;
        struct stat st;
        int64_t have = -1, old = stat(out, &st) == 0 ? (int64_t)st.st_size : 0;
        const char *dir = dirname(tmp);
        if (statvfs(dir, &vfs) != 0) die_errno("synth: cannot write '%s': directory '%s'", out, dir);
        have = (int64_t)vfs.f_bavail * (int64_t)vfs.f_frsize + old;
        if (have >= 0 && have < bytes)
            die("synth: '%s' needs %.2f GiB, its file system has %.2f GiB free", out, bytes / 1073741824.0,
                have / 1073741824.0);
        free(tmp);
        printf("synth: %s (%d of %d layers, dim %d, hidden %d, heads %d/%d, vocab %d, %s, %s weights%s), seed %llu -> %s\n",
               shape, cfg.n_layers, full_layers, cfg.dim, cfg.hidden_dim, cfg.n_heads, cfg.n_kv_heads,
               cfg.vocab_size, cfg.tied_classifier ? "tied" : "untied", kern_dtype_name(want),
               convert_dtype_note(&cfg, want), seed, out);
        fflush(stdout);
    }

    dist_barrier(&d);
    double t0 = util_now();
    mfile_writer *w = mfile_create_parallel(out, &cfg, d.world);
    int64_t buf_floats = SYNTH_BLOCK_BYTES / (int64_t)sizeof(float);
    float *buf = xmalloc((size_t)buf_floats * sizeof(float));
    for (int i = 0; i < nt; i++) write_tensor(w, &t[i], seed, d.world_rank, d.world_size, buf, buf_floats);
    mfile_close_writer(w);
    double secs = dist_max_double(&d, util_now() - t0);
    if (root) {
        printf("synth: %lld params, %lld bytes (%.2f GiB %s) written in %.2f s on %d rank%s (%.0f MiB/s)\n",
               (long long)params, (long long)bytes, bytes / 1073741824.0, kern_dtype_name(want), secs, d.world_size,
               d.world_size > 1 ? "s" : "", secs > 0 ? bytes / 1048576.0 / secs : 0.0);
        fflush(stdout);
    }
    free(buf);
    free(t);
    dist_ctx_free(&d);
    return 0;
}
