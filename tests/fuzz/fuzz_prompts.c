/* fuzz_prompts: one JSONL request line through prompts_parse_json. It never dies: a bad line
 * becomes an error record. Invariants: an error record holds no prompt; a good one holds exactly
 * one of prompt, prompt_ids and messages, with every override in its documented range. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "prompts.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    prompt_item *it = xcalloc(1, sizeof *it);
    it->custom_id = xstrdup("1");
    it->max_tokens = -1, it->top_k = -1, it->ignore_eos = -1;
    it->temperature = it->top_p = it->min_p = NAN;
    it->repetition_penalty = it->frequency_penalty = it->presence_penalty = NAN;
    prompts_parse_json(it, (const char *)data, size);
    if (it->error) {
        if (it->text || it->ids || it->n_ids) fuzz_fail("an error record that holds a prompt");
        if (!it->error[0]) fuzz_fail("an empty error message");
    } else {
        int kinds = (it->text != NULL) + (it->ids != NULL) + (it->n_messages > 0);
        if (kinds != 1) fuzz_fail("a record with %d kinds of prompt", kinds);
        for (int i = 0; i < it->n_ids; i++)
            if (it->ids[i] < 0) fuzz_fail("a negative prompt id %d", it->ids[i]);
        if (it->max_tokens < -1 || it->top_k < -1 || (it->has_seed && it->seed < 0))
            fuzz_fail("an integer override out of range");
        if (!isnan(it->temperature) && !(it->temperature >= 0 && it->temperature <= 100))
            fuzz_fail("temperature %g out of range", (double)it->temperature);
        if (!it->custom_id || !it->custom_id[0]) fuzz_fail("an empty custom_id");
    }
    prompts_free(it, 1);
    return 0;
}
