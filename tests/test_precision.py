"""Weights in bf16 and q8 and a bf16 KV cache against f32 (docs/FORMAT.md, README "Precision").

1. stories260K converted to f32, bf16 and q8: `info` names each tensor's type (w2, 172 input columns,
   stays bf16 in the q8 file), the files shrink, the plan's bytes per rank are what each rank reads.
2. Drift: teacher-forced log-probs (`score`) of every weight type and KV type against f32 on
   stories260K (llama2.c's greedy stories as the text) and on a synthetic model; greedy agreement
   (the share of f32's greedy tokens each type reproduces before its first different token).
   Each drift must stay within the bound in BOUNDS (observed error x about 2, see the README).
3. Grids: a q8 model split on 1x2 reads q8 column slices (wo) and matches 1 rank; a tp that
   splits wo's columns off the 32-column blocks is refused naming the grids that work.
4. A bf16 Hugging Face checkpoint converts to bf16 by default, bit for bit (every tensor's bytes,
   q/k rows permuted back to pairs, are in the file as the source had them).
5. A version-1 file (f32, written before format version 2) still loads."""
import json
import os
import struct
import sys

import numpy as np

import common as c

# max and mean |d log-prob| against f32 weights with an f32 KV cache, and the least greedy
# agreement (README, "Precision"). Random weights give nearly tied logits, so the synthetic
# model's greedy paths part early: its agreement says little, its log-prob drift is the measure.
BOUNDS = {
    # (model, weights, kv): (max, mean, min greedy agreement); observed on the machine of the
    # README's table: max and mean x ~2 (rounded up), agreement / ~2
    ("stories260K", "f32", "bf16"): (0.10, 0.008, 0.40),   # observed 0.049, 0.0038, 0.79
    ("stories260K", "bf16", "bf16"): (0.20, 0.013, 0.40),  # observed 0.103, 0.0063, 0.72
    ("stories260K", "q8", "bf16"): (0.30, 0.032, 0.20),    # observed 0.140, 0.0149, 0.53
    ("stories260K", "bf16", "f32"): (0.11, 0.010, 0.45),   # observed 0.053, 0.0047, 0.89
    ("stories260K", "q8", "f32"): (0.23, 0.030, 0.35),     # observed 0.114, 0.0143, 0.65
    ("synth", "bf16", "bf16"): (0.025, 0.006, 0.45),       # observed 0.009, 0.0030, 0.89
    ("synth", "q8", "bf16"): (0.055, 0.016, 0.15),         # observed 0.028, 0.0078, 0.34-0.49
}

args = c.parse_args()
c.need_shared(args, "models/stories260K.bin", "models/tok512.bin", "reference/stories260K/greedy.jsonl")
S = args.shared
ref = c.read_jsonl(os.path.join(S, "reference/stories260K/greedy.jsonl"))
W = args.work
passed = 0


def path(name):
    return os.path.join(W, name)


def convert(src, out, *extra):
    return c.run([args.mpillama, "convert", src, "-o", out] + list(extra)).stdout


def info(model, *extra):
    return c.run([args.mpillama, "info", model] + list(extra)).stdout


def score(model, prompts, out, n=1, extra=()):
    c.mpirun(args, n, ["score", "--model", model, "--prompts", prompts, "--output", out] + list(extra))
    return {r["custom_id"]: r for r in c.read_jsonl(out)}


def generate(model, prompts, out, max_tokens, extra=()):
    c.mpirun(args, 1, ["generate", "--model", model, "--prompts", prompts, "--output", out, "--temperature", "0",
                       "--max-tokens", str(max_tokens)] + list(extra))
    return {r["custom_id"]: r for r in c.read_jsonl(out)}


def drift(a, b):
    """max and mean |d log-prob| over every scored token of a against b"""
    d = []
    for k in b:
        if a[k]["token_ids"] != b[k]["token_ids"]:
            c.fail("%s: scored different tokens" % k)
        d += [abs(x - y) for x, y in zip(a[k]["logprobs"], b[k]["logprobs"])]
    return max(d), sum(d) / len(d), len(d)


def agreement(a, b):
    """the share of b's greedy tokens that a reproduces before its first different token"""
    same = total = 0
    for k in b:
        x, y = a[k]["completion_ids"], b[k]["completion_ids"]
        n = 0
        while n < min(len(x), len(y)) and x[n] == y[n]:
            n += 1
        same += n
        total += len(y)
    return same / max(total, 1)


def check_drift(model, wt, kv, d, agree):
    mx, mean, n = d
    bmax, bmean, bagree = BOUNDS[(model, wt, kv)]
    print("%-11s weights %-4s kv %-4s: max |dlogprob| %.4f (bound %.2f), mean %.5f (bound %.3f) over %d tokens; "
          "greedy agreement %.3f (bound %.2f)" % (model, wt, kv, mx, bmax, mean, bmean, n, agree, bagree))
    if mx > bmax or mean > bmean or agree < bagree:
        c.fail("%s %s weights, %s KV: drift outside the documented bounds" % (model, wt, kv))


# ---- 1. stories260K in three types
src, tok = os.path.join(S, "models/stories260K.bin"), os.path.join(S, "models/tok512.bin")
sizes = {}
for t in ["f32", "bf16", "q8"]:
    out = convert(src, path("s_%s.h5" % t), "--tokenizer", tok, "--dtype", t)
    if "%s weights" % t not in out:
        c.fail("convert --dtype %s says: %s" % (t, out))
    sizes[t] = os.path.getsize(path("s_%s.h5" % t))
text = info(path("s_q8.h5"), "--tensors")
lines = {l.split()[0]: l for l in text.splitlines() if l.startswith("  ")}
if not (" q8 " in lines["layers/0/wq"] and " bf16 " in lines["layers/0/w2"] and "172 input columns" in lines["layers/0/w2"]
        and " f32 " in lines["layers/0/ffn_norm"] and " q8 " in lines["tok_embeddings"]):
    c.fail("info on the q8 file does not show the types:\n%s" % text)
if "layers/0/wq.scale" in lines:
    c.fail("info lists q8 scales as tensors of their own")
if not (sizes["q8"] < sizes["bf16"] < 0.55 * sizes["f32"]):
    c.fail("file sizes f32 %d, bf16 %d, q8 %d" % (sizes["f32"], sizes["bf16"], sizes["q8"]))
print("files: f32 %d bytes, bf16 %d, q8 %d; info shows q8, bf16 w2 (172 columns), f32 norms" %
      (sizes["f32"], sizes["bf16"], sizes["q8"]))
passed += 1

# the plan's bytes per rank are what the ranks read, in every type
for t in ["bf16", "q8"]:
    plan = info(path("s_%s.h5" % t), "--plan", "--pp", "1", "--tp", "2")
    rows = [l.split() for l in plan.splitlines() if l.split()]
    head = next(r for r in rows if r[0] == "rank")
    want = [int(r[head.index("weight_bytes")]) for r in rows if r[0] in ("0", "1") and len(r) == len(head)]
    c.write_jsonl(path("one.jsonl"), [{"custom_id": "0", "prompt_ids": ref[0]["prompt_ids"]}])
    r = c.mpirun(args, 2, ["score", "--model", path("s_%s.h5" % t), "--prompts", path("one.jsonl"),
                           "--output", path("one_%s.jsonl" % t), "--tp", "2", "--verbose"])
    got = [int(l.split("bytes read ")[1].split()[0]) for l in r.stderr.splitlines() if "bytes read" in l]
    if got != want or len(got) != 2:
        c.fail("%s on 1x2: ranks read %s bytes, info --plan says %s" % (t, got, want))
    print("%s 1x2: each rank reads the planned %s bytes" % (t, want))
passed += 1

# ---- 2. drift on stories260K: the prompts followed by llama2.c's greedy stories
seqs = path("seqs.jsonl")
c.write_jsonl(seqs, [{"custom_id": str(i), "prompt_ids": r["prompt_ids"] + r["greedy_ids"]} for i, r in enumerate(ref)])
starts = path("starts.jsonl")
c.write_jsonl(starts, [{"custom_id": str(i), "prompt_ids": r["prompt_ids"]} for i, r in enumerate(ref)])
base = score(path("s_f32.h5"), seqs, path("sc_f32_f32.jsonl"))
gbase = generate(path("s_f32.h5"), starts, path("g_f32_f32.jsonl"), 200)
for i, r in enumerate(ref):  # f32 stays llama2.c's (test_reference checks it in full)
    if gbase[str(i)]["completion_ids"] != r["greedy_ids"]:
        c.fail("f32 greedy ids differ from llama2.c's for prompt %d" % i)
for wt, kv in [("f32", "bf16"), ("bf16", "bf16"), ("q8", "bf16"), ("bf16", "f32"), ("q8", "f32")]:
    m = path("s_%s.h5" % wt)
    d = drift(score(m, seqs, path("sc_%s_%s.jsonl" % (wt, kv)), extra=["--kv-dtype", kv]), base)
    g = agreement(generate(m, starts, path("g_%s_%s.jsonl" % (wt, kv)), 200, extra=["--kv-dtype", kv]), gbase)
    check_drift("stories260K", wt, kv, d, g)
    passed += 1

# ---- drift on a synthetic model (random weights: the same values in each type)
rng = np.random.default_rng(5)
syn_prompts = path("syn.jsonl")
c.write_jsonl(syn_prompts, [{"custom_id": str(i), "prompt_ids": [int(x) for x in rng.integers(3, 2048, 48)]}
                            for i in range(4)])
syn_starts = path("syn_starts.jsonl")
c.write_jsonl(syn_starts, [{"custom_id": str(i), "prompt_ids": [int(x) for x in rng.integers(3, 2048, 8)]}
                           for i in range(4)])
for t in ["f32", "bf16", "q8"]:
    c.run([args.mpillama, "synth", "--shape", "small", "--layers", "4", "--seed", "3", "--dtype", t, "-o",
           path("syn_%s.h5" % t)])
sbase = score(path("syn_f32.h5"), syn_prompts, path("ssc_f32.jsonl"))
sgbase = generate(path("syn_f32.h5"), syn_starts, path("sg_f32.jsonl"), 48, extra=["--ignore-eos"])
for t in ["bf16", "q8"]:
    d = drift(score(path("syn_%s.h5" % t), syn_prompts, path("ssc_%s.jsonl" % t)), sbase)
    g = agreement(generate(path("syn_%s.h5" % t), syn_starts, path("sg_%s.jsonl" % t), 48, extra=["--ignore-eos"]),
                  sgbase)
    check_drift("synth", t, "bf16", d, g)
    passed += 1

# ---- 3. grids: q8 column slices of wo on 1x2 give 1 rank's results; a bad tp split is refused
q8_1 = c.read_jsonl(path("sc_q8_bf16.jsonl"))
q8_2 = score(path("s_q8.h5"), seqs, path("sc_q8_1x2.jsonl"), n=2, extra=["--tp", "2"])
d = drift(q8_2, {r["custom_id"]: r for r in q8_1})
# not bit for bit: the tp partial sums round differently, and a difference in the last f32 bit
# can move an activation across a q8 (or bf16) rounding step; observed max 0.087-0.108, mean
# 0.0033-0.0068 (with different kernel builds)
# A wrong column slice or scale moves log-probs by whole units.
if d[0] > 0.25 or d[1] > 0.015:
    c.fail("q8 on 1x2 differs from 1 rank by max %.3g, mean %.3g (column slices read wrong?)" % d[:2])
print("q8 1x2 against 1 rank: max |dlogprob| %.3g, mean %.3g" % d[:2])
r = c.mpirun(args, 4, ["score", "--model", path("s_q8.h5"), "--prompts", starts, "--output", path("bad.jsonl"),
                       "--tp", "4"], check=False)
if r.returncode == 0 or "q8 blocks" not in r.stderr or "--pp 2 --tp 2" not in r.stderr:
    c.fail("tp 4 on the q8 file (16 of wo's columns per rank): exit %d, %s" % (r.returncode, r.stderr[-600:]))
print("tp 4 on q8 refused: %s" % next(l for l in r.stderr.splitlines() if "q8 blocks" in l)[:200])
passed += 2

# ---- 4. a bf16 Hugging Face checkpoint stays bf16, bit for bit
make = os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_hf_model.py")
hf = path("hf_bf16")
c.run([sys.executable, make, src, hf, "--dtype", "bf16"])
out = convert(hf, path("hf.h5"), "--tokenizer", tok)
if "bf16 weights" not in out:
    c.fail("a bf16 checkpoint converted by default: %s" % out)
blob = open(path("hf.h5"), "rb").read()
st = open(os.path.join(hf, "model.safetensors"), "rb").read()
n = struct.unpack("<Q", st[:8])[0]
header = json.loads(st[8:8 + n])
cfg = json.load(open(os.path.join(hf, "config.json")))
hs = cfg["hidden_size"] // cfg["num_attention_heads"]
checked = 0
for name, e in header.items():
    if name == "__metadata__":
        continue
    b0, b1 = e["data_offsets"]
    raw = st[8 + n + b0:8 + n + b1]
    if e["dtype"] != "BF16":
        c.fail("make_hf_model.py --dtype bf16 wrote %s as %s" % (name, e["dtype"]))
    if "norm" in name:
        continue  # norms are stored as f32 (exactly the bf16 values)
    if "q_proj" in name or "k_proj" in name:  # rotate-half rows back to adjacent pairs
        heads = cfg["num_attention_heads"] if "q_proj" in name else cfg["num_key_value_heads"]
        a = np.frombuffer(raw, dtype="<u2").reshape(heads, 2, hs // 2, -1)
        raw = np.ascontiguousarray(a.transpose(0, 2, 1, 3)).tobytes()
    if raw not in blob:
        c.fail("tensor %s: its bf16 bytes are not in the converted file" % name)
    checked += 1
print("bf16 safetensors -> bf16 file: %d tensors bit for bit" % checked)
passed += 1

# ---- 5. a version-1 file still loads (f32 only, as before version 2)
v1 = path("v1.h5")
with open(path("s_f32.h5"), "rb") as f, open(v1, "wb") as g:
    g.write(f.read())
set_attr = os.path.join(os.path.dirname(args.mpillama), "tests", "h5_set_attr")
c.run([set_attr, v1, "format_version", "1"])
v1s = score(v1, seqs, path("sc_v1.jsonl"))
if drift(v1s, base)[0] != 0:
    c.fail("a version-1 file scores differently")
print("version-1 file: loads, same log-probs")
passed += 1
print("%d passed, 0 failed" % passed)
