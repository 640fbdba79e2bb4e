/* tokenize_cmd: `mpillama tokenize`. One JSON object per input line; the output line is the
 * same object with "ids" (or, with --decode, "text") added, in input order. A line that cannot
 * be handled gets "error" instead and the command exits 1 at the end; blank lines are kept
 * blank. --bench FILE times encoding and decoding of a file and prints MB/s. */
#include "tokenize_cmd.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chat.h"
#include "dist.h"
#include "jsonstrict.h"
#include "mfile.h"
#include "tokenizer.h"
#include "util.h"

typedef struct {
    const char *model, *tokenizer, *chat_template, *bench;
    int no_bos, decode, allow_special;
} tokenize_opts;

static void usage(FILE *out) {
    fprintf(out,
            "usage: mpillama tokenize (--model M.h5 | --tokenizer FILE) [options] <IN.jsonl >OUT.jsonl\n"
            "  --model M.h5          the tokenizer stored in a model file\n"
            "  --tokenizer FILE      a tokenizer file: llama2.c tokenizer.bin, SentencePiece or\n"
            "                        tiktoken tokenizer.model, Hugging Face tokenizer.json, or a\n"
            "                        Hugging Face model directory\n"
            "  --no-bos              do not add BOS\n"
            "  --allow-special       special tokens written in the text (\"<|eot_id|>\") become their\n"
            "                        ids; with --decode they are written out as text\n"
            "  --decode              lines give \"ids\"; \"text\" is added\n"
            "  --chat-template NAME  llama2, llama3 or chatml for lines with \"messages\" (default:\n"
            "                        the tokenizer's)\n"
            "  --bench FILE          time encoding and decoding FILE, print MB/s, read no stdin\n"
            "input lines: {\"text\": \"...\"}, {\"messages\": [{\"role\": ..., \"content\": ...}]} or\n"
            "  with --decode {\"ids\": [...]}; other fields are copied through\n");
}

static int parse_opts(int argc, char **argv, tokenize_opts *o) {
    enum { OPT_NO_BOS = 1000, OPT_DECODE, OPT_SPECIAL, OPT_CHAT, OPT_BENCH };
    static const struct option opts[] = {{"model", required_argument, 0, 'm'},
                                         {"tokenizer", required_argument, 0, 't'},
                                         {"no-bos", no_argument, 0, OPT_NO_BOS},
                                         {"decode", no_argument, 0, OPT_DECODE},
                                         {"allow-special", no_argument, 0, OPT_SPECIAL},
                                         {"chat-template", required_argument, 0, OPT_CHAT},
                                         {"bench", required_argument, 0, OPT_BENCH},
                                         {"help", no_argument, 0, 'h'},
                                         {0, 0, 0, 0}};
    memset(o, 0, sizeof *o);
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "m:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'm': o->model = optarg; break;
        case 't': o->tokenizer = optarg; break;
        case OPT_NO_BOS: o->no_bos = 1; break;
        case OPT_DECODE: o->decode = 1; break;
        case OPT_SPECIAL: o->allow_special = 1; break;
        case OPT_CHAT: o->chat_template = optarg; break;
        case OPT_BENCH: o->bench = optarg; break;
        case 'h': usage(stdout); return 1;
        default:
            error("tokenize: unknown or incomplete option '%s' (see 'mpillama tokenize --help')",
                  argv[optind - 1]);
            return 2;
        }
    }
    if (optind != argc) {
        error("tokenize: unexpected argument '%s'", argv[optind]);
        return 2;
    }
    if (!o->model == !o->tokenizer) {
        error("tokenize: give exactly one of --model and --tokenizer");
        usage(stderr);
        return 2;
    }
    if (o->chat_template && !chat_template_known(o->chat_template)) {
        error("tokenize: unknown chat template '%s' (known: llama2, llama3, chatml)", o->chat_template);
        return 2;
    }
    return 0;
}

/* loads the tokenizer; *bos gets the BOS to add (-1: none) */
static tokenizer *open_tokenizer(const tokenize_opts *o, int *bos) {
    mfile_tokenizer mt;
    int model_bos = -1;
    if (o->model) {
        mfile *f = mfile_open(o->model, dist_comm_self());
        model_config cfg;
        mfile_read_config(f, &cfg);
        if (!mfile_read_tokenizer(f, &mt))
            die("'%s': the model file has no tokenizer (convert it with one)", o->model);
        mfile_close(f);
        model_bos = cfg.bos_id; /* what generate and score add */
    } else {
        struct stat st;
        if (stat(o->tokenizer, &st) == 0 && S_ISDIR(st.st_mode)) {
            char why[512];
            if (!tok_load_hf_dir(&mt, o->tokenizer, why, sizeof why))
                die("'%s': %s", o->tokenizer, why);
        } else {
            tok_load_file(&mt, o->tokenizer);
        }
    }
    tokenizer *t = tok_init(&mt);
    mfile_tokenizer_free(&mt);
    *bos = o->no_bos ? -1 : o->model ? model_bos : tok_bos_id(t);
    return t;
}

/* ---- one line ---- */

static cJSON *ids_array(const int *ids, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, cJSON_CreateNumber(ids[i]));
    return a;
}

static void set_item(cJSON *obj, const char *key, cJSON *item) {
    cJSON_DeleteItemFromObjectCaseSensitive(obj, key);
    cJSON_AddItemToObject(obj, key, item);
}

/* encodes with a growing buffer (encode reports how many it needs) */
static int *encode_text(const tokenizer *t, const char *text, int bos, unsigned flags, int *n) {
    int cap = 256;
    int *ids = xmalloc((size_t)cap * sizeof *ids);
    *n = tok_encode_ex(t, text, bos, flags, ids, cap);
    if (*n < 0) {
        free(ids);
        return NULL;
    }
    if (*n > cap) {
        ids = xrealloc(ids, (size_t)*n * sizeof *ids);
        tok_encode_ex(t, text, bos, flags, ids, *n);
    }
    return ids;
}

/* "messages" -> ids (and the rendered text); NULL with why set on bad input */
static int *encode_messages(const tokenizer *t, const tokenize_opts *o, const cJSON *msgs, int bos,
                            cJSON *rec, int *n, char *why, size_t cap) {
    const char *name = o->chat_template ? o->chat_template : tok_chat_template(t);
    if (!cJSON_IsArray(msgs)) {
        snprintf(why, cap, "\"messages\" is not an array");
        return NULL;
    }
    int count = cJSON_GetArraySize(msgs), i = 0;
    chat_message *m = xcalloc((size_t)count + 1, sizeof *m);
    const cJSON *it;
    cJSON_ArrayForEach(it, msgs) {
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(it, "role");
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(it, "content");
        if (!cJSON_IsString(role) || !cJSON_IsString(content)) {
            snprintf(why, cap, "message %d needs string \"role\" and \"content\"", i);
            free(m);
            return NULL;
        }
        m[i++] = (chat_message){role->valuestring, content->valuestring};
    }
    int *ids = NULL;
    char *text = chat_render_checked(name, m, count, 1, why, cap);
    if (text) {
        int need = chat_encode(t, name, m, count, 1, bos, NULL, 0, why, cap);
        if (need >= 0) {
            ids = xmalloc(((size_t)need + 1) * sizeof *ids);
            *n = chat_encode(t, name, m, count, 1, bos, ids, need, why, cap);
            if (!cJSON_GetObjectItemCaseSensitive(rec, "text")) cJSON_AddStringToObject(rec, "text", text);
        }
        free(text);
    }
    free(m);
    return ids;
}

/* handles one parsed line; returns 0, or -1 with why set */
static int handle(const tokenizer *t, const tokenize_opts *o, int bos, cJSON *rec, char *why,
                  size_t cap) {
    if (!cJSON_IsObject(rec)) {
        snprintf(why, cap, "not a JSON object");
        return -1;
    }
    if (o->decode) {
        const cJSON *arr = cJSON_GetObjectItemCaseSensitive(rec, "ids");
        if (!cJSON_IsArray(arr)) {
            snprintf(why, cap, "no \"ids\" array");
            return -1;
        }
        const cJSON *it;
        int i = 0;
        cJSON_ArrayForEach(it, arr) {
            int64_t id;
            if (!json_get_int(it, INT32_MIN, INT32_MAX, &id)) {
                snprintf(why, cap, "ids[%d] is not an integer", i);
                return -1;
            }
            if (id < 0 || id >= tok_vocab_size(t)) {
                snprintf(why, cap, "ids[%d] is %lld, outside the vocabulary [0, %d)", i,
                         (long long)id, tok_vocab_size(t));
                return -1;
            }
            i++;
        }
        tok_decoder d;
        tok_decoder_init(&d, t, -1, tok_bos_id(t), o->allow_special ? TOK_DECODE_SPECIAL : 0);
        size_t len = 0, text_cap = 64, l;
        char *text = xmalloc(text_cap);
        for (const cJSON *e = arr->child;; e = e->next) {
            const char *s = e ? tok_decoder_push(&d, e->valueint, &l) : tok_decoder_flush(&d, &l);
            if (len + l + 1 > text_cap) text = xrealloc(text, text_cap = 2 * (len + l + 1));
            memcpy(text + len, s, l);
            len += l;
            if (!e) break;
        }
        text[len] = '\0';
        tok_decoder_free(&d);
        set_item(rec, "text", cJSON_CreateString(text));
        free(text);
        return 0;
    }
    unsigned flags = o->allow_special ? TOK_ALLOW_SPECIAL : 0;
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(rec, "text");
    const cJSON *msgs = cJSON_GetObjectItemCaseSensitive(rec, "messages");
    int n = 0, *ids;
    if (msgs) {
        ids = encode_messages(t, o, msgs, bos, rec, &n, why, cap);
        if (!ids) return -1;
    } else if (cJSON_IsString(text)) {
        ids = encode_text(t, text->valuestring, bos, flags, &n);
        if (!ids) {
            snprintf(why, cap, "the tokenizer's split pattern gave up on this text (a PCRE2 limit)");
            return -1;
        }
    } else {
        snprintf(why, cap, "no string \"text\" and no \"messages\"");
        return -1;
    }
    set_item(rec, "ids", ids_array(ids, n));
    free(ids);
    return 0;
}

static int run_lines(const tokenizer *t, const tokenize_opts *o, int bos) {
    char *line = NULL;
    size_t line_cap = 0;
    ssize_t got;
    int lineno = 0, failed = 0;
    while ((got = getline(&line, &line_cap, stdin)) >= 0) {
        lineno++;
        while (got > 0 && (line[got - 1] == '\n' || line[got - 1] == '\r')) line[--got] = '\0';
        if (got == 0) {
            putchar('\n');
            continue;
        }
        char why[512] = "";
        cJSON *rec = json_parse_strict(line, (size_t)got, why, sizeof why);
        if (rec && handle(t, o, bos, rec, why, sizeof why) == 0) {
            char *s = cJSON_PrintUnformatted(rec);
            puts(s);
            free(s);
        } else {
            cJSON *err = cJSON_CreateObject();
            cJSON_AddNumberToObject(err, "line", lineno);
            cJSON_AddStringToObject(err, "error", why);
            char *s = cJSON_PrintUnformatted(err);
            puts(s);
            free(s);
            cJSON_Delete(err);
            error("tokenize: stdin line %d: %s", lineno, why);
            failed = 1;
        }
        cJSON_Delete(rec);
    }
    free(line);
    if (fflush(stdout) != 0 || ferror(stdout)) die_errno("tokenize: cannot write the output");
    return failed;
}

/* ---- benchmark ---- */

static int run_bench(const tokenizer *t, const tokenize_opts *o, int bos) {
    size_t len;
    char *text = util_read_file(o->bench, &len);
    if (strlen(text) != len) die("'%s': holds a NUL byte; the benchmark needs text", o->bench);
    unsigned flags = o->allow_special ? TOK_ALLOW_SPECIAL : 0;
    int n;
    int *ids = encode_text(t, text, bos, flags, &n); /* also warms the caches */
    if (!ids) die("--bench: the tokenizer's split pattern gave up on '%s' (a PCRE2 limit)", o->bench);
    double best_enc = 1e30, best_dec = 1e30, t_total = 0;
    int reps = 0;
    while (reps < 3 || (t_total < 1.0 && reps < 50)) {
        double t0 = util_now();
        tok_encode_ex(t, text, bos, flags, ids, n);
        double t1 = util_now();
        free(tok_decode(t, -1, ids, n, bos));
        double t2 = util_now();
        if (t1 - t0 < best_enc) best_enc = t1 - t0;
        if (t2 - t1 < best_dec) best_dec = t2 - t1;
        t_total += t2 - t0;
        reps++;
    }
    double mb = (double)len / 1e6;
    printf("tokenizer: %s, %d pieces\n", tok_type(t), tok_vocab_size(t));
    printf("text: %s, %zu bytes, %d ids (%.2f bytes per id)\n", o->bench, len, n,
           n > 0 ? (double)len / n : 0.0);
    printf("encode: %.4f s, %.1f MB/s (best of %d, one core)\n", best_enc, mb / best_enc, reps);
    printf("decode: %.4f s, %.1f MB/s\n", best_dec, mb / best_dec);
    free(ids);
    free(text);
    return 0;
}

int tokenize_main(int argc, char **argv) {
    tokenize_opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc) return rc == 1 ? 0 : rc;
    if (util_rank() != 0) return 0; /* serial: rank 0 does the work */
    int bos;
    tokenizer *t = open_tokenizer(&o, &bos);
    rc = o.bench ? run_bench(t, &o, bos) : run_lines(t, &o, bos);
    tok_free(t);
    return rc;
}
