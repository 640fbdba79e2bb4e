/* convert: source checkpoints -> the HDF5 model file. Serial (rank 0 only). Streams tensor by
 * tensor: peak memory is the largest tensor plus a little. */
#ifndef MPILLAMA_CONVERT_H
#define MPILLAMA_CONVERT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "dtype.h"
#include "mfile.h"

/* `mpillama convert SRC -o OUT [--tokenizer FILE] [--dtype T]`: detects the source type from the
 * content. dtype (NULL: the source's own) is "f32", "bf16" or "q8" (dtype_for's rule per tensor). */
int convert_main(int argc, char **argv);

/* llama2.c checkpoint (.bin, shared or unshared classifier), optional llama2.c tokenizer.bin */
void convert_llama2c(const char *bin_path, const char *tokenizer_path, const char *out_path, const char *dtype);
/* checks a llama2.c header (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size
 * (negative: unshared classifier), seq_len) and fills c; dies naming path and the field on a bad
 * one. Returns the number of floats the file must hold after the 28-byte header. */
int64_t convert_llama2c_header(const int32_t h[7], const char *path, model_config *c);
/* Hugging Face model directory: config.json + model.safetensors or model.safetensors.index.json
 * shards; F32/F16/BF16 tensors; q/k rows permuted from HF's rotate-half RoPE layout to the
 * file's adjacent-pair layout; tokenizer.json kept verbatim when present. tokenizer_path, when
 * given, is a llama2.c tokenizer.bin to store as the runtime tokenizer. */
void convert_hf(const char *dir, const char *tokenizer_path, const char *out_path, const char *dtype);
/* "" or a note for the summary line when a q8 conversion kept some tensors bf16 */
const char *convert_dtype_note(const model_config *c, kern_dtype want);

/* GGUF file (llama.cpp; v2/v3; architectures llama, qwen2, qwen3): metadata -> config, the
 * tokenizer from tokenizer.ggml.* (or tokenizer_path), tensors F32/F16/BF16/Q8_0/Q4_0/Q4_K/Q5_K/
 * Q6_K converted to f32; qwen2/qwen3 q/k rows permuted as for Hugging Face */
void convert_gguf(const char *path, const char *tokenizer_path, const char *out_path, const char *dtype);
/* the tokenizer a converter stores, checked before the output is created: the file given (its
 * pieces must number vocab_size), else the source's own through load_own (1: loaded; 0: why says
 * what is missing, a warning, nothing stored), fitted to vocab_size. Returns 1 when tok holds one
 * (dies when it would not build), 0 when there is none. */
typedef int (*convert_own_tokenizer_fn)(mfile_tokenizer *tok, const void *src, char *why, size_t why_cap);
int convert_tokenizer(mfile_tokenizer *tok, const char *given, int vocab_size, const char *src_path,
                      convert_own_tokenizer_fn load_own, const void *src);

/* fills cfg from a Hugging Face config.json; dies naming the file (and the field) on any problem.
 * shape_only (synth's random weights): max_position_embeddings and rms_norm_eps may be absent
 * (4096, 1e-5). */
void convert_hf_read_config(const char *path, model_config *cfg, int shape_only);
/* the same from config.json's bytes text[0..len) (no NUL needed); path names it in messages */
void convert_hf_parse_config(const char *text, size_t len, const char *path, model_config *cfg,
                             int shape_only);

/* checks a whole safetensors file image bytes[0..len) as the converter does before using it
 * (header length, strict JSON, dtypes, shapes, data_offsets inside the data and not
 * overlapping, names unique); dies with one line naming path on any problem; returns the
 * number of tensors */
int convert_hf_check_safetensors(const unsigned char *bytes, size_t len, const char *path);

/* HF rotate-half -> adjacent pairs, for one (n_heads * head_size, cols) matrix: out row
 * h*hs + 2i + j = in row h*hs + j*hs/2 + i. */
void convert_unpermute_rope(float *out, const float *in, int n_heads, int head_size, long cols);

#endif
