#include "fuzz.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

sigjmp_buf fuzz_jump;
volatile int fuzz_died;

static void jump_back(int code) {
    (void)code;
    siglongjmp(fuzz_jump, 1);
}

void fuzz_guard_init(void) { util_set_abort(jump_back); }

char *fuzz_strndup(const uint8_t *data, size_t size) {
    char *s = xmalloc(size + 1);
    if (size) memcpy(s, data, size);
    s[size] = 0;
    return s;
}

static char temp_paths[4][256];
static int n_temp;

static void remove_temps(void) {
    for (int i = 0; i < n_temp; i++) unlink(temp_paths[i]);
}

const char *fuzz_temp_file(const uint8_t *data, size_t size, const char *suffix) {
    int slot = -1;
    for (int i = 0; i < n_temp; i++)
        if (strstr(temp_paths[i], suffix) && strlen(strstr(temp_paths[i], suffix)) == strlen(suffix)) slot = i;
    if (slot < 0) {
        check(n_temp < 4, "fuzz: too many temporary files");
        slot = n_temp++;
        const char *dir = getenv("TMPDIR");
        snprintf(temp_paths[slot], sizeof temp_paths[slot], "%s/mpillama_fuzz_%d_%d%s",
                 dir && *dir ? dir : "/tmp", (int)getpid(), slot, suffix);
        if (n_temp == 1) atexit(remove_temps);
    }
    FILE *f = xfopen(temp_paths[slot], "wb");
    if (size && fwrite(data, 1, size, f) != size) die_errno("fuzz: cannot write '%s'", temp_paths[slot]);
    if (fclose(f) != 0) die_errno("fuzz: cannot write '%s'", temp_paths[slot]);
    return temp_paths[slot];
}

const char *fuzz_shared_dir(void) {
    static const char *dir;
    static int done;
    if (!done) {
        done = 1;
        const char *env = getenv("MPILLAMA_SHARED_DIR");
        const char *cand = env && *env ? env : MPILLAMA_FUZZ_SHARED;
        struct stat st;
        if (stat(cand, &st) == 0 && S_ISDIR(st.st_mode)) dir = cand;
    }
    return dir;
}

void fuzz_fail(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fuzz: invariant broken: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    abort();
}
