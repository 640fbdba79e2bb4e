/* openai: the lines of OpenAI's Batch API output (--output-format openai), built by the writer
 * (world rank 0). A finished request becomes {"id", "custom_id", "response": {"status_code": 200,
 * "request_id", "body": a chat.completion or text_completion object}, "error": null}; a request
 * that cannot run goes to the error file with status 400 and OpenAI's error body, one cut short by
 * a stop signal with "response": null and "error": {"code": "interrupted", ...}. Ids derive from
 * the custom_id (reproducible). */
#ifndef MPILLAMA_OPENAI_H
#define MPILLAMA_OPENAI_H

#include <cJSON.h>

#include "prompts.h"
#include "scheduler.h"
#include "tokenizer.h"

/* a log-prob as JSON: 6 decimals, null when not finite (NaN logits) */
cJSON *openai_logprob_number(float lp);
/* the error file beside output OUT: OUT without a ".jsonl" ending, then ".errors.jsonl" (malloc'd) */
char *openai_errors_path(const char *output);
/* choice index of a finished request: {"index", "message": {"role", "content"} (chat) or "text",
 * "logprobs", "finish_reason"}; tok (may be NULL) spells the log-probs' tokens */
cJSON *openai_choice(const prompt_item *it, int index, const sched_result *r, const tokenizer *tok);
/* the whole line of a finished request from its choices (taken over) */
cJSON *openai_response(const prompt_item *it, cJSON *choices, int prompt_tokens, int completion_tokens,
                       const char *model, const char *fingerprint, long long created);
/* the error file's line of a request that cannot run (status 400, invalid_request_error) or that
 * failed while running (server = 1: status 500, server_error; e.g. non-finite logits) */
cJSON *openai_error(const prompt_item *it, const char *why, int server);
/* the error file's line of a request cut short by a stop signal */
cJSON *openai_interrupted(const prompt_item *it);

#endif
