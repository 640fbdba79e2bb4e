/* kernels/peak.c: this CPU's limits as the kernels see them, for benchmarks: the throughput of a
 * register-only loop of the widest multiply-add of each type, and a multi-threaded read of
 * memory, both on the kernels' thread pool */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <string.h>

#include "internal.h"
#ifdef KERN_X86
#include <immintrin.h>
#endif

#define PEAK_ITERS 20000 /* loop trips per unit (12 independent accumulators each) */
#define PEAK_UNITS 96    /* units handed out: every thread takes several, so they end together */

typedef struct {
    kern_dtype dt;
    int wide; /* 512-bit */
    int amx;  /* AMX-BF16 tiles */
    volatile float sink;
} peak_job;

#ifdef KERN_X86
#define PEAK_ACC 12
__attribute__((target("avx512f,avx2,fma"))) static float peak_f32_512(void) {
    __m512 a[PEAK_ACC], x = _mm512_set1_ps(1.0f + 1e-7f), y = _mm512_set1_ps(0.999999f);
    _Pragma("GCC unroll 12") for (int k = 0; k < PEAK_ACC; k++) a[k] = _mm512_set1_ps((float)k);
    for (int it = 0; it < PEAK_ITERS; it++) {
        __asm__ volatile("" : "+v"(x), "+v"(y));
        _Pragma("GCC unroll 12") for (int k = 0; k < PEAK_ACC; k++) a[k] = _mm512_fmadd_ps(x, y, a[k]);
    }
    __m512 s = a[0];
    _Pragma("GCC unroll 12") for (int k = 1; k < PEAK_ACC; k++) s = _mm512_add_ps(s, a[k]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) static float peak_f32_256(void) {
    __m256 a[PEAK_ACC], x = _mm256_set1_ps(1.0f + 1e-7f), y = _mm256_set1_ps(0.999999f);
    _Pragma("GCC unroll 12") for (int k = 0; k < PEAK_ACC; k++) a[k] = _mm256_set1_ps((float)k);
    for (int it = 0; it < PEAK_ITERS; it++) {
        __asm__ volatile("" : "+v"(x), "+v"(y));
        _Pragma("GCC unroll 12") for (int k = 0; k < PEAK_ACC; k++) a[k] = _mm256_fmadd_ps(x, y, a[k]);
    }
    __m256 s = a[0];
    _Pragma("GCC unroll 12") for (int k = 1; k < PEAK_ACC; k++) s = _mm256_add_ps(s, a[k]);
    float t[8];
    _mm256_storeu_ps(t, s);
    return t[0] + t[7];
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) static float peak_bf16_512(void) {
    __m512 a[PEAK_ACC];
    __m512i x = _mm512_set1_epi16(0x3f80), y = _mm512_set1_epi16(0x3f7f);
    _Pragma("GCC unroll 12") for (int k = 0; k < PEAK_ACC; k++) a[k] = _mm512_set1_ps((float)k);
    for (int it = 0; it < PEAK_ITERS; it++) {
        __asm__ volatile("" : "+v"(x), "+v"(y));
        _Pragma("GCC unroll 12") for (int k = 0; k < PEAK_ACC; k++) a[k] = _mm512_dpbf16_ps(a[k], (__m512bh)x, (__m512bh)y);
    }
    __m512 s = a[0];
    _Pragma("GCC unroll 12") for (int k = 1; k < PEAK_ACC; k++) s = _mm512_add_ps(s, a[k]);
    return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni"))) static float peak_int8_512(void) {
    __m512i a[PEAK_ACC], x = _mm512_set1_epi8(3), y = _mm512_set1_epi8(-2);
    _Pragma("GCC unroll 12") for (int k = 0; k < PEAK_ACC; k++) a[k] = _mm512_set1_epi32(k);
    for (int it = 0; it < PEAK_ITERS; it++) {
        __asm__ volatile("" : "+v"(x), "+v"(y));
        _Pragma("GCC unroll 12") for (int k = 0; k < PEAK_ACC; k++) a[k] = _mm512_dpbusd_epi32(a[k], x, y);
    }
    __m512i s = a[0];
    _Pragma("GCC unroll 12") for (int k = 1; k < PEAK_ACC; k++) s = _mm512_add_epi32(s, a[k]);
    return (float)_mm512_reduce_add_epi32(s);
}
#endif

static void peak_unit(const void *ctx, int t0, int tn, int c0, int c1) {
    (void)t0, (void)tn;
    peak_job *J = (peak_job *)ctx;
    for (int c = c0; c < c1; c++) {
#ifdef KERN_X86
        float s = J->amx ? kern_amx_bf16_peak()
                  : J->dt == KERN_BF16 ? peak_bf16_512() : J->dt == KERN_Q8 ? peak_int8_512()
                  : J->wide          ? peak_f32_512()
                                     : peak_f32_256();
        J->sink = s;
#else
        (void)J;
#endif
    }
}

/* operations per multiply-add instruction of the loop */
static double peak_ops(kern_dtype dt, int wide) { return dt == KERN_F32 ? (wide ? 32.0 : 16.0) : dt == KERN_BF16 ? 64.0 : 128.0; }

double kern_peak_gops(kern_dtype dt, int threads) {
#ifdef KERN_X86
    __builtin_cpu_init();
    const int f512 = __builtin_cpu_supports("avx512f"), bw = f512 && __builtin_cpu_supports("avx512bw") &&
                                                            __builtin_cpu_supports("avx512vl");
    if (dt == KERN_F32 && !__builtin_cpu_supports("fma")) return 0;
    if (dt == KERN_BF16 && !(bw && __builtin_cpu_supports("avx512bf16"))) return 0;
    if (dt == KERN_Q8 && !(bw && __builtin_cpu_supports("avx512vnni"))) return 0;
    /* bf16 where the kernels run it as FMAs on widened operands: the FMA loop is their limit */
    const int amx = dt == KERN_BF16 && !strcmp(kern_matmul_impl_w(KERN_BF16), "amx"); /* AMX tiles' loop */
    if (dt == KERN_BF16 && !amx && kern_bf16_fma_faster()) dt = KERN_F32;
    peak_job J = {dt, dt != KERN_F32 || f512, amx, 0};
    double best = 0;
    /* the best of 10 passes (a few ms each) and of a quarter second: on a shared virtual machine
     * a pass the host takes a core from reads too low, never too high (3 passes read 240-450
     * GFLOP/s f32 on one), and a core can be gone for longer than 10 passes (half the f32 peak
     * read on a 2-core Zen 4 VM) */
    const double start = kern_now();
    for (int rep = 0; rep < 10 || kern_now() - start < 0.25; rep++) {
        const double t0 = kern_now();
        kern_pool_run(peak_unit, &J, 1, 1, PEAK_UNITS, 1, threads);
        const double dt_s = kern_now() - t0;
        const double ops = amx ? (double)PEAK_UNITS * KERN_AMX_PEAK_TRIPS * 4 * 16 * 16 * 32 * 2
                               : (double)PEAK_UNITS * PEAK_ITERS * PEAK_ACC * peak_ops(dt, J.wide);
        if (ops / dt_s / 1e9 > best) best = ops / dt_s / 1e9;
    }
    return best;
#else
    (void)dt, (void)threads;
    return 0;
#endif
}

int kern_bf16_fma_faster(void) {
    static _Atomic int faster = -1; /* measured once a process (kern_matmul_w asks before its threads
                                       do): the choice changes speed, never bits */
    if (faster >= 0) return faster;
    const char *env = getenv("MPILLAMA_BF16_FMA");
    if (env && (*env == '0' || *env == '1')) {
        const int v = *env == '1';
        faster = v;
        return v;
    }
#ifdef KERN_X86
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512bf16")) {
        faster = 0;
        return 0;
    }
    double best[2] = {1e9, 1e9}; /* seconds of 10 bf16 loops, of 10 f32 ones: the best of 5 */
    for (int rep = 0; rep < 5; rep++)
        for (int which = 0; which < 2; which++) {
            const double t0 = kern_now();
            for (int u = 0; u < 10; u++) (void)(which ? peak_f32_512() : peak_bf16_512());
            const double t = kern_now() - t0;
            if (t < best[which]) best[which] = t;
        }
    /* a vdpbf16ps is 32 multiply-adds, an FMA 16; the widened code needs 2 FMAs a vdpbf16ps and
     * about a quarter more for the widening: worth it only well past twice the rate */
    const int v = best[1] * 2.5 < best[0];
#else
    const int v = 0;
#endif
    faster = v;
    return v;
}

typedef struct {
    const float *a;
    int64_t chunk; /* floats a unit */
    volatile float sink;
} read_job;

#ifdef KERN_X86
__attribute__((target("avx2"))) static float read_sum(const float *p, int64_t n) {
    __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (int64_t k = 0; k + 32 <= n; k += 32) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(p + k));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(p + k + 8));
        s2 = _mm256_add_ps(s2, _mm256_loadu_ps(p + k + 16));
        s3 = _mm256_add_ps(s3, _mm256_loadu_ps(p + k + 24));
    }
    float t[8];
    _mm256_storeu_ps(t, _mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#else
static float read_sum(const float *p, int64_t n) {
    float s[8] = {0};
    for (int64_t k = 0; k + 8 <= n; k += 8)
        for (int l = 0; l < 8; l++) s[l] += p[k + l];
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}
#endif

static void read_unit(const void *ctx, int t0, int tn, int c0, int c1) {
    (void)t0, (void)tn;
    read_job *J = (read_job *)ctx;
    float s = 0;
    for (int c = c0; c < c1; c++) s += read_sum(J->a + (int64_t)c * J->chunk, J->chunk);
    J->sink = s;
}

struct kern_reader {
    float *a;
    int64_t chunk; /* floats a unit */
};
#define READ_UNITS 256

kern_reader *kern_reader_init(size_t bytes) {
    const int64_t chunk = (int64_t)(bytes / sizeof(float) / READ_UNITS) / 32 * 32;
    /* on huge pages where the system gives them (as the weights read into memory are): the
     * machine's limit, not its page walks' (a virtual machine's TLB misses walk two tables) */
    const size_t huge = (size_t)2 << 20, len = ((size_t)chunk * READ_UNITS * sizeof(float) + huge - 1) / huge * huge;
    kern_reader *r = malloc(sizeof *r);
    float *a = chunk > 0 ? aligned_alloc(huge, len) : NULL;
    if (!r || !a) {
        free(r), free(a);
        return NULL;
    }
#ifdef MADV_HUGEPAGE
    madvise(a, len, MADV_HUGEPAGE);
#endif
    for (int64_t k = 0; k < chunk * READ_UNITS; k++) a[k] = (float)(k & 7);
    r->a = a, r->chunk = chunk;
    return r;
}

double kern_reader_pass(kern_reader *r, int threads) {
    read_job J = {r->a, r->chunk, 0};
    const double t0 = kern_now();
    kern_pool_run(read_unit, &J, 1, 1, READ_UNITS, 1, threads);
    return (double)r->chunk * READ_UNITS * sizeof(float) / (kern_now() - t0) / 1e9;
}

void kern_reader_free(kern_reader *r) {
    if (r) free(r->a);
    free(r);
}

double kern_read_gbs(size_t bytes, int threads) {
    kern_reader *r = kern_reader_init(bytes);
    if (!r) return 0;
    double best = 0;
    /* the best of many passes (16, and half a second's): a pass that shares the machine with a
     * daemon's start-up (MPI's, right after MPI_Init), a late-waking worker or another guest of
     * the host reads too little, never too much */
    const double start = kern_now();
    for (int rep = 0; rep < 16 || kern_now() - start < 0.5; rep++) {
        const double gbs = kern_reader_pass(r, threads);
        if (gbs > best) best = gbs;
    }
    kern_reader_free(r);
    return best;
}
