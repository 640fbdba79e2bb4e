#!/usr/bin/python3
"""Pipeline and tensor-parallel efficiency on one host and across two hosts; prints the table.

  jobs/bench_pipeline.py --mpillama build/mpillama --work /tmp/bp [--reps 11] [--no-hosts] [--progress 1,0]

A synthetic 107M model (synth --shape medium), 32 prompts x (64 + 32) tokens, one thread per
rank, greedy, --batch 16 (sequences per micro-batch: 2x1 keeps 2 x 16 in flight, so each stage
computes 16 rows at once as 1x1 and 1x2 do; 1x1 with 32 in flight is no faster). Runs 1x1, 1x2
and 2x1 on this host (shared memory) and, as root with Slurm installed, 1x2 and 2x1 across two network-namespace hosts over TCP (tests/slurm/minicluster.py:
srun -N2 --mpi=pmix). Each row with dist_progress (default) and without (MPILLAMA_PROGRESS=0),
so that what it buys shows; efficiency = tok/s / (ranks x the 1x1 tok/s), medians of --reps
rounds, each round running every row once (drift falls on all rows alike).
Outputs of every run are checked equal to the 1x1 run's."""
import argparse
import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "lib"))

p = argparse.ArgumentParser()
p.add_argument("--mpillama", required=True)
p.add_argument("--work", required=True)
p.add_argument("--reps", type=int, default=3)
p.add_argument("--no-hosts", action="store_true", help="skip the two-host runs")
p.add_argument("--progress", default="1,0", type=lambda v: [int(x) for x in v.split(",")],
               help="dist_progress settings of the 1x2 and 2x1 rows: 1,0 (default: both), 1 or 0")
a = p.parse_args()
a.mpillama = os.path.abspath(a.mpillama)
os.makedirs(a.work, exist_ok=True)
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", OPENBLAS_NUM_THREADS="1",
           OMPI_MCA_rmaps_base_oversubscribe="1")
model = os.path.join(a.work, "m107.h5")
prompts = os.path.join(a.work, "prompts.jsonl")
if not os.path.exists(model):
    subprocess.run([a.mpillama, "synth", "--shape", "medium", "-o", model], check=True, env=env)
with open(prompts, "w") as f:
    for i in range(32):
        ids = [1] + [(97 * i + 31 * k) % 8000 + 3 for k in range(63)]
        f.write(json.dumps({"custom_id": str(i), "prompt_ids": ids, "max_tokens": 32, "ignore_eos": True,
                            "temperature": 0}) + "\n")


def ids(path):
    with open(path) as f:
        return {r["custom_id"]: r["completion_ids"] for r in map(json.loads, f)}


def one(launch, grid, progress, tag, run_env=None):
    pp, tp = grid
    out, tr = os.path.join(a.work, tag + ".jsonl"), os.path.join(a.work, tag)
    cmd = launch + [a.mpillama, "generate", "--model", model, "--prompts", prompts, "--output", out, "--overwrite", "--batch", "16",
                    "--pp", str(pp), "--tp", str(tp), "--trace", tr]
    e = dict(run_env or env, MPILLAMA_PROGRESS=str(progress))
    r = subprocess.run(cmd, capture_output=True, text=True, env=e, timeout=900)
    if r.returncode != 0:
        sys.exit("failed: %s\n%s" % (" ".join(cmd), r.stderr[-2000:]))
    with open(os.path.join(tr, "summary.json")) as f:
        s = json.load(f)
    return s["total_tok_s"], s["categories"]["wait"]["max"], ids(out)


# every configuration once per round, rounds --reps times: the machine's drift (other load, clock)
# falls on every row alike instead of on whichever row ran last
local = ["mpirun", "--bind-to", "core", "-n"]
configs = [("one host", (1, 1), local + ["1"], None, 1)]
for grid in ((1, 2), (2, 1)):
    configs += [("one host", grid, local + ["2"], None, progress) for progress in a.progress]
cl, note = None, None
if not a.no_hosts:
    import slurm_hosts
    try:
        cl = slurm_hosts.start(os.path.join(a.work, "cluster"), env)
        for grid in ((1, 2), (2, 1)):
            configs += [("two hosts", grid, cl.srun(2), cl.env, progress) for progress in a.progress]
    except slurm_hosts.Error as e:
        note = "two hosts skipped: %s" % str(e).splitlines()[0]
got = {c[:2] + (c[4],): [] for c in configs}
base_ids = None
try:
    for k in range(a.reps):
        for where, grid, launch, run_env, progress in configs:
            r = one(launch, grid, progress, "%s_%dx%d_p%d_%d" % (where, grid[0], grid[1], progress, k), run_env)
            if base_ids is None:
                base_ids = r[2]
            elif r[2] != base_ids:
                sys.exit("%s %dx%d: outputs differ from the 1x1 run's" % (where, grid[0], grid[1]))
            got[(where, grid, progress)].append(r)
finally:
    if cl:
        cl.stop()

if note:
    print(note)
base = statistics.median(x[0] for x in got[("one host", (1, 1), 1)])
print("107M synthetic f32, 32 prompts x (64 + 32) tokens, --batch 16 per micro-batch, 1 thread per rank; medians of %d"
      " rounds (tok/s range: min-max)" % a.reps)
print("| where | grid | dist_progress | tok/s | tok/s range | efficiency | max wait s |")
print("|---|---|---|---:|---:|---:|---:|")
for (where, (pp, tp), progress), rs in got.items():
    tps = statistics.median(x[0] for x in rs)
    print("| %s | %dx%d | %s | %.1f | %.0f-%.0f | %.2f | %.2f |" % (where, pp, tp, "on" if progress else "off", tps,
                                                               min(x[0] for x in rs), max(x[0] for x in rs),
                                                               tps / (base * pp * tp), statistics.median(x[1] for x in rs)))
