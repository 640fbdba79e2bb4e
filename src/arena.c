#include "arena.h"

#include <stdlib.h>

#include "util.h"

void arena_init(arena *a, size_t cap) {
    a->cap = (cap + 63) & ~(size_t)63;
    a->used = 0;
    a->base = NULL;
    if (posix_memalign((void **)&a->base, 64, a->cap ? a->cap : 64) != 0)
        die("out of memory: cannot allocate a %.1f MiB weight arena", cap / 1048576.0);
}

float *arena_floats(arena *a, int64_t n) {
    size_t bytes = ((size_t)n * sizeof(float) + 63) & ~(size_t)63;
    if (a->used + bytes > a->cap) die("weight arena overflow: %zu + %zu > %zu bytes", a->used, bytes, a->cap);
    float *p = (float *)(a->base + a->used);
    a->used += bytes;
    return p;
}

void arena_free(arena *a) {
    free(a->base);
    a->base = NULL;
    a->cap = a->used = 0;
}
