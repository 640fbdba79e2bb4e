/* kernels: the forward pass's math on a batch of n token rows. Every kernel takes
 * (out, in, weights, dims), allocates nothing (but per-thread scratch that grows to the largest
 * shape seen, once) and never communicates. Optimised kernels have a plain twin with the _ref
 * suffix (kernels/ref.c) that the tests compare against. The code lives in src/kernels/, one
 * file per instruction set or type; kernels/dispatch.c chooses by CPU at run time. */
#ifndef MPILLAMA_KERNELS_H
#define MPILLAMA_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* element types of weights and of the KV cache */
typedef enum { KERN_F32 = 0, KERN_BF16 = 1, KERN_Q8 = 2 } kern_dtype;
#define KERN_Q8_BLOCK 32 /* q8: one f32 scale per 32 consecutive input columns */

/* a weight matrix of o rows (outputs) by i columns (inputs), row-major */
typedef struct {
    kern_dtype dtype;
    const void *data;   /* (o, i): float | uint16_t (bf16 bits) | q8 packed (kern_q8_pack, scales inside) */
    int64_t ld;         /* f32, bf16: elements from one row to the next (0: i, rows packed); a column
                         * block of a wider matrix used in place has the whole row's length. q8: 0 */
    int packed;         /* bf16, f32: data is kern_pack's layout (ld 0) */
} kern_wmat;

/* the row stride of w for rows of i elements */
static inline int64_t kern_wmat_ld(const kern_wmat *w, int i) { return w->ld ? w->ld : i; }

/* KERN_Q8 weights are always packed for the kernels (kern_q8_pack): rows in groups of
 * KERN_Q8_ROWS (the last group padded with zero rows), each group one stream of its blocks in
 * order; a group's block of 32 inputs is KERN_Q8_GBLOCK bytes: 8 steps of 16 rows x 4 consecutive
 * inputs (row r's int8 q[r][4s..4s+3] at step s, lane r), each byte stored as q + 128 (unsigned,
 * the operand vpdpbusd multiplies unsigned), then the 16 rows' f32 scales. w[r][k] =
 * scale[r][k/32] * q[r][k]. One 64-byte load is then 4 inputs of 16 rows: the kernels sum a
 * block's products exactly in int32 per row and scale it once, for a whole vector of rows. */
#define KERN_Q8_ROWS 16
#define KERN_Q8_GBLOCK (KERN_Q8_ROWS * KERN_Q8_BLOCK + KERN_Q8_ROWS * 4)
/* bytes of o rows of i inputs (i % 32 == 0) packed */
size_t kern_q8_packed_bytes(int64_t o, int64_t i);
/* dst (kern_q8_packed_bytes(o, i)) = the (o, i) matrix of int8 q and f32 scale (o, i / 32): row r
 * at q + r * ld, its scales at scale + r * (ld / 32) (ld % 32 == 0; a column block of a wider
 * matrix is packed straight from it) */
void kern_q8_pack(void *dst, const int8_t *q, const float *scale, int64_t ld, int64_t o, int64_t i);
/* x (i) = row r of w (i inputs, any dtype or layout) as f32 (the embedding table's lookup) */
void kern_wmat_row(float *x, const kern_wmat *w, int64_t r, int64_t i);
/* bf16 and f32 weights where the kernels in use take them packed (kern_packs): packed at load in
 * groups of 16 rows (the last padded with zero rows), each group one stream of its chunks in input
 * order; a chunk is 1 KiB, 16 lines of 64 bytes, line p holding step p of the 16 rows (4 bytes at
 * p * 64 + n * 4): a step is one f32 input (chunks of 16 inputs: one FMA's weights for 16
 * outputs) or the pair of bf16 inputs 2p and 2p + 1 (chunks of 32: AMX's B layout, one vdpbf16ps's
 * weights) */
#define KERN_PACK_CHUNK 1024
/* whether matrices of type t (bf16, f32) with i inputs are packed on this machine: the kernels in
 * use take them (bf16: AMX's or AVX512_BF16's; f32: AVX-512's) and a row is whole chunks (i % 32,
 * i % 16 == 0); the same answer for every matrix of a process (kern_matmul_use changes it: pack
 * after choosing) */
int kern_packs(kern_dtype t, int64_t i);
/* bytes of o rows of i inputs of type t packed (q8: kern_q8_packed_bytes) */
size_t kern_packed_bytes(kern_dtype t, int64_t o, int64_t i);
/* dst = the (o, i) bf16 or f32 matrix src (row r at element r * ld) packed */
void kern_pack(void *dst, const void *src, kern_dtype t, int64_t ld, int64_t o, int64_t i);

/* in one group's block of a packed q8 matrix (blk): lane's int8 q of input kb (0..31), and its scale */
static inline int8_t kern_q8_blk_q(const uint8_t *blk, int lane, int kb) {
    return (int8_t)(blk[(kb / 4) * 64 + lane * 4 + kb % 4] ^ 0x80);
}
static inline float kern_q8_blk_scale(const uint8_t *blk, int lane) {
    float s;
    memcpy(&s, blk + KERN_Q8_ROWS * KERN_Q8_BLOCK + lane * 4, 4);
    return s;
}
/* the int8 q and the scale of element (r, k) of the packed q8 matrix w (i inputs) */
static inline int8_t kern_q8_at(const kern_wmat *w, int64_t i, int64_t r, int64_t k, float *scale) {
    const uint8_t *g = (const uint8_t *)w->data + ((r / KERN_Q8_ROWS) * (i / KERN_Q8_BLOCK) + k / KERN_Q8_BLOCK) *
                                                      (int64_t)KERN_Q8_GBLOCK;
    *scale = kern_q8_blk_scale(g, (int)(r % KERN_Q8_ROWS));
    return kern_q8_blk_q(g, (int)(r % KERN_Q8_ROWS), (int)(k % KERN_Q8_BLOCK));
}


/* "f32", "bf16", "q8" */
const char *kern_dtype_name(kern_dtype dt);
/* bytes of one element (q8: the int8, without its scale) */
size_t kern_dtype_size(kern_dtype dt);

/* conversions: bf16 rounds to nearest even (NaN stays NaN); q8 quantises x (n, n % 32 == 0) per
 * block of 32: scale = max|x| / 127, q = x * (127 / max|x|) rounded to nearest even (0 for an
 * all-zero block) */
uint16_t kern_f32_to_bf16(float x);
float kern_bf16_to_f32(uint16_t h);
void kern_quantize_q8(int8_t *q, float *scale, const float *x, int64_t n);
/* dst (n elements of type dt: KERN_F32 or KERN_BF16) = src (n) */
void kern_store_rows(void *dst, kern_dtype dt, const float *src, int64_t n);

/* out (n, d) = in (n, d) / rms(in row) * w (d); out may be in (in place). Per-head norms (Qwen3's
 * q/k norm) call it on (n * n_heads, head_size) */
void kern_rmsnorm(float *out, const float *in, const float *w, int n, int d, float eps);
/* out (n, o) = in (n, i) @ w (o, i)^T, batch-invariant: a token's result is bit-identical whatever
 * other tokens share its call (alone, or at any position of a larger batch; tested in
 * test_kernels), so completions don't depend on the batch size. BLAS can't promise that (it picks
 * kernels, blockings and thread splits by shape, and OpenBLAS's Haswell kernels round differently
 * for different row counts), so kern_matmul is its own: every output element is one fixed chain
 * of fused multiply-adds over lanes of the input dimension (lane l sums k = l, l + L, l + 2L, ...
 * in order, the lanes then summed in a fixed tree), whatever tile, cache block or thread computes
 * it. The chain depends only on the implementation in use, chosen once per process by the CPU's
 * features: AVX-512F where the CPU has it (measured on this project's Zen EPYC: decode at B = 1
 * 1.4x, B = 32 1.2x, prefill 1.2x the AVX2 code), else AVX2+FMA, else portable C; the same bits
 * on every CPU of one kind. MPILLAMA_MATMUL=avx512|avx2|generic picks one (e.g. avx2 to get the
 * bits of an AVX2-only machine). Never n, never the thread count. Threads: as many as OpenBLAS was
 * given (openblas_get_num_threads()), from a pool started on first use that inherits the
 * process's binding; the work is split by output features. */
void kern_matmul(float *out, const float *in, const float *w, int n, int i, int o);
void kern_matmul_ref(float *out, const float *in, const float *w, int n, int i, int o);
/* out (n, o) = in (n, i) @ w^T for weights of any dtype, batch-invariant as kern_matmul (each
 * output element one fixed chain whatever n, tile or thread).
 *   KERN_F32: kern_matmul.
 *   KERN_BF16: the activations are rounded to bf16 (kern_f32_to_bf16) and every product of two
 *     bf16 is exact in f32; the products are summed in f32 in a fixed order of the
 *     implementation (the reference: k = 0, 1, ... in order).
 *   KERN_Q8 (i % 32 == 0, packed: kern_q8_pack): the activations are quantised per block of 32
 *     (kern_quantize_q8); the int8 products of a block are summed exactly in int32, and the
 *     blocks in order as s = fmaf((float)sum, scale_w * scale_x, s) from 0: the same bits in
 *     every implementation (the reference's chain). */
void kern_matmul_w(float *out, const float *in, const kern_wmat *w, int n, int i, int o);
void kern_matmul_w_ref(float *out, const float *in, const kern_wmat *w, int n, int i, int o);
/* out[k] (n, o[k]) = in (n, i) @ w[k]^T for k < count (at most KERN_MATMUL_MULTI): kern_matmul_w
 * of each, bit for bit, but the activations prepared once and one run of the thread pool over all
 * the outputs where the matrices share a type and layout (the q, k and v projections; gate and
 * up) */
#define KERN_MATMUL_MULTI 3
void kern_matmul_w_multi(int count, float *const out[], const kern_wmat *const w[], const int o[], const float *in,
                         int n, int i);
/* wall seconds the calling thread has spent in kern_matmul and kern_matmul_w since it started
 * (activation preparation included): a step's matrix work, for benchmarks */
double kern_matmul_seconds(void);
/* the implementation in use for f32 weights, e.g. "avx2" (for benchmarks and reports) */
const char *kern_matmul_impl(void);
/* ... for weights of type dt, e.g. "avx512bf16" */
const char *kern_matmul_impl_w(kern_dtype dt);
/* selects an implementation by name ("avx512", "avx2", "generic"; NULL: the defaults) for every
 * dtype that has one of that name this CPU runs; returns 0, or -1 when no dtype has (the
 * selection is then unchanged). Results of different implementations differ in rounding, so
 * select before the first matmul (tests do it) */
int kern_matmul_use(const char *name);
/* this CPU's limits as the kernels see them (for benchmarks), measured on `threads` threads of
 * the kernels' pool: the operations per second (2 per multiply-add, in billions) of a register-only
 * loop of the widest multiply-add for dt (f32: FMA, AVX-512 where present; bf16: AMX's
 * tdpbf16ps where the bf16 kernels take AMX tiles, else vdpbf16ps, or FMA where the bf16 kernels
 * emulate vdpbf16ps with FMAs, CPUs whose FMAs are over 2.5x as fast;
 * q8: vpdpbusd), 0 where the CPU has none; and the GB/s of reading `bytes` of memory */
double kern_peak_gops(kern_dtype dt, int threads);
double kern_read_gbs(size_t bytes, int threads);
/* a buffer of `bytes` to read again and again: one pass's GB/s on `threads` threads (bench: the
 * read limit in the same window as each step, on a host whose share of memory moves); NULL when
 * out of memory */
typedef struct kern_reader kern_reader;
kern_reader *kern_reader_init(size_t bytes);
double kern_reader_pass(kern_reader *r, int threads);
void kern_reader_free(kern_reader *r);
/* rotates adjacent pairs (2j, 2j+1) of every head of x (n, n_heads * head_size) in place by
 * angle pos[t] * inv_freq[j] */
void kern_rope(float *x, const int *pos, const float *inv_freq, int n, int n_heads, int head_size);
/* inverse frequencies (head_size / 2) for theta, with Llama 3 scaling when factor > 0 */
void kern_rope_freqs(float *inv_freq, int head_size, float theta, int llama3, float factor,
                     float low_freq_factor, float high_freq_factor, int original_max_pos);
/* grouped-query attention for n tokens over a KV cache.
 *   out (n, n_heads * hs); q (n, n_heads * hs)
 *   kcache, vcache (n_slots, seq_len, n_kv * hs) of kv_dtype (KERN_F32 or KERN_BF16, rows
 *   written with kern_store_rows), already holding every token of the batch
 *   token t of the batch attends to positions 0..pos[t] of slot slot[t]; with window > 0 only
 *   to the last window of them, max(0, pos[t] - window + 1)..pos[t] (sliding-window attention)
 *   local query head h uses local KV head (head0 + h) / kv_mul - kv_head0
 *   att: scratch (n_heads * seq_len) for the reference; kern_attention uses its threads' own.
 * Batch-invariant: a token's output is one fixed computation whatever else shares the call.
 * Threads: kern_matmul's pool, the work split by tokens and KV heads. */
typedef struct {
    int n_heads, n_kv, head_size, seq_len, kv_mul, head0, kv_head0;
    kern_dtype kv_dtype; /* of the caches (0: KERN_F32) */
    int window; /* 0: every earlier position */
} kern_attn_dims;
void kern_attention(float *out, const float *q, const void *kcache, const void *vcache,
                    const int *pos, const int *slot, int n, const kern_attn_dims *dims, float *att);
void kern_attention_ref(float *out, const float *q, const void *kcache, const void *vcache,
                        const int *pos, const int *slot, int n, const kern_attn_dims *dims, float *att);
/* the implementation in use ("avx512", "generic"; chosen with the matmuls' by kern_matmul_use) */
const char *kern_attention_impl(void);
/* gate (n, h) = silu(gate) * up */
void kern_swiglu(float *gate, const float *up, int64_t len);
/* x (n, d) += b (d), every row (projection biases) */
void kern_add_bias(float *x, const float *b, int n, int d);
/* x += y */
void kern_add(float *x, const float *y, int64_t len);
/* in-place softmax of x (n) */
void kern_softmax(float *x, int n);
/* log-softmax value of x[idx] */
float kern_log_softmax_at(const float *x, int n, int idx);

#endif
