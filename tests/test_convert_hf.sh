#!/bin/bash
# test_convert_hf.sh MPILLAMA_BIN SHARED_DIR WORKDIR
#
# Converts Hugging Face variants of stories260K (made by make_hf_model.py) and the llama2.c
# checkpoint of the identical weights, scores the same prompts with both files and requires
# equal token ids and log-probs within 1e-5. Then checks that bad inputs fail with a one-line
# message naming the file (and field) and an exit code below 128 (no crash).
#
# Optional environment: SCORE_LAUNCHER, a command prefix for `score` (e.g. "mpiexec -n 2").
# Exit codes: 0 pass, 1 fail, 77 skip (ctest SKIP_RETURN_CODE).
set -u

if [ $# -ne 3 ]; then
    echo "usage: $0 MPILLAMA_BIN SHARED_DIR WORKDIR" >&2
    exit 2
fi
BIN=$1
SHARED=$2
WORK=$3
PY=/usr/bin/python3
HERE=$(cd "$(dirname "$0")" && pwd)
MAKE="$PY $HERE/make_hf_model.py"
SRC=$SHARED/models/stories260K.bin
TOK=$SHARED/models/tok512.bin
TOL=1e-5

if [ ! -f "$SRC" ]; then
    echo "SKIP: $SRC is absent"
    exit 77
fi
for f in "$TOK" "$BIN" "$PY"; do
    if [ ! -e "$f" ]; then
        echo "FAIL: '$f' not found"
        exit 1
    fi
done

rm -rf "$WORK"
mkdir -p "$WORK" || exit 1
FAILED=0
N_OK=0
fail() {
    echo "FAIL: $*"
    FAILED=1
}

cat >"$WORK/prompts.jsonl" <<'EOF'
{"custom_id":"a","prompt_ids":[1,403,407,261,378]}
{"custom_id":"b","prompt_ids":[1,317,269,274,287,263,377,267,265,282,295,433]}
{"custom_id":"c","prompt_ids":[1,385,328,432,261,376,400,428,395,392,412,444]}
EOF
# make sure the prompt ids fit the 512-token vocabulary
$PY - "$WORK/prompts.jsonl" <<'EOF' || exit 1
import json, sys
for line in open(sys.argv[1]):
    assert all(0 <= t < 512 for t in json.loads(line)["prompt_ids"]), line
EOF

# convert SRC OUT [extra args]: runs `mpillama convert`, output in OUT.log
convert() {
    local src=$1 out=$2
    shift 2
    "$BIN" convert "$src" -o "$out" --tokenizer "$TOK" "$@" </dev/null >"$out.log" 2>&1
    local rc=$?
    if [ $rc -ne 0 ]; then
        fail "convert '$src' exited $rc:"
        sed 's/^/    /' "$out.log"
        return 1
    fi
}

score() {
    local model=$1 out=$2
    # shellcheck disable=SC2086
    ${SCORE_LAUNCHER:-} "$BIN" score --model "$model" --prompts "$WORK/prompts.jsonl" \
        --output "$out" </dev/null >"$out.log" 2>&1
    local rc=$?
    if [ $rc -ne 0 ]; then
        fail "score '$model' exited $rc:"
        sed 's/^/    /' "$out.log"
        return 1
    fi
}

# compare A.jsonl B.jsonl MODE: MODE "same" requires equal ids and |dlogprob| <= TOL and prints
# the max difference; "differ" requires some difference > TOL (negative controls)
compare() {
    $PY - "$1" "$2" "$3" "$TOL" <<'EOF'
import json, math, sys
a_path, b_path, mode, tol = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
def load(p):
    rows = [json.loads(l) for l in open(p) if l.strip()]
    return {r["custom_id"]: r for r in rows}
a, b = load(a_path), load(b_path)
if sorted(a) != sorted(b) or not a:
    sys.exit(f"custom_ids differ or empty: {sorted(a)} vs {sorted(b)}")
worst, n = 0.0, 0
for k in a:
    ra, rb = a[k], b[k]
    if ra["token_ids"] != rb["token_ids"]:
        sys.exit(f"{k}: token_ids differ: {ra['token_ids']} vs {rb['token_ids']}")
    la, lb = ra["logprobs"], rb["logprobs"]
    if len(la) != len(lb) or not la:
        sys.exit(f"{k}: {len(la)} vs {len(lb)} logprobs")
    for x, y in zip(la, lb):
        if not (math.isfinite(x) and math.isfinite(y) and x <= 1e-6 and y <= 1e-6):
            sys.exit(f"{k}: bad logprob {x} / {y}")
        worst = max(worst, abs(x - y))
        n += 1
if mode == "same":
    print(f"max |dlogprob| = {worst:.3g} over {n} log-probs")
    sys.exit(0 if worst <= tol else f"max |dlogprob| {worst:.3g} > {tol}")
print(f"max |dlogprob| = {worst:.3g} (expected to differ)")
sys.exit(0 if worst > tol else "the outputs do not differ")
EOF
}

# ---- equivalence: HF conversion vs llama2.c conversion of the identical weights ----
# (every command reads /dev/null: mpiexec would otherwise eat the loops' here-strings)
# name | make_hf_model.py options
CASES="f32_tied|--dtype f32
bf16_2shards|--dtype bf16 --shards 2
gqa_kv2|--dtype f32 --kv-heads 2
untied|--dtype f32 --untied --seed 7
f16_3shards_gqa_untied|--dtype f16 --shards 3 --kv-heads 2 --untied --seed 3"

while IFS='|' read -r name opts; do
    d=$WORK/$name
    mkdir -p "$d"
    # shellcheck disable=SC2086
    if ! $MAKE "$SRC" "$d/hf" $opts --also-bin "$d/l2c.bin" </dev/null >"$d/make.log" 2>&1; then
        fail "$name: make_hf_model.py failed:"
        sed 's/^/    /' "$d/make.log"
        continue
    fi
    convert "$d/hf" "$d/hf.h5" || continue
    # a bf16 source stays bf16 (the default): the llama2.c side is stored as bf16 too, so both
    # files hold the same bits and score alike
    l2c_dtype=f32
    case " $opts " in *" --dtype bf16 "*) l2c_dtype=bf16 ;; esac
    convert "$d/l2c.bin" "$d/l2c.h5" --dtype "$l2c_dtype" || continue
    if ! grep -q "^converted .*: [0-9]* tensors, [0-9]* bytes" "$d/hf.h5.log"; then
        fail "$name: no 'converted ... tensors, ... bytes' line:"
        sed 's/^/    /' "$d/hf.h5.log"
    fi
    score "$d/hf.h5" "$d/hf.jsonl" || continue
    score "$d/l2c.h5" "$d/l2c.jsonl" || continue
    if res=$(compare "$d/hf.jsonl" "$d/l2c.jsonl" same 2>&1); then
        echo "ok   $name: $res"
        N_OK=$((N_OK + 1))
    else
        fail "$name: $res"
    fi
done <<<"$CASES"
N_CASES=$(grep -c . <<<"$CASES")
[ "$N_OK" -eq "$N_CASES" ] || fail "$N_OK of $N_CASES equivalence cases passed"

# the f32 tied variant is the source checkpoint itself, bit for bit
if [ -f "$WORK/f32_tied/l2c.bin" ] && ! cmp -s "$WORK/f32_tied/l2c.bin" "$SRC"; then
    fail "make_hf_model.py --dtype f32 --also-bin does not reproduce '$SRC'"
fi

# ---- negative controls: the comparison must notice a wrong model ----
if [ -f "$WORK/f32_tied/hf.jsonl" ]; then
    d=$WORK/no_permute
    mkdir -p "$d"
    if $MAKE "$SRC" "$d/hf" --no-rope-permute >"$d/make.log" 2>&1 && convert "$d/hf" "$d/hf.h5" &&
        score "$d/hf.h5" "$d/hf.jsonl"; then
        if res=$(compare "$d/hf.jsonl" "$WORK/f32_tied/l2c.jsonl" differ 2>&1); then
            echo "ok   q/k rows left in pairs layout change the output: $res"
        else
            fail "q/k rows left in pairs layout: $res (is the RoPE permutation applied?)"
        fi
    fi
    if [ -f "$WORK/untied/hf.jsonl" ]; then
        if res=$(compare "$WORK/untied/hf.jsonl" "$WORK/f32_tied/hf.jsonl" differ 2>&1); then
            echo "ok   untied classifier is used: $res"
        else
            fail "untied vs tied: $res (is lm_head.weight used?)"
        fi
    fi
fi

# the tokenizer.json of the directory is kept verbatim
d=$WORK/tokjson
mkdir -p "$d"
if $MAKE "$SRC" "$d/hf" >"$d/make.log" 2>&1; then
    printf '{"version":"1.0","model":{"type":"BPE","vocab":{}}}\n' >"$d/hf/tokenizer.json"
    if ! command -v h5dump >/dev/null; then
        echo "SKIP (part): h5dump is not installed (Debian: hdf5-tools); tokenizer.json under /source not checked"
    elif convert "$d/hf" "$d/hf.h5"; then
        if h5dump -d /source/tokenizer.json "$d/hf.h5" >"$d/dump.txt" 2>&1; then
            echo "ok   tokenizer.json stored under /source"
        else
            fail "no /source/tokenizer.json dataset in '$d/hf.h5'"
        fi
    fi
fi

# ---- bad inputs: a non-zero exit below 128 and a one-line message naming file (and field) ----
# expect_error NAME DIR NEEDLE... [-- extra convert args]
expect_error() {
    local name=$1 dir=$2
    shift 2
    local needles=() extra=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        needles+=("$1")
        shift
    done
    [ $# -gt 0 ] && shift && extra=("$@")
    "$BIN" convert "$dir" -o "$WORK/bad_$name.h5" "${extra[@]}" </dev/null >"$WORK/bad_$name.out" \
        2>"$WORK/bad_$name.err"
    local rc=$?
    local msg
    msg=$(grep -v '^[[:space:]]*$' "$WORK/bad_$name.err" | grep -F -- "${needles[0]}" | head -1)
    if [ $rc -eq 0 ]; then
        fail "$name: convert succeeded"
    elif [ $rc -ge 128 ]; then
        fail "$name: convert crashed (exit $rc):"
        sed 's/^/    /' "$WORK/bad_$name.err"
    elif [ -z "$msg" ]; then
        fail "$name: no error line naming '${needles[0]}':"
        sed 's/^/    /' "$WORK/bad_$name.err"
    else
        local n
        for n in "${needles[@]:1}"; do
            if ! grep -qF -- "$n" <<<"$msg"; then
                fail "$name: the error line does not mention '$n': $msg"
                return
            fi
        done
        # mpillama's own lines ("[rank r] file:line: ..." from die, "mpillama: ..." from error);
        # the MPI runtime may add its own (MPI_Abort's banner), which are counted apart
        local ours others
        ours=$(grep -c -E '^(\[rank [0-9]+\] |mpillama: )' "$WORK/bad_$name.err")
        others=$(grep -v -E '^(\[rank [0-9]+\] |mpillama: )' "$WORK/bad_$name.err" | grep -c -v '^[[:space:]]*$')
        if [ "$ours" -ne 1 ]; then
            fail "$name: $ours error lines from mpillama, expected one:"
            sed 's/^/    /' "$WORK/bad_$name.err"
            return
        fi
        echo "ok   $name: exit $rc: $msg"
        if [ "$others" -ne 0 ]; then
            echo "     (note: $others more stderr lines from the MPI runtime)"
        fi
    fi
}

B=$WORK/bad
mkdir -p "$B"
if $MAKE "$SRC" "$B/base" >"$B/make.log" 2>&1 &&
    $MAKE "$SRC" "$B/sharded" --dtype bf16 --shards 2 >>"$B/make.log" 2>&1; then
    # truncated safetensors (cut in half)
    cp -r "$B/base" "$B/trunc"
    st=$B/trunc/model.safetensors
    truncate -s $(($(stat -c %s "$st") / 2)) "$st"
    expect_error truncated "$B/trunc" "$st"

    # truncated shard, cut inside its header
    cp -r "$B/sharded" "$B/trunc_shard"
    st=$B/trunc_shard/model-00002-of-00002.safetensors
    truncate -s 100 "$st"
    expect_error truncated_shard_header "$B/trunc_shard" "$st"

    # header length beyond the file
    cp -r "$B/base" "$B/hdrlen"
    printf '\377\377\377\377\377\377\377\177' |
        dd of="$B/hdrlen/model.safetensors" conv=notrunc status=none
    expect_error header_length "$B/hdrlen" "$B/hdrlen/model.safetensors"

    # config.json edits: name | python statement on c | strings the message must hold
    EDITS="missing_hidden_size|del c['hidden_size']|config.json|hidden_size
missing_num_hidden_layers|del c['num_hidden_layers']|config.json|num_hidden_layers
rope_yarn|c['rope_scaling'] = {'rope_type': 'yarn', 'factor': 4.0}|config.json|yarn
llama3_incomplete|c['rope_scaling'] = {'rope_type': 'llama3', 'factor': 8.0}|config.json|rope_scaling.low_freq_factor
shape_mismatch|c['intermediate_size'] = 170|model.safetensors|gate_proj"
    N_BAD=0
    while IFS='|' read -r name stmt n1 n2; do
        cp -r "$B/base" "$B/$name"
        $PY -c "import json, sys
p = sys.argv[1]; c = json.load(open(p)); $stmt; json.dump(c, open(p, 'w'))" "$B/$name/config.json"
        expect_error "$name" "$B/$name" "$B/$name/$n1" "$n2"
        N_BAD=$((N_BAD + 1))
    done <<<"$EDITS"
    [ "$N_BAD" -eq 5 ] || fail "only $N_BAD of 5 config.json cases ran"

    # a tokenizer whose size differs from vocab_size
    LLAMA2_TOK=$SHARED/tokenizers/llama2/tokenizer.bin
    if [ -f "$LLAMA2_TOK" ]; then
        expect_error tokenizer_size "$B/base" "$LLAMA2_TOK" 32000 512 -- --tokenizer "$LLAMA2_TOK"
    fi
else
    fail "make_hf_model.py failed:"
    sed 's/^/    /' "$B/make.log"
fi

if [ $FAILED -ne 0 ]; then
    echo "test_convert_hf: FAILED (files in $WORK)"
    exit 1
fi
echo "test_convert_hf: all passed"
exit 0
