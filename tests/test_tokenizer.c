/* test_tokenizer: the tokenizers against independent references.
 *
 * usage: test_tokenizer SHARED_DIR   (e.g. /work/shared)
 *   SentencePiece-style, Llama 2 vocabulary, from both tokenizers/llama2/tokenizer.bin
 *   (llama2.c) and tokenizers/llama2/tokenizer.model (SentencePiece protobuf):
 *     - reference/tokenizers/llama2_encode.jsonl: encoding gives the reference ids (computed
 *       with llama-tokenizer-js) and decodes back to the text;
 *     - SentencePiece normalisation cases, truncated output buffers, control and out-of-range
 *       ids, special tokens with and without TOK_ALLOW_SPECIAL;
 *     - both files encode a few thousand random strings alike;
 *   llama2.c's models/tok512.bin: reference/stories260K/greedy.jsonl (computed with llama2.c):
 *     encoding `prompt` gives `prompt_ids`, decoding `greedy_ids` gives `completion_text`;
 *     corrupt tokenizer files (in a child process, since they die);
 *   byte-level, tokenizers/llama3/tokenizer.model (tiktoken): reference/tokenizers/
 *     llama3_encode.jsonl (computed with llama3-tokenizer-js), special tokens, and
 *     decode(encode(x)) == x for random Unicode strings and random bytes;
 *   every tokenizer: random strings through encode and decode, the streaming decoder against
 *   tok_decode (never half a UTF-8 sequence), random ids never crash;
 *   the model file: a tokenizer written and read back, and one in the first layout (without
 *   the later attributes) still read;
 *   the encoding speed on about 1 MiB of text (printed; fails only when absurdly slow).
 * Exits 0 when all pass, 1 on a mismatch (printing text, expected and got ids), 77 (SKIP)
 * when the shared directory or one of its files is absent. */
#include <cjson/cJSON.h>
#include <hdf5.h>
#include <mpi.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mfile.h"
#include "tokenizer.h"
#include "util.h"

#define BOS 1 /* Llama 2 and llama2.c */
#define EOS 2
#define L3_BOS 128000

typedef struct {
    int checks;   /* checks run */
    int failures; /* checks failed */
} test_ctx;

/* ---- helpers ---- */

static char *path_join(const char *dir, const char *rel) {
    size_t n = strlen(dir) + strlen(rel) + 2;
    char *p = xmalloc(n);
    snprintf(p, n, "%s/%s", dir, rel);
    return p;
}

/* any supported file, detected from its content */
static tokenizer *load_tokenizer(const char *path) {
    mfile_tokenizer m;
    tok_load_file(&m, path);
    tokenizer *t = tok_init(&m);
    mfile_tokenizer_free(&m);
    return t;
}

static void print_ids(const char *label, const int *ids, int n) {
    fprintf(stderr, "  %s (%d):", label, n);
    for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fputc('\n', stderr);
}

/* prints s between quotes with control and non-ASCII bytes escaped */
static void print_escaped(const char *label, const char *s) {
    fprintf(stderr, "  %s: \"", label);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '\n') fputs("\\n", stderr);
        else if (*p == '"' || *p == '\\') fprintf(stderr, "\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7f) fprintf(stderr, "\\x%02x", *p);
        else fputc(*p, stderr);
    }
    fputs("\"\n", stderr);
}

/* encodes text into a malloc'd array (*n ids), checking that the count does not depend on the
 * room given and that a short buffer is never written past its end */
static int *encode_all_ex(const tokenizer *t, const char *text, int bos, unsigned flags, int *n,
                          test_ctx *ctx) {
    int need = tok_encode_ex(t, text, bos, flags, NULL, 0);
    int *ids = xmalloc(((size_t)need + 1) * sizeof *ids);
    ids[need] = -12345; /* guard */
    int got = tok_encode_ex(t, text, bos, flags, ids, need);
    ctx->checks++;
    if (got != need || ids[need] != -12345) {
        ctx->failures++;
        fprintf(stderr, "FAIL: encode count %d with room 0, %d with room %d (guard %d)\n", need,
                got, need, ids[need]);
        print_escaped("text", text);
    }
    if (need > 1) { /* one short: the same count, the prefix written, the last slot untouched */
        int *part = xmalloc((size_t)need * sizeof *part);
        part[need - 1] = -12345;
        int got_part = tok_encode_ex(t, text, bos, flags, part, need - 1);
        ctx->checks++;
        if (got_part != need || part[need - 1] != -12345 ||
            memcmp(part, ids, (size_t)(need - 1) * sizeof *ids) != 0) {
            ctx->failures++;
            fprintf(stderr, "FAIL: encode into %d slots returned %d (want %d) or wrote wrongly\n",
                    need - 1, got_part, need);
            print_escaped("text", text);
        }
        free(part);
    }
    *n = need;
    return ids;
}

static int *encode_all(const tokenizer *t, const char *text, int bos, int *n, test_ctx *ctx) {
    return encode_all_ex(t, text, bos, 0, n, ctx);
}

/* checks that text encodes to want[0..n_want) */
static void check_encode_ex(const tokenizer *t, const char *what, const char *text, int bos,
                            unsigned flags, const int *want, int n_want, test_ctx *ctx) {
    int n;
    int *got = encode_all_ex(t, text, bos, flags, &n, ctx);
    ctx->checks++;
    if (n != n_want || (n > 0 && got && want && memcmp(got, want, (size_t)n * sizeof *got) != 0)) {
        ctx->failures++;
        fprintf(stderr, "FAIL: %s: encoding differs\n", what);
        print_escaped("text", text);
        print_ids("expected", want, n_want);
        print_ids("got", got, n);
    }
    free(got);
}

static void check_encode(const tokenizer *t, const char *what, const char *text, int bos,
                         const int *want, int n_want, test_ctx *ctx) {
    check_encode_ex(t, what, text, bos, 0, want, n_want, ctx);
}

/* checks that ids decode to want (tok_decode, and the streaming decoder when want is
 * well-formed UTF-8) */
static void check_stream(const tokenizer *t, const char *what, int prev, const int *ids, int n,
                         int bos, const char *want, test_ctx *ctx);
static int utf8_valid(const char *s);
static void check_decode_bos(const tokenizer *t, const char *what, int prev, const int *ids,
                             int n, int bos, const char *want, test_ctx *ctx) {
    char *got = tok_decode(t, prev, ids, n, bos);
    ctx->checks++;
    if (strcmp(got, want) != 0) {
        ctx->failures++;
        fprintf(stderr, "FAIL: %s: decoding differs (prev %d)\n", what, prev);
        print_ids("ids", ids, n);
        print_escaped("expected", want);
        print_escaped("got", got);
    }
    free(got);
    if (utf8_valid(want)) check_stream(t, what, prev, ids, n, bos, want, ctx);
}

static void check_decode(const tokenizer *t, const char *what, int prev, const int *ids, int n,
                         const char *want, test_ctx *ctx) {
    check_decode_bos(t, what, prev, ids, n, BOS, want, ctx);
}

/* checks that a and b encode alike (SentencePiece normalises one into the other) */
static void check_same_encoding(const tokenizer *t, const char *what, const char *a,
                                const char *b, test_ctx *ctx) {
    int na, nb;
    int *ia = encode_all(t, a, BOS, &na, ctx), *ib = encode_all(t, b, BOS, &nb, ctx);
    ctx->checks++;
    if (na != nb || memcmp(ia, ib, (size_t)na * sizeof *ia) != 0) {
        ctx->failures++;
        fprintf(stderr, "FAIL: %s: encodings differ\n", what);
        print_escaped("text a", a);
        print_ids("ids a", ia, na);
        print_escaped("text b", b);
        print_ids("ids b", ib, nb);
    }
    free(ia);
    free(ib);
}

/* reads an int array from a JSON array (malloc'd, *n elements); dies on a malformed one */
static int *json_ids(const cJSON *arr, const char *path, int line, int *n) {
    if (!cJSON_IsArray(arr)) die("'%s' line %d: ids are not an array", path, line);
    *n = cJSON_GetArraySize(arr);
    int *ids = xmalloc(((size_t)*n + 1) * sizeof *ids);
    int i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, arr) {
        if (!cJSON_IsNumber(e)) die("'%s' line %d: an id is not a number", path, line);
        ids[i++] = e->valueint;
    }
    return ids;
}

static const char *json_string(const cJSON *obj, const char *key, const char *path, int line) {
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!cJSON_IsString(s)) die("'%s' line %d: no string \"%s\"", path, line, key);
    return s->valuestring;
}

/* calls fn(record, path, line, t, ctx) for each JSON line of path; returns the line count */
typedef void (*record_fn)(const cJSON *rec, const char *path, int line, const tokenizer *t,
                          test_ctx *ctx);
static int for_each_record(const char *path, record_fn fn, const tokenizer *t, test_ctx *ctx) {
    char *data = util_read_file(path, NULL);
    int line = 0;
    for (char *p = data; *p;) {
        char *end = strchr(p, '\n');
        if (end) *end = '\0';
        line++;
        if (*p) {
            cJSON *rec = cJSON_Parse(p);
            if (!rec) die("'%s' line %d: not JSON", path, line);
            fn(rec, path, line, t, ctx);
            cJSON_Delete(rec);
        }
        if (!end) break;
        p = end + 1;
    }
    free(data);
    return line;
}

/* ---- the reference files ---- */

static void llama2_record(const cJSON *rec, const char *path, int line, const tokenizer *t,
                          test_ctx *ctx) {
    const char *text = json_string(rec, "text", path, line);
    int n;
    int *want = json_ids(cJSON_GetObjectItemCaseSensitive(rec, "ids"), path, line, &n);
    /* llama-tokenizer-js returns no ids at all for "", while SentencePiece (add_bos) and
     * llama2.c give [BOS]; the stories260K reference (llama2.c) has prompt "" -> [1] */
    if (text[0] == '\0' && n == 0) want[n++] = BOS;
    char what[64];
    snprintf(what, sizeof what, "llama2 line %d", line);
    check_encode(t, what, text, BOS, want, n, ctx);
    /* decoding after BOS drops the dummy-prefix space and gives the text back */
    if (n > 0 && want[0] == BOS) check_decode(t, what, BOS, want + 1, n - 1, text, ctx);
    free(want);
}

static void greedy_record(const cJSON *rec, const char *path, int line, const tokenizer *t,
                          test_ctx *ctx) {
    const char *prompt = json_string(rec, "prompt", path, line);
    const char *completion = json_string(rec, "completion_text", path, line);
    int np, ng;
    int *prompt_ids = json_ids(cJSON_GetObjectItemCaseSensitive(rec, "prompt_ids"), path, line, &np);
    int *greedy = json_ids(cJSON_GetObjectItemCaseSensitive(rec, "greedy_ids"), path, line, &ng);
    if (np == 0) die("'%s' line %d: empty prompt_ids", path, line);
    char what[64];
    snprintf(what, sizeof what, "stories260K line %d prompt", line);
    check_encode(t, what, prompt, BOS, prompt_ids, np, ctx);
    snprintf(what, sizeof what, "stories260K line %d completion", line);
    check_decode(t, what, prompt_ids[np - 1], greedy, ng, completion, ctx);
    free(prompt_ids);
    free(greedy);
}

/* ---- hand-made cases ---- */

static void check_edge_cases(const tokenizer *t, test_ctx *ctx) {
    /* SentencePiece's normaliser: U+2581 is its space symbol, a malformed byte is U+FFFD */
    check_same_encoding(t, "U+2581 reads as a space", "a\xe2\x96\x81" "b", "a b", ctx);
    check_same_encoding(t, "a lone 0xff reads as U+FFFD", "x\xffy", "x\xef\xbf\xbdy", ctx);
    check_same_encoding(t, "truncated UTF-8 at the end", "x\xe6\x94", "x\xef\xbf\xbd\xef\xbf\xbd",
                        ctx);
    check_same_encoding(t, "overlong '/' is malformed", "\xc0\xaf", "\xef\xbf\xbd\xef\xbf\xbd", ctx);
    check_same_encoding(t, "a surrogate is malformed", "\xed\xa0\x80",
                        "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd", ctx);
    /* byte tokens are not merge results: "<0x0A>" in the text stays text */
    {
        int n;
        int *ids = encode_all(t, "<0x0A>", -1, &n, ctx);
        ctx->checks++;
        for (int i = 0; i < n; i++) {
            if (ids[i] == 13) {
                ctx->failures++;
                fprintf(stderr, "FAIL: the text \"<0x0A>\" encoded to the byte token 13\n");
                print_ids("got", ids, n);
                break;
            }
        }
        check_decode(t, "\"<0x0A>\" round trip", -1, ids, n, " <0x0A>", ctx);
        free(ids);
    }
    /* no BOS: the dummy prefix stays and decoding without BOS keeps it */
    {
        const int want[] = {29871, 15043, 3186}; /* " ", " Hello", " world" */
        check_encode(t, "no BOS", " Hello world", -1, want, 3, ctx);
        check_decode(t, "no BOS", -1, want, 3, "  Hello world", ctx);
        check_decode(t, "after BOS", BOS, want, 3, " Hello world", ctx);
        check_decode(t, "BOS inside ids", -1, (const int[]){BOS, 15043}, 2, "Hello", ctx);
    }
    check_encode(t, "empty, no BOS", "", -1, NULL, 0, ctx);
    /* equal scores: the leftmost pair merges first (SentencePiece's agenda order, and llama2.c's
     * left-to-right scan): "ooo" is "oo" (3634) + "o" (29877), not "o" + "oo" */
    {
        const int want[] = {BOS, 263, 29889, 3634, 29877}; /* " a", ".", "oo", "o" */
        check_encode(t, "tie goes to the leftmost pair", "a.ooo", BOS, want, 5, ctx);
    }
    /* control and byte ids; out-of-range ids are an error, not "" */
    {
        const int ids[] = {BOS, EOS, 3 /* <0x00> */, 0x41 + 3, 0 /* <unk> */};
        check_decode(t, "control, NUL byte and <unk>", -1, ids, 5, "A \xe2\x81\x87 ", ctx);
        const int bad[][2] = {{BOS, -1}, {BOS, 32000}, {1 << 30, BOS}, {INT32_MIN, 0}};
        for (int k = 0; k < 4; k++) {
            char *got = tok_decode(t, -1, bad[k], 2, BOS);
            int at = tok_first_bad_id(t, bad[k], 2);
            tok_decoder d;
            tok_decoder_init(&d, t, -1, BOS, 0);
            size_t l = 99;
            const char *pushed = tok_decoder_push(&d, bad[k][at < 0 ? 0 : at], &l);
            tok_decoder_free(&d);
            ctx->checks++;
            if (got || at != (bad[k][0] == BOS ? 1 : 0) || pushed || l != 0) {
                ctx->failures++;
                fprintf(stderr, "FAIL: out-of-range id %d: decode gave %s, first bad %d, push %s\n",
                        bad[k][at < 0 ? 0 : at], got ? "text" : "NULL", at, pushed ? "text" : "NULL");
            }
            free(got);
        }
        /* a byte sequence split over tokens is reassembled; a cut one is kept as is */
        const int llama[] = {243, 162, 169, 156, 243, 162};
        check_decode(t, "byte tokens", BOS, llama, 6, "\xf0\x9f\xa6\x99\xf0\x9f", ctx);
        check_decode(t, "no ids", BOS, NULL, 0, "", ctx);
    }
}

/* runs fn in a child process and checks that it dies (a non-zero exit) with a message
 * containing want on stderr */
static void check_dies(const char *what, void (*fn)(const char *), const char *arg,
                       const char *want, test_ctx *ctx) {
    int pipefd[2];
    if (pipe(pipefd) != 0) die_errno("pipe");
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) die_errno("fork");
    if (pid == 0) {
        close(pipefd[0]);
        dup2(pipefd[1], 2);
        fn(arg);
        _exit(0); /* did not die */
    }
    close(pipefd[1]);
    char msg[1024];
    size_t len = 0;
    ssize_t r;
    while ((r = read(pipefd[0], msg + len, sizeof msg - 1 - len)) > 0) len += (size_t)r;
    msg[len] = '\0';
    close(pipefd[0]);
    int status;
    if (waitpid(pid, &status, 0) != pid) die_errno("waitpid");
    ctx->checks++;
    /* die() exits 1; a leak checker in the child may turn that into its own non-zero code */
    if (!WIFEXITED(status) || WEXITSTATUS(status) == 0 || !strstr(msg, want)) {
        ctx->failures++;
        fprintf(stderr, "FAIL: %s: expected an exit with a message naming '%s'; got status %d, "
                        "message: %s\n", what, want, status, msg);
    }
}

static void load_and_free(const char *path) {
    mfile_tokenizer m;
    tok_load_llama2c(&m, path);
    mfile_tokenizer_free(&m);
}

/* writes the first len bytes of data (plus extra, if any) to a fresh temporary file */
static char *write_temp(const char *data, size_t len, const char *extra, size_t extra_len) {
    const char *dir = getenv("TMPDIR");
    char *path = path_join(dir && *dir ? dir : "/tmp", "test_tokenizer_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) die_errno("cannot create '%s'", path);
    FILE *f = fdopen(fd, "wb");
    if (!f || fwrite(data, 1, len, f) != len || fwrite(extra, 1, extra_len, f) != extra_len ||
        fclose(f) != 0)
        die_errno("cannot write '%s'", path);
    return path;
}

static void check_corrupt_files(const char *tok_path, test_ctx *ctx) {
    size_t size;
    char *data = util_read_file(tok_path, &size);
    struct {
        const char *what;
        size_t keep;        /* bytes of the real file kept */
        const char *extra;  /* bytes appended */
        size_t extra_len;
    } cases[] = {
        {"truncated piece bytes", size - 1, "", 0},
        {"truncated record header", size, "\0\0\0\0\1", 5},
        {"piece longer than the file", size, "\0\0\0\0\x10\0\0\0ab", 10},
        {"negative piece length", size, "\0\0\0\0\xff\xff\xff\xff", 8},
        {"header only", 4, "", 0},
        {"shorter than the header", 3, "", 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *path = write_temp(data, cases[i].keep, cases[i].extra, cases[i].extra_len);
        check_dies(cases[i].what, load_and_free, path, path, ctx);
        unlink(path);
        free(path);
    }
    free(data);
    check_dies("missing file", load_and_free, "/nonexistent/tokenizer.bin",
               "/nonexistent/tokenizer.bin", ctx);
}

/* ---- special tokens ---- */

static void check_llama2_specials(const tokenizer *t, test_ctx *ctx) {
    ctx->checks++;
    if (tok_special_id(t, "<s>") != BOS || tok_special_id(t, "</s>") != EOS ||
        tok_special_id(t, "<unk>") != 0 || tok_special_id(t, "[INST]") != -1 ||
        tok_bos_id(t) != BOS || tok_eos_id(t) != EOS) {
        ctx->failures++;
        fprintf(stderr, "FAIL: llama2 special ids: <s> %d, </s> %d, <unk> %d, bos %d, eos %d\n",
                tok_special_id(t, "<s>"), tok_special_id(t, "</s>"), tok_special_id(t, "<unk>"),
                tok_bos_id(t), tok_eos_id(t));
    }
    /* Meta's Llama 2 chat prompt: [BOS] then "[INST]" with its dummy prefix */
    const int inst[] = {BOS, 518, 25580, 29962}; /* <s> ▁[ INST ] */
    check_encode_ex(t, "<s> allowed", "<s>[INST]", -1, TOK_ALLOW_SPECIAL, inst, 4, ctx);
    /* each run of text between special tokens gets its own dummy prefix */
    int na, nb;
    int *a = encode_all(t, "a", -1, &na, ctx), *b = encode_all(t, "b", -1, &nb, ctx);
    int want[16], nw = 0;
    for (int i = 0; i < na; i++) want[nw++] = a[i];
    want[nw++] = EOS;
    for (int i = 0; i < nb; i++) want[nw++] = b[i];
    check_encode_ex(t, "</s> between runs", "a</s>b", -1, TOK_ALLOW_SPECIAL, want, nw, ctx);
    free(a);
    free(b);
    /* not allowed: "<s>" is text, and decodes back as text */
    int n;
    int *ids = encode_all(t, "<s>", BOS, &n, ctx);
    ctx->checks++;
    for (int i = 1; i < n; i++)
        if (ids[i] == BOS) {
            ctx->failures++;
            fprintf(stderr, "FAIL: \"<s>\" encoded to BOS without TOK_ALLOW_SPECIAL\n");
            break;
        }
    check_decode(t, "\"<s>\" as text", BOS, ids + 1, n - 1, "<s>", ctx);
    free(ids);
}

static void check_llama3_specials(const tokenizer *t, test_ctx *ctx) {
    static const struct {
        const char *text;
        int id;
    } named[] = {{"<|begin_of_text|>", 128000}, {"<|end_of_text|>", 128001},
                 {"<|reserved_special_token_0|>", 128002}, {"<|reserved_special_token_1|>", 128003},
                 {"<|finetune_right_pad_id|>", 128004}, {"<|reserved_special_token_2|>", 128005},
                 {"<|start_header_id|>", 128006}, {"<|end_header_id|>", 128007},
                 {"<|eom_id|>", 128008}, {"<|eot_id|>", 128009}, {"<|python_tag|>", 128010},
                 {"<|reserved_special_token_3|>", 128011},
                 {"<|reserved_special_token_247|>", 128255}, {"<|image|>", -1}};
    for (size_t i = 0; i < sizeof named / sizeof named[0]; i++) {
        ctx->checks++;
        if (tok_special_id(t, named[i].text) != named[i].id) {
            ctx->failures++;
            fprintf(stderr, "FAIL: llama3 %s is %d, expected %d\n", named[i].text,
                    tok_special_id(t, named[i].text), named[i].id);
        }
    }
    ctx->checks++;
    if (tok_vocab_size(t) != 128256 || tok_bos_id(t) != 128000 || tok_eos_id(t) != 128001 ||
        strcmp(tok_type(t), "byte-bpe") != 0 || strcmp(tok_chat_template(t), "llama3") != 0) {
        ctx->failures++;
        fprintf(stderr, "FAIL: llama3: vocab %d, bos %d, eos %d, type %s, chat template '%s'\n",
                tok_vocab_size(t), tok_bos_id(t), tok_eos_id(t), tok_type(t), tok_chat_template(t));
    }
    /* the header of Meta's chat format: "user" is 882, "\n\n" is 271, "Hello" 9906 */
    const int chat[] = {128000, 128006, 882, 128007, 271, 9906, 128009};
    check_encode_ex(t, "llama3 header", "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>",
                    -1, TOK_ALLOW_SPECIAL, chat, 7, ctx);
    /* not allowed: ordinary text, given back by decoding */
    int n;
    int *ids = encode_all(t, "<|eot_id|>", -1, &n, ctx);
    ctx->checks++;
    for (int i = 0; i < n; i++)
        if (ids[i] >= 128000) {
            ctx->failures++;
            fprintf(stderr, "FAIL: \"<|eot_id|>\" encoded to special %d without TOK_ALLOW_SPECIAL\n", ids[i]);
            break;
        }
    check_decode_bos(t, "\"<|eot_id|>\" as text", -1, ids, n, L3_BOS, "<|eot_id|>", ctx);
    free(ids);
    /* specials decode to "" unless asked for */
    check_decode_bos(t, "llama3 specials dropped", -1, chat, 7, L3_BOS, "user\n\nHello", ctx);
    /* byte-level is lossless, malformed UTF-8 included */
    const char *raw = "x\xffy\xe6\x94 \xc0\xaf\xed\xa0\x80z";
    ids = encode_all(t, raw, L3_BOS, &n, ctx);
    char *back = tok_decode(t, L3_BOS, ids + 1, n - 1, L3_BOS);
    ctx->checks++;
    if (strcmp(back, raw) != 0) {
        ctx->failures++;
        fprintf(stderr, "FAIL: llama3: malformed UTF-8 did not round-trip\n");
        print_escaped("expected", raw);
        print_escaped("got", back);
    }
    free(back);
    free(ids);
}

/* ---- streaming decoding ---- */

/* 1 when s is well-formed UTF-8 */
static int utf8_valid(const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        int len = *p < 0x80 ? 1 : *p >= 0xc2 && *p <= 0xdf ? 2 : *p >= 0xe0 && *p <= 0xef ? 3
                : *p >= 0xf0 && *p <= 0xf4 ? 4 : 0;
        if (!len) return 0;
        uint32_t cp = len == 1 ? *p : *p & (0x7f >> len);
        for (int i = 1; i < len; i++) {
            if ((p[i] & 0xc0) != 0x80) return 0;
            cp = cp << 6 | (p[i] & 0x3f);
        }
        if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000))) ||
            (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
            return 0;
        p += len;
    }
    return 1;
}

/* the streaming decoder's whole output for ids (malloc'd); *bad set when a piece it returned
 * was not well-formed UTF-8 on its own */
static char *stream_decode(const tokenizer *t, int prev, const int *ids, int n, int bos,
                           unsigned flags, int *bad) {
    tok_decoder d;
    tok_decoder_init(&d, t, prev, bos, flags);
    size_t len = 0, cap = 64, l;
    char *out = xmalloc(cap);
    *bad = 0;
    for (int i = 0; i <= n; i++) {
        const char *s = i < n ? tok_decoder_push(&d, ids[i], &l) : tok_decoder_flush(&d, &l);
        int in_range = i == n || (ids[i] >= 0 && ids[i] < tok_vocab_size(t));
        if (!s) { /* an out-of-range id: an error, the decoder unchanged */
            if (in_range || l != 0) *bad = 1;
            continue;
        }
        if (!in_range || strlen(s) != l || !utf8_valid(s)) *bad = 1;
        if (len + l + 1 > cap) out = xrealloc(out, cap = 2 * (len + l + 1));
        memcpy(out + len, s, l);
        len += l;
    }
    out[len] = '\0';
    tok_decoder_free(&d);
    return out;
}

static void check_stream(const tokenizer *t, const char *what, int prev, const int *ids, int n,
                         int bos, const char *want, test_ctx *ctx) {
    int bad;
    char *got = stream_decode(t, prev, ids, n, bos, 0, &bad);
    ctx->checks++;
    if (bad || strcmp(got, want) != 0) {
        ctx->failures++;
        fprintf(stderr, "FAIL: %s: streaming decoding differs%s\n", what,
                bad ? " (returned a piece that is not whole UTF-8)" : "");
        print_ids("ids", ids, n);
        print_escaped("expected", want);
        print_escaped("got", got);
    }
    free(got);
}

static void check_stream_cases(const tokenizer *llama3, const tokenizer *llama2, test_ctx *ctx) {
    /* 🦙 is three byte-level tokens: nothing comes out until the last */
    const int llama[] = {9468, 99, 247};
    tok_decoder d;
    tok_decoder_init(&d, llama3, -1, L3_BOS, 0);
    size_t l0, l1, l2;
    tok_decoder_push(&d, llama[0], &l0);
    tok_decoder_push(&d, llama[1], &l1);
    const char *s = tok_decoder_push(&d, llama[2], &l2);
    ctx->checks++;
    if (l0 != 0 || l1 != 0 || l2 != 4 || memcmp(s, "\xf0\x9f\xa6\x99", 4) != 0) {
        ctx->failures++;
        fprintf(stderr, "FAIL: streaming 🦙: pieces of %zu, %zu, %zu bytes\n", l0, l1, l2);
    }
    tok_decoder_free(&d);
    /* cut short: one U+FFFD for the incomplete sequence; a lone byte: one U+FFFD */
    int bad;
    char *got = stream_decode(llama3, -1, llama, 2, L3_BOS, 0, &bad);
    ctx->checks++;
    if (bad || strcmp(got, "\xef\xbf\xbd") != 0) {
        ctx->failures++;
        fprintf(stderr, "FAIL: streaming a cut 🦙 gave something else than one U+FFFD\n");
        print_escaped("got", got);
    }
    free(got);
    /* Llama 2 byte tokens: 🦙 then a cut one, after BOS */
    const int bytes[] = {243, 162, 169, 156, 243, 162, 15043};
    got = stream_decode(llama2, BOS, bytes, 7, BOS, 0, &bad);
    ctx->checks++;
    if (bad || strcmp(got, "\xf0\x9f\xa6\x99\xef\xbf\xbd Hello") != 0) {
        ctx->failures++;
        fprintf(stderr, "FAIL: streaming Llama 2 byte tokens\n");
        print_escaped("got", got);
    }
    free(got);
    /* TOK_DECODE_SPECIAL writes control tokens out; the space after BOS still goes */
    const int special[] = {BOS, 15043, EOS};
    got = stream_decode(llama2, -1, special, 3, BOS, TOK_DECODE_SPECIAL, &bad);
    ctx->checks++;
    if (bad || strcmp(got, "<s>Hello</s>") != 0) {
        ctx->failures++;
        fprintf(stderr, "FAIL: streaming with TOK_DECODE_SPECIAL\n");
        print_escaped("got", got);
    }
    free(got);
}

/* ---- random strings ---- */

static uint64_t rng_next(uint64_t *s) { /* xorshift64* */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ull;
}

/* fills buf (room for max + 1 bytes) with a random string; returns 1 when it is, by
 * construction, well-formed UTF-8 without U+2581 (so that decoding must give it back) */
static int random_text(uint64_t *rng, char *buf, size_t max) {
    /* pieces that exercise merges, byte fallback and the normaliser */
    static const char *const atoms[] = {
        " ", "  ", "\n", "\t", "the", " the", "a", "e", "lo", "Hello", " world", "ing", "0", "7",
        ".", ",", "'", "\"", "<", "0x", ">", "\xc3\xa9" /* é */, "\xe9\x95\x87" /* 镇 */,
        "\xf0\x9f\xa6\x99" /* 🦙 */, "\xea\x99\x8a" /* Ꙋ */, "\xe2\x80\x94" /* — */,
        "\xef\xbf\xbd" /* U+FFFD */, "\r", "\x01", "\x7f", "'s", "'LL", "<s>", "<|eot_id|>",
        "123456", "\xc2\xa0" /* NBSP */, "\xe3\x80\x80" /* ideographic space */};
    static const char *const bad[] = {"\xe2\x96\x81" /* ▁ */, "\xff", "\xe6\x94", "\xc0\xaf",
                                      "\xed\xa0\x80", "\x80", "\xf4\x90\x80\x80"};
    const size_t n_atoms = sizeof atoms / sizeof atoms[0], n_bad = sizeof bad / sizeof bad[0];
    size_t len = 0;
    int clean = 1;
    uint64_t mode = rng_next(rng) % 4, count = rng_next(rng) % (max / 4 + 1);
    for (uint64_t i = 0; i < count; i++) {
        const char *add;
        char one[5] = {0};
        if (mode == 0) { /* raw non-NUL bytes */
            one[0] = (char)(1 + rng_next(rng) % 255);
            add = one;
            clean = 0;
        } else if (mode == 2 && rng_next(rng) % 8 == 0) {
            add = bad[rng_next(rng) % n_bad];
            clean = 0;
        } else if (mode == 3) { /* any code point but NUL, surrogates and U+2581 */
            uint32_t cp;
            uint64_t r = rng_next(rng);
            switch (r % 4) {
            case 0: cp = 1 + (uint32_t)(r >> 8) % 0x7f; break;
            case 1: cp = 0x80 + (uint32_t)(r >> 8) % 0x780; break;
            case 2: cp = 0x800 + (uint32_t)(r >> 8) % 0xf800; break;
            default: cp = 0x10000 + (uint32_t)(r >> 8) % 0x100000; break;
            }
            if ((cp >= 0xd800 && cp < 0xe000) || cp == 0x2581) cp = 'x';
            if (cp < 0x80) one[0] = (char)cp;
            else if (cp < 0x800) one[0] = (char)(0xc0 | cp >> 6), one[1] = (char)(0x80 | (cp & 0x3f));
            else if (cp < 0x10000)
                one[0] = (char)(0xe0 | cp >> 12), one[1] = (char)(0x80 | ((cp >> 6) & 0x3f)),
                one[2] = (char)(0x80 | (cp & 0x3f));
            else
                one[0] = (char)(0xf0 | cp >> 18), one[1] = (char)(0x80 | ((cp >> 12) & 0x3f)),
                one[2] = (char)(0x80 | ((cp >> 6) & 0x3f)), one[3] = (char)(0x80 | (cp & 0x3f));
            add = one;
        } else {
            add = atoms[rng_next(rng) % n_atoms];
        }
        size_t l = strlen(add);
        if (len + l > max) break;
        memcpy(buf + len, add, l);
        len += l;
    }
    buf[len] = '\0';
    return clean;
}

/* random strings through encode and decode. byte_level: decoding gives back any text;
 * otherwise text that random_text calls clean, and the normalisation is idempotent. */
static void check_random(const tokenizer *t, const char *name, int count, uint64_t seed, int bos,
                         int byte_level, test_ctx *ctx) {
    enum { MAX_TEXT = 96 };
    char text[MAX_TEXT + 1];
    int vocab = tok_vocab_size(t);
    for (int iter = 0; iter < count; iter++) {
        int clean = random_text(&seed, text, MAX_TEXT) || byte_level;
        unsigned flags = iter % 3 == 0 ? TOK_ALLOW_SPECIAL : 0;
        int n;
        int *ids = encode_all_ex(t, text, bos, flags, &n, ctx);
        ctx->checks++;
        int bad_id = n < 1 || ids[0] != bos || n > 3 * (int)strlen(text) + 2;
        for (int i = 0; i < n; i++) bad_id |= ids[i] < 0 || ids[i] >= vocab;
        if (bad_id) {
            ctx->failures++;
            fprintf(stderr, "FAIL: %s random %d: bad ids\n", name, iter);
            print_escaped("text", text);
            print_ids("got", ids, n);
        }
        char what[64];
        snprintf(what, sizeof what, "%s random %d", name, iter);
        char *back = tok_decode(t, bos, ids + 1, n - 1, bos);
        if (clean && !flags) check_decode_bos(t, what, bos, ids + 1, n - 1, bos, text, ctx);
        /* the streaming decoder: whole UTF-8 pieces, the same text when that is whole UTF-8 */
        if (utf8_valid(back)) {
            check_stream(t, what, bos, ids + 1, n - 1, bos, back, ctx);
        } else {
            int bad;
            free(stream_decode(t, bos, ids + 1, n - 1, bos, 0, &bad));
            ctx->checks++;
            if (bad) {
                ctx->failures++;
                fprintf(stderr, "FAIL: %s: streaming returned a piece that is not whole UTF-8\n", what);
            }
        }
        /* normalisation is idempotent: the decoded text encodes the same */
        if (!byte_level && !flags) check_same_encoding(t, what, text, back, ctx);
        free(back);
        free(ids);

        /* random ids, in range or not, never crash decoding; streaming stays whole UTF-8 */
        int rid[16], rn = (int)(rng_next(&seed) % 16);
        for (int i = 0; i < rn; i++) rid[i] = (int)(rng_next(&seed) % (uint64_t)(vocab + 20)) - 10;
        int prev = (int)(rng_next(&seed) % 4) - 1, bad;
        char *whole = tok_decode(t, prev, rid, rn, bos);
        int out_of_range = tok_first_bad_id(t, rid, rn) >= 0, failed = whole == NULL;
        free(whole);
        free(stream_decode(t, prev, rid, rn, bos, TOK_DECODE_SPECIAL, &bad));
        ctx->checks++;
        if (failed != out_of_range) {
            ctx->failures++;
            fprintf(stderr, "FAIL: %s: random ids: decode %s although %s id is out of range\n", name,
                    failed ? "failed" : "gave text", out_of_range ? "an" : "no");
        }
        ctx->checks++;
        if (bad) {
            ctx->failures++;
            fprintf(stderr, "FAIL: %s: streaming random ids returned a piece that is not whole UTF-8\n", name);
            print_ids("ids", rid, rn);
        }
    }
}

/* two loaders of the same vocabulary encode alike */
static void check_same_tokenizers(const tokenizer *a, const tokenizer *b, const char *name,
                                  int count, uint64_t seed, test_ctx *ctx) {
    enum { MAX_TEXT = 96 };
    char text[MAX_TEXT + 1];
    for (int iter = 0; iter < count; iter++) {
        random_text(&seed, text, MAX_TEXT);
        int na, nb;
        int *ia = encode_all(a, text, BOS, &na, ctx), *ib = encode_all(b, text, BOS, &nb, ctx);
        ctx->checks++;
        if (na != nb || memcmp(ia, ib, (size_t)na * sizeof *ia) != 0) {
            ctx->failures++;
            fprintf(stderr, "FAIL: %s: the two files encode differently\n", name);
            print_escaped("text", text);
            print_ids("first", ia, na);
            print_ids("second", ib, nb);
        }
        free(ia);
        free(ib);
    }
}

/* ---- the reference for byte-level ---- */

static void llama3_record(const cJSON *rec, const char *path, int line, const tokenizer *t,
                          test_ctx *ctx) {
    const char *text = json_string(rec, "text", path, line);
    int n;
    int *want = json_ids(cJSON_GetObjectItemCaseSensitive(rec, "ids"), path, line, &n);
    char what[64];
    snprintf(what, sizeof what, "llama3 line %d", line);
    check_encode(t, what, text, L3_BOS, want, n, ctx);
    if (n > 0 && want[0] == L3_BOS)
        check_decode_bos(t, what, L3_BOS, want + 1, n - 1, L3_BOS, text, ctx);
    free(want);
}

/* ---- the model file ---- */

static void check_stored(const mfile_tokenizer *a, const mfile_tokenizer *b, const char *what,
                         test_ctx *ctx) {
    int same = !strcmp(a->type, b->type) && a->n == b->n &&
               a->max_token_length == b->max_token_length && a->bos_id == b->bos_id &&
               a->eos_id == b->eos_id && a->add_dummy_prefix == b->add_dummy_prefix &&
               a->remove_extra_whitespaces == b->remove_extra_whitespaces &&
               a->ignore_merges == b->ignore_merges && a->n_merges == b->n_merges &&
               !strcmp(a->chat_template, b->chat_template) &&
               !memcmp(a->offsets, b->offsets, ((size_t)a->n + 1) * sizeof *a->offsets) &&
               !memcmp(a->bytes, b->bytes, (size_t)a->offsets[a->n]) &&
               !memcmp(a->scores, b->scores, (size_t)a->n * sizeof *a->scores) &&
               !a->kinds == !b->kinds && (!a->kinds || !memcmp(a->kinds, b->kinds, (size_t)a->n)) &&
               !a->pattern == !b->pattern && (!a->pattern || !strcmp(a->pattern, b->pattern)) &&
               (a->n_merges == 0 || !memcmp(a->merges, b->merges, (size_t)a->n_merges * 2 * sizeof *a->merges));
    ctx->checks++;
    if (!same) {
        ctx->failures++;
        fprintf(stderr, "FAIL: %s: the tokenizer read back differs from the one written\n", what);
    }
}

/* writes m into a fresh model file; with first_layout, strips what the first layout lacked */
static char *write_model_file(const mfile_tokenizer *m, int first_layout) {
    const char *dir = getenv("TMPDIR");
    char *path = path_join(dir && *dir ? dir : "/tmp", "test_tokenizer_XXXXXX");
    int fd = mkstemp(path);
    if (fd < 0) die_errno("cannot create '%s'", path);
    close(fd);
    model_config cfg;
    config_init_defaults(&cfg);
    cfg.vocab_size = m->n;
    mfile_writer *w = mfile_create(path, &cfg);
    mfile_write_tokenizer(w, m);
    mfile_close_writer(w);
    if (first_layout) { /* serial HDF5: no MPI needed */
        hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
        hid_t g = H5Gopen2(f, "tokenizer", H5P_DEFAULT);
        const char *later[] = {"bos_id", "eos_id", "add_dummy_prefix", "remove_extra_whitespaces",
                               "ignore_merges", "pattern", "chat_template"};
        for (size_t i = 0; i < sizeof later / sizeof later[0]; i++)
            if (H5Aexists(g, later[i]) > 0) H5Adelete(g, later[i]);
        if (H5Lexists(g, "kinds", H5P_DEFAULT) > 0) H5Ldelete(g, "kinds", H5P_DEFAULT);
        H5Gclose(g);
        H5Fclose(f);
    }
    return path;
}

static int read_model_file(const char *path, mfile_tokenizer *out) {
    mfile *f = mfile_open(path, MPI_COMM_SELF);
    int has = mfile_read_tokenizer(f, out);
    mfile_close(f);
    return has;
}

static void check_model_file(const char *llama3_path, const char *tok512_path,
                             const char *greedy_path, test_ctx *ctx) {
    /* byte-level, every later field set */
    mfile_tokenizer m, back;
    tok_load_file(&m, llama3_path);
    char *path = write_model_file(&m, 0);
    ctx->checks++;
    if (!read_model_file(path, &back)) {
        ctx->failures++;
        fprintf(stderr, "FAIL: no tokenizer read back from '%s'\n", path);
    } else {
        check_stored(&m, &back, "llama3 in the model file", ctx);
        tokenizer *t = tok_init(&back);
        const int want[] = {L3_BOS, 9906, 1917};
        check_encode(t, "llama3 from the model file", "Hello world", L3_BOS, want, 3, ctx);
        tok_free(t);
        mfile_tokenizer_free(&back);
    }
    unlink(path);
    free(path);
    mfile_tokenizer_free(&m);

    /* llama2.c pieces in the first layout: the defaults fill in */
    tok_load_llama2c(&m, tok512_path);
    path = write_model_file(&m, 1);
    ctx->checks++;
    if (!read_model_file(path, &back) || back.bos_id != -1 || back.eos_id != -1 ||
        back.add_dummy_prefix != 1 || back.kinds || back.pattern || back.chat_template[0]) {
        ctx->failures++;
        fprintf(stderr, "FAIL: a first-layout tokenizer did not read with the defaults\n");
    } else {
        tokenizer *t = tok_init(&back);
        ctx->checks++;
        if (tok_bos_id(t) != BOS || tok_eos_id(t) != EOS) {
            ctx->failures++;
            fprintf(stderr, "FAIL: first layout: bos %d eos %d, expected 1 and 2\n", tok_bos_id(t),
                    tok_eos_id(t));
        }
        int lines = for_each_record(greedy_path, greedy_record, t, ctx);
        printf("first-layout model file: %d reference lines\n", lines);
        tok_free(t);
        mfile_tokenizer_free(&back);
    }
    unlink(path);
    free(path);
    mfile_tokenizer_free(&m);
}

/* ---- speed ---- */

static void check_speed(const tokenizer *t, const char *name, const char *sample, int bos,
                        test_ctx *ctx) {
    size_t target = 1 << 20, sl = strlen(sample);
    char *text = xmalloc(target + sl + 1);
    size_t len = 0;
    while (len < target) {
        memcpy(text + len, sample, sl);
        len += sl;
    }
    text[len] = '\0';
    int n = tok_encode(t, text, bos, NULL, 0);
    int *ids = xmalloc((size_t)n * sizeof *ids);
    double t0 = util_now();
    tok_encode(t, text, bos, ids, n);
    double dt = util_now() - t0;
    printf("%s: encoded %.2f MiB into %d ids in %.3f s (%.1f MB/s)\n", name, len / 1048576.0, n,
           dt, len / 1e6 / dt);
    t0 = util_now();
    char *back = tok_decode(t, bos, ids + 1, n - 1, bos);
    printf("%s: decoded them in %.3f s\n", name, util_now() - t0);
    ctx->checks++;
    /* generous: catches quadratic behaviour, not a slow machine */
    if (dt > 5.0 || strcmp(back, text) != 0) {
        ctx->failures++;
        fprintf(stderr, "FAIL: %s: 1 MiB took %.3f s or did not round-trip\n", name, dt);
    }
    free(back);
    free(ids);
    free(text);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        printf("SKIP: no shared directory given (usage: %s SHARED_DIR)\n", argv[0]);
        return 77;
    }
    enum { LLAMA2_BIN, LLAMA2_REF, TOK512, GREEDY, LLAMA2_MODEL, LLAMA3_MODEL, LLAMA3_REF, N_PATHS };
    const char *rel[N_PATHS] = {"tokenizers/llama2/tokenizer.bin",
                                "reference/tokenizers/llama2_encode.jsonl", "models/tok512.bin",
                                "reference/stories260K/greedy.jsonl",
                                "tokenizers/llama2/tokenizer.model",
                                "tokenizers/llama3/tokenizer.model",
                                "reference/tokenizers/llama3_encode.jsonl"};
    char *path[N_PATHS];
    for (int i = 0; i < N_PATHS; i++) {
        path[i] = path_join(argv[1], rel[i]);
        struct stat st;
        if (stat(path[i], &st) != 0) {
            printf("SKIP: '%s' is absent\n", path[i]);
            return 77;
        }
    }
    test_ctx ctx = {0, 0};
    const char *english =
        "Once upon a time, there was a little girl named Lily. \xe9\x95\x87 caf\xc3\xa9 "
        "\xf0\x9f\xa6\x99 MPI_Allreduce(sendbuf, recvbuf);\n  12,345.67 ";

    /* Llama 2 from llama2.c's file and from SentencePiece's */
    tokenizer *llama2 = load_tokenizer(path[LLAMA2_BIN]);
    tokenizer *llama2_sp = load_tokenizer(path[LLAMA2_MODEL]);
    const tokenizer *llama2s[2] = {llama2, llama2_sp};
    const char *names[2] = {"llama2 tokenizer.bin", "llama2 tokenizer.model"};
    for (int k = 0; k < 2; k++) {
        const tokenizer *t = llama2s[k];
        if (tok_vocab_size(t) != 32000)
            die("'%s': %d pieces, expected 32000", names[k], tok_vocab_size(t));
        int lines = for_each_record(path[LLAMA2_REF], llama2_record, t, &ctx);
        printf("%s: %d reference lines\n", names[k], lines);
        check_edge_cases(t, &ctx);
        check_llama2_specials(t, &ctx);
        check_random(t, names[k], 3000, 0x5eed1234abcdull + (uint64_t)k, BOS, 0, &ctx);
        check_speed(t, names[k], english, BOS, &ctx);
    }
    ctx.checks++;
    if (strcmp(tok_type(llama2), "llama2c-bpe") || strcmp(tok_type(llama2_sp), "sentencepiece-bpe")) {
        ctx.failures++;
        fprintf(stderr, "FAIL: types %s and %s\n", tok_type(llama2), tok_type(llama2_sp));
    }
    check_same_tokenizers(llama2, llama2_sp, "llama2 .bin vs .model", 3000, 0xabcdef12345ull, &ctx);
    check_corrupt_files(path[TOK512], &ctx);

    /* llama2.c's 512-piece vocabulary */
    tokenizer *tok512 = load_tokenizer(path[TOK512]);
    if (tok_vocab_size(tok512) != 512) die("'%s': %d pieces, expected 512", path[TOK512],
                                           tok_vocab_size(tok512));
    int lines = for_each_record(path[GREEDY], greedy_record, tok512, &ctx);
    printf("stories260K: %d reference lines\n", lines);
    check_random(tok512, "tok512", 3000, 0xfeedbeef42ull, BOS, 0, &ctx);
    check_speed(tok512, "tok512", "Lily and Tom went to the park. \"Let's play!\" ", BOS, &ctx);

    /* Llama 3, byte-level */
    tokenizer *llama3 = load_tokenizer(path[LLAMA3_MODEL]);
    lines = for_each_record(path[LLAMA3_REF], llama3_record, llama3, &ctx);
    printf("llama3: %d reference lines\n", lines);
    check_llama3_specials(llama3, &ctx);
    check_stream_cases(llama3, llama2, &ctx);
    check_random(llama3, "llama3", 3000, 0x1a3a3a3ull, L3_BOS, 1, &ctx);
    check_speed(llama3, "llama3", english, L3_BOS, &ctx);

    /* after the forks of check_corrupt_files: the model file is read through MPI-IO */
    MPI_Init(&argc, &argv);
    check_model_file(path[LLAMA3_MODEL], path[TOK512], path[GREEDY], &ctx);

    tok_free(llama2);
    tok_free(llama2_sp);
    tok_free(tok512);
    tok_free(llama3);
    for (int i = 0; i < N_PATHS; i++) free(path[i]);
    printf("%d checks, %d failed\n", ctx.checks, ctx.failures);
    MPI_Finalize();
    return ctx.failures ? 1 : 0;
}
