#!/usr/bin/env python3
"""Batching benchmark: one prompt set through `mpillama generate` at several batch sizes; prints
prefill and decode tok/s for each, beside this machine's limits (memory bandwidth and sgemm
GFLOP/s from `mpillama machine`) and the ratio of each number to its roofline limit.

  jobs/bench_batch.py [--model M.h5 | --shape medium] [--batches 1,4,16,32,64] [--ranks N --pp P --tp T]

Without --model it synthesizes --shape (default "medium": 107M params, 0.4 GiB f32) into --work.
Run it with Debian's /usr/bin/python3. Prints numbers; asserts nothing."""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser()
ap.add_argument("--mpillama", default=os.path.join(ROOT, "build", "mpillama"))
ap.add_argument("--model")
ap.add_argument("--shape", default="medium")
ap.add_argument("--prompts", default=os.path.join(ROOT, "data", "bench_prompts.jsonl"))
ap.add_argument("--n-prompts", type=int, default=64, help="first N prompts of the set")
ap.add_argument("--max-tokens", type=int, default=32)
ap.add_argument("--batches", default="1,4,16,32,64")
ap.add_argument("--ranks", type=int, default=1)
ap.add_argument("--pp", type=int, default=0)
ap.add_argument("--tp", type=int, default=0)
ap.add_argument("--work", default=os.environ.get("WORK", "/tmp/mpillama-bench"))
a = ap.parse_args()
os.makedirs(a.work, exist_ok=True)
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")

model = a.model
if not model:
    model = os.path.join(a.work, a.shape + ".h5")
    if not os.path.exists(model):
        subprocess.run([a.mpillama, "synth", "--shape", a.shape, "-o", model], check=True, env=env)
prompts = os.path.join(a.work, "prompts.jsonl")
with open(a.prompts) as f, open(prompts, "w") as g:
    for i, line in enumerate(f):
        if i >= a.n_prompts:
            break
        r = json.loads(line)
        r.update(max_tokens=a.max_tokens, ignore_eos=True, temperature=0)
        g.write(json.dumps(r) + "\n")

lim = json.loads(subprocess.run([a.mpillama, "machine", "--file", model], check=True, capture_output=True, text=True,
                                env=env).stdout)
grid = []
if a.pp:
    grid += ["--pp", str(a.pp)]
if a.tp:
    grid += ["--tp", str(a.tp)]
rows = []
for b in [int(x) for x in a.batches.split(",")]:
    tdir = os.path.join(a.work, "B%d" % b)
    cmd = ["mpirun", "-n", str(a.ranks), a.mpillama, "generate", "--model", model, "--prompts", prompts, "--output",
           os.path.join(a.work, "out_B%d.jsonl" % b), "--overwrite", "--batch", str(b), "--trace", tdir] + grid
    subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(os.path.join(tdir, "summary.json")) as f:
        s = json.load(f)
    rows.append((b, s))

s0 = rows[0][1]
params = s0["model"]["params"]
wbytes = s0["model"]["weight_bytes"]
ranks = s0["ranks"]
bw = lim["mem_gbs"] * 1e9 * ranks
fl = lim["sgemm_gflops"] * 1e9 * ranks
print("model %s: %.1fM params, %.2f GiB f32; grid %dx%d on %d rank(s) x %d thread(s); %d prompts x %d tokens" %
      (os.path.basename(model), params / 1e6, wbytes / 2**30, s0["grid"]["pp"], s0["grid"]["tp"], ranks,
       s0["threads_per_rank"], s0["prompts"]["total"], a.max_tokens))
loads = [s["load_gbs"] for _, s in rows if s.get("load_gbs")]
if loads:
    best = max(loads)
    print("load: %.2f GB/s (best of %d runs) against a plain read of the file at %.2f GB/s (ratio %.2f); "
          "first token after %.2f s" % (best, len(loads), lim["file_read_gbs"], best / lim["file_read_gbs"],
                                       min(s["first_token_s"] for _, s in rows)))
print("machine: %.1f GB/s triad, %.1f GFLOP/s sgemm (%d BLAS threads) per rank" % (lim["mem_gbs"], lim["sgemm_gflops"], lim["blas_threads"]))
print("limits: decode at batch B <= B / max(weights / bandwidth, 2 params B / flops); prefill <= flops / (2 params)")
print()
print("| batch | prefill tok/s | limit | ratio | decode tok/s | limit | ratio | wall s |")
print("|---:|---:|---:|---:|---:|---:|---:|---:|")
for b, s in rows:
    dec_lim = b / max(wbytes / bw, 2 * params * b / fl)
    pre_lim = fl / (2 * params)
    print("| %d | %.0f | %.0f | %.2f | %.1f | %.0f | %.2f | %.2f |" % (
        b, s["prefill_tok_s"], pre_lim, s["prefill_tok_s"] / pre_lim, s["decode_tok_s"], dec_lim,
        s["decode_tok_s"] / dec_lim, s["wall_s"]))
