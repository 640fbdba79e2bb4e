/* test_tokenizer: the SentencePiece-style BPE tokenizer against independent references.
 *
 * usage: test_tokenizer SHARED_DIR   (e.g. /work/shared)
 *   - reference/tokenizers/llama2_encode.jsonl with tokenizers/llama2/tokenizer.bin: encoding
 *     gives the reference ids (computed with llama-tokenizer-js) and decodes back to the text;
 *   - reference/stories260K/greedy.jsonl with models/tok512.bin: encoding `prompt` gives
 *     `prompt_ids`, decoding `greedy_ids` after the prompt gives `completion_text`
 *     (both computed with llama2.c);
 *   - SentencePiece normalisation cases, truncated output buffers, control and out-of-range
 *     ids, corrupt tokenizer files (in a child process, since they die);
 *   - a few thousand random strings (fixed seed) through encode and decode of both vocabularies;
 *   - the encoding speed on about 1 MiB of text.
 * Exits 0 when all pass, 1 on a mismatch (printing text, expected and got ids), 77 (SKIP)
 * when the shared directory or one of its files is absent. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tokenizer.h"
#include "util.h"

#define BOS 1
#define EOS 2

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

/* frees what tok_load_llama2c allocated (mfile_tokenizer_free lives in mfile.c, which this
 * test does not link) */
static void free_pieces(mfile_tokenizer *m) {
    free(m->bytes);
    free(m->offsets);
    free(m->scores);
}

static tokenizer *load_tokenizer(const char *path) {
    mfile_tokenizer m;
    tok_load_llama2c(&m, path);
    tokenizer *t = tok_init(&m);
    free_pieces(&m);
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
static int *encode_all(const tokenizer *t, const char *text, int bos, int *n, test_ctx *ctx) {
    int need = tok_encode(t, text, bos, NULL, 0);
    int *ids = xmalloc(((size_t)need + 1) * sizeof *ids);
    ids[need] = -12345; /* guard */
    int got = tok_encode(t, text, bos, ids, need);
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
        int got_part = tok_encode(t, text, bos, part, need - 1);
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

/* checks that text encodes to want[0..n_want) */
static void check_encode(const tokenizer *t, const char *what, const char *text, int bos,
                         const int *want, int n_want, test_ctx *ctx) {
    int n;
    int *got = encode_all(t, text, bos, &n, ctx);
    ctx->checks++;
    if (n != n_want || (n > 0 && memcmp(got, want, (size_t)n * sizeof *got) != 0)) {
        ctx->failures++;
        fprintf(stderr, "FAIL: %s: encoding differs\n", what);
        print_escaped("text", text);
        print_ids("expected", want, n_want);
        print_ids("got", got, n);
    }
    free(got);
}

/* checks that ids decode to want */
static void check_decode(const tokenizer *t, const char *what, int prev, const int *ids, int n,
                         const char *want, test_ctx *ctx) {
    char *got = tok_decode(t, prev, ids, n, BOS);
    ctx->checks++;
    if (strcmp(got, want) != 0) {
        ctx->failures++;
        fprintf(stderr, "FAIL: %s: decoding differs (prev %d)\n", what, prev);
        print_ids("ids", ids, n);
        print_escaped("expected", want);
        print_escaped("got", got);
    }
    free(got);
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
    /* control, byte and out-of-range ids */
    {
        const int ids[] = {BOS, EOS, -1, 32000, 1 << 30, 3 /* <0x00> */, 0x41 + 3, 0 /* <unk> */};
        check_decode(t, "control and out of range", -1, ids, 8, "A \xe2\x81\x87 ", ctx);
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
    free_pieces(&m);
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
        "\xef\xbf\xbd" /* U+FFFD */, "\r", "\x01", "\x7f"};
    static const char *const bad[] = {"\xe2\x96\x81" /* ▁ */, "\xff", "\xe6\x94", "\xc0\xaf",
                                      "\xed\xa0\x80", "\x80", "\xf4\x90\x80\x80"};
    const size_t n_atoms = sizeof atoms / sizeof atoms[0], n_bad = sizeof bad / sizeof bad[0];
    size_t len = 0;
    int clean = 1;
    uint64_t mode = rng_next(rng) % 3, count = rng_next(rng) % (max / 4 + 1);
    for (uint64_t i = 0; i < count; i++) {
        const char *add;
        char byte[2] = {0, 0};
        if (mode == 0) { /* raw non-NUL bytes */
            byte[0] = (char)(1 + rng_next(rng) % 255);
            add = byte;
            clean = 0;
        } else if (mode == 2 && rng_next(rng) % 8 == 0) {
            add = bad[rng_next(rng) % n_bad];
            clean = 0;
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

static void check_random(const tokenizer *t, const char *name, int count, uint64_t seed,
                         test_ctx *ctx) {
    enum { MAX_TEXT = 96 };
    char text[MAX_TEXT + 1];
    int vocab = tok_vocab_size(t);
    for (int iter = 0; iter < count; iter++) {
        int clean = random_text(&seed, text, MAX_TEXT);
        int n;
        int *ids = encode_all(t, text, BOS, &n, ctx);
        ctx->checks++;
        int bad_id = n < 1 || ids[0] != BOS || n > 3 * (int)strlen(text) + 2;
        for (int i = 0; i < n; i++) bad_id |= ids[i] < 0 || ids[i] >= vocab;
        if (bad_id) {
            ctx->failures++;
            fprintf(stderr, "FAIL: %s random %d: bad ids\n", name, iter);
            print_escaped("text", text);
            print_ids("got", ids, n);
        }
        char what[64];
        snprintf(what, sizeof what, "%s random %d", name, iter);
        char *back = tok_decode(t, BOS, ids + 1, n - 1, BOS);
        if (clean) check_decode(t, what, BOS, ids + 1, n - 1, text, ctx);
        /* normalisation is idempotent: the decoded text encodes the same */
        check_same_encoding(t, what, text, back, ctx);
        free(back);
        free(ids);

        /* random ids, in range or not, never crash decoding */
        int rid[16], rn = (int)(rng_next(&seed) % 16);
        for (int i = 0; i < rn; i++) rid[i] = (int)(rng_next(&seed) % (uint64_t)(vocab + 20)) - 10;
        int prev = (int)(rng_next(&seed) % 4) - 1;
        free(tok_decode(t, prev, rid, rn, BOS));
    }
}

/* ---- speed ---- */

static void check_speed(const tokenizer *t, const char *name, const char *sample, test_ctx *ctx) {
    size_t target = 1 << 20, sl = strlen(sample);
    char *text = xmalloc(target + sl + 1);
    size_t len = 0;
    while (len < target) {
        memcpy(text + len, sample, sl);
        len += sl;
    }
    text[len] = '\0';
    int n = tok_encode(t, text, BOS, NULL, 0);
    int *ids = xmalloc((size_t)n * sizeof *ids);
    double t0 = util_now();
    tok_encode(t, text, BOS, ids, n);
    double dt = util_now() - t0;
    printf("%s: encoded %.2f MiB into %d ids in %.3f s\n", name, len / 1048576.0, n, dt);
    t0 = util_now();
    char *back = tok_decode(t, BOS, ids + 1, n - 1, BOS);
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
    const char *rel[] = {"tokenizers/llama2/tokenizer.bin",
                         "reference/tokenizers/llama2_encode.jsonl", "models/tok512.bin",
                         "reference/stories260K/greedy.jsonl"};
    char *path[4];
    for (int i = 0; i < 4; i++) {
        path[i] = path_join(argv[1], rel[i]);
        struct stat st;
        if (stat(path[i], &st) != 0) {
            printf("SKIP: '%s' is absent\n", path[i]);
            return 77;
        }
    }
    test_ctx ctx = {0, 0};

    tokenizer *llama2 = load_tokenizer(path[0]);
    if (tok_vocab_size(llama2) != 32000) die("'%s': %d pieces, expected 32000", path[0],
                                             tok_vocab_size(llama2));
    int lines = for_each_record(path[1], llama2_record, llama2, &ctx);
    printf("llama2: %d reference lines\n", lines);
    check_edge_cases(llama2, &ctx);
    check_corrupt_files(path[2], &ctx);
    check_random(llama2, "llama2", 3000, 0x5eed1234abcdull, &ctx);
    check_speed(llama2, "llama2",
                "Once upon a time, there was a little girl named Lily. \xe9\x95\x87 caf\xc3\xa9 "
                "\xf0\x9f\xa6\x99 MPI_Allreduce(sendbuf, recvbuf);\n  12,345.67 ",
                &ctx);

    tokenizer *tok512 = load_tokenizer(path[2]);
    if (tok_vocab_size(tok512) != 512) die("'%s': %d pieces, expected 512", path[2],
                                           tok_vocab_size(tok512));
    lines = for_each_record(path[3], greedy_record, tok512, &ctx);
    printf("stories260K: %d reference lines\n", lines);
    check_random(tok512, "tok512", 3000, 0xfeedbeef42ull, &ctx);
    check_speed(tok512, "tok512", "Lily and Tom went to the park. \"Let's play!\" ", &ctx);

    tok_free(llama2);
    tok_free(tok512);
    for (int i = 0; i < 4; i++) free(path[i]);
    printf("%d checks, %d failed\n", ctx.checks, ctx.failures);
    return ctx.failures ? 1 : 0;
}
