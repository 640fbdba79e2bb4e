/* fuzz: what the libFuzzer targets in tests/fuzz share. Each target defines
 * LLVMFuzzerTestOneInput (and may define LLVMFuzzerInitialize); built with clang
 * -fsanitize=fuzzer it is a fuzzer, built with replay.c it replays committed inputs under ctest.
 *
 * The readers report bad input with die(), which ends the process; a target runs them through
 * FUZZ_GUARDED, which turns die() into a return to the target (through util_set_abort). */
#ifndef MPILLAMA_FUZZ_H
#define MPILLAMA_FUZZ_H

#include <setjmp.h>
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

extern sigjmp_buf fuzz_jump;
extern volatile int fuzz_died;
/* installs the abort hook that jumps back to the innermost FUZZ_GUARDED */
void fuzz_guard_init(void);
/* runs STMT; a die() inside sets fuzz_died and leaves STMT */
#define FUZZ_GUARDED(STMT)                    \
    do {                                      \
        fuzz_guard_init();                    \
        fuzz_died = 0;                        \
        if (sigsetjmp(fuzz_jump, 0) == 0) {   \
            STMT;                             \
        } else {                              \
            fuzz_died = 1;                    \
        }                                     \
    } while (0)

/* a NUL-terminated copy of data (malloc'd) */
char *fuzz_strndup(const uint8_t *data, size_t size);
/* writes data to a per-process temporary file and returns its path (static storage); the file
 * is removed at exit */
const char *fuzz_temp_file(const uint8_t *data, size_t size, const char *suffix);
/* the shared test data directory: $MPILLAMA_SHARED_DIR, else ../shared beside the repository
 * (the path compiled in), NULL when absent */
const char *fuzz_shared_dir(void);
/* a failed invariant: prints why and aborts, which libFuzzer reports as a crash */
void fuzz_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

#endif
