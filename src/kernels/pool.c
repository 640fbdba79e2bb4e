/* kernels/pool.c: the kernels' threads and their scratch */
#include <cblas.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#ifdef KERN_X86
#include <immintrin.h>
#endif

double kern_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

void *kern_room(int slot, size_t bytes) {
    static __thread void *room[KERN_ROOM_N];
    static __thread size_t have[KERN_ROOM_N];
    if (bytes > have[slot]) {
        free(room[slot]);
        room[slot] = aligned_alloc(64, (bytes + 63) / 64 * 64);
        have[slot] = room[slot] ? bytes : 0;
    }
    return room[slot];
}

/* ---- threads: a pool of workers started on first use (they inherit the process's binding) ----
 * The work is cut into units (a chunk of token rows by a range of weight rows) handed out in
 * order through one atomic ticket: the caller works too, and a worker that is late (asleep,
 * descheduled, sharing a core with OpenBLAS's spinning threads) just takes fewer units. */
#define MM_MAX_THREADS 64
#define MM_SPIN_S 200e-6   /* an idle worker spins this long for the next job, then sleeps */

static struct {
    pthread_mutex_t busy; /* one call at a time uses the workers (others compute alone) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    /* job generation (bits 32..63), units (16..31), next unit (0..15) */
    _Atomic uint64_t ticket;
    atomic_int done;    /* units finished */
    atomic_int parts;   /* threads that may take part, the caller included */
    int nworkers;
    /* the job, written before its ticket */
    kern_unit_fn fn;
    const void *ctx;
    int n, o, nb, ub, ucols; /* nb token rows a chunk, ub columns a unit, ucols units a chunk */
} mm_pool = {.busy = PTHREAD_MUTEX_INITIALIZER, .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER};

static inline void mm_relax(void) {
#ifdef KERN_X86
    _mm_pause();
#endif
}


/* takes and computes units of job gen until none is left */
static void mm_work(uint64_t gen) {
    uint64_t tk = atomic_load_explicit(&mm_pool.ticket, memory_order_acquire);
    for (;;) {
        const unsigned units = (unsigned)(tk >> 16) & 0xffff, u = (unsigned)tk & 0xffff;
        if (tk >> 32 != gen || u >= units) return;
        if (!atomic_compare_exchange_weak_explicit(&mm_pool.ticket, &tk, tk + 1, memory_order_acquire,
                                                   memory_order_acquire))
            continue;
        /* the job can't change before this unit is done */
        const int t0 = (int)(u / mm_pool.ucols) * mm_pool.nb, c0 = (int)(u % mm_pool.ucols) * mm_pool.ub;
        const int tn = mm_pool.n - t0 < mm_pool.nb ? mm_pool.n - t0 : mm_pool.nb;
        const int c1 = c0 + mm_pool.ub < mm_pool.o ? c0 + mm_pool.ub : mm_pool.o;
        mm_pool.fn(mm_pool.ctx, t0, tn, c0, c1);
        atomic_fetch_add_explicit(&mm_pool.done, 1, memory_order_release);
        tk = atomic_load_explicit(&mm_pool.ticket, memory_order_acquire);
    }
}

typedef struct {
    int id;
    uint64_t gen; /* the generation when it was started: it waits for the next */
} mm_worker_arg;

static void *mm_worker(void *argp) {
    const mm_worker_arg arg = *(mm_worker_arg *)argp;
    free(argp);
    sigset_t all; /* the process's signals go to its own threads */
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    uint64_t seen = arg.gen;
    for (;;) {
        double t0 = 0;
        for (unsigned spins = 0;; spins++) {
            if (atomic_load_explicit(&mm_pool.ticket, memory_order_acquire) >> 32 != seen) break;
            mm_relax();
            if ((spins & 63) != 63) continue;
            sched_yield(); /* a core shared with other threads (OpenBLAS's) goes to them */
            const double t = kern_now();
            if (t0 == 0) t0 = t;
            else if (t - t0 > MM_SPIN_S) {
                pthread_mutex_lock(&mm_pool.mu);
                while (atomic_load_explicit(&mm_pool.ticket, memory_order_acquire) >> 32 == seen)
                    pthread_cond_wait(&mm_pool.cv, &mm_pool.mu);
                pthread_mutex_unlock(&mm_pool.mu);
            }
        }
        seen = atomic_load_explicit(&mm_pool.ticket, memory_order_acquire) >> 32;
        if (arg.id < atomic_load_explicit(&mm_pool.parts, memory_order_relaxed)) mm_work(seen);
    }
    return NULL;
}

/* starts workers up to nw (holding busy); returns how many there are */
static int mm_grow(int nw) {
    while (mm_pool.nworkers < nw) {
        mm_worker_arg *arg = malloc(sizeof(*arg));
        if (!arg) break;
        arg->id = mm_pool.nworkers + 1;
        arg->gen = atomic_load(&mm_pool.ticket) >> 32;
        pthread_t th;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        const int rc = pthread_create(&th, &at, mm_worker, arg);
        pthread_attr_destroy(&at);
        if (rc != 0) {
            free(arg);
            break;
        }
        mm_pool.nworkers++;
    }
    return mm_pool.nworkers;
}

int kern_pool_threads(double seconds, int o, int min_cols) {
    int t = openblas_get_num_threads();
    if (t > MM_MAX_THREADS) t = MM_MAX_THREADS;
    while (t > 1 && (seconds / t < 20e-6 || o / t < min_cols)) t--;
    return t < 1 ? 1 : t;
}

void kern_pool_run(kern_unit_fn fn, const void *ctx, int n, int nb, int o, int align, int t) {
    if (n <= 0 || o <= 0) return;
    if (nb < 1) nb = 1;
    if (align < 1) align = 1;
    const int chunks = (n + nb - 1) / nb;
    if (t <= 1 || chunks > 0xffff || pthread_mutex_trylock(&mm_pool.busy) != 0) {
        for (int t0 = 0; t0 < n; t0 += nb) fn(ctx, t0, n - t0 < nb ? n - t0 : nb, 0, o);
        return;
    }
    const int nw = mm_grow(t - 1);
    if (nw + 1 < t) t = nw + 1;
    /* units: a chunk of rows by ub columns, ub a multiple of align, about 16 units a thread */
    int ub = (o + 16 * t - 1) / (16 * t);
    ub = (ub + align - 1) / align * align;
    while ((int64_t)chunks * ((o + ub - 1) / ub) > 0xffff) ub += align;
    const int ucols = (o + ub - 1) / ub, units = chunks * ucols;
    mm_pool.fn = fn;
    mm_pool.ctx = ctx;
    mm_pool.n = n, mm_pool.o = o, mm_pool.nb = nb, mm_pool.ub = ub, mm_pool.ucols = ucols;
    atomic_store_explicit(&mm_pool.done, 0, memory_order_relaxed);
    atomic_store_explicit(&mm_pool.parts, t, memory_order_relaxed);
    const uint64_t gen = ((atomic_load_explicit(&mm_pool.ticket, memory_order_relaxed) >> 32) + 1) & 0xffffffffu;
    pthread_mutex_lock(&mm_pool.mu);
    atomic_store_explicit(&mm_pool.ticket, gen << 32 | (uint64_t)units << 16, memory_order_release);
    pthread_cond_broadcast(&mm_pool.cv);
    pthread_mutex_unlock(&mm_pool.mu);
    mm_work(gen);
    while (atomic_load_explicit(&mm_pool.done, memory_order_acquire) < units) mm_relax();
    pthread_mutex_unlock(&mm_pool.busy);
}
