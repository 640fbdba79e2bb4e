/* slow_rename: an LD_PRELOAD shim for test_failures. After a successful rename() onto a path
 * that ends in $SLOW_RENAME_SUFFIX it creates "<path>.renamed" and waits (30 s at most) until
 * "<path>.probed" exists, so that the test can look at the new file between the rename and what
 * the program does next (--resume's replaced output must already be locked then). */
#include <dlfcn.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int rename(const char *from, const char *to) {
    int (*real)(const char *, const char *) = (int (*)(const char *, const char *))dlsym(RTLD_NEXT, "rename");
    int rc = real(from, to);
    const char *suffix = getenv("SLOW_RENAME_SUFFIX");
    size_t n = strlen(to), ns = suffix ? strlen(suffix) : 0;
    if (rc != 0 || !suffix || n < ns || strcmp(to + n - ns, suffix) != 0) return rc;
    char path[4096];
    snprintf(path, sizeof(path), "%s.renamed", to);
    int fd = open(path, O_WRONLY | O_CREAT, 0666);
    if (fd >= 0) close(fd);
    snprintf(path, sizeof(path), "%s.probed", to);
    struct timespec ts = {0, 10 * 1000 * 1000};
    for (int i = 0; i < 3000 && access(path, F_OK) != 0; i++) nanosleep(&ts, NULL);
    return rc;
}
