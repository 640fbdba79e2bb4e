/* kernels: the forward pass's math on a batch of n token rows. Every kernel takes
 * (out, in, weights, dims), allocates nothing and never communicates. Optimised kernels have a
 * plain twin with the _ref suffix (kernels_ref.c) that the tests compare against. */
#ifndef MPILLAMA_KERNELS_H
#define MPILLAMA_KERNELS_H

#include <stdint.h>

/* out (n, d) = in (n, d) / rms(in row) * w (d) */
void kern_rmsnorm(float *out, const float *in, const float *w, int n, int d, float eps);
/* out (n, o) = in (n, i) @ w (o, i)^T, batch-invariant: a token's result is bit-identical whatever
 * other tokens share its call (alone, or at any position of a larger batch; tested in
 * test_kernels), so completions don't depend on the batch size. BLAS can't promise that (it picks
 * kernels, blockings and thread splits by shape, and OpenBLAS's Haswell kernels round differently
 * for different row counts), so kern_matmul is its own: every output element is one fixed chain
 * of fused multiply-adds over lanes of the input dimension (lane l sums k = l, l + L, l + 2L, ...
 * in order, the lanes then summed in a fixed tree), whatever tile, cache block or thread computes
 * it. The chain depends only on the implementation in use, chosen once per process: AVX2+FMA
 * where the CPU has it (the default: the same bits on every such x86 CPU), else portable C;
 * MPILLAMA_MATMUL=avx512|avx2|generic picks one (AVX-512: no faster on AMD Zen 4, whose 512-bit
 * units are 256 bits wide). Never n, never the thread count. Threads: as many as OpenBLAS was
 * given (openblas_get_num_threads()), from a pool started on first use that inherits the
 * process's binding; the work is split by output features. */
void kern_matmul(float *out, const float *in, const float *w, int n, int i, int o);
void kern_matmul_ref(float *out, const float *in, const float *w, int n, int i, int o);
/* the implementation in use, e.g. "avx2" (for benchmarks and reports) */
const char *kern_matmul_impl(void);
/* selects an implementation by name ("avx512", "avx2", "generic"; NULL: the default); returns 0,
 * or -1 when this CPU can't run it (the selection is then unchanged). Results of different
 * implementations differ in rounding, so select before the first matmul (tests do it) */
int kern_matmul_use(const char *name);
/* rotates adjacent pairs (2j, 2j+1) of every head of x (n, n_heads * head_size) in place by
 * angle pos[t] * inv_freq[j] */
void kern_rope(float *x, const int *pos, const float *inv_freq, int n, int n_heads, int head_size);
/* inverse frequencies (head_size / 2) for theta, with Llama 3 scaling when factor > 0 */
void kern_rope_freqs(float *inv_freq, int head_size, float theta, int llama3, float factor,
                     float low_freq_factor, float high_freq_factor, int original_max_pos);
/* grouped-query attention for n tokens over a KV cache.
 *   out (n, n_heads * hs); q (n, n_heads * hs)
 *   kcache, vcache (n_slots, seq_len, n_kv * hs), already holding every token of the batch
 *   token t of the batch attends to positions 0..pos[t] of slot slot[t]
 *   local query head h uses local KV head (head0 + h) / kv_mul - kv_head0
 *   att: scratch (n_heads * seq_len) */
typedef struct {
    int n_heads, n_kv, head_size, seq_len, kv_mul, head0, kv_head0;
} kern_attn_dims;
void kern_attention(float *out, const float *q, const float *kcache, const float *vcache,
                    const int *pos, const int *slot, int n, const kern_attn_dims *dims, float *att);
void kern_attention_ref(float *out, const float *q, const float *kcache, const float *vcache,
                        const int *pos, const int *slot, int n, const kern_attn_dims *dims, float *att);
/* gate (n, h) = silu(gate) * up */
void kern_swiglu(float *gate, const float *up, int64_t len);
/* x += y */
void kern_add(float *x, const float *y, int64_t len);
/* in-place softmax of x (n) */
void kern_softmax(float *x, int n);
/* log-softmax value of x[idx] */
float kern_log_softmax_at(const float *x, int n, int idx);

#endif
