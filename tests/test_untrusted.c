/* test_untrusted: files and lines we did not write are checked before use. Each case feeds one
 * bad input (a safetensors image, a config.json, a llama2.c header, an HDF5 model file patched
 * with the raw HDF5 API, a tokenizer.json, a JSONL prompt line) and checks for one clean error
 * naming the file and the field, or an error record; in a child process, since the readers die.
 * Self-contained (no shared data): every input is made here.
 *
 * usage: test_untrusted [SHARED_DIR]   (the argument is ignored) */
#include <hdf5.h>
#include <math.h>
#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "config.h"
#include "convert.h"
#include "jsonstrict.h"
#include "mfile.h"
#include "plan.h"
#include "prompts.h"
#include "tokenizer.h"
#include "util.h"

static int g_checks, g_failures;
static char g_dir[256];

static void fail(const char *what, const char *fmt, const char *detail) {
    g_failures++;
    fprintf(stderr, "FAIL: %s: ", what);
    fprintf(stderr, fmt, detail);
    fprintf(stderr, "\n");
}

/* LeakSanitizer's switch, when the test is built with -fsanitize=address: the readers die
 * holding their allocations by design, which is no leak worth reporting */
extern void __lsan_disable(void) __attribute__((weak));

/* runs fn(arg) in a child; returns its exit status, its stderr in msg */
static int run_child(void (*fn)(const void *), const void *arg, char *msg, size_t cap) {
    int pipefd[2];
    if (pipe(pipefd) != 0) die_errno("pipe");
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) die_errno("fork");
    if (pid == 0) {
        close(pipefd[0]);
        dup2(pipefd[1], 2);
        if (__lsan_disable) __lsan_disable();
        fn(arg);
        fflush(NULL);
        _exit(0);
    }
    close(pipefd[1]);
    size_t len = 0;
    ssize_t r;
    while ((r = read(pipefd[0], msg + len, cap - 1 - len)) > 0) len += (size_t)r;
    msg[len] = '\0';
    close(pipefd[0]);
    int status;
    if (waitpid(pid, &status, 0) != pid) die_errno("waitpid");
    return status;
}

/* fn(arg) must exit non-zero (not crash) with a one-line message holding every needle */
static void expect_dies(const char *what, void (*fn)(const void *), const void *arg, const char *n1,
                        const char *n2) {
    char msg[4096];
    int status = run_child(fn, arg, msg, sizeof msg);
    g_checks++;
    int lines = 0;
    for (const char *p = msg; *p; p++) lines += *p == '\n';
    if (!WIFEXITED(status) || WEXITSTATUS(status) == 0) {
        fail(what, "expected a clean non-zero exit; stderr: %s", msg);
    } else if (!strstr(msg, n1) || (n2 && !strstr(msg, n2))) {
        g_failures++;
        fprintf(stderr, "FAIL: %s: the message does not name '%s'%s%s: %s", what, n1,
                n2 ? " and " : "", n2 ? n2 : "", msg);
    } else if (lines != 1) {
        fail(what, "expected one line; stderr: %s", msg);
    } else {
        printf("PASS %-52s | %s", what, msg);
    }
}

static void expect_ok(const char *what, void (*fn)(const void *), const void *arg) {
    char msg[4096];
    int status = run_child(fn, arg, msg, sizeof msg);
    g_checks++;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) fail(what, "expected success; stderr: %s", msg);
    else printf("PASS %-52s | accepted\n", what);
}

/* ------------------------------------------------------------------ safetensors */

typedef struct {
    const char *header;
    size_t data_bytes;
} st_case;

static void st_check(const void *arg) {
    const st_case *c = arg;
    size_t hl = strlen(c->header), len = 8 + hl + c->data_bytes;
    unsigned char *buf = xcalloc(len, 1);
    for (int i = 0; i < 8; i++) buf[i] = (unsigned char)((uint64_t)hl >> (8 * i));
    memcpy(buf + 8, c->header, hl);
    int n = convert_hf_check_safetensors(buf, len, "model.safetensors");
    if (n <= 0) _exit(3);
    free(buf);
}

static void safetensors_cases(void) {
    static const st_case ok = {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                               "\"b\":{\"dtype\":\"BF16\",\"shape\":[4],\"data_offsets\":[16,24]}}", 24};
    expect_ok("safetensors: a good header", st_check, &ok);
    static const struct {
        const char *what, *field;
        st_case c;
    } bad[] = {
        {"safetensors: empty header {}", "no tensors", {"{}", 0}},
        {"safetensors: only __metadata__", "no tensors", {"{\"__metadata__\":{\"format\":\"pt\"}}", 0}},
        {"safetensors: overlapping data_offsets", "overlap",
         {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
          "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16}},
        {"safetensors: data_offsets past the file", "'a'",
         {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8}},
        {"safetensors: shape product overflows int64", "too large",
         {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0}},
        {"safetensors: shape product 2^62 x 4 bytes", "too large",
         {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904],\"data_offsets\":[0,0]}}", 0}},
        {"safetensors: fractional dimension", "bad shape",
         {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,10]}}", 10}},
        {"safetensors: shape x dtype != data_offsets span", "need 8",
         {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16}},
        {"safetensors: duplicate tensor name", "duplicate key 'a'",
         {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
          "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8}},
        {"safetensors: trailing garbage after the header", "trailing data",
         {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}} xx", 4}},
        {"safetensors: unsupported dtype", "I64", {"{\"a\":{\"dtype\":\"I64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_dies(bad[i].what, st_check, &bad[i].c, "model.safetensors", bad[i].field);
    /* a header length beyond the file */
    static const st_case huge = {"{", 0};
    expect_dies("safetensors: header length past the file", st_check, &huge, "model.safetensors",
                "does not fit");
}

/* ------------------------------------------------------------------ config.json */

#define HF_BASE "\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2," \
                "\"num_attention_heads\":4,\"vocab_size\":512,\"max_position_embeddings\":256"

static void cfg_check(const void *arg) {
    const char *text = arg;
    model_config c;
    convert_hf_parse_config(text, strlen(text), "config.json", &c, 0);
}

static void config_cases(void) {
    expect_ok("config.json: a good one", cfg_check, "{" HF_BASE ",\"rms_norm_eps\":1e-5}");
    static const struct {
        const char *what, *field, *text;
    } bad[] = {
        {"config.json: fractional hidden_size", "'hidden_size'",
         "{\"hidden_size\":64.5,\"intermediate_size\":128,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
         "\"vocab_size\":512,\"max_position_embeddings\":256,\"rms_norm_eps\":1e-5}"},
        {"config.json: trailing garbage", "trailing data", "{" HF_BASE ",\"rms_norm_eps\":1e-5} }"},
        {"config.json: duplicate key", "duplicate key 'vocab_size'",
         "{" HF_BASE ",\"vocab_size\":1024,\"rms_norm_eps\":1e-5}"},
        {"config.json: infinite rms_norm_eps", "'rms_norm_eps'", "{" HF_BASE ",\"rms_norm_eps\":1e999}"},
        {"config.json: infinite rope_theta", "'rope_theta'", "{" HF_BASE ",\"rms_norm_eps\":1e-5,\"rope_theta\":-1e999}"},
        {"config.json: hidden_size 2^30", "'hidden_size'",
         "{\"hidden_size\":1073741824,\"intermediate_size\":128,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
         "\"vocab_size\":512,\"max_position_embeddings\":256,\"rms_norm_eps\":1e-5}"},
        {"config.json: num_hidden_layers 10^9", "'num_hidden_layers'",
         "{\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":1000000000,\"num_attention_heads\":4,"
         "\"vocab_size\":512,\"max_position_embeddings\":256,\"rms_norm_eps\":1e-5}"},
        {"config.json: vocab_size 2^31", "'vocab_size'",
         "{\"hidden_size\":64,\"intermediate_size\":128,\"num_hidden_layers\":2,\"num_attention_heads\":4,"
         "\"vocab_size\":2147483648,\"max_position_embeddings\":256,\"rms_norm_eps\":1e-5}"},
        {"config.json: not JSON", "not valid JSON", "{\"hidden_size\":"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_dies(bad[i].what, cfg_check, bad[i].text, "config.json", bad[i].field);
}

/* ------------------------------------------------------------------ llama2.c headers */

static void l2c_check(const void *arg) {
    model_config c;
    convert_llama2c_header((const int32_t *)arg, "model.bin", &c);
}

static void llama2c_cases(void) {
    static const int32_t ok[7] = {64, 172, 5, 8, 4, 512, 512};
    expect_ok("llama2.c header: stories260K's", l2c_check, ok);
    static const struct {
        const char *what, *field;
        int32_t h[7];
    } bad[] = {
        {"llama2.c header: vocab_size INT_MIN (abs overflow)", "'vocab_size'", {64, 172, 5, 8, 4, INT32_MIN, 512}},
        {"llama2.c header: dim 2^30", "'dim'", {1 << 30, 172, 5, 8, 4, 512, 512}},
        {"llama2.c header: n_layers 2^31-1 (size overflow)", "'n_layers'", {64, 172, INT32_MAX, 8, 4, 512, 512}},
        {"llama2.c header: hidden_dim x layers at the limits", "'hidden_dim'", {64, INT32_MAX, 4096, 8, 4, 512, 512}},
        {"llama2.c header: n_heads 0", "'n_heads'", {64, 172, 5, 0, 4, 512, 512}},
        {"llama2.c header: negative seq_len", "'seq_len'", {64, 172, 5, 8, 4, 512, -5}},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        expect_dies(bad[i].what, l2c_check, bad[i].h, "model.bin", bad[i].field);
}

/* ------------------------------------------------------------------ HDF5 model files */

static const model_config *tiny_config(void) {
    static model_config c;
    config_init_defaults(&c);
    c.dim = 8, c.hidden_dim = 16, c.n_layers = 2, c.n_heads = 2, c.n_kv_heads = 2, c.head_size = 4;
    c.vocab_size = 16, c.max_seq_len = 32;
    return &c;
}

/* a valid model file of the tiny config, zero weights */
static void write_tiny_model(const char *path) {
    const model_config *c = tiny_config();
    mfile_writer *w = mfile_create(path, c);
    float *z = xcalloc(16 * 16, sizeof(float));
    mfile_write_f32(w, "tok_embeddings", z, 16, 8);
    char name[64];
    for (int l = 0; l < 2; l++) {
        static const char *const n[9] = {"attention_norm", "wq", "wk", "wv", "wo", "ffn_norm", "w1", "w2", "w3"};
        static const int rows[9] = {8, 8, 8, 8, 8, 8, 16, 8, 16}, cols[9] = {0, 8, 8, 8, 8, 0, 8, 16, 8};
        for (int i = 0; i < 9; i++) {
            snprintf(name, sizeof name, "layers/%d/%s", l, n[i]);
            mfile_write_f32(w, name, z, rows[i], cols[i]);
        }
    }
    mfile_write_f32(w, "norm", z, 8, 0);
    mfile_write_f32(w, "output", z, 16, 8);
    mfile_close_writer(w);
    free(z);
}

typedef enum { PATCH_STR_NULLPAD, PATCH_FLOAT, PATCH_FLOAT_ARRAY, PATCH_INT, PATCH_STR_ARRAY, PATCH_GROUP } patch_kind;
typedef struct {
    const char *what, *obj, *name; /* obj: "/" or "tokenizer" */
    patch_kind kind;
    double value;
    const char *text;
    const char *needle; /* NULL: must be accepted */
} h5_case;

static void patch(const char *path, const h5_case *c) {
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    check(f >= 0, "cannot open '%s'", path);
    if (c->kind == PATCH_GROUP) {
        hid_t g = H5Gcreate2(f, c->name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
        check(g >= 0, "cannot create group '%s'", c->name);
        H5Gclose(g);
        H5Fclose(f);
        return;
    }
    hid_t o = H5Oopen(f, c->obj, H5P_DEFAULT);
    check(o >= 0, "no object '%s'", c->obj);
    if (H5Aexists(o, c->name) > 0) H5Adelete(o, c->name);
    hsize_t three = 3;
    hid_t sp = (c->kind == PATCH_FLOAT_ARRAY || c->kind == PATCH_STR_ARRAY) ? H5Screate_simple(1, &three, NULL)
                                                                          : H5Screate(H5S_SCALAR);
    hid_t ty, a;
    float fv[3] = {(float)c->value, (float)c->value, (float)c->value};
    int iv = (int)c->value;
    switch (c->kind) {
    case PATCH_STR_NULLPAD:
    case PATCH_STR_ARRAY: {
        /* h5py's default for fixed-length strings: NUL-padded, no terminator when full */
        size_t len = strlen(c->text);
        ty = H5Tcopy(H5T_C_S1);
        H5Tset_size(ty, len);
        H5Tset_strpad(ty, H5T_STR_NULLPAD);
        char buf[3 * 64] = {0};
        for (int i = 0; i < 3; i++) memcpy(buf + i * len, c->text, len);
        a = H5Acreate2(o, c->name, ty, sp, H5P_DEFAULT, H5P_DEFAULT);
        check(a >= 0 && H5Awrite(a, ty, buf) >= 0, "cannot write '%s'", c->name);
        H5Tclose(ty);
        break;
    }
    case PATCH_FLOAT:
    case PATCH_FLOAT_ARRAY:
        a = H5Acreate2(o, c->name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
        check(a >= 0 && H5Awrite(a, H5T_NATIVE_FLOAT, fv) >= 0, "cannot write '%s'", c->name);
        break;
    default:
        a = H5Acreate2(o, c->name, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
        check(a >= 0 && H5Awrite(a, H5T_NATIVE_INT, &iv) >= 0, "cannot write '%s'", c->name);
        break;
    }
    H5Aclose(a);
    H5Sclose(sp);
    H5Oclose(o);
    H5Fclose(f);
}

/* the child: opens the file as mpillama does and reads the config (and tokenizer) */
static void h5_read(const void *arg) {
    const char *path = arg;
    MPI_Init(NULL, NULL);
    mfile *f = mfile_open(path, MPI_COMM_SELF);
    model_config c;
    mfile_read_config(f, &c);
    if (strcmp(c.architecture, "llama") != 0) {
        fprintf(stderr, "read architecture '%s'\n", c.architecture);
        _exit(4);
    }
    mfile_tokenizer t;
    if (mfile_read_tokenizer(f, &t)) mfile_tokenizer_free(&t);
    mfile_close(f);
    MPI_Finalize();
}

static void hdf5_cases(void) {
    static const h5_case cases[] = {
        {"HDF5: NUL-padded architecture (h5py) keeps its last char", "/", "architecture", PATCH_STR_NULLPAD, 0, "llama", NULL},
        {"HDF5: NUL-padded format attribute", "/", "format", PATCH_STR_NULLPAD, 0, "mpillama", NULL},
        {"HDF5: infinite norm_eps", "/", "norm_eps", PATCH_FLOAT, INFINITY, NULL, "'norm_eps'"},
        {"HDF5: NaN rope_theta", "/", "rope_theta", PATCH_FLOAT, NAN, NULL, "'rope_theta'"},
        {"HDF5: dim stored as a float 8.5", "/", "dim", PATCH_FLOAT, 8.5, NULL, "'dim'"},
        {"HDF5: norm_eps stored as 3 values", "/", "norm_eps", PATCH_FLOAT_ARRAY, 1e-5, NULL, "'norm_eps'"},
        {"HDF5: architecture stored as 3 strings", "/", "architecture", PATCH_STR_ARRAY, 0, "llama", "'architecture'"},
        {"HDF5: dim 2^30", "/", "dim", PATCH_INT, 1073741824, NULL, "'dim'"},
        {"HDF5: n_layers 4000, 2 stored", "/", "n_layers", PATCH_INT, 4000, NULL, "'n_layers'"},
        {"HDF5: a third layer stored, config says 2", "/", "layers/2", PATCH_GROUP, 0, NULL, "'n_layers'"},
    };
    char path[512];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(path, sizeof path, "%s/model%zu.h5", g_dir, i);
        write_tiny_model(path);
        patch(path, &cases[i]);
        if (cases[i].needle) expect_dies(cases[i].what, h5_read, path, path, cases[i].needle);
        else expect_ok(cases[i].what, h5_read, path);
    }
}

/* ------------------------------------------------------------------ tokenizer.json */

/* writes text to the file name in the scratch folder; its path into path */
static void write_scratch(char *path, size_t cap, const char *name, const char *text) {
    snprintf(path, cap, "%s/%s", g_dir, name);
    FILE *f = xfopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void tokjson_check(const void *arg) {
    char path[512];
    write_scratch(path, sizeof path, "tokenizer.json", arg);
    mfile_tokenizer t;
    char why[256];
    if (tok_load_hf_json(&t, path, why, sizeof why)) mfile_tokenizer_free(&t);
}

static void tiktoken_check(const void *arg) {
    char path[512];
    write_scratch(path, sizeof path, "tokenizer.model", arg);
    mfile_tokenizer t;
    tok_load_tiktoken(&t, path);
    mfile_tokenizer_free(&t);
}

static void tokenizer_cases(void) {
#define TJ(VOCAB) "{\"model\":{\"type\":\"BPE\",\"byte_fallback\":true,\"vocab\":" VOCAB ",\"merges\":[]}}"
    expect_dies("tokenizer.json: an id of 2^24 for 2 tokens", tokjson_check, TJ("{\"a\":0,\"b\":16777215}"),
                "tokenizer.json", "holes");
    expect_dies("tokenizer.json: an id past the id limit", tokjson_check, TJ("{\"a\":0,\"b\":2000000000}"),
                "tokenizer.json", "'b'");
    expect_dies("tokenizer.json: a fractional id", tokjson_check, TJ("{\"a\":0,\"b\":1.5}"), "tokenizer.json", "'b'");
    expect_dies("tokenizer.json: a duplicate vocabulary key", tokjson_check, TJ("{\"a\":0,\"a\":1}"),
                "tokenizer.json", "duplicate key 'a'");
#undef TJ
    /* tiktoken ranks: digits only, within the line (parsed without reading past it) */
    expect_dies("tiktoken: a negative rank", tiktoken_check, "IQ== 0\nIg== -1\n", "tokenizer.model", "line 2 has a bad rank");
    expect_dies("tiktoken: a rank with trailing text", tiktoken_check, "IQ== 0\nIg== 1x\n", "tokenizer.model",
                "line 2 has a bad rank");
    expect_dies("tiktoken: a rank past 2^31", tiktoken_check, "IQ== 0\nIg== 99999999999\n", "tokenizer.model",
                "line 2 has a bad rank");
    expect_dies("tiktoken: an empty rank", tiktoken_check, "IQ== \n", "tokenizer.model", "line 1 has a bad rank");
    expect_dies("tiktoken: well-formed ranks but not Llama 3's count", tiktoken_check, "IQ== 0\nIg== 1\n",
                "tokenizer.model", "of 2 ranks");
}

/* ------------------------------------------------------------------ JSONL prompt lines */

static void prompt_cases(void) {
    static const struct {
        const char *what, *line, *needle; /* needle NULL: no error */
    } cases[] = {
        {"prompt line: a good one", "{\"custom_id\":\"a\",\"prompt\":\"hi\",\"max_tokens\":4,\"seed\":7}", NULL},
        {"prompt line: trailing garbage", "{\"prompt\":\"hi\"} {\"prompt\":\"again\"}", "trailing data"},
        {"prompt line: duplicate key", "{\"prompt\":\"hi\",\"max_tokens\":4,\"max_tokens\":400}", "duplicate key 'max_tokens'"},
        {"prompt line: duplicate key in a message", "{\"messages\":[{\"role\":\"user\",\"role\":\"system\",\"content\":\"x\"}]}",
         "duplicate key 'role'"},
        {"prompt line: fractional max_tokens", "{\"prompt\":\"hi\",\"max_tokens\":2.5}", "'max_tokens'"},
        {"prompt line: fractional top_k", "{\"prompt\":\"hi\",\"top_k\":1.5}", "'top_k'"},
        {"prompt line: fractional seed", "{\"prompt\":\"hi\",\"seed\":0.5}", "'seed'"},
        {"prompt line: fractional prompt id", "{\"prompt_ids\":[1,2.5]}", "'prompt_ids[1]'"},
        {"prompt line: prompt id 2^31", "{\"prompt_ids\":[1,2147483648]}", "'prompt_ids[1]'"},
        {"prompt line: fractional stop token id", "{\"prompt\":\"x\",\"stop_token_ids\":[0.5]}", "'stop_token_ids'"},
        {"prompt line: infinite custom_id", "{\"custom_id\":1e999,\"prompt\":\"x\"}", "'custom_id'"},
        {"prompt line: empty custom_id", "{\"custom_id\":\"\",\"prompt\":\"x\"}", "'custom_id'"},
        {"prompt line: \\u0000 in custom_id (fuzz_prompts)", "{\"custom_id\":\"\\u0000a\",\"prompt\":\"x\"}", "NUL"},
        {"prompt line: no prompt, unknown field (fuzz: leak)", "{\"prprompt\":null}", "no 'prompt'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        prompt_item *it = xcalloc(1, sizeof *it);
        it->custom_id = xstrdup("1");
        prompts_parse_json(it, cases[i].line, strlen(cases[i].line));
        g_checks++;
        if (cases[i].needle ? !it->error || !strstr(it->error, cases[i].needle) : it->error != NULL)
            fail(cases[i].what, "got the error record '%s'", it->error ? it->error : "(none)");
        else
            printf("PASS %-52s | %s\n", cases[i].what, it->error ? it->error : "accepted");
        prompts_free(it, 1);
    }
}

/* OpenAI Batch API lines: the body's fields mapped onto a request, bad envelopes and fields named */
static void openai_cases(void) {
    static const struct {
        const char *what, *line, *needle; /* needle NULL: no error */
    } bad[] = {
        {"openai: GET", "{\"custom_id\":\"a\",\"method\":\"GET\",\"url\":\"/v1/completions\",\"body\":{\"prompt\":\"x\"}}", "'method' GET"},
        {"openai: embeddings", "{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{\"input\":\"x\"}}",
         "'url' /v1/embeddings"},
        {"openai: tools", "{\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":[{\"role\":"
         "\"user\",\"content\":\"x\"}],\"tools\":[]}}", "'body.tools'"},
        {"openai: empty messages", "{\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":[]}}",
         "'messages'"},
        {"openai: unsupported body field",
         "{\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{\"prompt\":\"x\",\"suffix\":\"y\"}}", "'body.suffix'"},
        {"openai: unsupported line field", "{\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{\"prompt\":\"x\"},\"x\":1}",
         "'x'"},
        {"openai: chat without messages", "{\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"prompt\":\"x\"}}",
         "needs 'messages'"},
        {"openai: body not an object", "{\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":\"x\"}", "'body'"},
        {"openai: chat logprobs as a number",
         "{\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
         "\"logprobs\":3}}", "'logprobs' must be true or false"},
        {"openai: top_logprobs without logprobs",
         "{\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
         "\"top_logprobs\":3}}", "needs 'logprobs'"},
        {"openai: top_logprobs 21",
         "{\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{\"messages\":[{\"role\":\"user\",\"content\":\"x\"}],"
         "\"logprobs\":true,\"top_logprobs\":21}}", "'top_logprobs'"},
        {"openai: both max token fields",
         "{\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{\"prompt\":\"x\",\"max_tokens\":3,\"max_completion_tokens\":4}}",
         "give one of"},
        {"openai: n 0", "{\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{\"prompt\":\"x\",\"n\":0}}", "'n'"},
        {"openai: stream true", "{\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{\"prompt\":\"x\",\"stream\":true}}",
         "'stream'"},
        {"openai: stream false", "{\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{\"prompt\":\"x\",\"stream\":false}}",
         NULL},
        {"openai: several prompts", "{\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{\"prompt\":[\"a\",\"b\"]}}",
         "several prompts"},
        {"native: logprobs 21", "{\"prompt\":\"x\",\"logprobs\":21}", "'logprobs'"},
        {"native: top_logprobs", "{\"prompt\":\"x\",\"top_logprobs\":2}", "'top_logprobs'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        prompt_item *it = xcalloc(1, sizeof *it);
        prompts_item_defaults(it, 1);
        prompts_parse_json(it, bad[i].line, strlen(bad[i].line));
        g_checks++;
        if (bad[i].needle ? !it->error || !strstr(it->error, bad[i].needle) : it->error != NULL)
            fail(bad[i].what, "got the error record '%s'", it->error ? it->error : "(none)");
        else
            printf("PASS %-52s | %s\n", bad[i].what, it->error ? it->error : "accepted");
        prompts_free(it, 1);
    }
    /* every mapped field of a chat and a completions body */
    const char *chat = "{\"custom_id\":\"request-1\",\"method\":\"POST\",\"url\":\"/v1/chat/completions\",\"body\":{"
                       "\"model\":\"gpt-3.5-turbo-0125\",\"messages\":[{\"role\":\"system\",\"content\":\"You are a helpful "
                       "assistant.\"},{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"Hello \"},{\"type\":"
                       "\"text\",\"text\":\"world!\"}]}],\"max_completion_tokens\":1000,\"temperature\":0.5,\"top_p\":0.8,"
                       "\"stop\":\"\\n\",\"seed\":7,\"n\":3,\"logprobs\":true,\"top_logprobs\":4,\"frequency_penalty\":0.25,"
                       "\"presence_penalty\":-0.5,\"top_k\":-1,\"min_p\":0.1,\"repetition_penalty\":1.5,\"ignore_eos\":true}}";
    prompt_item *it = xcalloc(1, sizeof *it);
    prompts_item_defaults(it, 1);
    prompts_parse_json(it, chat, strlen(chat));
    g_checks++;
    if (it->error || it->api != PROMPTS_CHAT || strcmp(it->custom_id, "request-1") || it->n_messages != 2 ||
        strcmp(it->roles[1], "user") || strcmp(it->contents[1], "Hello world!") || it->max_tokens != 1000 ||
        it->temperature != 0.5f || it->top_p != 0.8f || it->n_stop != 1 || strcmp(it->stop[0], "\n") || !it->has_seed ||
        it->seed != 7 || it->n != 3 || it->logprobs != 4 || it->frequency_penalty != 0.25f ||
        it->presence_penalty != -0.5f || it->top_k != 0 || it->min_p != 0.1f || it->repetition_penalty != 1.5f ||
        it->ignore_eos != 1 || !it->model_name || strcmp(it->model_name, "gpt-3.5-turbo-0125"))
        fail("openai: chat body mapping", "error '%s' or a field not mapped", it->error ? it->error : "(none)");
    else printf("PASS %-52s | every field mapped\n", "openai: chat body mapping");
    prompts_free(it, 1);
    const char *comp = "{\"custom_id\":\"c\",\"method\":\"POST\",\"url\":\"/v1/completions\",\"body\":{\"prompt\":[5,6,7],"
                       "\"max_tokens\":9,\"logprobs\":2,\"stop\":[\"a\",\"b\"]}}";
    it = xcalloc(1, sizeof *it);
    prompts_item_defaults(it, 1);
    prompts_parse_json(it, comp, strlen(comp));
    g_checks++;
    if (it->error || it->api != PROMPTS_COMPLETIONS || it->n_ids != 3 || it->ids[2] != 7 || it->max_tokens != 9 ||
        it->logprobs != 2 || it->n_stop != 2 || it->n != 1 || it->has_seed)
        fail("openai: completions body mapping", "error '%s' or a field not mapped", it->error ? it->error : "(none)");
    else printf("PASS %-52s | every field mapped\n", "openai: completions body mapping");
    prompts_free(it, 1);
}

/* ------------------------------------------------------------------ arithmetic */

static void arithmetic_cases(void) {
    int64_t r = 0;
    g_checks++;
    if (!util_mul_ok(INT64_C(1) << 31, INT64_C(1) << 31, &r) || r != INT64_C(1) << 62 ||
        util_mul_ok(INT64_C(1) << 32, INT64_C(1) << 31, &r) || util_mul_ok(-1, 2, &r) ||
        util_add_ok(INT64_MAX, 1, &r))
        fail("util_mul_ok / util_add_ok", "%s", "wrong overflow answer");
    /* the KV cache of absurd --batch x --max-seq-len is -1, not a negative wrap-around */
    plan_rank pr = {0};
    pr.n_layers_local = 4096, pr.n_kv_local = 4096;
    model_config c = *tiny_config();
    c.head_size = 4096;
    g_checks++;
    if (plan_kv_bytes(&pr, &c, 1 << 24, INT32_MAX) != -1) fail("plan_kv_bytes overflow", "%s", "not -1");
    else printf("PASS %-52s | -1\n", "plan_kv_bytes: batch 2^31 x seq 2^24 overflows");
}

int main(void) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%s/test_untrusted_XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) die_errno("cannot create a directory under /tmp");
    safetensors_cases();
    config_cases();
    llama2c_cases();
    hdf5_cases();
    tokenizer_cases();
    prompt_cases();
    openai_cases();
    arithmetic_cases();
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", g_dir);
    if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", g_dir);
    printf("%d checks, %d failures\n", g_checks, g_failures);
    return g_failures ? 1 : 0;
}
