/* fuzz_safetensors: a whole safetensors file image through the converter's header checks
 * (convert_hf_check_safetensors). A bad header dies (caught here); a good one reports its
 * tensors, and every tensor then lies inside the data, without overlap (checked by the reader). */
#include "convert.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    volatile int n = 0;
    FUZZ_GUARDED(n = convert_hf_check_safetensors(data, size, "fuzz.safetensors"));
    if (!fuzz_died && n <= 0) fuzz_fail("a header accepted with %d tensors", n);
    return 0;
}
