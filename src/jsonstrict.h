/* jsonstrict: JSON from files we did not write, parsed strictly. cJSON alone accepts trailing
 * bytes after a value and keeps both copies of a duplicated key (lookups then see the first);
 * these wrappers refuse both, and read integers without truncating fractions. No MPI. */
#ifndef MPILLAMA_JSONSTRICT_H
#define MPILLAMA_JSONSTRICT_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

/* parses text[0..len) as one JSON value with nothing but whitespace after it and no object
 * (at any depth) holding a key twice, and no NUL character (raw or \u0000: C strings would end
 * there). Returns the tree, or NULL with why set to e.g. "not valid
 * JSON (at byte 12)", "trailing data after the JSON value (at byte 30)" or "duplicate key 'x'". */
cJSON *json_parse_strict(const char *text, size_t len, char *why, size_t why_cap);

/* json_parse_strict's tree of text[0..len), which must be a JSON object; else die()s with
 * "'path': why" (the file's name first, as every input error). The caller frees the tree */
cJSON *json_object_or_die(const char *text, size_t len, const char *path);
/* the same for the whole of file path (util_read_file's errors included) */
cJSON *json_read_object(const char *path);

/* 1 with *out set when item is a JSON number holding an integer in [lo, hi] (no fraction, not
 * NaN or infinite); 0 otherwise */
int json_get_int(const cJSON *item, int64_t lo, int64_t hi, int64_t *out);

/* 1 when item is a finite JSON number (cJSON reads 1e999 as infinity) */
int json_is_finite_number(const cJSON *item);

#endif
