#!/usr/bin/env bash
# The demo job: a batch of prompts through `mpirun -n 2 mpillama generate` on a small model.
# Model: the real stories260K from ../shared when it is there, else a small random model that
# the project makes itself (its text is gibberish, but the job, outputs and timings are real).
#   jobs/demo.sh [RANKS]          output in demo-out/
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib/setup.sh"
RANKS=${1:-2}
OUT=${DEMO_OUT:-$PWD/demo-out}
mkdir -p "$OUT"
SHARED=${MPILLAMA_SHARED:-$MPILLAMA_ROOT/../shared}
if [ -f "$SHARED/models/stories260K.bin" ]; then
  "$MPILLAMA_BIN" convert "$SHARED/models/stories260K.bin" --tokenizer "$SHARED/models/tok512.bin" -o "$OUT/model.h5"
  PROMPTS=$MPILLAMA_ROOT/data/demo_prompts.jsonl
else
  echo "demo: ../shared/models/stories260K.bin is absent: using a random model made here (gibberish text)"
  /usr/bin/python3 "$MPILLAMA_ROOT/tests/make_llama2c_model.py" "$OUT/random.bin" --dim 64 --hidden 172 \
    --layers 5 --heads 8 --kv-heads 4 --vocab 512 --seq-len 256 --seed 1
  "$MPILLAMA_BIN" convert "$OUT/random.bin" -o "$OUT/model.h5"
  PROMPTS=$MPILLAMA_ROOT/data/demo_prompt_ids.jsonl
fi
mpirun -n "$RANKS" "$MPILLAMA_BIN" generate --model "$OUT/model.h5" --prompts "$PROMPTS" \
  --output "$OUT/completions.jsonl" --overwrite --max-tokens 120 --seed 7 --verbose
echo "demo: $(wc -l < "$OUT/completions.jsonl") completions in $OUT/completions.jsonl; the first:"
head -n 1 "$OUT/completions.jsonl"
