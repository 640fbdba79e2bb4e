/* arena: one allocation per rank for the weights; tensors are pointers into it */
#ifndef MPILLAMA_ARENA_H
#define MPILLAMA_ARENA_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *base;   /* (cap) bytes, 64-byte aligned */
    size_t cap, used;
    int external; /* base belongs to someone else (a shared-memory window): not freed */
} arena;

void arena_init(arena *a, size_t cap);
/* an arena over memory the caller owns (64-byte aligned, cap bytes) */
void arena_init_at(arena *a, void *base, size_t cap);
/* bytes arena_init(cap) reserves: cap rounded up to 64 */
size_t arena_round(size_t cap);
/* n floats, 64-byte aligned; dies when the arena is full (a sizing bug, not an input error) */
float *arena_floats(arena *a, int64_t n);
/* size bytes, 64-byte aligned; dies like arena_floats */
void *arena_alloc(arena *a, size_t size);
void arena_free(arena *a);

#endif
