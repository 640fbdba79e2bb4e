/* kernels: the forward pass's math on a batch of n token rows. Every kernel takes
 * (out, in, weights, dims), allocates nothing and never communicates. Optimised kernels have a
 * plain twin with the _ref suffix (kernels_ref.c) that the tests compare against. */
#ifndef MPILLAMA_KERNELS_H
#define MPILLAMA_KERNELS_H

#include <stdint.h>

/* out (n, d) = in (n, d) / rms(in row) * w (d) */
void kern_rmsnorm(float *out, const float *in, const float *w, int n, int d, float eps);
/* out (n, o) = in (n, i) @ w (o, i)^T through BLAS sgemm, batch-invariant: a token's result is
 * bit-identical whatever other tokens share its batch (tested in test_kernels), so completions
 * don't depend on the batch size. BLAS picks kernels, blockings and thread splits by shape (and
 * OpenBLAS's Haswell kernels give different roundings for different row counts), so every call
 * has exactly KERN_ROWS rows: in and out must hold kern_rows(n) rows; the rows past n are
 * computed and ignored. */
#define KERN_ROWS 8
static inline int kern_rows(int n) { return (n + KERN_ROWS - 1) / KERN_ROWS * KERN_ROWS; }
void kern_matmul(float *out, const float *in, const float *w, int n, int i, int o);
/* a short description of the implementation in use, for benchmarks */
const char *kern_matmul_impl(void);
void kern_matmul_ref(float *out, const float *in, const float *w, int n, int i, int o);
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
