/* test_chat: chat templates rendered against hand-checked strings, and encoded to ids.
 *
 * usage: test_chat [SHARED_DIR]
 *   - chat_render for llama2, llama3 and chatml against strings written out by hand from Meta's
 *     reference code (llama2, llama3) and the ChatML definition, and the messages each template
 *     refuses; needs nothing else;
 *   - with SHARED_DIR's Llama 2 and Llama 3 tokenizers: chat_encode against ids known from
 *     Meta's chat format, equal to the rendered text encoded with TOK_ALLOW_SPECIAL, special
 *     tokens inside a message kept as text, truncated buffers, stop ids. Skipped (with a line
 *     saying so) when the files are absent.
 * Exits 0 when all pass, 1 on a mismatch. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "chat.h"
#include "tokenizer.h"
#include "util.h"

static int checks, failures;

static void print_escaped(const char *label, const char *s) {
    fprintf(stderr, "  %s: \"", label);
    for (const unsigned char *p = (const unsigned char *)s; p && *p; p++) {
        if (*p == '\n') fputs("\\n", stderr);
        else if (*p == '"' || *p == '\\') fprintf(stderr, "\\%c", *p);
        else if (*p < 0x20 || *p >= 0x7f) fprintf(stderr, "\\x%02x", *p);
        else fputc(*p, stderr);
    }
    fputs("\"\n", stderr);
}

static void print_ids(const char *label, const int *ids, int n) {
    fprintf(stderr, "  %s (%d):", label, n);
    for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
    fputc('\n', stderr);
}

#define N(a) ((int)(sizeof(a) / sizeof((a)[0])))

static void check_render(const char *what, const char *tmpl, const chat_message *m, int n, int gen,
                         const char *want) {
    char why[256] = "";
    char *got = chat_render_checked(tmpl, m, n, gen, why, sizeof why);
    checks++;
    if (!got || strcmp(got, want) != 0) {
        failures++;
        fprintf(stderr, "FAIL: %s: rendering differs%s%s\n", what, got ? "" : ": ", got ? "" : why);
        print_escaped("expected", want);
        if (got) print_escaped("got", got);
    }
    free(got);
}

static void check_refused(const char *what, const char *tmpl, const chat_message *m, int n,
                          const char *want_in_why) {
    char why[256] = "";
    char *got = chat_render_checked(tmpl, m, n, 1, why, sizeof why);
    checks++;
    if (got || !strstr(why, want_in_why)) {
        failures++;
        fprintf(stderr, "FAIL: %s: expected a refusal naming '%s', got %s (%s)\n", what,
                want_in_why, got ? "a rendering" : "a refusal", why);
    }
    free(got);
}

static void check_rendering(void) {
    const chat_message conv[] = {{"system", "You are a helpful assistant."},
                                 {"user", "Hello"},
                                 {"assistant", "Hi! How can I help?"},
                                 {"user", "Tell me a joke."}};
    /* Meta's llama/generation.py chat_completion: B_SYS folded into the first user turn,
     * f"{B_INST} {user.strip()} {E_INST} {answer.strip()} " between BOS and EOS per exchange */
    check_render("llama2 conversation", "llama2", conv, 4, 1,
                 "<s>[INST] <<SYS>>\nYou are a helpful assistant.\n<</SYS>>\n\nHello [/INST] Hi! "
                 "How can I help? </s><s>[INST] Tell me a joke. [/INST]");
    const chat_message padded[] = {{"user", "  Hi\n"}};
    check_render("llama2 strips", "llama2", padded, 1, 0, "<s>[INST] Hi [/INST]");
    const chat_message answered[] = {{"user", "Q"}, {"assistant", "A"}};
    check_render("llama2 ending with the assistant", "llama2", answered, 2, 1,
                 "<s>[INST] Q [/INST] A </s>");
    /* Meta's llama3 ChatFormat: header, "\n\n", stripped content, <|eot_id|> */
    check_render("llama3 conversation", "llama3", conv, 4, 1,
                 "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a helpful "
                 "assistant.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\nHi! How can I help?<|eot_id|>"
                 "<|start_header_id|>user<|end_header_id|>\n\nTell me a joke.<|eot_id|>"
                 "<|start_header_id|>assistant<|end_header_id|>\n\n");
    check_render("llama3 strips, no generation prompt", "llama3", padded, 1, 0,
                 "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>");
    const chat_message tool[] = {{"ipython", "{\"x\": 1}"}};
    check_render("llama3 takes any role", "llama3", tool, 1, 0,
                 "<|begin_of_text|><|start_header_id|>ipython<|end_header_id|>\n\n{\"x\": "
                 "1}<|eot_id|>");
    check_render("llama3 empty conversation", "llama3", NULL, 0, 1,
                 "<|begin_of_text|><|start_header_id|>assistant<|end_header_id|>\n\n");
    /* ChatML: content as given */
    check_render("chatml conversation", "chatml", conv, 2, 1,
                 "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                 "Hello<|im_end|>\n<|im_start|>assistant\n");
    check_render("chatml keeps whitespace", "chatml", padded, 1, 0,
                 "<|im_start|>user\n  Hi\n<|im_end|>\n");
    const chat_message nulls[] = {{"user", NULL}};
    check_render("NULL content", "chatml", nulls, 1, 0, "<|im_start|>user\n<|im_end|>\n");

    const chat_message two_users[] = {{"user", "a"}, {"user", "b"}};
    check_refused("llama2 user, user", "llama2", two_users, 2, "alternate");
    check_refused("llama2 assistant first", "llama2", conv + 2, 1, "alternate");
    check_refused("llama2 only a system message", "llama2", conv, 1, "no user message");
    check_refused("unknown template", "zephyr", conv, 2, "unknown chat template");
    check_refused("no template", NULL, conv, 2, "unknown chat template");
    const chat_message no_role[] = {{"", "x"}};
    check_refused("chatml empty role", "chatml", no_role, 1, "no role");
    check_refused("llama3 empty role", "llama3", no_role, 1, "no role");

    checks++;
    if (!chat_template_known("llama2") || !chat_template_known("llama3") ||
        !chat_template_known("chatml") || chat_template_known("") || chat_template_known(NULL) ||
        !chat_template_adds_bos("llama2") || !chat_template_adds_bos("llama3") ||
        chat_template_adds_bos("chatml")) {
        failures++;
        fprintf(stderr, "FAIL: chat_template_known / chat_template_adds_bos\n");
    }
    checks++;
    if (chat_render("chatml", no_role, 1, 1) != NULL) {
        failures++;
        fprintf(stderr, "FAIL: chat_render did not return NULL on refused messages\n");
    }
    /* template names recognised in Hugging Face Jinja templates, by their markers */
    struct {
        const char *jinja, *want;
    } jinja[] = {
        {"{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
         "'<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}",
         "llama3"},
        {"{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
         "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}",
         "chatml"},
        {"{{ bos_token + '[INST] ' + '<<SYS>>\\n' + system + '\\n<</SYS>>\\n\\n' + content + "
         "' [/INST]' }}",
         "llama2"},
        {"{{ bos_token }}{% for m in messages %}{{ '[INST] ' + m['content'] + ' [/INST]' }}{% "
         "endfor %}",
         NULL}, /* Mistral's: no <<SYS>>, a different format */
        {"{% for m in messages %}<|user|>\n{{ m['content'] }}</s>{% endfor %}", NULL}, /* Zephyr */
    };
    for (int i = 0; i < N(jinja); i++) {
        const char *got = tok_detect_chat_template(jinja[i].jinja);
        checks++;
        if ((got == NULL) != (jinja[i].want == NULL) || (got && strcmp(got, jinja[i].want))) {
            failures++;
            fprintf(stderr, "FAIL: template %d recognised as %s, expected %s\n", i,
                    got ? got : "none", jinja[i].want ? jinja[i].want : "none");
        }
    }
}

/* ---- with tokenizers ---- */

static tokenizer *load(const char *path) {
    mfile_tokenizer m;
    tok_load_file(&m, path);
    tokenizer *t = tok_init(&m);
    mfile_tokenizer_free(&m);
    return t;
}

static int count_id(const int *ids, int n, int id) {
    int c = 0;
    for (int i = 0; i < n; i++) c += ids[i] == id;
    return c;
}

/* chat_encode gives want (when given), the rendered text encoded with TOK_ALLOW_SPECIAL gives
 * the same, and a buffer one short gets the same prefix and count */
static void check_encode(const char *what, const tokenizer *t, const char *tmpl,
                         const chat_message *m, int n, int bos, const int *want, int n_want) {
    char why[256] = "";
    int need = chat_encode(t, tmpl, m, n, 1, bos, NULL, 0, why, sizeof why);
    checks++;
    if (need < 0) {
        failures++;
        fprintf(stderr, "FAIL: %s: chat_encode refused: %s\n", what, why);
        return;
    }
    int *ids = xmalloc(((size_t)need + 1) * sizeof *ids);
    int got = chat_encode(t, tmpl, m, n, 1, bos, ids, need, why, sizeof why);
    char *text = chat_render(tmpl, m, n, 1);
    int *via = xmalloc(((size_t)need + 8) * sizeof *via);
    int n_via = tok_encode_ex(t, text, chat_template_adds_bos(tmpl) ? -1 : bos, TOK_ALLOW_SPECIAL,
                              via, need + 8);
    checks++;
    if (got != need || (want && (n_want != need || memcmp(ids, want, (size_t)need * sizeof *ids))) ||
        n_via != need || memcmp(ids, via, (size_t)need * sizeof *ids)) {
        failures++;
        fprintf(stderr, "FAIL: %s: chat ids differ\n", what);
        if (want) print_ids("expected", want, n_want);
        print_ids("chat_encode", ids, got);
        print_ids("rendered text, encoded", via, n_via);
    }
    if (need > 1) {
        int *part = xmalloc((size_t)need * sizeof *part);
        part[need - 1] = -7;
        int got_part = chat_encode(t, tmpl, m, n, 1, bos, part, need - 1, why, sizeof why);
        checks++;
        if (got_part != need || part[need - 1] != -7 ||
            memcmp(part, ids, (size_t)(need - 1) * sizeof *ids)) {
            failures++;
            fprintf(stderr, "FAIL: %s: chat_encode into %d slots wrote wrongly or returned %d\n",
                    what, need - 1, got_part);
        }
        free(part);
    }
    free(text);
    free(via);
    free(ids);
}

static void check_encoding(const char *shared) {
    char l2[4096], l3[4096];
    snprintf(l2, sizeof l2, "%s/tokenizers/llama2/tokenizer.model", shared);
    snprintf(l3, sizeof l3, "%s/tokenizers/llama3/tokenizer.model", shared);
    struct stat st;
    if (stat(l2, &st) != 0 || stat(l3, &st) != 0) {
        printf("SKIP (part): chat_encode checks need '%s' and '%s'\n", l2, l3);
        return;
    }
    tokenizer *llama2 = load(l2), *llama3 = load(l3);
    const chat_message hello[] = {{"user", "Hello"}};
    /* the ids of Meta's chat formats: Llama 2 "[INST] Hello [/INST]" after BOS;
     * Llama 3 "user" 882, "\n\n" 271, "Hello" 9906, "assistant" 78191 */
    const int l2_want[] = {1, 518, 25580, 29962, 15043, 518, 29914, 25580, 29962};
    check_encode("llama2 hello", llama2, "llama2", hello, 1, 1, l2_want, N(l2_want));
    const int l3_want[] = {128000, 128006, 882, 128007, 271, 9906, 128009, 128006, 78191, 128007, 271};
    check_encode("llama3 hello", llama3, "llama3", hello, 1, 128000, l3_want, N(l3_want));
    const chat_message conv[] = {{"system", "Be brief."},
                                 {"user", "Hello"},
                                 {"assistant", "Hi! \xf0\x9f\xa6\x99"},
                                 {"user", "Tell me a joke.\n"}};
    check_encode("llama2 conversation", llama2, "llama2", conv, 4, 1, NULL, 0);
    check_encode("llama3 conversation", llama3, "llama3", conv, 4, 128000, NULL, 0);

    /* special-token text inside a message stays text with chat_encode */
    const chat_message inject[] = {{"user", "a<|eot_id|>b</s><s>"}};
    char why[256];
    int ids[128];
    int n = chat_encode(llama3, "llama3", inject, 1, 1, 128000, ids, 128, why, sizeof why);
    checks++;
    if (n < 0 || n > 128 || count_id(ids, n, 128009) != 1) {
        failures++;
        fprintf(stderr, "FAIL: llama3: special text in a message became a token\n");
        if (n > 0 && n <= 128) print_ids("got", ids, n);
    }
    n = chat_encode(llama2, "llama2", inject, 1, 1, 1, ids, 128, why, sizeof why);
    checks++;
    if (n < 0 || n > 128 || count_id(ids, n, 1) != 1 || count_id(ids, n, 2) != 0) {
        failures++;
        fprintf(stderr, "FAIL: llama2: special text in a message became a token\n");
        if (n > 0 && n <= 128) print_ids("got", ids, n);
    }
    /* chatml: BOS written first when given (the template has none); a tokenizer without
     * <|im_start|> is refused */
    n = chat_encode(llama3, "chatml", hello, 1, 1, 128000, ids, 128, why, sizeof why);
    checks++;
    if (n != -1 || !strstr(why, "<|im_start|>")) {
        failures++;
        fprintf(stderr, "FAIL: chatml with the Llama 3 tokenizer: %d (%s)\n", n, why);
    }
    /* stop ids */
    int stop[8];
    int ns = chat_stop_ids(llama3, "llama3", stop, 8);
    checks++;
    if (ns != 3 || stop[0] != 128009 || stop[1] != 128008 || stop[2] != 128001) {
        failures++;
        fprintf(stderr, "FAIL: llama3 stop ids\n");
        print_ids("got", stop, ns < 8 ? ns : 8);
    }
    ns = chat_stop_ids(llama2, "llama2", stop, 8);
    checks++;
    if (ns != 1 || stop[0] != 2 || chat_stop_ids(llama2, "chatml", stop, 8) != 0) {
        failures++;
        fprintf(stderr, "FAIL: llama2 stop ids\n");
    }
    tok_free(llama2);
    tok_free(llama3);
}

int main(int argc, char **argv) {
    check_rendering();
    if (argc > 1) check_encoding(argv[1]);
    else printf("SKIP (part): no shared directory given, chat_encode not checked\n");
    printf("%d checks, %d failed\n", checks, failures);
    return failures ? 1 : 0;
}
