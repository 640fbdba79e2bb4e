/* chat: the formats of chat.h. A conversation is first laid out as a list of spans, each
 * either a special token (by its text) or plain text; rendering concatenates them, encoding
 * encodes each maximal run of plain text on its own and looks the special tokens up. */
#include "chat.h"

#include <stdlib.h>
#include <string.h>

#include "util.h"

typedef struct {
    size_t start, len;
    int special;
} chat_span;

typedef struct {
    char *text; /* (cap) the rendered text, NUL-terminated */
    size_t len, cap;
    chat_span *spans;
    int n_spans, spans_cap;
} chat_layout;

static void add(chat_layout *l, const char *s, size_t len, int special) {
    if (len == 0) return;
    if (l->len + len + 1 > l->cap) {
        l->cap = 2 * (l->len + len + 1);
        l->text = xrealloc(l->text, l->cap);
    }
    memcpy(l->text + l->len, s, len);
    /* plain text joins the plain span before it: runs of text are encoded whole */
    if (!special && l->n_spans > 0 && !l->spans[l->n_spans - 1].special) {
        l->spans[l->n_spans - 1].len += len;
    } else {
        if (l->n_spans == l->spans_cap) {
            l->spans_cap = l->spans_cap ? 2 * l->spans_cap : 16;
            l->spans = xrealloc(l->spans, (size_t)l->spans_cap * sizeof *l->spans);
        }
        l->spans[l->n_spans++] = (chat_span){l->len, len, special};
    }
    l->len += len;
    l->text[l->len] = '\0';
}

static void text(chat_layout *l, const char *s) { add(l, s, strlen(s), 0); }
static void special(chat_layout *l, const char *s) { add(l, s, strlen(s), 1); }

static int is_space(char c) {
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

/* appends s without leading and trailing ASCII whitespace */
static void text_stripped(chat_layout *l, const char *s) {
    if (!s) return;
    size_t len = strlen(s);
    while (len > 0 && is_space(*s)) s++, len--;
    while (len > 0 && is_space(s[len - 1])) len--;
    add(l, s, len, 0);
}

static const char *content_of(const chat_message *m) { return m->content ? m->content : ""; }

static int role_is(const chat_message *m, const char *role) {
    return m->role && strcmp(m->role, role) == 0;
}

static int layout_llama2(chat_layout *l, const chat_message *msgs, int n, char *why, size_t cap) {
    int first = 0;
    const char *system = NULL;
    if (n > 0 && role_is(&msgs[0], "system")) {
        system = content_of(&msgs[0]);
        first = 1;
    }
    for (int i = first; i < n; i++) {
        const char *want = (i - first) % 2 == 0 ? "user" : "assistant";
        if (!role_is(&msgs[i], want)) {
            snprintf(why, cap, "llama2 chat: message %d has role '%s'; after an optional system "
                               "message the roles must alternate user/assistant, starting with user",
                     i, msgs[i].role ? msgs[i].role : "(none)");
            return -1;
        }
    }
    if (first == n) {
        snprintf(why, cap, "llama2 chat: no user message");
        return -1;
    }
    for (int i = first; i < n; i += 2) {
        special(l, "<s>");
        text(l, "[INST] ");
        if (i == first && system) { /* Meta: B_SYS + system + E_SYS + user, stripped */
            size_t sl = strlen(system) + strlen(content_of(&msgs[i])) + 32;
            char *merged = xmalloc(sl);
            snprintf(merged, sl, "<<SYS>>\n%s\n<</SYS>>\n\n%s", system, content_of(&msgs[i]));
            text_stripped(l, merged);
            free(merged);
        } else {
            text_stripped(l, content_of(&msgs[i]));
        }
        text(l, " [/INST]");
        if (i + 1 < n) {
            text(l, " ");
            text_stripped(l, content_of(&msgs[i + 1]));
            text(l, " ");
            special(l, "</s>");
        }
    }
    return 0;
}

static int check_roles(const chat_message *msgs, int n, const char *name, char *why, size_t cap) {
    for (int i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].role[0]) {
            snprintf(why, cap, "%s chat: message %d has no role", name, i);
            return -1;
        }
    }
    return 0;
}

static int layout_llama3(chat_layout *l, const chat_message *msgs, int n, int gen, char *why,
                         size_t cap) {
    if (check_roles(msgs, n, "llama3", why, cap)) return -1;
    special(l, "<|begin_of_text|>");
    for (int i = 0; i < n; i++) {
        special(l, "<|start_header_id|>");
        text(l, msgs[i].role);
        special(l, "<|end_header_id|>");
        text(l, "\n\n");
        text_stripped(l, content_of(&msgs[i]));
        special(l, "<|eot_id|>");
    }
    if (gen) {
        special(l, "<|start_header_id|>");
        text(l, "assistant");
        special(l, "<|end_header_id|>");
        text(l, "\n\n");
    }
    return 0;
}

static int layout_chatml(chat_layout *l, const chat_message *msgs, int n, int gen, char *why,
                         size_t cap) {
    if (check_roles(msgs, n, "chatml", why, cap)) return -1;
    for (int i = 0; i < n; i++) {
        special(l, "<|im_start|>");
        text(l, msgs[i].role);
        text(l, "\n");
        text(l, content_of(&msgs[i]));
        special(l, "<|im_end|>");
        text(l, "\n");
    }
    if (gen) {
        special(l, "<|im_start|>");
        text(l, "assistant\n");
    }
    return 0;
}

static void layout_free(chat_layout *l) {
    free(l->text);
    free(l->spans);
}

int chat_template_known(const char *name) {
    return name && (!strcmp(name, "llama2") || !strcmp(name, "llama3") || !strcmp(name, "chatml"));
}

int chat_template_adds_bos(const char *name) {
    return name && (!strcmp(name, "llama2") || !strcmp(name, "llama3"));
}

/* lays the conversation out; 0, or -1 with why set */
static int layout(chat_layout *l, const char *name, const chat_message *msgs, int n, int gen,
                  char *why, size_t cap) {
    memset(l, 0, sizeof *l);
    if (n < 0 || (n > 0 && !msgs)) {
        snprintf(why, cap, "chat: bad message list");
        return -1;
    }
    int rc;
    if (name && !strcmp(name, "llama2")) rc = layout_llama2(l, msgs, n, why, cap);
    else if (name && !strcmp(name, "llama3")) rc = layout_llama3(l, msgs, n, gen, why, cap);
    else if (name && !strcmp(name, "chatml")) rc = layout_chatml(l, msgs, n, gen, why, cap);
    else {
        snprintf(why, cap, "unknown chat template '%s' (known: llama2, llama3, chatml)",
                 name && name[0] ? name : "(none)");
        rc = -1;
    }
    if (rc) layout_free(l);
    return rc;
}

char *chat_render_checked(const char *name, const chat_message *msgs, int n, int gen, char *why,
                          size_t cap) {
    chat_layout l;
    if (layout(&l, name, msgs, n, gen, why, cap)) return NULL;
    free(l.spans);
    return l.text ? l.text : xstrdup("");
}

char *chat_render(const char *name, const chat_message *msgs, int n, int gen) {
    char why[256];
    return chat_render_checked(name, msgs, n, gen, why, sizeof why);
}

int chat_encode(const tokenizer *t, const char *name, const chat_message *msgs, int n, int gen,
                int bos_id, int *ids, int max_ids, char *why, size_t cap) {
    chat_layout l;
    if (layout(&l, name, msgs, n, gen, why, cap)) return -1;
    int count = 0;
    if (!chat_template_adds_bos(name) && bos_id >= 0) {
        if (count < max_ids) ids[count] = bos_id;
        count++;
    }
    for (int i = 0; i < l.n_spans; i++) {
        const chat_span *s = &l.spans[i];
        char saved = l.text[s->start + s->len];
        l.text[s->start + s->len] = '\0';
        const char *piece = l.text + s->start;
        if (s->special) {
            int id = tok_special_id(t, piece);
            if (id < 0) {
                snprintf(why, cap, "%s chat: the tokenizer has no special token '%s'", name, piece);
                layout_free(&l);
                return -1;
            }
            if (count < max_ids) ids[count] = id;
            count++;
        } else {
            int room = max_ids > count ? max_ids - count : 0, k = tok_encode_ex(t, piece, -1, 0, room ? ids + count : NULL, room);
            if (k < 0) {
                snprintf(why, cap, "the tokenizer's split pattern gave up on a message (a PCRE2 limit)");
                layout_free(&l);
                return -1;
            }
            count += k;
        }
        l.text[s->start + s->len] = saved;
    }
    layout_free(&l);
    return count;
}

int chat_stop_ids(const tokenizer *t, const char *name, int *ids, int cap) {
    static const char *const llama2[] = {"</s>", NULL};
    static const char *const llama3[] = {"<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", NULL};
    static const char *const chatml[] = {"<|im_end|>", "<|endoftext|>", NULL};
    const char *const *list = !name ? NULL
                              : !strcmp(name, "llama2") ? llama2
                              : !strcmp(name, "llama3") ? llama3
                              : !strcmp(name, "chatml") ? chatml
                                                        : NULL;
    int n = 0;
    for (int i = 0; list && list[i]; i++) {
        int id = tok_special_id(t, list[i]);
        if (id < 0) continue;
        if (n < cap) ids[n] = id;
        n++;
    }
    return n;
}
