/* fuzz_config: a Hugging Face config.json through convert_hf_parse_config. A bad one dies
 * (caught here); a good one must pass config_validate, so every size is within the limits. */
#include "config.h"
#include "convert.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    model_config c;
    int shape_only = size > 0 && (data[0] & 1); /* both modes, from the same inputs */
    FUZZ_GUARDED(convert_hf_parse_config((const char *)data, size, "config.json", &c, shape_only));
    if (!fuzz_died) {
        char why[512];
        if (config_validate(&c, "config.json", why, sizeof why) != 0) fuzz_fail("accepted, yet %s", why);
        if (c.dim > CONFIG_MAX_DIM || c.n_layers > CONFIG_MAX_LAYERS || c.vocab_size > CONFIG_MAX_VOCAB)
            fuzz_fail("a size beyond the limits was accepted");
    }
    return 0;
}
