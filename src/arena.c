#include "arena.h"

#include <stdlib.h>

#include "util.h"

void arena_init(arena *a, size_t cap) {
    a->cap = arena_round(cap);
    a->used = 0;
    a->external = 0;
    a->base = NULL;
    if (posix_memalign((void **)&a->base, 64, a->cap ? a->cap : 64) != 0)
        die("out of memory: cannot allocate a %.1f MiB weight arena", cap / 1048576.0);
}

size_t arena_round(size_t cap) { return (cap + 63) & ~(size_t)63; }

void arena_init_at(arena *a, void *base, size_t cap) {
    a->base = base;
    a->cap = cap & ~(size_t)63;
    a->used = 0;
    a->external = 1;
}

void *arena_alloc(arena *a, size_t size) {
    size_t bytes = (size + 63) & ~(size_t)63;
    if (a->used + bytes > a->cap) die("weight arena overflow: %zu + %zu > %zu bytes", a->used, bytes, a->cap);
    void *p = a->base + a->used;
    a->used += bytes;
    return p;
}

float *arena_floats(arena *a, int64_t n) { return arena_alloc(a, (size_t)n * sizeof(float)); }

void arena_free(arena *a) {
    if (!a->external) free(a->base);
    a->base = NULL;
    a->external = 0;
    a->cap = a->used = 0;
}
