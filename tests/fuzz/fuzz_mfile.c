/* fuzz_mfile: model-file validation. The input's bytes are written to a file, which is then
 * opened as mpillama opens a model (parallel HDF5 over MPI_COMM_SELF): format and version,
 * the config attributes, every tensor's shape against the config (model_check_file), the
 * stored tokenizer (read and built), and one tensor read. A bad file dies (caught here; HDF5's
 * state is then reset with H5close). Needs MPI: LLVMFuzzerInitialize calls MPI_Init. */
#include <hdf5.h>
#include <mpi.h>
#include <stdlib.h>

#include "fuzz.h"
#include "mfile.h"
#include "model.h"
#include "tokenizer.h"
#include "util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    MPI_Init(argc, argv);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *path = fuzz_temp_file(data, size, ".h5");
    mfile *volatile f = NULL;
    float *volatile norm = NULL;
    mfile_tokenizer m = {0};
    tokenizer *t = NULL;
    FUZZ_GUARDED({
        f = mfile_open(path, MPI_COMM_SELF);
        model_config c;
        mfile_read_config(f, &c);
        model_check_file(f, &c);
        if (mfile_read_tokenizer(f, &m)) {
            if (m.n != c.vocab_size) die("tokenizer has %d pieces, vocab_size is %d", m.n, c.vocab_size);
            t = tok_init(&m);
        }
        norm = xmalloc(sizeof(float) * (size_t)c.dim);
        mfile_read_f32(f, "norm", 0, c.dim, 0, 1, norm);
    });
    if (fuzz_died) {
        H5close(); /* every HDF5 object the reader held; the library starts again on next use */
        return 0;
    }
    tok_free(t);
    mfile_tokenizer_free(&m);
    free(norm);
    mfile_close(f);
    return 0;
}
