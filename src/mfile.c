#include "mfile.h"

#include <ctype.h>
#include <errno.h>
#include <hdf5.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <fcntl.h>
#include <unistd.h>

#include "util.h"

struct mfile_writer {
    hid_t file;
    char *path;
};

struct mfile {
    hid_t file;
    hid_t dxpl; /* collective transfer */
    char *path;
    const char *map; /* (map_len) the whole file, read-only (MAP_FAILED: not mapped) */
    size_t map_len;
    int fd;          /* the file, open while mapped (mfile_copy reads through it; else -1) */
    struct { const char *p; size_t n; } *views; /* (n_views) ranges viewed, not yet brought in */
    int n_views, cap_views;
};

void mfile_tokenizer_free(mfile_tokenizer *t) {
    free(t->bytes);
    free(t->offsets);
    free(t->scores);
    free(t->kinds);
    free(t->merges);
    free(t->pattern);
    memset(t, 0, sizeof(*t));
}

/* ---------------------------------------------------------------- attributes */

static void attr_write_int(hid_t obj, const char *name, const int *v, hsize_t n) {
    hid_t sp = H5Screate_simple(1, &n, NULL);
    hid_t a = H5Acreate2(obj, name, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    check(a >= 0 && H5Awrite(a, H5T_NATIVE_INT, v) >= 0, "cannot write attribute '%s'", name);
    H5Aclose(a);
    H5Sclose(sp);
}

static void attr_write_float(hid_t obj, const char *name, float v) {
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
    check(a >= 0 && H5Awrite(a, H5T_NATIVE_FLOAT, &v) >= 0, "cannot write attribute '%s'", name);
    H5Aclose(a);
    H5Sclose(sp);
}

static void attr_write_str(hid_t obj, const char *name, const char *s) {
    hid_t ty = H5Tcopy(H5T_C_S1);
    H5Tset_size(ty, strlen(s) + 1);
    H5Tset_strpad(ty, H5T_STR_NULLTERM);
    hid_t sp = H5Screate(H5S_SCALAR);
    hid_t a = H5Acreate2(obj, name, ty, sp, H5P_DEFAULT, H5P_DEFAULT);
    check(a >= 0 && H5Awrite(a, ty, s) >= 0, "cannot write attribute '%s'", name);
    H5Aclose(a);
    H5Sclose(sp);
    H5Tclose(ty);
}

/* opens attribute name of obj and checks it before anything is read into a buffer: of type
 * class cls (H5T_FLOAT also takes H5T_INTEGER), with 1 <= values <= cap. Returns the open
 * attribute, the value count in *n. Dies naming the file and the field. */
static hid_t attr_open_checked(hid_t obj, const char *path, const char *name, H5T_class_t cls,
                               int cap, int *n) {
    if (H5Aexists(obj, name) <= 0) die("'%s': model file has no attribute '%s'", path, name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) die("'%s': cannot open attribute '%s'", path, name);
    hid_t ft = H5Aget_type(a), sp = H5Aget_space(a);
    H5T_class_t c = H5Tget_class(ft);
    hssize_t points = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    H5Tclose(ft);
    static const char *const kind[] = {[H5T_INTEGER] = "an integer", [H5T_FLOAT] = "a number",
                                       [H5T_STRING] = "a string"};
    if (c != cls && !(cls == H5T_FLOAT && c == H5T_INTEGER))
        die("'%s': attribute '%s' is not %s", path, name, kind[cls]);
    if (points < 1 || points > cap)
        die("'%s': attribute '%s' has %lld values (expected %s%d)", path, name, (long long)points,
            cap > 1 ? "1 to " : "", cap);
    *n = (int)points;
    return a;
}

/* the number of values attribute name holds; dies when there is none */
static int64_t attr_points(hid_t obj, const char *path, const char *name) {
    if (H5Aexists(obj, name) <= 0) die("'%s': model file has no attribute '%s'", path, name);
    hid_t a = H5Aopen(obj, name, H5P_DEFAULT);
    if (a < 0) die("'%s': cannot open attribute '%s'", path, name);
    hid_t sp = H5Aget_space(a);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    H5Sclose(sp);
    H5Aclose(a);
    return (int64_t)n;
}

/* reads an integer attribute (array of 1 to cap values); returns the count. A float attribute
 * is refused, not truncated. Dies naming the field. */
static int attr_read_ints(hid_t obj, const char *path, const char *name, int *v, int cap) {
    int n;
    hid_t a = attr_open_checked(obj, path, name, H5T_INTEGER, cap, &n);
    /* HDF5 clamps values outside int to INT_MIN / INT_MAX; config_validate refuses those */
    check(H5Aread(a, H5T_NATIVE_INT, v) >= 0, "'%s': cannot read attribute '%s'", path, name);
    H5Aclose(a);
    return n;
}

static int attr_read_int(hid_t obj, const char *path, const char *name) {
    int v = 0;
    attr_read_ints(obj, path, name, &v, 1);
    return v;
}

static float attr_read_float(hid_t obj, const char *path, const char *name) {
    int n;
    hid_t a = attr_open_checked(obj, path, name, H5T_FLOAT, 1, &n);
    float v = 0;
    check(H5Aread(a, H5T_NATIVE_FLOAT, &v) >= 0, "'%s': cannot read attribute '%s'", path, name);
    H5Aclose(a);
    return v;
}

#define ATTR_MAX_STR (1 << 20) /* the longest string attribute read (a split pattern) */

/* a fixed-length string attribute of any padding: NUL-terminated (as mpillama writes them),
 * NUL- or space-padded (h5py's fixed-length strings are NUL-padded, with no terminator when
 * the text fills the size). Copied into out (cap bytes); longer text is cut. */
static void attr_read_str(hid_t obj, const char *path, const char *name, char *out, size_t cap) {
    int n;
    hid_t a = attr_open_checked(obj, path, name, H5T_STRING, 1, &n);
    hid_t ft = H5Aget_type(a);
    if (H5Tis_variable_str(ft) > 0) die("'%s': attribute '%s' is not a fixed-length string", path, name);
    size_t sz = H5Tget_size(ft);
    if (sz == 0 || sz > ATTR_MAX_STR)
        die("'%s': attribute '%s' is a string of %zu bytes (at most %d)", path, name, sz, ATTR_MAX_STR);
    char *buf = xcalloc(sz + 1, 1);
    hid_t mt = H5Tcopy(H5T_C_S1);
    H5Tset_size(mt, sz);
    /* NULLPAD in memory: all sz bytes of text arrive (a NULLTERM memory type of size sz would
     * make room for its terminator by dropping the last character of a full NULLPAD string) */
    H5Tset_strpad(mt, H5T_STR_NULLPAD);
    check(H5Aread(a, mt, buf) >= 0, "'%s': cannot read attribute '%s'", path, name);
    if (H5Tget_strpad(ft) == H5T_STR_SPACEPAD)
        for (size_t i = sz; i > 0 && (buf[i - 1] == ' ' || buf[i - 1] == 0); i--) buf[i - 1] = 0;
    snprintf(out, cap, "%s", buf);
    free(buf);
    H5Tclose(mt);
    H5Tclose(ft);
    H5Aclose(a);
}

/* ---------------------------------------------------------------- writing */

static hid_t lcpl_with_parents(void) {
    hid_t p = H5Pcreate(H5P_LINK_CREATE);
    H5Pset_create_intermediate_group(p, 1);
    return p;
}

/* the config's root attributes (docs/FORMAT.md), one table for the writer and the reader */
typedef enum { FIELD_INT, FIELD_FLOAT, FIELD_STR } field_kind;
static const struct {
    const char *name;
    field_kind kind;
    size_t offset, size;
    int optional; /* 1: added after the first files; absent reads as 0 */
} config_fields[] = {
#define F(name, kind) {#name, kind, offsetof(model_config, name), sizeof(((model_config *)0)->name), 0}
#define OPT(name, kind) {#name, kind, offsetof(model_config, name), sizeof(((model_config *)0)->name), 1}
    F(architecture, FIELD_STR),    F(dim, FIELD_INT),         F(hidden_dim, FIELD_INT),
    F(n_layers, FIELD_INT),        F(n_heads, FIELD_INT),     F(n_kv_heads, FIELD_INT),
    F(head_size, FIELD_INT),       F(vocab_size, FIELD_INT),  F(max_seq_len, FIELD_INT),
    F(norm_eps, FIELD_FLOAT),      F(rope_theta, FIELD_FLOAT), F(rope_scaling_type, FIELD_STR),
    F(rope_factor, FIELD_FLOAT),   F(rope_low_freq_factor, FIELD_FLOAT),
    F(rope_high_freq_factor, FIELD_FLOAT), F(rope_original_max_pos, FIELD_INT),
    F(tied_classifier, FIELD_INT), F(bos_id, FIELD_INT),
    OPT(sliding_window, FIELD_INT), OPT(attn_qkv_bias, FIELD_INT), OPT(attn_qk_norm, FIELD_INT),
#undef OPT
#undef F
};

/* format, version and the config (shared by the serial and the parallel writer; with the MPI-IO
 * driver every rank calls it with the same values) */
static void write_config_attrs(hid_t f, const model_config *c) {
    int v = MFILE_FORMAT_VERSION;
    attr_write_str(f, "format", MFILE_FORMAT_NAME);
    attr_write_int(f, "format_version", &v, 1);
    for (size_t k = 0; k < sizeof(config_fields) / sizeof(config_fields[0]); k++) {
        const void *at = (const char *)c + config_fields[k].offset;
        switch (config_fields[k].kind) {
        case FIELD_INT: attr_write_int(f, config_fields[k].name, at, 1); break;
        case FIELD_FLOAT: attr_write_float(f, config_fields[k].name, *(const float *)at); break;
        case FIELD_STR: attr_write_str(f, config_fields[k].name, at); break;
        }
    }
    attr_write_int(f, "eos_ids", c->eos_ids, (hsize_t)(c->n_eos > 0 ? c->n_eos : 0));
    attr_write_str(f, "mpillama_version", MPILLAMA_VERSION);
}

/* a writer for a freshly created file, its format and config attributes written */
static mfile_writer *writer_new(hid_t f, const char *path, const model_config *c) {
    mfile_writer *w = xcalloc(1, sizeof(*w));
    w->file = f;
    w->path = xstrdup(path);
    write_config_attrs(f, c);
    return w;
}

mfile_writer *mfile_create(const char *path, const model_config *c) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    /* objects of 4 KiB or more start on a page: tensors are used in place (mfile_view) */
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    H5Pset_alignment(fapl, 4096, 4096);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) die("cannot create '%s' (is the directory there and writable?)", path);
    return writer_new(f, path, c);
}

static void write_dataset(mfile_writer *w, const char *name, hid_t ftype, hid_t mtype,
                          const void *data, int rank, const hsize_t *dims) {
    hid_t sp = H5Screate_simple(rank, dims, NULL);
    hid_t lcpl = lcpl_with_parents();
    hid_t d = H5Dcreate2(w->file, name, ftype, sp, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    if (d < 0) die("'%s': cannot create dataset '%s'", w->path, name);
    if (H5Dwrite(d, mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, data) < 0)
        die("'%s': cannot write dataset '%s' (disk full?)", w->path, name);
    H5Dclose(d);
    H5Pclose(lcpl);
    H5Sclose(sp);
}

void mfile_write_f32(mfile_writer *w, const char *name, const float *data, int64_t rows,
                     int64_t cols) {
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols};
    write_dataset(w, name, H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, data, cols > 0 ? 2 : 1, dims);
}

void mfile_write_tokenizer(mfile_writer *w, const mfile_tokenizer *t) {
    hid_t lcpl = lcpl_with_parents();
    hid_t g = H5Gcreate2(w->file, "tokenizer", lcpl, H5P_DEFAULT, H5P_DEFAULT);
    check(g >= 0, "'%s': cannot create group 'tokenizer'", w->path);
    attr_write_str(g, "type", t->type);
    attr_write_int(g, "n", &t->n, 1);
    attr_write_int(g, "max_token_length", &t->max_token_length, 1);
    /* the later, optional fields (a reader of the first layout ignores them) */
    attr_write_int(g, "bos_id", &t->bos_id, 1);
    attr_write_int(g, "eos_id", &t->eos_id, 1);
    attr_write_int(g, "add_dummy_prefix", &t->add_dummy_prefix, 1);
    attr_write_int(g, "remove_extra_whitespaces", &t->remove_extra_whitespaces, 1);
    attr_write_int(g, "ignore_merges", &t->ignore_merges, 1);
    if (t->pattern && t->pattern[0]) attr_write_str(g, "pattern", t->pattern);
    if (t->chat_template[0]) attr_write_str(g, "chat_template", t->chat_template);
    H5Gclose(g);
    H5Pclose(lcpl);
    hsize_t nb = (hsize_t)t->offsets[t->n], no = (hsize_t)t->n + 1, ns = (hsize_t)t->n;
    write_dataset(w, "tokenizer/bytes", H5T_STD_U8LE, H5T_NATIVE_UCHAR, t->bytes, 1, &nb);
    write_dataset(w, "tokenizer/offsets", H5T_STD_I64LE, H5T_NATIVE_INT64, t->offsets, 1, &no);
    write_dataset(w, "tokenizer/scores", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, t->scores, 1, &ns);
    if (t->kinds) write_dataset(w, "tokenizer/kinds", H5T_STD_U8LE, H5T_NATIVE_UCHAR, t->kinds, 1, &ns);
    if (t->n_merges > 0) {
        hsize_t nm[2] = {(hsize_t)t->n_merges, 2};
        write_dataset(w, "tokenizer/merges", H5T_STD_I32LE, H5T_NATIVE_INT32, t->merges, 2, nm);
    }
}

void mfile_write_blob(mfile_writer *w, const char *name, const char *data, int64_t len) {
    char full[512];
    snprintf(full, sizeof(full), "source/%s", name);
    hsize_t n = (hsize_t)len;
    write_dataset(w, full, H5T_STD_U8LE, H5T_NATIVE_UCHAR, data, 1, &n);
}

void mfile_close_writer(mfile_writer *w) {
    if (H5Fclose(w->file) < 0) die("'%s': cannot close the file (disk full?)", w->path);
    free(w->path);
    free(w);
}

/* ---------------------------------------------------------------- reading */

/* maps the whole file read-only: tensors laid out contiguously are then read straight from the
 * page cache (mfile_view), without HDF5, MPI-IO or a copy. A file that cannot be mapped is read
 * through HDF5 (the same on every rank: it depends on the file system, not the rank), and so is
 * every file when MPILLAMA_WEIGHTS=hdf5 (or MPILLAMA_MAP=0). */
static void map_file(mfile *m) {
    m->map = MAP_FAILED;
    m->fd = -1;
    hid_t fcpl = H5Fget_create_plist(m->file);
    hsize_t userblock = 0;
    H5Pget_userblock(fcpl, &userblock);
    H5Pclose(fcpl);
    if (mfile_weights_mode() == MFILE_WEIGHTS_HDF5 || userblock != 0) return; /* offsets count from the userblock's end */
    int fd = open(m->path, O_RDONLY);
    struct stat st;
    if (fd < 0) return;
    if (fstat(fd, &st) == 0 && st.st_size > 0) {
        m->map_len = (size_t)st.st_size;
        m->map = mmap(NULL, m->map_len, PROT_READ, MAP_SHARED, fd, 0);
    }
    if (m->map == MAP_FAILED) close(fd);
    else m->fd = fd;
}

mfile_weights mfile_weights_mode(void) {
    const char *w = getenv("MPILLAMA_WEIGHTS"), *map = getenv("MPILLAMA_MAP");
    if (!w || !*w) return map && strcmp(map, "0") == 0 ? MFILE_WEIGHTS_HDF5 : MFILE_WEIGHTS_COPY; /* the old switch */
    static const char *const names[] = {"map", "copy", "hdf5"};
    for (int i = 0; i < 3; i++)
        if (strcmp(w, names[i]) == 0) return (mfile_weights)i;
    die("MPILLAMA_WEIGHTS='%s': expected map, copy or hdf5", w);
}

/* little-endian unsigned of n bytes */
static uint64_t le_uint(const unsigned char *b, int n) {
    uint64_t v = 0;
    for (int i = n - 1; i >= 0; i--) v = v << 8 | b[i];
    return v;
}

int mfile_check_superblock(const char *path, char *why, size_t cap) {
    static const unsigned char sig[8] = {0x89, 'H', 'D', 'F', '\r', '\n', 0x1a, '\n'};
    FILE *f = fopen(path, "rb");
    if (!f) return snprintf(why, cap, "cannot open model '%s': %s", path, strerror(errno)), -1;
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) return fclose(f), 0; /* a device or pipe: HDF5 decides */
    unsigned char b[96] = {0};
    size_t got = 0;
    for (long a = 0; a <= (1L << 20); a = a ? a * 2 : 512) { /* the superblock follows a user block */
        got = fseek(f, a, SEEK_SET) == 0 ? fread(b, 1, sizeof(b), f) : 0;
        if (got >= 8 && !memcmp(b, sig, 8)) break;
        got = 0;
    }
    fclose(f);
    if (got == 0)
        return snprintf(why, cap, "'%s' is not an HDF5 file (convert a checkpoint with 'mpillama convert')", path), -1;
    /* the end-of-file address (relative to the base address): versions 0 and 1 after the
     * B-tree constants, 2 and 3 after the base and extension addresses */
    int ver = b[8], osz = ver <= 1 ? b[13] : b[9], base_off = ver == 0 ? 24 : ver == 1 ? 28 : 12;
    if (ver > 3 || (osz != 2 && osz != 4 && osz != 8) || (size_t)(base_off + 3 * osz) > got)
        return snprintf(why, cap, "'%s': corrupt HDF5 superblock (version %d, %d-byte addresses)", path, ver, osz), -1;
    uint64_t base = le_uint(b + base_off, osz), eof = le_uint(b + base_off + 2 * osz, osz);
    uint64_t undef = osz == 8 ? UINT64_MAX : (1ULL << (8 * osz)) - 1;
    if (base == undef || eof == undef || base > (uint64_t)INT64_MAX || eof > (uint64_t)INT64_MAX - base)
        return snprintf(why, cap, "'%s': corrupt HDF5 superblock (end of file address undefined)", path), -1;
    if ((uint64_t)st.st_size < base + eof)
        return snprintf(why, cap, "'%s' is truncated: %lld bytes, its HDF5 superblock says %llu (an interrupted copy "
                        "or conversion?)", path, (long long)st.st_size, (unsigned long long)(base + eof)), -1;
    return 0;
}

mfile *mfile_open(const char *path, MPI_Comm comm) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    if (access(path, R_OK) != 0) die_errno("cannot open model '%s'", path);
    char why[1024];
    if (mfile_check_superblock(path, why, sizeof(why)) != 0) die("%s", why);
#if H5_VERSION_GE(1, 12, 0)
    if (H5Fis_accessible(path, H5P_DEFAULT) <= 0)
#else
    if (H5Fis_hdf5(path) <= 0)
#endif
        die("'%s' is not an HDF5 file (convert a checkpoint with 'mpillama convert')", path);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    check(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL) >= 0, "cannot set the MPI-IO driver");
    H5Pset_all_coll_metadata_ops(fapl, 1);
    hid_t f = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    H5Pclose(fapl);
    if (f < 0) die("cannot open model '%s' with parallel HDF5", path);
    mfile *m = xcalloc(1, sizeof(*m));
    m->file = f;
    m->path = xstrdup(path);
    m->dxpl = H5Pcreate(H5P_DATASET_XFER);
    H5Pset_dxpl_mpio(m->dxpl, H5FD_MPIO_COLLECTIVE);
    map_file(m);

    char fmt[64] = "";
    if (H5Aexists(f, "format") <= 0) die("'%s' is not an mpillama model file (no 'format' attribute)", path);
    attr_read_str(f, path, "format", fmt, sizeof(fmt));
    if (strcmp(fmt, MFILE_FORMAT_NAME) != 0)
        die("'%s' has format '%s', expected '%s'", path, fmt, MFILE_FORMAT_NAME);
    int ver = attr_read_int(f, path, "format_version");
    if (ver < MFILE_FORMAT_MIN_VERSION || ver > MFILE_FORMAT_VERSION)
        die("'%s' has format version %d, this mpillama reads versions %d to %d: convert the checkpoint again",
            path, ver, MFILE_FORMAT_MIN_VERSION, MFILE_FORMAT_VERSION);
    return m;
}

void mfile_close(mfile *f) {
    if (f->map != MAP_FAILED) munmap((void *)f->map, f->map_len);
    if (f->fd >= 0) close(f->fd);
    free(f->views);
    H5Pclose(f->dxpl);
    H5Fclose(f->file);
    free(f->path);
    free(f);
}

const char *mfile_path(const mfile *f) { return f->path; }

void mfile_read_config(mfile *m, model_config *c) {
    hid_t f = m->file;
    const char *p = m->path;
    memset(c, 0, sizeof(*c));
    for (size_t k = 0; k < sizeof(config_fields) / sizeof(config_fields[0]); k++) {
        void *at = (char *)c + config_fields[k].offset;
        const char *name = config_fields[k].name;
        if (config_fields[k].optional && H5Aexists(f, name) <= 0) continue; /* memset: 0 */
        switch (config_fields[k].kind) {
        case FIELD_INT: *(int *)at = attr_read_int(f, p, name); break;
        case FIELD_FLOAT: *(float *)at = attr_read_float(f, p, name); break;
        case FIELD_STR: attr_read_str(f, p, name, at, config_fields[k].size); break;
        }
    }
    /* eos_ids may be empty (a model without EOS): the checked reader wants 1 value or more */
    c->n_eos = attr_points(f, p, "eos_ids") > 0 ? attr_read_ints(f, p, "eos_ids", c->eos_ids, CONFIG_MAX_EOS) : 0;
    char why[512];
    if (config_validate(c, p, why, sizeof(why)) != 0) die("%s", why);
    /* the stored layers must be the config's: no more (silently ignored) and no fewer */
    if (mfile_has(m, "layers")) {
        H5G_info_t info;
        hid_t g = H5Gopen2(f, "layers", H5P_DEFAULT);
        if (g < 0 || H5Gget_info(g, &info) < 0) die("'%s': 'layers' is not a group", p);
        H5Gclose(g);
        if (info.nlinks != (hsize_t)c->n_layers)
            die("'%s': the file stores %llu layers, its config field 'n_layers' says %d", p,
                (unsigned long long)info.nlinks, c->n_layers);
    }
    for (int k = 0; k < CONFIG_W_COUNT; k++) {
        int tied_out = k == CONFIG_W_OUT && c->tied_classifier;
        c->weight_dtype[k] = tied_out ? c->weight_dtype[CONFIG_W_EMBED] : (int)mfile_dtype(m, dtype_kind_tensor(k));
    }
    c->kv_dtype = dtype_default_kv(c);
}

/* the HDF5 type a tensor of type t is stored as, and its memory twin */
static hid_t h5_file_type(kern_dtype t) {
    return t == KERN_BF16 ? H5T_STD_U16LE : t == KERN_Q8 ? H5T_STD_I8LE : H5T_IEEE_F32LE;
}
static hid_t h5_mem_type(kern_dtype t) {
    return t == KERN_BF16 ? H5T_NATIVE_UINT16 : t == KERN_Q8 ? H5T_NATIVE_INT8 : H5T_NATIVE_FLOAT;
}

/* the type of an open dataset from its "dtype" attribute, checked against its HDF5 type */
static kern_dtype dataset_dtype(hid_t d, const char *path, const char *name) {
    kern_dtype t = KERN_F32;
    if (H5Aexists(d, "dtype") > 0) {
        char s[16] = "";
        attr_read_str(d, path, "dtype", s, sizeof(s));
        if (dtype_parse(s, &t) != 0)
            die("'%s': tensor '%s' has dtype '%s' (this mpillama reads f32, bf16, q8)", path, name, s);
    }
    hid_t ft = H5Dget_type(d);
    H5T_class_t cls = H5Tget_class(ft);
    size_t sz = H5Tget_size(ft);
    H5Tclose(ft);
    if (sz != kern_dtype_size(t) || cls != (t == KERN_F32 ? H5T_FLOAT : H5T_INTEGER))
        die("'%s': tensor '%s' is marked %s but stored as %zu-byte %s", path, name, kern_dtype_name(t), sz,
            cls == H5T_FLOAT ? "floats" : "integers");
    return t;
}

kern_dtype mfile_dtype(mfile *m, const char *name) {
    if (!mfile_has(m, name)) die("'%s': model file has no tensor '%s'", m->path, name);
    hid_t d = H5Dopen2(m->file, name, H5P_DEFAULT);
    check(d >= 0, "'%s': cannot open tensor '%s'", m->path, name);
    kern_dtype t = dataset_dtype(d, m->path, name);
    H5Dclose(d);
    return t;
}

int mfile_has(mfile *m, const char *name) {
    /* check each path component: H5Lexists fails on a missing intermediate group */
    char buf[512];
    snprintf(buf, sizeof(buf), "%s", name);
    for (char *s = buf;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (H5Lexists(m->file, buf, H5P_DEFAULT) <= 0) return 0;
            if (!c) break;
            *s = c;
        }
    }
    return 1;
}

int mfile_shape(mfile *m, const char *name, int64_t dims[2]) {
    if (!mfile_has(m, name)) die("'%s': model file has no tensor '%s'", m->path, name);
    hid_t d = H5Dopen2(m->file, name, H5P_DEFAULT);
    check(d >= 0, "'%s': cannot open tensor '%s'", m->path, name);
    hid_t sp = H5Dget_space(d);
    int rank = H5Sget_simple_extent_ndims(sp);
    hsize_t h[2] = {0, 0};
    if (rank < 1 || rank > 2) die("'%s': tensor '%s' has rank %d (expected 1 or 2)", m->path, name, rank);
    H5Sget_simple_extent_dims(sp, h, NULL);
    if (h[0] > INT64_MAX || h[1] > INT64_MAX) die("'%s': tensor '%s' has an impossible shape", m->path, name);
    dims[0] = (int64_t)h[0];
    dims[1] = rank == 2 ? (int64_t)h[1] : 1;
    H5Sclose(sp);
    H5Dclose(d);
    return rank;
}

/* selects rows [row0, row0+nrows) x cols [col0, col0+ncols) of dataset d (a 1-D dataset has one
 * column), or nothing when the block is empty, for a collective transfer. Returns the file space
 * in *fs and a matching memory space; dies naming the tensor when the block is out of range. */
static hid_t select_block(hid_t d, const char *path, const char *name, int64_t row0, int64_t nrows,
                          int64_t col0, int64_t ncols, hid_t *fs) {
    *fs = H5Dget_space(d);
    hsize_t dims[2] = {0, 1};
    int rank = H5Sget_simple_extent_ndims(*fs);
    if (rank < 1 || rank > 2) die("'%s': tensor '%s' has rank %d (expected 1 or 2)", path, name, rank);
    H5Sget_simple_extent_dims(*fs, dims, NULL);
    if (rank == 1) dims[1] = 1;
    if (ncols < 0) ncols = (int64_t)dims[1]; /* whole rows */
    hsize_t n = 1;
    if (nrows > 0 && ncols > 0) {
        if (row0 < 0 || col0 < 0 || (hsize_t)(row0 + nrows) > dims[0] || (hsize_t)(col0 + ncols) > dims[1])
            die("'%s': tensor '%s' is %llux%llu, has no rows %lld+%lld cols %lld+%lld", path, name,
                (unsigned long long)dims[0], (unsigned long long)dims[1], (long long)row0, (long long)nrows,
                (long long)col0, (long long)ncols);
        hsize_t start[2] = {(hsize_t)row0, (hsize_t)col0}, count[2] = {(hsize_t)nrows, (hsize_t)ncols};
        H5Sselect_hyperslab(*fs, H5S_SELECT_SET, start, NULL, count, NULL);
        n = (hsize_t)nrows * (hsize_t)ncols;
        return H5Screate_simple(1, &n, NULL);
    }
    H5Sselect_none(*fs);
    hid_t ms = H5Screate_simple(1, &n, NULL);
    H5Sselect_none(ms);
    return ms;
}

/* ---------------------------------------------------------------- reading in place */

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14 */
#endif

/* the bytes of open dataset d in the file mapping when it is stored contiguously as little-endian
 * values of elem bytes (no chunks, filters or external files; what every mpillama writer does),
 * else NULL */
static const char *dataset_in_map(mfile *m, hid_t d, size_t elem) {
    if (m->map == MAP_FAILED) return NULL;
    const union { uint16_t u; char c; } probe = {1};
    hid_t dcpl = H5Dget_create_plist(d), ft = H5Dget_type(d), sp = H5Dget_space(d);
    int ok = probe.c == 1 && H5Pget_layout(dcpl) == H5D_CONTIGUOUS && H5Pget_external_count(dcpl) == 0 &&
             H5Tget_size(ft) == elem && (elem == 1 || H5Tget_order(ft) == H5T_ORDER_LE);
    hssize_t n = H5Sget_simple_extent_npoints(sp);
    haddr_t off = ok ? H5Dget_offset(d) : HADDR_UNDEF;
    H5Sclose(sp);
    H5Tclose(ft);
    H5Pclose(dcpl);
    if (off == HADDR_UNDEF || n < 0 || off > m->map_len || (size_t)n * elem > m->map_len - off) return NULL;
    return m->map + off;
}

/* brings [p, p+n) of the mapping into memory: read from the file system unless cached */
static void map_populate(const char *p, size_t n) {
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)4095, e = (uintptr_t)p + n;
    madvise((void *)a, e - a, MADV_WILLNEED); /* read-ahead of the whole range, then fault it in */
    if (madvise((void *)a, e - a, MADV_POPULATE_READ) == 0) return;
    volatile char sink = 0;
    for (uintptr_t q = a; q < e; q += 4096) sink ^= *(const volatile char *)q;
    (void)sink;
}

/* rows [row0, row0+nrows) x cols [col0, col0+ncols) of dataset d (block checked by select_block),
 * whose bytes are at base in the mapping, into out */
static void copy_block(hid_t d, const char *base, size_t elem, int64_t row0, int64_t nrows, int64_t col0,
                       int64_t ncols, void *out) {
    if (nrows <= 0 || ncols <= 0) return;
    hid_t sp = H5Dget_space(d);
    hsize_t dims[2] = {0, 1};
    H5Sget_simple_extent_dims(sp, dims, NULL);
    if (H5Sget_simple_extent_ndims(sp) == 1) dims[1] = 1;
    H5Sclose(sp);
    const size_t row_bytes = (size_t)dims[1] * elem, block_row = (size_t)ncols * elem;
    const char *src = base + (size_t)row0 * row_bytes + (size_t)col0 * elem;
    for (int64_t r = 0; r < nrows; r++) memcpy((char *)out + (size_t)r * block_row, src + (size_t)r * row_bytes, block_row);
}

/* reads a block of dataset name as stored (elem-byte values, memory type mtype) into out;
 * collective */
static void read_block(mfile *m, const char *name, hid_t mtype, size_t elem, int64_t row0, int64_t nrows,
                       int64_t col0, int64_t ncols, void *out) {
    if (!mfile_has(m, name)) die("'%s': model file has no tensor '%s'", m->path, name);
    hid_t d = H5Dopen2(m->file, name, H5P_DEFAULT);
    check(d >= 0, "'%s': cannot open tensor '%s'", m->path, name);
    hid_t fs;
    hid_t ms = select_block(d, m->path, name, row0, nrows, col0, ncols, &fs);
    const char *in_map = dataset_in_map(m, d, elem);
    float dummy;
    if (in_map) /* laid out plainly (the same on every rank): copied from the mapping, no MPI-IO */
        copy_block(d, in_map, elem, row0, nrows, col0, ncols, out);
    else if (H5Dread(d, mtype, ms, fs, m->dxpl, nrows > 0 && ncols > 0 ? out : (void *)&dummy) < 0)
        die("'%s': cannot read tensor '%s' (file truncated or corrupt?)", m->path, name);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(d);
}

int64_t mfile_read_tensor(mfile *m, const char *name, kern_dtype t, int64_t row0, int64_t nrows, int64_t col0,
                          int64_t ncols, void *out, float *scale) {
    kern_dtype stored = mfile_dtype(m, name);
    if (stored != t) die("'%s': tensor '%s' is stored as %s, expected %s like the other layers' (convert again)",
                         m->path, name, kern_dtype_name(stored), kern_dtype_name(t));
    int any = nrows > 0 && ncols > 0;
    if (!any) nrows = ncols = 0;
    read_block(m, name, h5_mem_type(t), kern_dtype_size(t), row0, nrows, col0, ncols, out);
    int64_t bytes = nrows * ncols * (int64_t)kern_dtype_size(t);
    if (t == KERN_Q8) {
        if (col0 % KERN_Q8_BLOCK || ncols % KERN_Q8_BLOCK)
            die("'%s': columns %lld+%lld of q8 tensor '%s' are not whole blocks of %d", m->path, (long long)col0,
                (long long)ncols, name, KERN_Q8_BLOCK);
        char sname[512];
        snprintf(sname, sizeof(sname), "%s.scale", name);
        read_block(m, sname, H5T_NATIVE_FLOAT, sizeof(float), row0, nrows, col0 / KERN_Q8_BLOCK, ncols / KERN_Q8_BLOCK,
                   scale);
        bytes += nrows * (ncols / KERN_Q8_BLOCK) * (int64_t)sizeof(float);
    }
    return bytes;
}

int64_t mfile_read_f32(mfile *m, const char *name, int64_t row0, int64_t nrows, int64_t col0,
                       int64_t ncols, float *out) {
    return mfile_read_tensor(m, name, KERN_F32, row0, nrows, col0, ncols, out, NULL);
}

/* the first byte of rows [row0, row0+nrows) of dataset name in the mapping, *row_bytes the bytes
 * of a row; NULL (the same on every rank) when it is not there as mfile_view needs */
static const char *view_rows(mfile *m, const char *name, int64_t row0, int64_t nrows, size_t elem,
                             size_t *row_bytes) {
    if (!mfile_has(m, name)) die("'%s': model file has no tensor '%s'", m->path, name);
    hid_t d = H5Dopen2(m->file, name, H5P_DEFAULT);
    check(d >= 0, "'%s': cannot open tensor '%s'", m->path, name);
    const char *base = dataset_in_map(m, d, elem);
    hid_t sp = H5Dget_space(d);
    hsize_t dims[2] = {0, 1};
    H5Sget_simple_extent_dims(sp, dims, NULL);
    if (H5Sget_simple_extent_ndims(sp) == 1) dims[1] = 1;
    H5Sclose(sp);
    H5Dclose(d);
    if (!base || ((uintptr_t)base & 63)) return NULL; /* kernels get 64-byte aligned rows */
    if (nrows > 0 && (row0 < 0 || (hsize_t)(row0 + nrows) > dims[0]))
        die("'%s': tensor '%s' has %llu rows, not rows %lld+%lld", m->path, name, (unsigned long long)dims[0],
            (long long)row0, (long long)nrows);
    *row_bytes = dims[1] * elem;
    return base + (size_t)(nrows > 0 ? row0 : 0) * dims[1] * elem;
}

/* *out = rows [row0, row0+nrows) in the mapping (NULL for no rows), *rb = a row's bytes; 0 when
 * the dataset is not laid out plainly */
static int map_rows(mfile *m, const char *name, int64_t row0, int64_t nrows, size_t elem, const void **out,
                    size_t *rb) {
    *out = NULL;
    const char *p = view_rows(m, name, row0, nrows, elem, rb);
    if (!p) return 0;
    if (nrows > 0) *out = p;
    return 1;
}

int mfile_map_rows(mfile *m, const char *name, int64_t row0, int64_t nrows, size_t elem, const void **out) {
    size_t rb = 0;
    return map_rows(m, name, row0, nrows, elem, out, &rb);
}

int mfile_view(mfile *m, const char *name, int64_t row0, int64_t nrows, size_t elem, const void **out) {
    size_t rb = 0;
    if (!map_rows(m, name, row0, nrows, elem, out, &rb)) return 0;
    if (nrows <= 0) return 1;
    if (m->n_views == m->cap_views) {
        m->cap_views = m->cap_views ? 2 * m->cap_views : 64;
        m->views = xrealloc(m->views, sizeof(*m->views) * (size_t)m->cap_views);
    }
    m->views[m->n_views].p = *out;
    m->views[m->n_views++].n = (size_t)nrows * rb;
    return 1;
}

/* n bytes at file offset off into out (the kernel copies from the page cache, reading what it
 * does not hold) */
static void pread_all(mfile *m, char *out, size_t n, off_t off, const char *name) {
    while (n > 0) {
        ssize_t got = pread(m->fd, out, n, off);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) die_errno("'%s': cannot read tensor '%s'", m->path, name);
        if (got == 0) die("'%s': tensor '%s' lies past the end of the file (truncated?)", m->path, name);
        out += got, n -= (size_t)got, off += got;
    }
}

int mfile_copy(mfile *m, const char *name, int64_t row0, int64_t nrows, int64_t col0, int64_t ncols, size_t elem,
               void *out) {
    size_t rb = 0;
    const char *p = view_rows(m, name, row0, nrows, elem, &rb);
    if (!p) return 0;
    if (nrows <= 0) return 1;
    const size_t cb = (size_t)ncols * elem;
    if (col0 < 0 || (size_t)col0 * elem + cb > rb)
        die("'%s': tensor '%s' has rows of %zu bytes, not columns %lld+%lld", m->path, name, rb, (long long)col0,
            (long long)ncols);
    const off_t off = (off_t)(p - m->map) + (off_t)col0 * (off_t)elem;
    if (cb == rb) { /* whole rows: one read */
        pread_all(m, out, (size_t)nrows * rb, off, name);
        return 1;
    }
    posix_fadvise(m->fd, off, (off_t)((size_t)nrows * rb), POSIX_FADV_WILLNEED);
    for (int64_t r = 0; r < nrows; r++) pread_all(m, (char *)out + (size_t)r * cb, cb, off + (off_t)(r * (int64_t)rb), name);
    return 1;
}

void mfile_view_populate(mfile *m) {
    for (int i = 0; i < m->n_views; i++) map_populate(m->views[i].p, m->views[i].n);
    m->n_views = 0;
}

/* reads a whole dataset (1-D, or any rank as its elements in order) collectively into a
 * malloc'd buffer of elem-size items; a dataset of more than max_points elements is refused
 * before anything is allocated */
static void *read_whole(mfile *m, const char *name, hid_t mtype, size_t elem, int64_t max_points,
                        hsize_t *n_out) {
    hid_t d = H5Dopen2(m->file, name, H5P_DEFAULT);
    if (d < 0) die("'%s': model file has no dataset '%s'", m->path, name);
    hid_t fs = H5Dget_space(d);
    hssize_t points = H5Sget_simple_extent_npoints(fs); /* all elements, of any rank */
    if (points < 0) die("'%s': cannot read the shape of dataset '%s'", m->path, name);
    if (points > max_points)
        die("'%s': dataset '%s' has %lld elements, more than the %lld it can have", m->path, name,
            (long long)points, (long long)max_points);
    hsize_t n = (hsize_t)points;
    void *buf = xmalloc(n * elem + 1); /* at most 2^33 * 8 bytes: no overflow */
    if (n > 0 && H5Dread(d, mtype, H5S_ALL, H5S_ALL, m->dxpl, buf) < 0)
        die("'%s': cannot read dataset '%s'", m->path, name);
    H5Sclose(fs);
    H5Dclose(d);
    *n_out = n;
    return buf;
}

/* an optional int attribute of the tokenizer group: def when absent */
static int tok_attr_int(hid_t g, const char *path, const char *name, int def) {
    return H5Aexists(g, name) > 0 ? attr_read_int(g, path, name) : def;
}

/* an optional string attribute of any length (up to ATTR_MAX_STR), malloc'd; NULL when absent */
static char *tok_attr_str(hid_t g, const char *path, const char *name) {
    if (H5Aexists(g, name) <= 0) return NULL;
    char *out = xmalloc(ATTR_MAX_STR + 1);
    attr_read_str(g, path, name, out, ATTR_MAX_STR + 1);
    return xrealloc(out, strlen(out) + 1);
}

int mfile_read_tokenizer(mfile *m, mfile_tokenizer *t) {
    memset(t, 0, sizeof(*t));
    if (!mfile_has(m, "tokenizer")) return 0;
    hid_t g = H5Gopen2(m->file, "tokenizer", H5P_DEFAULT);
    if (g < 0) die("'%s': 'tokenizer' is not a group", m->path);
    attr_read_str(g, m->path, "type", t->type, sizeof(t->type));
    t->n = attr_read_int(g, m->path, "n");
    if (t->n < 1 || t->n > CONFIG_MAX_VOCAB)
        die("'%s': tokenizer attribute 'n' is %d, must be in [1, %d]", m->path, t->n, CONFIG_MAX_VOCAB);
    t->max_token_length = attr_read_int(g, m->path, "max_token_length");
    t->bos_id = tok_attr_int(g, m->path, "bos_id", -1);
    t->eos_id = tok_attr_int(g, m->path, "eos_id", -1);
    t->add_dummy_prefix = tok_attr_int(g, m->path, "add_dummy_prefix", 1);
    t->remove_extra_whitespaces = tok_attr_int(g, m->path, "remove_extra_whitespaces", 0);
    t->ignore_merges = tok_attr_int(g, m->path, "ignore_merges", 0);
    t->pattern = tok_attr_str(g, m->path, "pattern");
    char *tmpl = tok_attr_str(g, m->path, "chat_template");
    if (tmpl) snprintf(t->chat_template, sizeof t->chat_template, "%s", tmpl);
    free(tmpl);
    H5Gclose(g);
    hsize_t nb, no, ns, nk = 0, nm = 0;
    const int64_t n = t->n;
    t->bytes = read_whole(m, "tokenizer/bytes", H5T_NATIVE_UCHAR, 1, MFILE_MAX_TOKENIZER_BYTES, &nb);
    t->offsets = read_whole(m, "tokenizer/offsets", H5T_NATIVE_INT64, 8, n + 1, &no);
    t->scores = read_whole(m, "tokenizer/scores", H5T_NATIVE_FLOAT, 4, n, &ns);
    if (mfile_has(m, "tokenizer/kinds"))
        t->kinds = read_whole(m, "tokenizer/kinds", H5T_NATIVE_UCHAR, 1, n, &nk);
    if (mfile_has(m, "tokenizer/merges")) {
        t->merges = read_whole(m, "tokenizer/merges", H5T_NATIVE_INT32, 4, 2 * (int64_t)CONFIG_MAX_VOCAB, &nm);
        t->n_merges = (int)(nm / 2);
    }
    if (t->n < 0 || no != (hsize_t)t->n + 1 || ns != (hsize_t)t->n || t->offsets[0] != 0 ||
        (hsize_t)t->offsets[t->n] != nb || (t->kinds && nk != (hsize_t)t->n) || nm % 2 != 0 ||
        nm / 2 > INT32_MAX)
        die("'%s': tokenizer datasets are inconsistent", m->path);
    for (int i = 0; i < t->n; i++)
        if (t->offsets[i + 1] < t->offsets[i]) die("'%s': tokenizer offsets are not increasing", m->path);
    return 1;
}

int mfile_read_blob(mfile *m, const char *name, char **data, int64_t *len) {
    char full[512];
    snprintf(full, sizeof(full), "source/%s", name);
    if (!mfile_has(m, full)) return 0;
    hsize_t n;
    *data = read_whole(m, full, H5T_NATIVE_UCHAR, 1, MFILE_MAX_TOKENIZER_BYTES, &n);
    (*data)[n] = 0;
    *len = (int64_t)n;
    return 1;
}

/* ---------------------------------------------------------------- info */

typedef struct {
    const char *path;
    int64_t bytes, type_bytes[3], params;
    int count, type_count[3], any_q8;
    char **lines; /* (count) one line per dataset, its name first, for the natural-order listing */
} visit_state;

#if H5_VERSION_GE(1, 12, 0)
#define OINFO_T H5O_info2_t
#define OVISIT H5Ovisit3
#else
#define OINFO_T H5O_info_t
#define OVISIT H5Ovisit2
#endif

/* 1 when name is the scales of a q8 tensor ("X.scale" beside a dataset X) */
static int is_scale(hid_t obj, const char *name) {
    size_t n = strlen(name);
    if (n <= 6 || strcmp(name + n - 6, ".scale") != 0) return 0;
    char base[512];
    snprintf(base, sizeof(base), "%.*s", (int)(n - 6), name);
    return H5Lexists(obj, base, H5P_DEFAULT) > 0;
}

static int64_t dataset_bytes(hid_t obj, const char *name) {
    hid_t d = H5Dopen2(obj, name, H5P_DEFAULT);
    if (d < 0) return 0;
    hid_t sp = H5Dget_space(d), ty = H5Dget_type(d);
    int64_t nb = (int64_t)H5Sget_simple_extent_npoints(sp) * (int64_t)H5Tget_size(ty);
    H5Tclose(ty);
    H5Sclose(sp);
    H5Dclose(d);
    return nb;
}

/* first pass: does the file hold q8 tensors (then bf16 ones are explained) */
static herr_t find_q8_cb(hid_t obj, const char *name, const OINFO_T *info, void *data) {
    visit_state *s = data;
    if (info->type != H5O_TYPE_DATASET || strncmp(name, "tokenizer", 9) == 0 || strncmp(name, "source", 6) == 0)
        return 0;
    hid_t d = H5Dopen2(obj, name, H5P_DEFAULT);
    if (d >= 0 && H5Aexists(d, "dtype") > 0) {
        char t[16] = "";
        attr_read_str(d, s->path, "dtype", t, sizeof(t));
        if (strcmp(t, "q8") == 0) s->any_q8 = 1;
    }
    if (d >= 0) H5Dclose(d);
    return 0;
}

static herr_t visit_cb(hid_t obj, const char *name, const OINFO_T *info, void *data) {
    visit_state *s = data;
    if (info->type != H5O_TYPE_DATASET || is_scale(obj, name)) return 0;
    hid_t d = H5Dopen2(obj, name, H5P_DEFAULT);
    hid_t sp = H5Dget_space(d), ty = H5Dget_type(d);
    hsize_t dims[H5S_MAX_RANK] = {0};
    int rank = H5Sget_simple_extent_ndims(sp);
    H5Sget_simple_extent_dims(sp, dims, NULL); /* rank <= H5S_MAX_RANK */
    int weight = strncmp(name, "tokenizer", 9) != 0 && strncmp(name, "source", 6) != 0;
    const char *tn = "?";
    size_t sz = H5Tget_size(ty);
    int64_t nb = -1;
    hssize_t points = H5Sget_simple_extent_npoints(sp);
    if (points < 0 || !util_mul_ok((int64_t)points, (int64_t)sz, &nb)) nb = -1; /* shown as -1 */
    char note[96] = "";
    if (weight) {
        kern_dtype t = dataset_dtype(d, s->path, name);
        tn = kern_dtype_name(t);
        if (t == KERN_Q8) {
            char sname[512];
            snprintf(sname, sizeof(sname), "%s.scale", name);
            nb += dataset_bytes(obj, sname);
            snprintf(note, sizeof(note), " (with its scales)");
        } else if (t == KERN_BF16 && s->any_q8 && rank == 2 && dims[1] % KERN_Q8_BLOCK != 0) {
            snprintf(note, sizeof(note), " (not q8: %llu input columns, not a multiple of %d)",
                     (unsigned long long)dims[1], KERN_Q8_BLOCK);
        }
        s->type_bytes[t] += nb;
        s->type_count[t]++;
    } else if (H5Tget_class(ty) == H5T_FLOAT) {
        tn = sz == 4 ? "f32" : "f64";
    } else if (H5Tget_class(ty) == H5T_INTEGER) {
        tn = sz == 1 ? "u8" : sz == 8 ? "i64" : "i32";
    }
    if (weight && points > 0) s->params += points;
    char line[768];
    if (rank == 2)
        snprintf(line, sizeof(line), "  %-28s %-5s [%llu, %llu] %lld bytes%s\n", name, tn, (unsigned long long)dims[0],
                 (unsigned long long)dims[1], (long long)nb, note);
    else
        snprintf(line, sizeof(line), "  %-28s %-5s [%llu] %lld bytes%s\n", name, tn, (unsigned long long)dims[0],
                 (long long)nb, note);
    s->lines = xrealloc(s->lines, sizeof(char *) * (size_t)(s->count + 1));
    s->lines[s->count] = xstrdup(line);
    if (nb < 0 || !util_add_ok(s->bytes, nb, &s->bytes)) s->bytes = INT64_MAX;
    s->count++;
    H5Tclose(ty);
    H5Sclose(sp);
    H5Dclose(d);
    return 0;
}

/* natural order: runs of digits compare as numbers ("layers/2/wq" before "layers/10/wq") */
static int cmp_natural(const void *pa, const void *pb) {
    const char *a = *(const char *const *)pa, *b = *(const char *const *)pb;
    while (*a && *b) {
        if (isdigit((unsigned char)*a) && isdigit((unsigned char)*b)) {
            while (*a == '0') a++;
            while (*b == '0') b++;
            size_t na = 0, nb = 0;
            while (isdigit((unsigned char)a[na])) na++;
            while (isdigit((unsigned char)b[nb])) nb++;
            if (na != nb) return na < nb ? -1 : 1;
            int c = strncmp(a, b, na);
            if (c) return c;
            a += na, b += nb;
        } else {
            if (*a != *b) return (unsigned char)*a < (unsigned char)*b ? -1 : 1;
            a++, b++;
        }
    }
    return (unsigned char)*a - (unsigned char)*b;
}

void mfile_print_tensors(mfile *m, FILE *out, mfile_tensor_totals *tot) {
    visit_state s = {0};
    s.path = m->path;
    OVISIT(m->file, H5_INDEX_NAME, H5_ITER_INC, find_q8_cb, &s, H5O_INFO_BASIC);
    OVISIT(m->file, H5_INDEX_NAME, H5_ITER_INC, visit_cb, &s, H5O_INFO_BASIC);
    qsort(s.lines, (size_t)s.count, sizeof(char *), cmp_natural); /* each line starts "  name " */
    if (out) {
        fprintf(out, "datasets:\n");
        for (int i = 0; i < s.count; i++) fputs(s.lines[i], out);
        fprintf(out, "weights by type:");
        for (int t = 0; t < 3; t++)
            if (s.type_count[t])
                fprintf(out, " %s %d tensors %lld bytes;", kern_dtype_name((kern_dtype)t), s.type_count[t],
                        (long long)s.type_bytes[t]);
        fprintf(out, "\ntotal: %d datasets, %lld bytes (%.2f MiB)\n", s.count, (long long)s.bytes, s.bytes / 1048576.0);
    }
    for (int i = 0; i < s.count; i++) free(s.lines[i]);
    free(s.lines);
    if (tot) {
        memset(tot, 0, sizeof(*tot));
        tot->params = s.params;
        for (int t = 0; t < 3; t++) {
            tot->type_count[t] = s.type_count[t];
            tot->type_bytes[t] = s.type_bytes[t];
            tot->weight_bytes += s.type_bytes[t];
        }
    }
}

/* ---------------------------------------------------------------- parallel writing */

mfile_writer *mfile_create_parallel(const char *path, const model_config *c, MPI_Comm comm) {
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    check(H5Pset_fapl_mpio(fapl, comm, MPI_INFO_NULL) >= 0, "cannot set the MPI-IO driver");
    H5Pset_all_coll_metadata_ops(fapl, 1);
    H5Pset_coll_metadata_write(fapl, 1);
    /* objects of 1 MiB or more start on a 1 MiB boundary: whole file-system stripes per rank */
    H5Pset_alignment(fapl, (hsize_t)1 << 20, (hsize_t)1 << 20);
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl);
    H5Pclose(fapl);
    if (f < 0) die("cannot create '%s' with parallel HDF5 (is the directory there and writable?)", path);
    return writer_new(f, path, c);
}

void mfile_create_tensor(mfile_writer *w, const char *name, int64_t rows, int64_t cols, kern_dtype t) {
    check(t == KERN_F32 || (cols > 0 && (t != KERN_Q8 || cols % KERN_Q8_BLOCK == 0)),
          "'%s': tensor '%s' [%lld, %lld] cannot be stored as %s", w->path, name, (long long)rows, (long long)cols,
          kern_dtype_name(t));
    hsize_t dims[2] = {(hsize_t)rows, (hsize_t)cols};
    hid_t sp = H5Screate_simple(cols > 0 ? 2 : 1, dims, NULL);
    hid_t lcpl = lcpl_with_parents();
    hid_t dcpl = H5Pcreate(H5P_DATASET_CREATE);
    /* space is allocated at creation (parallel HDF5 requires it) and never filled: every
     * element is written afterwards */
    H5Pset_alloc_time(dcpl, H5D_ALLOC_TIME_EARLY);
    H5Pset_fill_time(dcpl, H5D_FILL_TIME_NEVER);
    hid_t d = H5Dcreate2(w->file, name, h5_file_type(t), sp, lcpl, dcpl, H5P_DEFAULT);
    if (d < 0) die("'%s': cannot create dataset '%s' (disk full?)", w->path, name);
    if (t != KERN_F32) attr_write_str(d, "dtype", kern_dtype_name(t));
    H5Dclose(d);
    H5Sclose(sp);
    if (t == KERN_Q8) { /* the scales: (rows, cols / 32) */
        char sname[512];
        snprintf(sname, sizeof(sname), "%s.scale", name);
        dims[1] = (hsize_t)(cols / KERN_Q8_BLOCK);
        sp = H5Screate_simple(2, dims, NULL);
        d = H5Dcreate2(w->file, sname, H5T_IEEE_F32LE, sp, lcpl, dcpl, H5P_DEFAULT);
        if (d < 0) die("'%s': cannot create dataset '%s' (disk full?)", w->path, sname);
        H5Dclose(d);
        H5Sclose(sp);
    }
    H5Pclose(dcpl);
    H5Pclose(lcpl);
}

void mfile_create_f32(mfile_writer *w, const char *name, int64_t rows, int64_t cols) {
    mfile_create_tensor(w, name, rows, cols, KERN_F32);
}

/* writes whole rows [row0, row0+nrows) of dataset name from data (memory type mtype);
 * collective on a file opened with the MPI-IO driver */
static void write_rows(mfile_writer *w, const char *name, hid_t mtype, int64_t row0, int64_t nrows,
                       const void *data) {
    hid_t d = H5Dopen2(w->file, name, H5P_DEFAULT);
    if (d < 0) die("'%s': no dataset '%s' to write (create it with mfile_create_tensor)", w->path, name);
    hid_t fs;
    hid_t ms = select_block(d, w->path, name, row0, nrows, 0, -1, &fs); /* whole rows */
    /* collective on a file opened with the MPI-IO driver: every rank calls, each with its own
     * (possibly empty) row block */
    hid_t dxpl = H5Pcreate(H5P_DATASET_XFER);
    hid_t fapl = H5Fget_access_plist(w->file);
    if (H5Pget_driver(fapl) == H5FD_MPIO) H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE);
    H5Pclose(fapl);
    float dummy = 0;
    if (H5Dwrite(d, mtype, ms, fs, dxpl, nrows > 0 ? data : (const void *)&dummy) < 0)
        die("'%s': cannot write tensor '%s' rows %lld+%lld (disk full?)", w->path, name,
            (long long)row0, (long long)nrows);
    H5Pclose(dxpl);
    H5Sclose(ms);
    H5Sclose(fs);
    H5Dclose(d);
}

void mfile_write_f32_rows(mfile_writer *w, const char *name, int64_t row0, int64_t nrows,
                          const float *data) {
    hid_t d = H5Dopen2(w->file, name, H5P_DEFAULT);
    if (d < 0) die("'%s': no dataset '%s' to write (create it with mfile_create_tensor)", w->path, name);
    kern_dtype t = dataset_dtype(d, w->path, name);
    hid_t sp = H5Dget_space(d);
    hsize_t dims[2] = {0, 1};
    H5Sget_simple_extent_dims(sp, dims, NULL);
    int64_t cols = H5Sget_simple_extent_ndims(sp) == 2 ? (int64_t)dims[1] : 1;
    H5Sclose(sp);
    H5Dclose(d);
    if (nrows < 0) nrows = 0;
    const int64_t n = nrows * cols;
    if (t == KERN_F32) {
        write_rows(w, name, H5T_NATIVE_FLOAT, row0, nrows, data);
    } else if (t == KERN_BF16) {
        uint16_t *h = xmalloc(sizeof(uint16_t) * (size_t)(n > 0 ? n : 1));
        for (int64_t k = 0; k < n; k++) h[k] = kern_f32_to_bf16(data[k]);
        write_rows(w, name, H5T_NATIVE_UINT16, row0, nrows, h);
        free(h);
    } else { /* q8: blocks of 32 never straddle rows (cols % 32 == 0) */
        int8_t *q = xmalloc((size_t)(n > 0 ? n : 1));
        float *sc = xmalloc(sizeof(float) * (size_t)(n / KERN_Q8_BLOCK + 1));
        if (n > 0) kern_quantize_q8(q, sc, data, n);
        char sname[512];
        snprintf(sname, sizeof(sname), "%s.scale", name);
        write_rows(w, name, H5T_NATIVE_INT8, row0, nrows, q);
        write_rows(w, sname, H5T_NATIVE_FLOAT, row0, nrows, sc);
        free(q);
        free(sc);
    }
}

void mfile_write_tensor(mfile_writer *w, const char *name, const float *data, int64_t rows, int64_t cols,
                        kern_dtype t) {
    mfile_create_tensor(w, name, rows, cols, t);
    mfile_write_f32_rows(w, name, 0, rows, data);
}
