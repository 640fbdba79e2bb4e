#!/usr/bin/env bash
# The AddressSanitizer + UndefinedBehaviorSanitizer job: builds a second tree (build-asan/, or
# $MPILLAMA_ASAN_BUILD) with -DMPILLAMA_SANITIZE=ON, runs the unit tests and a short 2-rank
# generate job (stories260K from ../shared: convert, then generate and score with --pp 2, then
# --tp 2), and fails on any sanitizer report. LeakSanitizer's suppressions (tests/lsan.supp) cover
# only Open MPI's, PMIx's, hwloc's and HDF5's own allocations.
#   tests/sanitize.sh          (prints "N passed, N failed" at the end)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${MPILLAMA_ASAN_BUILD:-$ROOT/build-asan}
SHARED=${MPILLAMA_SHARED_DIR:-$ROOT/../shared}
cd "$ROOT"
t0=$(date +%s)
cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMPILLAMA_SANITIZE=ON \
  -DMPILLAMA_SHARED_DIR="$SHARED" >/dev/null
# every C unit test, and the fuzz targets' replays of their corpora (ctest -L unit runs both)
units=$(cmake --build "$BUILD" --target help | sed -n 's/^\.\.\. \(test_[a-z0-9_]*\|replay_[a-z0-9_]*\)$/\1/p' |
  grep -v '^test_kernels$')
cmake --build "$BUILD" -j"$(nproc)" --target mpillama $units >/dev/null
echo "sanitize: built $BUILD in $(( $(date +%s) - t0 )) s"

# full stacks for leaks (the fast unwinder stops in libraries built without frame pointers), and
# Open MPI's components kept loaded at exit, so that LSan can tell MPI's own allocations (suppressed
# by module in tests/lsan.supp) from ours
# intercept_tls_get_addr=0: with it on, LeakSanitizer's stop-the-world tracer segfaults at exit on
# some machines ("Tracer caught signal 11"; seen on an Intel VM with kernel 6.18 and GCC 12's
# runtime in 1-3 tests a run, the code of every commit alike; google/sanitizers#1267)
ASAN_BASE=detect_leaks=1:halt_on_error=1:abort_on_error=0:exitcode=86:strict_string_checks=1:detect_stack_use_after_return=0:intercept_tls_get_addr=0
export ASAN_OPTIONS=$ASAN_BASE
export OMPI_MCA_mca_base_component_disable_dlclose=1
export LSAN_OPTIONS=suppressions=$ROOT/tests/lsan.supp:print_suppressions=0
export UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1:exitcode=87
export OPENBLAS_NUM_THREADS=1
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
export OMPI_MCA_rmaps_base_oversubscribe=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
# Open MPI's memory hooks (the patcher) intercept malloc behind ASan's back
export OMPI_MCA_memory=^patcher

passed=0 failed=0
log=$BUILD/sanitize.log
: >"$log"
step() { # step NAME CMD...: runs CMD, a failure or any sanitizer report in its output fails it
  local name=$1 s
  shift
  s=$(date +%s)
  if "$@" >>"$log" 2>&1 && ! grep -q "ERROR: AddressSanitizer\|ERROR: LeakSanitizer\|runtime error:" "$log"; then
    passed=$((passed + 1)); echo "PASS $name ($(( $(date +%s) - s )) s)"
  else
    failed=$((failed + 1)); echo "FAIL $name"; tail -60 "$log"
  fi
  : >"$log"
}

# the unit tests (C) and the fuzz targets' replays. test_kernels is left out: its large shapes
# take minutes under ASan, and the kernels allocate nothing and are checked against their _ref
# twins in the plain build; the kernels still run under ASan in the generate jobs below
# (strict_string_checks once made loading Llama 3's tiktoken file quadratic: strtoll on a 2 MB
# buffer per line. Its reader parses the ranks within the line now, so test_chat, test_tokenizer
# and the tokenizer and chat replays take seconds here, not minutes.)
echo "SKIP: test_kernels under ASan (minutes of arithmetic on large shapes; kernels run in the jobs below)"
# the unit tests that start MPI need the slow full unwinder to attribute MPI's leaks: they run
# with the 2-rank jobs below instead of here
step "unit tests and fuzz replays (ctest -L unit)" ctest --test-dir "$BUILD" -L unit \
  -E '^(test_kernels|test_tokenizer|test_machine_help|test_machine_bad_arg)$' --output-on-failure --timeout 600
export ASAN_OPTIONS=$ASAN_BASE:fast_unwind_on_malloc=0
step "mpillama machine --help" "$BUILD/mpillama" machine --help
step "test_tokenizer (starts MPI)" "$BUILD/tests/test_tokenizer" "$SHARED"

if [ -f "$SHARED/models/stories260K.bin" ]; then
  W=$BUILD/sanitize-work
  rm -rf "$W" && mkdir -p "$W"
  printf '%s\n' '{"custom_id":"a","prompt":"Once upon a time","max_tokens":24}' \
    '{"custom_id":"b","prompt_ids":[1,403,407,261],"max_tokens":16,"temperature":0.8,"seed":3}' >"$W/prompts.jsonl"
  # generate also runs n completions (a shared prefill), logprobs and an OpenAI batch line
  cp "$W/prompts.jsonl" "$W/gen.jsonl"
  printf '%s\n' '{"custom_id":"c","prompt":"Once","max_tokens":8,"n":3,"logprobs":3,"seed":5}' \
    '{"custom_id":"d","method":"POST","url":"/v1/completions","body":{"prompt":"The cat","max_tokens":8,"n":2,"logprobs":2}}' \
    >>"$W/gen.jsonl"
  M=$W/stories260K.h5
  step "convert stories260K (llama2.c)" "$BUILD/mpillama" convert "$SHARED/models/stories260K.bin" \
    --tokenizer "$SHARED/models/tok512.bin" -o "$M"
  step "generate, 2 ranks --pp 2" mpirun -n 2 "$BUILD/mpillama" generate --model "$M" \
    --prompts "$W/gen.jsonl" --output "$W/gen_pp.jsonl" --pp 2 --temperature 0
  step "generate, 2 ranks --tp 2" mpirun -n 2 "$BUILD/mpillama" generate --model "$M" \
    --prompts "$W/gen.jsonl" --output "$W/gen_tp.jsonl" --tp 2 --temperature 0
  step "generate --output-format openai, 2 ranks --dp 2" mpirun -n 2 "$BUILD/mpillama" generate --model "$M" \
    --prompts "$W/gen.jsonl" --output "$W/gen_dp.jsonl" --dp 2 --output-format openai
  step "score, 2 ranks" mpirun -n 2 "$BUILD/mpillama" score --model "$M" \
    --prompts "$W/prompts.jsonl" --output "$W/score.jsonl" --pp 2
  # the packed weights: q8 always, bf16 on AMX tiles where the CPU has them
  for t in bf16 q8; do
    step "convert stories260K --dtype $t" "$BUILD/mpillama" convert "$SHARED/models/stories260K.bin" \
      --tokenizer "$SHARED/models/tok512.bin" --dtype $t -o "$W/stories260K_$t.h5"
    step "generate $t, 2 ranks --tp 2" mpirun -n 2 "$BUILD/mpillama" generate --model "$W/stories260K_$t.h5" \
      --prompts "$W/prompts.jsonl" --output "$W/gen_$t.jsonl" --tp 2 --temperature 0
  done
  step "same completions on both grids" /usr/bin/python3 -c '
import json, sys
def strip(r):  # log-probs may differ in the last digits between tp splits
    for k in ("timing", "logprobs", "top_logprobs"):
        r.pop(k, None)
    for ch in r.get("choices", []):
        strip(ch)
    return r
def recs(p):
    return sorted((strip(json.loads(l)) for l in open(p)), key=lambda r: r["custom_id"])
sys.exit(recs(sys.argv[1]) != recs(sys.argv[2]))' "$W/gen_pp.jsonl" "$W/gen_tp.jsonl"
  step "info --plan" "$BUILD/mpillama" info "$M" --plan --pp 1 --tp 2
else
  echo "SKIP: 2-rank sanitizer job: $SHARED/models/stories260K.bin is absent"
fi
echo "sanitize: $(( $(date +%s) - t0 )) s in all"
echo "sanitize: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
