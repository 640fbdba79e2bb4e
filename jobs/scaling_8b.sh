#!/usr/bin/env bash
# Scaling study on a synthetic Llama 3.1 8B (random weights, exact shapes; `mpillama synth`):
# synthesizes the model into $WORK once, runs the benchmark prompts (data/bench_prompts.jsonl)
# on each grid with --trace, then writes the report (analysis/report.py) to $WORK/report.
#
#   jobs/scaling_8b.sh                        grids 1x1 1x2 2x1 on this machine
#   GRIDS="1x4 2x2 4x1" WORK=/scratch/me/s8b jobs/scaling_8b.sh
#   sbatch -N 2 --ntasks-per-node=2 --exclusive jobs/scaling_8b.sh      (GRIDS up to 4 ranks)
#
# Environment (defaults in brackets):
#   WORK          where the model, runs and report go [$PWD/scaling-8b]
#   GRIDS         space-separated PPxTP grids [1x1 1x2 2x1]; each runs on PP*TP ranks
#   BATCH         sequences in flight; several values give a batch sweep [16]
#   MAX_TOKENS    tokens generated per prompt, EOS ignored so every run does the same work [32]
#   MAX_SEQ_LEN   KV cache positions per sequence (prompts are at most 256 tokens) [320]
#   SHAPE         the synth shape [llama-3.1-8b]; LAYERS: keep the first N layers [all]
#   SEED          synth seed [1]
#   SYNTH_RANKS   ranks writing the model [the largest grid's]
#   PROMPTS       prompt file [data/bench_prompts.jsonl]
#   MPIRUN        the launcher [mpirun]; MPIRUN_ARGS: extra launcher options (e.g. --map-by ppr:2:node)
#   MPILLAMA_BIN  a built mpillama: skips jobs/lib/setup.sh (which installs Debian packages and builds)
#   RERUN=1       run grids again even when their summary.json exists (default: keep them, so a
#                 job cut off by its time limit resumes where it stopped)
#   REPORT_ARGS   extra analysis/report.py options (e.g. "--net-gbps 200 --ranks-per-node 2")
# Memory: the f32 8B model is 32 GB of weights (plus the KV cache): a 1x1 run needs a node with
# about 40 GB; 2 ranks on one node share the same total. Disk: 32 GB for the model file.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
if [ -n "${MPILLAMA_BIN:-}" ]; then
  [ -x "$MPILLAMA_BIN" ] || { echo "scaling_8b: MPILLAMA_BIN=$MPILLAMA_BIN is not an executable" >&2; exit 2; }
else
  source "$HERE/lib/setup.sh" # sets MPILLAMA_BIN (builds in $ROOT/build)
fi
if [ "$(id -u)" -eq 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi

WORK=${WORK:-$PWD/scaling-8b}
GRIDS=${GRIDS:-"1x1 1x2 2x1"}
BATCH=${BATCH:-16}
MAX_TOKENS=${MAX_TOKENS:-32}
MAX_SEQ_LEN=${MAX_SEQ_LEN:-320}
SHAPE=${SHAPE:-llama-3.1-8b}
LAYERS=${LAYERS:-}
SEED=${SEED:-1}
PROMPTS=${PROMPTS:-$ROOT/data/bench_prompts.jsonl}
MPIRUN=${MPIRUN:-mpirun}
read -r -a MPIRUN_EXTRA <<< "${MPIRUN_ARGS:-}"
read -r -a REPORT_EXTRA <<< "${REPORT_ARGS:-}"
PYTHON=${PYTHON:-/usr/bin/python3}

if ! "$MPILLAMA_BIN" generate --help 2>&1 | grep -q -- "--trace"; then
  echo "scaling_8b: $MPILLAMA_BIN has no 'generate --trace': build a newer mpillama" >&2
  exit 2
fi
[ -f "$PROMPTS" ] || { echo "scaling_8b: no prompt file $PROMPTS" >&2; exit 2; }

# parse and check every grid before any long step
declare -a PPS TPS
max_ranks=1
for g in $GRIDS; do
  if ! [[ $g =~ ^([0-9]+)x([0-9]+)$ ]] || [ "${BASH_REMATCH[1]}" -lt 1 ] || [ "${BASH_REMATCH[2]}" -lt 1 ]; then
    echo "scaling_8b: grid '$g' is not PPxTP (e.g. 2x1)" >&2
    exit 2
  fi
  PPS+=("${BASH_REMATCH[1]}")
  TPS+=("${BASH_REMATCH[2]}")
  n=$((BASH_REMATCH[1] * BASH_REMATCH[2]))
  [ $n -gt $max_ranks ] && max_ranks=$n
done
SYNTH_RANKS=${SYNTH_RANKS:-$max_ranks}

mkdir -p "$WORK/runs"
MODEL=$WORK/$SHAPE${LAYERS:+-L$LAYERS}-s$SEED.h5
if [ ! -f "$MODEL" ]; then
  echo "scaling_8b: synthesizing $SHAPE${LAYERS:+ ($LAYERS layers)} into $MODEL on $SYNTH_RANKS rank(s)"
  # written under a temporary name, so an interrupted synthesis is never taken for a model
  "$MPIRUN" "${MPIRUN_EXTRA[@]}" -n "$SYNTH_RANKS" "$MPILLAMA_BIN" synth --shape "$SHAPE" -o "$MODEL.part" \
    --seed "$SEED" ${LAYERS:+--layers "$LAYERS"}
  mv "$MODEL.part" "$MODEL"
else
  echo "scaling_8b: using $MODEL"
fi

read -r -a BATCHES <<< "$BATCH"
failed=0
for i in "${!PPS[@]}"; do
  pp=${PPS[$i]} tp=${TPS[$i]}
  for b in "${BATCHES[@]}"; do
    name=${pp}x${tp}
    [ ${#BATCHES[@]} -gt 1 ] && name=$name-b$b
    dir=$WORK/runs/$name
    if [ -f "$dir/trace/summary.json" ] && [ "${RERUN:-0}" != 1 ]; then
      echo "scaling_8b: $name: done before (RERUN=1 to run again)"
      continue
    fi
    rm -rf "$dir"
    mkdir -p "$dir"
    echo "scaling_8b: $name: $((pp * tp)) rank(s), batch $b"
    if ! "$MPIRUN" "${MPIRUN_EXTRA[@]}" -n $((pp * tp)) "$MPILLAMA_BIN" generate --model "$MODEL" --prompts "$PROMPTS" \
      --output "$dir/completions.jsonl" --overwrite --pp "$pp" --tp "$tp" --trace "$dir/trace" --batch "$b" \
      --max-tokens "$MAX_TOKENS" --max-seq-len "$MAX_SEQ_LEN" --temperature 0 --ignore-eos --verbose \
      > "$dir/log.txt" 2>&1; then
      echo "scaling_8b: $name FAILED (see $dir/log.txt):" >&2
      tail -n 5 "$dir/log.txt" >&2
      failed=$((failed + 1))
      continue
    fi
    tail -n 2 "$dir/log.txt"
  done
done

"$PYTHON" "$ROOT/analysis/report.py" "$WORK/runs" "$WORK/report" "${REPORT_EXTRA[@]}"
echo "scaling_8b: report in $WORK/report/report.md"
[ $failed -eq 0 ] || { echo "scaling_8b: $failed run(s) failed" >&2; exit 1; }
