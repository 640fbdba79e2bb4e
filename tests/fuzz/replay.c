/* replay: runs a fuzz target's LLVMFuzzerTestOneInput over committed inputs (files, or every
 * file of the directories given), without libFuzzer: the regression tests of tests/fuzz under
 * ctest. A crash or a broken invariant ends it (abort); otherwise it prints the count. */
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"
#include "util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int replay_path(const char *path) {
    struct stat st;
    if (stat(path, &st) != 0) die_errno("replay: cannot open '%s'", path);
    if (S_ISDIR(st.st_mode)) {
        DIR *d = opendir(path);
        if (!d) die_errno("replay: cannot open '%s'", path);
        struct dirent *e;
        int n = 0;
        while ((e = readdir(d))) {
            if (e->d_name[0] == '.') continue;
            char sub[4096];
            snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
            n += replay_path(sub);
        }
        closedir(d);
        return n;
    }
    size_t len;
    char *data = util_read_file(path, &len);
    LLVMFuzzerTestOneInput((const uint8_t *)data, len);
    free(data);
    return 1;
}

int main(int argc, char **argv) {
    if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
    int n = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) != 0) continue; /* a target without regressions yet */
        n += replay_path(argv[i]);
    }
    if (n == 0) {
        printf("SKIP: no inputs to replay under the paths given\n");
        return 77;
    }
    printf("replayed %d inputs: no crash, no broken invariant\n", n);
    return 0;
}
