/* dtype: how weight matrices are stored (docs/FORMAT.md, format version 2): f32, bf16, or q8
 * (int8 with an f32 scale per block of KERN_Q8_BLOCK input columns); names, sizes, and the rule
 * that picks each tensor's type from the one asked for at conversion. Norms are always f32. */
#ifndef MPILLAMA_DTYPE_H
#define MPILLAMA_DTYPE_H

#include <stdint.h>

#include "config.h"
#include "kernels.h"

/* 0 with *t set, or -1 when s names no type (kern_dtype_name's names) */
int dtype_parse(const char *s, kern_dtype *t);
/* bytes of a (rows, cols) matrix stored as t (q8: an int8 per element + an f32 per block) */
int64_t dtype_bytes(kern_dtype t, int64_t rows, int64_t cols);
/* the dataset name of weight kind k in layer 0 (or the model's), e.g. "layers/0/wq" */
const char *dtype_kind_tensor(int kind);
/* the weight kind (CONFIG_W_*) of a dataset name ("tok_embeddings", "layers/3/wq", "output"),
 * or -1 for any other (norms, biases) */
int dtype_kind_of(const char *name);
/* input columns of weight kind k (CONFIG_W_*) */
int64_t dtype_input_dim(const model_config *c, int kind);
/* the type a kind is stored in when want is asked for: want, except q8 for a kind whose input
 * dimension is not a multiple of KERN_Q8_BLOCK, which stays bf16 */
kern_dtype dtype_for(const model_config *c, int kind, kern_dtype want);
/* sets every kind of c->weight_dtype by dtype_for */
void dtype_set_all(model_config *c, kern_dtype want);
/* bytes of the whole model's weights in their types (norms f32; the classifier once when tied) */
int64_t dtype_model_bytes(const model_config *c);
/* the type of most weights (that of wq): a model's "weight type" in reports and defaults */
kern_dtype dtype_main(const model_config *c);
/* the KV cache type by default: f32 for f32 weights (which then match llama2.c), else bf16 */
kern_dtype dtype_default_kv(const model_config *c);

#endif
