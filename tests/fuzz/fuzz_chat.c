/* fuzz_chat: the chat template renderer. The first byte picks the template (llama2, llama3,
 * chatml or an unknown name) and add_generation_prompt; the rest is split at NUL bytes into
 * role, content, role, content... Invariants: a rendering that fails says why; one that works
 * holds every content (chatml keeps them verbatim; llama2 and llama3 strip ASCII whitespace);
 * chat_encode of the llama3 template with the Llama 3 tokenizer of ../shared (when there) writes only ids in its
 * vocabulary, and fails exactly when rendering fails. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat.h"
#include "fuzz.h"
#include "tokenizer.h"
#include "util.h"

static tokenizer *llama3;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    const char *dir = fuzz_shared_dir();
    if (!dir) return 0;
    char path[1024];
    snprintf(path, sizeof path, "%s/tokenizers/llama3/tokenizer.model", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    mfile_tokenizer m;
    tok_load_file(&m, path);
    snprintf(m.chat_template, sizeof m.chat_template, "llama3");
    llama3 = tok_init(&m);
    mfile_tokenizer_free(&m);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    static const char *const names[] = {"llama2", "llama3", "chatml", "vicuna"};
    const char *name = names[data[0] & 3];
    int gen = (data[0] >> 2) & 1;
    char *text = fuzz_strndup(data + 1, size - 1);
    /* fields at NUL bytes: the copy has one more NUL at the end */
    int n_fields = 1;
    for (size_t i = 0; i + 1 < size; i++) n_fields += text[i] == 0;
    chat_message *msgs = xcalloc((size_t)n_fields / 2 + 1, sizeof *msgs);
    int n = 0;
    const char *p = text;
    for (int f = 0; f + 1 < n_fields; f += 2) {
        msgs[n].role = p;
        p += strlen(p) + 1;
        msgs[n].content = p;
        p += strlen(p) + 1;
        n++;
    }
    char why[256] = "";
    char *out = chat_render_checked(name, msgs, n, gen, why, sizeof why);
    if (!out && !why[0]) fuzz_fail("rendering failed without a reason");
    if (out) {
        for (int i = 0; i < n; i++) {
            const char *c = msgs[i].content;
            size_t a = 0, b = strlen(c);
            if (strcmp(name, "chatml") != 0) { /* stripped of ASCII whitespace */
                while (a < b && isspace((unsigned char)c[a])) a++;
                while (b > a && isspace((unsigned char)c[b - 1])) b--;
            }
            char *core = fuzz_strndup((const uint8_t *)c + a, b - a);
            if (!strstr(out, core)) fuzz_fail("%s: message %d's content is missing from the rendering", name, i);
            free(core);
        }
    }
    if (llama3 && strcmp(name, "llama3") == 0) { /* its special tokens are all in the vocabulary */
        int ids[256];
        char why2[256] = "";
        int k = chat_encode(llama3, name, msgs, n, gen, tok_bos_id(llama3), ids, 256, why2, sizeof why2);
        if ((k < 0) != (out == NULL)) fuzz_fail("%s: chat_encode %s where rendering %s (%s)", name,
                                               k < 0 ? "failed" : "worked", out ? "worked" : "failed", why2);
        if (k > 0) {
            int at = tok_first_bad_id(llama3, ids, k < 256 ? k : 256);
            if (at >= 0) fuzz_fail("chat_encode wrote id %d, outside the vocabulary", ids[at]);
        }
    }
    free(out);
    free(msgs);
    free(text);
    return 0;
}
