#!/usr/bin/env bash
# Writes tests/fuzz/corpus/mfile/: small model files converted by mpillama (a built tree) from
# tiny random llama2.c checkpoints, one without a tokenizer, one with ../shared's tok512.bin.
#   tests/fuzz/make_mfile_seeds.sh BUILD_DIR [SHARED_DIR]
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BIN=$1/mpillama
SHARED=${2:-$HERE/../../../shared}
OUT=$HERE/corpus/mfile
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$OUT"
/usr/bin/python3 "$HERE/../make_llama2c_model.py" "$T/a.bin" --dim 8 --hidden 16 --layers 2 --heads 2 \
  --kv-heads 1 --vocab 32 --seq-len 16 --seed 1
"$BIN" convert "$T/a.bin" -o "$OUT/tiny.h5" >/dev/null
/usr/bin/python3 "$HERE/../make_llama2c_model.py" "$T/b.bin" --dim 8 --hidden 12 --layers 1 --heads 2 \
  --kv-heads 2 --vocab 512 --seq-len 8 --seed 2 --untied
"$BIN" convert "$T/b.bin" --tokenizer "$SHARED/models/tok512.bin" -o "$OUT/tok512.h5" >/dev/null
ls -l "$OUT"
