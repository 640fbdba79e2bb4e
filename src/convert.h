/* convert: source checkpoints -> the HDF5 model file. Serial (rank 0 only). Streams tensor by
 * tensor: peak memory is the largest tensor plus a little. */
#ifndef MPILLAMA_CONVERT_H
#define MPILLAMA_CONVERT_H

#include "config.h"

/* `mpillama convert SRC -o OUT [--tokenizer FILE]`: detects the source type from the content */
int convert_main(int argc, char **argv);

/* llama2.c checkpoint (.bin, shared or unshared classifier), optional llama2.c tokenizer.bin */
void convert_llama2c(const char *bin_path, const char *tokenizer_path, const char *out_path);
/* Hugging Face model directory: config.json + model.safetensors or model.safetensors.index.json
 * shards; F32/F16/BF16 tensors; q/k rows permuted from HF's rotate-half RoPE layout to the
 * file's adjacent-pair layout; tokenizer.json kept verbatim when present. tokenizer_path, when
 * given, is a llama2.c tokenizer.bin to store as the runtime tokenizer. */
void convert_hf(const char *dir, const char *tokenizer_path, const char *out_path);

/* GGUF file (llama.cpp; v2/v3; architectures llama, qwen2, qwen3): metadata -> config, the
 * tokenizer from tokenizer.ggml.* (or tokenizer_path), tensors F32/F16/BF16/Q8_0/Q4_0/Q4_K/Q5_K/
 * Q6_K converted to f32; qwen2/qwen3 q/k rows permuted as for Hugging Face */
void convert_gguf(const char *path, const char *tokenizer_path, const char *out_path);

/* fills cfg from a Hugging Face config.json; dies naming the file (and the field) on any problem.
 * shape_only (synth's random weights): max_position_embeddings and rms_norm_eps may be absent
 * (4096, 1e-5). */
void convert_hf_read_config(const char *path, model_config *cfg, int shape_only);

/* HF rotate-half -> adjacent pairs, for one (n_heads * head_size, cols) matrix: out row
 * h*hs + 2i + j = in row h*hs + j*hs/2 + i. */
void convert_unpermute_rope(float *out, const float *in, int n_heads, int head_size, long cols);

#endif
