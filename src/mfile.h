/* mfile: the HDF5 model file (docs/FORMAT.md). Converters write serially, synth in parallel; reading is
 * parallel through the MPI-IO driver: every rank of the communicator calls the read functions
 * in the same order (collective metadata and transfers), each selecting its own slice. */
#ifndef MPILLAMA_MFILE_H
#define MPILLAMA_MFILE_H

#include <mpi.h>
#include <stdint.h>

#include "config.h"
#include "dtype.h"

#define MFILE_FORMAT_NAME "mpillama"
#define MFILE_FORMAT_VERSION 2      /* written; 2 added bf16 and q8 weights */
#define MFILE_FORMAT_MIN_VERSION 1  /* oldest read (all f32) */
/* the largest tokenizer/bytes (and source/ blob) a file may claim */
#define MFILE_MAX_TOKENIZER_BYTES ((int64_t)1 << 30)

/* kinds of pieces (tokenizer/kinds); the values are SentencePiece's piece types minus one */
enum {
    MFILE_PIECE_NORMAL = 0,  /* ordinary text, takes part in merges */
    MFILE_PIECE_UNKNOWN = 1, /* <unk> */
    MFILE_PIECE_CONTROL = 2, /* special tokens: BOS, EOS, <|eot_id|>, ... */
    MFILE_PIECE_USER = 3,    /* user-defined: always matched whole in the text */
    MFILE_PIECE_UNUSED = 4,  /* a hole in the id space; never produced, decodes to "" */
    MFILE_PIECE_BYTE = 5     /* SentencePiece byte fallback <0xNN> */
};

/* tokenizer as stored in the file (docs/FORMAT.md, "Tokenizer"): pieces as raw bytes with
 * offsets, a score per piece, and optional fields that files written before them lack (the
 * reader then fills the defaults given here) */
typedef struct {
    char type[32];           /* "llama2c-bpe", "sentencepiece-bpe" (merges by score) or
                              * "byte-bpe" (byte-level, merges by rank) */
    int n;                   /* number of pieces (= vocab_size) */
    int max_token_length;
    char *bytes;             /* (offsets[n]) all pieces concatenated */
    int64_t *offsets;        /* (n + 1) piece i is bytes[offsets[i] .. offsets[i+1]) */
    float *scores;           /* (n) merge priority, higher first (byte-bpe: -rank) */
    unsigned char *kinds;    /* (n) MFILE_PIECE_*; NULL: derived from the text (llama2c-bpe) */
    int32_t *merges;         /* (n_merges, 2) byte-bpe pair merges, row = rank; NULL: merge by
                              * score (tiktoken and SentencePiece) */
    int n_merges;
    int bos_id, eos_id;      /* -1: none (default: derived from the pieces <s> and </s>) */
    int add_dummy_prefix;    /* prepend a space to the text (default 1) */
    int remove_extra_whitespaces; /* SentencePiece whitespace squeezing (default 0) */
    int ignore_merges;       /* byte-bpe: a chunk that is a piece is taken whole (default 0) */
    char *pattern;           /* byte-bpe split regex (PCRE2, UTF + UCP), malloc'd; NULL none */
    char chat_template[32];  /* "llama2", "llama3", "chatml" or "" (default: none known) */
} mfile_tokenizer;
void mfile_tokenizer_free(mfile_tokenizer *t);

/* ---- writing ---- */
typedef struct mfile_writer mfile_writer;
/* creates (truncates) path and writes the format attributes and the config */
mfile_writer *mfile_create(const char *path, const model_config *cfg);
/* writes one f32 tensor of shape (rows, cols) (cols = 0 for a vector) under name, e.g.
 * "layers/3/wq"; groups are created as needed */
void mfile_write_f32(mfile_writer *w, const char *name, const float *data, int64_t rows, int64_t cols);
/* writes one (rows, cols) tensor given in f32, stored as t (bf16 rounded to nearest even, q8
 * quantised per block of 32 columns: cols % 32 == 0); vectors (cols = 0) only as f32 */
void mfile_write_tensor(mfile_writer *w, const char *name, const float *data, int64_t rows, int64_t cols,
                        kern_dtype t);
void mfile_write_tokenizer(mfile_writer *w, const mfile_tokenizer *t);
/* stores a source file (e.g. a Hugging Face tokenizer.json) verbatim under "source/<name>" */
void mfile_write_blob(mfile_writer *w, const char *name, const char *data, int64_t len);
void mfile_close_writer(mfile_writer *w);

/* ---- reading ---- */
typedef struct mfile mfile;
/* the cheap checks before HDF5 sees a file: the superblock's signature (at 0 or after a user
 * block), its version and address size, and its end-of-file address against the file's size
 * (HDF5 1.10 misbehaves on some truncated or corrupt files rather than refusing them). 0, or -1
 * with a one-line reason naming the path in why. */
int mfile_check_superblock(const char *path, char *why, size_t cap);
/* opens collectively over comm; checks the superblock (mfile_check_superblock), the format name
 * and version. Dies with a one-line message naming the path when the file is missing, not HDF5,
 * truncated or of another version. */
mfile *mfile_open(const char *path, MPI_Comm comm);
void mfile_close(mfile *f);
const char *mfile_path(const mfile *f);
/* the config from the root attributes, and cfg->weight_dtype from the tensors' types */
void mfile_read_config(mfile *f, model_config *cfg);
/* storage type of a tensor (its "dtype" attribute; KERN_F32 without one). Dies naming the
 * tensor when it is missing or its attribute and HDF5 type disagree. */
kern_dtype mfile_dtype(mfile *f, const char *name);
/* 1 when the file holds a dataset of that name */
int mfile_has(mfile *f, const char *name);
/* shape of a dataset: returns the rank (1 or 2), dims[0..rank) */
int mfile_shape(mfile *f, const char *name, int64_t dims[2]);
/* collective: reads rows [row0, row0+nrows) x cols [col0, col0+ncols) of a 2-D dataset (or
 * elements [row0, row0+nrows) of a 1-D one, ncols = 1, col0 = 0) into out, row-major.
 * A rank that needs nothing passes nrows = 0 and still calls. Returns bytes read. */
int64_t mfile_read_f32(mfile *f, const char *name, int64_t row0, int64_t nrows, int64_t col0,
                       int64_t ncols, float *out);
/* collective like the reads (every rank, same datasets, same order; nrows = 0 for nothing):
 * points *out at rows [row0, row0+nrows) of a dataset (elements of a 1-D one) in place, in a
 * read-only mapping of the file, to be brought into memory by mfile_view_populate (read from the
 * file system unless the page cache holds them; the node's ranks share those pages), and returns 1. Returns 0
 * (the same on every rank) when the dataset is not stored contiguously as elem-byte little-endian
 * values at a 64-byte aligned offset, or the file cannot be mapped: read it with mfile_read_f32.
 * The view lives until mfile_close; the file must not change meanwhile. */
int mfile_view(mfile *f, const char *name, int64_t row0, int64_t nrows, size_t elem, const void **out);
/* like mfile_view (collective, 0 in the same cases), but copies rows [row0, row0+nrows) x
 * columns [col0, col0+ncols) of a 2-D dataset, row-major, into out (read from the file through
 * the page cache), and keeps no view */
int mfile_copy(mfile *f, const char *name, int64_t row0, int64_t nrows, int64_t col0, int64_t ncols, size_t elem,
               void *out);
/* like mfile_view (collective, 0 in the same cases), but only points *out at the rows in the
 * file's mapping, for one pass over them (nothing to populate; packing reads them once) */
int mfile_map_rows(mfile *f, const char *name, int64_t row0, int64_t nrows, size_t elem, const void **out);
/* where the weights live, from MPILLAMA_WEIGHTS (copy, the default; map; hdf5, also
 * MPILLAMA_MAP=0): copied from the file into the rank's own memory (on transparent huge pages; one
 * copy per node, shared by the node's ranks holding the same slice), in place in the file's mapping
 * (the page cache), or read through parallel HDF5 into own memory (the file not mapped). Dies
 * naming an unknown value. */
typedef enum { MFILE_WEIGHTS_MAP, MFILE_WEIGHTS_COPY, MFILE_WEIGHTS_HDF5 } mfile_weights;
mfile_weights mfile_weights_mode(void);
/* not collective: brings every range viewed since the last call into memory. Called after the
 * collective walk over the tensors, so that the ranks of a pipeline (each holding other layers)
 * read their ranges at the same time, not one after the other between collective opens */
void mfile_view_populate(mfile *f);
/* collective, like mfile_read_f32, for a tensor stored as t (dies naming the tensor when it is
 * stored otherwise): out gets the block as stored (float, uint16 bf16 bits or int8), and for q8
 * scale gets its (nrows, ncols / 32) scales; a q8 block's col0 and ncols must be multiples of 32.
 * Returns bytes read. */
int64_t mfile_read_tensor(mfile *f, const char *name, kern_dtype t, int64_t row0, int64_t nrows, int64_t col0,
                          int64_t ncols, void *out, float *scale);
/* returns 0 when the file has no tokenizer; otherwise fills t (every rank) */
int mfile_read_tokenizer(mfile *f, mfile_tokenizer *t);
/* 1 with *data malloc'd when source/<name> exists */
int mfile_read_blob(mfile *f, const char *name, char **data, int64_t *len);

/* the weight tensors' totals (tokenizer and source datasets left out; a q8 tensor's bytes with
 * its scales) */
typedef struct {
    int64_t params;        /* elements of the weight tensors */
    int64_t weight_bytes;  /* their bytes in the file */
    int type_count[3];     /* tensors per kern_dtype */
    int64_t type_bytes[3];
} mfile_tensor_totals;

/* info: with out, prints every dataset in natural order (layers/2 before layers/10) with shape,
 * storage type and bytes (a q8 tensor's with its scales, and why a tensor of a q8 file stays
 * bf16), the bytes per type and the total; fills tot when not NULL (serial, rank 0) */
void mfile_print_tensors(mfile *f, FILE *out, mfile_tensor_totals *tot);

/* ---- parallel writing (synth) ----
 * mfile_create_parallel: collective over comm; creates (truncates) path with the MPI-IO driver
 * and writes the same root attributes as mfile_create. Then every rank calls mfile_create_f32
 * for the same datasets in the same order, and mfile_write_f32_rows any number of times per
 * dataset, the same number on every rank; mfile_close_writer (collective) closes it. */
mfile_writer *mfile_create_parallel(const char *path, const model_config *cfg, MPI_Comm comm);
/* creates an f32 dataset of shape (rows, cols) (cols = 0 for a vector), space allocated, not
 * filled; collective on a parallel writer (also works on a serial one) */
void mfile_create_f32(mfile_writer *w, const char *name, int64_t rows, int64_t cols);
/* the same for a tensor stored as t (mfile_write_tensor's rules; q8 also creates name.scale) */
void mfile_create_tensor(mfile_writer *w, const char *name, int64_t rows, int64_t cols, kern_dtype t);
/* writes rows [row0, row0+nrows) of a dataset made by mfile_create_f32 or mfile_create_tensor
 * from f32 data ((nrows x cols) row-major; elements of a vector), converted to its type. Collective transfer on a parallel writer: each rank
 * passes its own disjoint row block; a rank with nothing to write passes nrows = 0 and calls. */
void mfile_write_f32_rows(mfile_writer *w, const char *name, int64_t row0, int64_t nrows,
                          const float *data);

#endif
