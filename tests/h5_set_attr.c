/* h5_set_attr FILE NAME INT: overwrite (delete, then create) a scalar 32-bit integer attribute
 * on the root group of an HDF5 file. A test aid: it makes model files with a wrong format version
 * or a corrupt config value. Uses HDF5's default (serial) file driver, so no MPI_Init is needed. */
#include <errno.h>
#include <hdf5.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: h5_set_attr FILE NAME INT\n");
        return 2;
    }
    const char *path = argv[1], *name = argv[2];
    char *end;
    errno = 0;
    long v = strtol(argv[3], &end, 10);
    if (errno || *end || end == argv[3] || v < INT_MIN || v > INT_MAX) {
        fprintf(stderr, "h5_set_attr: '%s' is not a 32-bit integer\n", argv[3]);
        return 2;
    }
    int iv = (int)v;
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
    hid_t f = H5Fopen(path, H5F_ACC_RDWR, H5P_DEFAULT);
    if (f < 0) {
        fprintf(stderr, "h5_set_attr: cannot open '%s' for writing as HDF5\n", path);
        return 1;
    }
    int rc = 0;
    htri_t ex = H5Aexists(f, name);
    if (ex < 0 || (ex > 0 && H5Adelete(f, name) < 0)) {
        fprintf(stderr, "h5_set_attr: '%s': cannot delete attribute '%s'\n", path, name);
        rc = 1;
    } else {
        hid_t sp = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(f, name, H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT);
        if (a < 0 || H5Awrite(a, H5T_NATIVE_INT, &iv) < 0) {
            fprintf(stderr, "h5_set_attr: '%s': cannot write attribute '%s'\n", path, name);
            rc = 1;
        }
        if (a >= 0) H5Aclose(a);
        H5Sclose(sp);
    }
    if (H5Fclose(f) < 0) {
        fprintf(stderr, "h5_set_attr: '%s': cannot close the file\n", path);
        rc = 1;
    }
    return rc;
}
