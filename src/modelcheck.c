#include "modelcheck.h"

#include <hdf5.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "dist.h"
#include "dtype.h"
#include "kernels.h"
#include "mfile.h"
#include "model.h"
#include "tokenizer.h"
#include "util.h"

typedef struct {
    const char *path;
    mfile *f;
    mfile_tokenizer mt;
    int has_tok;
    tokenizer *tok;
} check_state;

/* every layer's matrices of the type the config took from layer 0 (the load reads them so), and
 * the norms f32 */
static void check_types(mfile *f, const model_config *c, const char *path) {
    char name[160];
    for (int l = 0; l < c->n_layers; l++) {
        for (int k = CONFIG_W_Q; k <= CONFIG_W_3; k++) {
            snprintf(name, sizeof(name), "layers/%d/%s", l, strrchr(dtype_kind_tensor(k), '/') + 1);
            kern_dtype t = mfile_dtype(f, name), want = (kern_dtype)c->weight_dtype[k];
            if (t != want)
                die("'%s': tensor '%s' is stored as %s, expected %s like the other layers' (convert again)", path,
                    name, kern_dtype_name(t), kern_dtype_name(want));
        }
        static const char *const norms[2] = {"attention_norm", "ffn_norm"};
        for (int k = 0; k < 2; k++) {
            snprintf(name, sizeof(name), "layers/%d/%s", l, norms[k]);
            if (mfile_dtype(f, name) != KERN_F32) die("'%s': tensor '%s' is not f32", path, name);
        }
    }
    if (mfile_dtype(f, "norm") != KERN_F32) die("'%s': tensor 'norm' is not f32", path);
}

/* what setup does before the weights, with die() on any fault (util_try catches it) */
static void check_all(void *arg) {
    check_state *s = arg;
    s->f = mfile_open(s->path, dist_comm_self());
    model_config c;
    mfile_read_config(s->f, &c);
    model_check_file(s->f, &c);
    check_types(s->f, &c, s->path);
    s->has_tok = mfile_read_tokenizer(s->f, &s->mt);
    if (s->has_tok && s->mt.n != c.vocab_size)
        die("'%s': tokenizer has %d pieces, vocab_size is %d", s->path, s->mt.n, c.vocab_size);
    if (s->has_tok) s->tok = tok_init(&s->mt);
}

int modelcheck_file(const char *path) {
    check_state s = {.path = path};
    if (util_try(check_all, &s) != 0) {
        H5close(); /* what the reader held when it stopped; HDF5 starts again on next use */
        return -1;
    }
    if (s.tok) tok_free(s.tok);
    if (s.has_tok) mfile_tokenizer_free(&s.mt);
    mfile_close(s.f);
    return 0;
}
