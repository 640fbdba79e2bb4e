/* synth: model files with deterministic random weights in the exact shapes of real models
 * (Llama 3.x 1B..70B, tiny test shapes, or any Hugging Face config.json), written in parallel
 * by every rank of the job. For scaling studies and tests: no tokenizer (use prompt_ids). */
#ifndef MPILLAMA_SYNTH_H
#define MPILLAMA_SYNTH_H

#include <stdint.h>

#include "config.h"

/* `mpillama synth --shape NAME -o M.h5 [--layers N] [--seed S] [--dtype f32]`; every rank of
 * the job calls it (collective). Returns 0, or 2 on a usage error. */
int synth_main(int argc, char **argv);

/* fills c with the named shape (llama-3.2-1b, llama-3.2-3b, llama-3.1-8b, llama-3.1-70b, tiny,
 * small, medium); returns -1 when the name is unknown */
int synth_shape(const char *name, model_config *c);

/* the weight with element index e (row-major) of tensor number tensor_id: uniform in [-1, 1),
 * a pure function of (seed, tensor_id, e), so any rank can generate any block */
float synth_uniform(uint64_t seed, int tensor_id, int64_t e);

#endif
