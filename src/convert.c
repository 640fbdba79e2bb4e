#include "convert.h"

#include <getopt.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mfile.h"
#include "tokenizer.h"
#include "util.h"

/* reads count floats at the current position; dies naming the file and the tensor */
static void read_floats(FILE *f, const char *path, const char *what, float *dst, int64_t count) {
    if ((int64_t)fread(dst, sizeof(float), (size_t)count, f) != count)
        die("'%s': truncated llama2.c checkpoint (ends inside %s)", path, what);
}

int64_t convert_llama2c_header(const int32_t h[7], const char *path, model_config *c) {
    static const char *const names[7] = {"dim", "hidden_dim", "n_layers", "n_heads",
                                         "n_kv_heads", "vocab_size", "seq_len"};
    for (int i = 0; i < 7; i++) /* vocab_size is negative for an unshared classifier */
        if (h[i] == INT32_MIN || (h[i] <= 0 && i != 5) || h[i] == 0)
            die("'%s': llama2.c header field '%s' is %d (not a llama2.c checkpoint?)", path,
                names[i], (int)h[i]);
    config_init_defaults(c);
    c->dim = h[0];
    c->hidden_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    c->tied_classifier = h[5] > 0;
    c->vocab_size = h[5] > 0 ? h[5] : -h[5];
    c->max_seq_len = h[6];
    c->head_size = c->dim / c->n_heads;
    c->bos_id = 1;
    c->n_eos = 2; /* llama2.c's story delimiter (BOS) ends a story too */
    c->eos_ids[0] = 2;
    c->eos_ids[1] = 1;
    if (c->dim % c->n_heads != 0)
        die("'%s': not a llama2.c checkpoint (dim %d, n_heads %d)", path, c->dim, c->n_heads);
    char why[512];
    if (config_validate(c, path, why, sizeof(why)) != 0) die("%s (not a valid llama2.c checkpoint?)", why);

    /* every float of the file; the config's limits keep each product far inside int64, the
     * checked sums say so */
    const int64_t D = c->dim, L = c->n_layers, V = c->vocab_size, H = c->hidden_dim, hs = c->head_size;
    const int64_t q = config_q_dim(c), kv = config_kv_dim(c);
    int64_t layer = 2 * D + q * D + 2 * kv * D + D * q + 3 * H * D, layers, floats;
    if (!util_mul_ok(L, layer, &layers) || !util_add_ok(V * D, layers, &floats) ||
        !util_add_ok(floats, D + (int64_t)c->max_seq_len * hs + (c->tied_classifier ? 0 : V * D), &floats) ||
        !util_mul_ok(floats, 4, &(int64_t){0}))
        die("'%s': llama2.c header implies more than 2^63 bytes", path);
    return floats;
}

void convert_llama2c(const char *bin_path, const char *tokenizer_path, const char *out_path, const char *dtype) {
    FILE *f = xfopen(bin_path, "rb");
    int32_t h[7];
    if (fread(h, sizeof(int32_t), 7, f) != 7) die("'%s': too short for a llama2.c checkpoint header", bin_path);
    model_config c;
    const int64_t floats = convert_llama2c_header(h, bin_path, &c);
    const int64_t D = c.dim, L = c.n_layers, V = c.vocab_size, H = c.hidden_dim, hs = c.head_size;
    const int64_t q = config_q_dim(&c), kv = config_kv_dim(&c);

    /* the file size must match the header exactly: catches truncation before writing anything */
    struct stat st;
    if (stat(bin_path, &st) != 0) die_errno("cannot stat '%s'", bin_path);
    if (st.st_size != 28 + floats * 4)
        die("'%s': llama2.c checkpoint is %lld bytes, its header implies %lld (truncated or not this format)",
            bin_path, (long long)st.st_size, (long long)(28 + floats * 4));

    mfile_tokenizer tok = {0};
    if (tokenizer_path) {
        tok_load_file(&tok, tokenizer_path); /* any supported kind, detected from the content */
        if (tok.n != c.vocab_size)
            die("'%s': tokenizer has %d pieces, the model's vocab_size is %d", tokenizer_path, tok.n, c.vocab_size);
        tok_free(tok_init(&tok)); /* a tokenizer that would not build fails before any output */
    }

    kern_dtype want = KERN_F32; /* the source's own type */
    if (dtype && dtype_parse(dtype, &want) != 0) die("convert: --dtype '%s' is not f32, bf16 or q8", dtype);
    dtype_set_all(&c, want);
    const int *wt = c.weight_dtype;

    mfile_writer *w = mfile_create(out_path, &c);
    int64_t biggest = V * D > H * D ? V * D : H * D;
    if (q * D > biggest) biggest = q * D;
    float *buf = xmalloc(sizeof(float) * (size_t)biggest);
    char name[64];
    read_floats(f, bin_path, "token_embedding", buf, V * D);
    mfile_write_tensor(w, "tok_embeddings", buf, V, D, wt[CONFIG_W_EMBED]);
    /* llama2.c stores each tensor for all layers together: seek per layer so only one layer's
     * tensor is in memory at a time */
    struct {
        const char *name;
        int64_t rows, cols;
        int kind; /* CONFIG_W_*, -1 for norms */
    } t[9] = {{"attention_norm", D, 0, -1}, {"wq", q, D, CONFIG_W_Q},  {"wk", kv, D, CONFIG_W_K},
              {"wv", kv, D, CONFIG_W_V},    {"wo", D, q, CONFIG_W_O},  {"ffn_norm", D, 0, -1},
              {"w1", H, D, CONFIG_W_1},     {"w2", D, H, CONFIG_W_2},  {"w3", H, D, CONFIG_W_3}};
    int64_t base = 28 + V * D * 4, start[9];
    for (int i = 0; i < 9; i++) {
        start[i] = base;
        base += L * t[i].rows * (t[i].cols ? t[i].cols : 1) * 4;
    }
    for (int64_t l = 0; l < L; l++) {
        for (int i = 0; i < 9; i++) {
            int64_t n = t[i].rows * (t[i].cols ? t[i].cols : 1);
            if (fseeko(f, start[i] + l * n * 4, SEEK_SET) != 0) die_errno("cannot seek in '%s'", bin_path);
            snprintf(name, sizeof(name), "layers/%lld/%s", (long long)l, t[i].name);
            read_floats(f, bin_path, name, buf, n);
            mfile_write_tensor(w, name, buf, t[i].rows, t[i].cols, t[i].kind < 0 ? KERN_F32 : wt[t[i].kind]);
        }
    }
    if (fseeko(f, base, SEEK_SET) != 0) die_errno("cannot seek in '%s'", bin_path);
    read_floats(f, bin_path, "rms_final", buf, D);
    mfile_write_tensor(w, "norm", buf, D, 0, KERN_F32);
    if (!c.tied_classifier) {
        if (fseeko(f, base + (D + (int64_t)c.max_seq_len * hs) * 4, SEEK_SET) != 0) die_errno("cannot seek in '%s'", bin_path);
        read_floats(f, bin_path, "wcls", buf, V * D);
        mfile_write_tensor(w, "output", buf, V, D, wt[CONFIG_W_OUT]);
    }
    if (tokenizer_path) {
        mfile_write_tokenizer(w, &tok);
        mfile_tokenizer_free(&tok);
    }
    mfile_close_writer(w);
    free(buf);
    fclose(f);
    printf("converted llama2.c checkpoint '%s' -> '%s' (%d layers, dim %d, vocab %d, %s weights%s%s)\n", bin_path,
           out_path, c.n_layers, c.dim, c.vocab_size, kern_dtype_name(want), convert_dtype_note(&c, want),
           tokenizer_path ? ", with tokenizer" : "");
}

const char *convert_dtype_note(const model_config *c, kern_dtype want) {
    if (want != KERN_Q8) return "";
    for (int k = 0; k < CONFIG_W_COUNT; k++)
        if (c->weight_dtype[k] != KERN_Q8) return "; tensors whose input dim is not a multiple of 32 stay bf16";
    return "";
}

int convert_tokenizer(mfile_tokenizer *tok, const char *given, int vocab_size, const char *src_path,
                      convert_own_tokenizer_fn load_own, const void *src) {
    memset(tok, 0, sizeof(*tok));
    if (given) {
        tok_load_file(tok, given);
        if (tok->n != vocab_size)
            die("'%s': tokenizer has %d pieces, the model's vocab_size is %d", given, tok->n, vocab_size);
    } else {
        char why[768];
        if (!load_own(tok, src, why, sizeof why)) {
            warning("'%s': %s; no tokenizer stored (prompts must give prompt_ids)", src_path, why);
            return 0;
        }
        tok_fit_vocab(tok, vocab_size, src_path); /* embeddings rounded up: unused ids */
    }
    tok_free(tok_init(tok)); /* a tokenizer that would not build fails here */
    return 1;
}

static void usage(FILE *out) {
    fprintf(out, "usage: mpillama convert SRC -o OUT.h5 [--tokenizer FILE] [--dtype f32|bf16|q8]\n"
                 "  SRC: a llama2.c checkpoint (.bin), a Hugging Face model directory or a GGUF\n"
                 "    file (detected from the content)\n"
                 "  --dtype T: how weight matrices are stored (norms stay f32): f32, bf16 (rounded to\n"
                 "    nearest even), q8 (int8, an f32 scale per 32 input columns; a tensor whose input\n"
                 "    dim is not a multiple of 32 stays bf16). Default: the source's own type (bf16\n"
                 "    safetensors stay bf16 bit for bit; f16 and f32 become f32, losslessly; GGUF\n"
                 "    files are dequantised to f32)\n"
                 "  --tokenizer FILE: the tokenizer to store in the model file: a llama2.c\n"
                 "    tokenizer.bin, a SentencePiece or tiktoken (Llama 3) tokenizer.model, or a\n"
                 "    Hugging Face tokenizer.json (detected from the content). A Hugging Face\n"
                 "    directory's own tokenizer.json / tokenizer.model is stored without it.\n");
}

int convert_main(int argc, char **argv) {
    static const struct option opts[] = {{"output", required_argument, 0, 'o'},
                                         {"tokenizer", required_argument, 0, 't'},
                                         {"dtype", required_argument, 0, 'd'},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    const char *out = NULL, *tok = NULL, *dtype = NULL;
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "o:t:d:h", opts, NULL)) != -1) {
        switch (c) {
        case 'o': out = optarg; break;
        case 't': tok = optarg; break;
        case 'd': {
            kern_dtype t;
            if (dtype_parse(optarg, &t) != 0) {
                error("convert: --dtype '%s' is not f32, bf16 or q8", optarg);
                return 2;
            }
            dtype = optarg;
            break;
        }
        case 'h': usage(stdout); return 0;
        default:
            error("convert: unknown or incomplete option '%s' (see 'mpillama convert --help')", argv[optind - 1]);
            return 2;
        }
    }
    if (optind != argc - 1 || !out) {
        usage(stderr);
        return 2;
    }
    const char *src = argv[optind];
    struct stat st;
    if (stat(src, &st) != 0) die_errno("cannot open source '%s'", src);
    if (S_ISDIR(st.st_mode)) {
        convert_hf(src, tok, out, dtype);
        return 0;
    }
    /* a single file: HDF5 files are already converted; else it must be a llama2.c checkpoint */
    FILE *f = xfopen(src, "rb");
    unsigned char magic[8] = {0};
    size_t got = fread(magic, 1, 8, f);
    fclose(f);
    if (got == 8 && memcmp(magic, "\x89HDF\r\n\x1a\n", 8) == 0)
        die("'%s' is already an HDF5 file: nothing to convert", src);
    if (got >= 4 && memcmp(magic, "GGUF", 4) == 0) {
        convert_gguf(src, tok, out, dtype);
        return 0;
    }
    convert_llama2c(src, tok, out, dtype);
    return 0;
}
