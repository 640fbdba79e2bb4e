#!/usr/bin/env python3
"""Data-parallel benchmark (issue 12): one core per rank (mpirun --bind-to core), the medium
synthetic model, the same prompts each time. Prints, asserts nothing:

  1. dp 2 vs dp 1: throughput ratio (each replica runs --batch B), medians of --reps rounds, each
     round running every row once; with --hosts also dp 2 with a rank on each of the two
     network-namespace hosts of the Slurm test cluster (jobs/lib/slurm_hosts.py: srun, TCP between
     them; as root with Slurm installed) and dp 1 on one of them;
  2. pp 2 vs pp 1 on the same batched work: ratio, bubble, and its causes per rank (wait, the
     scheduler's sampling and I/O on stage 0), before (--before BIN: whole logits to rank 0,
     which samples) and after (sampling on the last stage);
  3. bytes on the network per generated token, before and after sampling moved (pp 2);
  4. memory per node with shared weights vs a copy per rank (dp 2, MPILLAMA_PRIVATE_WEIGHTS=1);
  5. rank 0's work per generated token at dp 1, 2, 4 (its io seconds: intake, hub, writing).

  jobs/bench_replicas.py [--mpillama BIN] [--before OLD_BIN] [--shape medium] [--n-prompts 48]
      [--max-tokens 24] [--batch 8] [--reps 1] [--hosts] [--skip 2,3,4,5]

Run it with Debian's /usr/bin/python3, under `flock -x /work/cpu.lock` for quiet numbers."""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser()
ap.add_argument("--mpillama", default=os.path.join(ROOT, "build", "mpillama"))
ap.add_argument("--before", help="an mpillama from before sampling moved (rank 0 samples from whole logits)")
ap.add_argument("--shape", default="medium")
ap.add_argument("--prompts", default=os.path.join(ROOT, "data", "bench_prompts.jsonl"))
ap.add_argument("--n-prompts", type=int, default=48)
ap.add_argument("--max-tokens", type=int, default=24)
ap.add_argument("--batch", type=int, default=8)
ap.add_argument("--reps", type=int, default=1, help="part 1: rounds (medians), each running every row once")
ap.add_argument("--hosts", action="store_true", help="part 1: also dp 2 across the two hosts of the Slurm test cluster")
ap.add_argument("--skip", default="", help="comma-separated parts to leave out (1-5)")
ap.add_argument("--work", default=os.environ.get("WORK", "/tmp/mpillama-bench-replicas"))
a = ap.parse_args()
os.makedirs(a.work, exist_ok=True)
env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
           OMPI_MCA_rmaps_base_oversubscribe="1", OPENBLAS_NUM_THREADS="1")
skip = set(a.skip.split(","))

model = os.path.join(a.work, a.shape + ".h5")
if not os.path.exists(model):
    subprocess.run([a.mpillama, "synth", "--shape", a.shape, "-o", model], check=True, env=env,
                   stdout=subprocess.DEVNULL)
prompts = os.path.join(a.work, "prompts.jsonl")
with open(a.prompts) as f, open(prompts, "w") as g:
    for i, line in enumerate(f):
        if i >= a.n_prompts:
            break
        r = json.loads(line)
        r.update(max_tokens=a.max_tokens, ignore_eos=True)  # default sampling: temperature 0.85, top_k 25
        g.write(json.dumps(r) + "\n")


def run(name, n, flags, binary=None, extra_env=None, bind=True, batch=None, launch=None, run_env=None):
    """one generate run of n ranks (mpirun on this host, or launch: a launch prefix that starts n)"""
    tdir = os.path.join(a.work, name)
    out = os.path.join(a.work, name + ".jsonl")
    launch = launch or ["mpirun", "-n", str(n)] + (["--bind-to", "core"] if bind else [])
    cmd = launch + \
        [binary or a.mpillama, "generate", "--model", model, "--prompts", prompts, "--output", out, "--overwrite", "--batch",
         str(batch or a.batch), "--trace", tdir] + ([] if binary else ["--trace-level", "kernels"]) + flags  # io spans: kernels
    subprocess.run(cmd, check=True, env=dict(run_env or env, **(extra_env or {})), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    with open(os.path.join(tdir, "summary.json")) as f:
        s = json.load(f)
    recs = {}
    with open(out) as f:
        for line in f:
            r = json.loads(line)
            recs[r["custom_id"]] = (r.get("completion_ids"), r.get("finish_reason"))
    s["_records"] = recs
    return s


def tok_s(s):
    return s["total_tok_s"]


def gen_tokens(s):
    return max(1, s["tokens"]["completion"])


def net_bytes(s):
    b = s["bytes_communicated"]
    return sum(b.get(k, 0) for k in ("p2p", "gather", "sampling", "control"))


def rank(s, r):
    return next(x for x in s["per_rank"] if x["rank"] == r)


def rank0_run_seconds(name):
    """rank 0's io and sampling seconds from its first step on (the start-up's prompt reading and
    loading left out), from trace.json"""
    with open(os.path.join(a.work, name, "trace.json")) as f:
        ev = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X" and e["pid"] == 0]
    t0 = min((e["ts"] for e in ev if e["cat"] == "step"), default=0)
    io = sum(e["dur"] for e in ev if e["cat"] == "io" and e["ts"] >= t0) * 1e-6
    samp = sum(e["dur"] for e in ev if e["cat"] == "sampling" and e["ts"] >= t0) * 1e-6
    return io, samp


print("mpillama data-parallel benchmark: %s model, %d prompts, max_tokens %d, --batch %d per replica, "
      "one core per rank" % (a.shape, a.n_prompts, a.max_tokens, a.batch))
one = run("dp1", 1, ["--dp", "1"])
if "1" not in skip:
    # rows: (layout, where, n ranks, launch prefix or None for mpirun here, environment, rows compared with)
    rows = [("dp 1", "this host", 1, None, None, []), ("dp 2", "this host", 2, None, None, [0])]
    hosts, note = None, None
    if a.hosts:
        sys.path.insert(0, os.path.join(ROOT, "jobs", "lib"))
        import slurm_hosts
        try:
            hosts = slurm_hosts.start(os.path.join(a.work, "cluster"), env)
            rows += [("dp 1", "one cluster host", 1, hosts.srun(1), hosts.env, []),
                     ("dp 2", "two hosts", 2, hosts.srun(2), hosts.env, [2, 0])]
        except slurm_hosts.Error as e:
            note = "two hosts skipped: %s" % str(e).splitlines()[0]
    got = [[] for _ in rows]
    try:
        for k in range(a.reps):
            for i, (layout, where, n, launch, run_env, _) in enumerate(rows):
                s = one if i == 0 and k == 0 else \
                    run("part1_%d_%d" % (i, k), n, ["--dp", str(n)], launch=launch, run_env=run_env)
                got[i].append(s)
    finally:
        if hosts:
            hosts.stop()
    identical = all(s["_records"] == one["_records"] for g in got for s in g)
    med = [statistics.median(tok_s(s) for s in g) for g in got]
    print("\n1. dp 2 vs dp 1, medians of %d rounds (every run's records identical to dp 1's: %s)" % (a.reps, identical))
    if note:
        print("   " + note)
    print("   %-6s %-17s %10s %13s %8s %s" % ("layout", "where", "tok/s", "tok/s range", "wall s", "ratio (per-round range)"))
    for i, (layout, where, n, _, _, bases) in enumerate(rows):
        g = got[i]
        ratio = "; ".join("%.2f (%.2f-%.2f) against %s on %s" % (
            med[i] / med[b], min(tok_s(x) / tok_s(y) for x, y in zip(g, got[b])),
            max(tok_s(x) / tok_s(y) for x, y in zip(g, got[b])), rows[b][0], rows[b][1]) for b in bases)
        print("   %-6s %-17s %10.1f %6.0f-%-6.0f %8.2f %s" % (layout, where, med[i], min(tok_s(x) for x in g),
                                                           max(tok_s(x) for x in g),
                                                           statistics.median(x["wall_s"] for x in g), ratio))
    print("   (ideal 2; two hosts: ranks in network namespaces of this machine, Open MPI over TCP, started by srun)")
    # the machine's own ceiling for two replicas: what two cores at once give over one (`mpillama
    # bench`'s limits: a memory read and the f32 FMA peak, one process a core, all at once)
    lim = {}
    for n in (1, 2):
        r = subprocess.run(["mpirun", "-n", str(n), "--bind-to", "core", a.mpillama, "bench", "--model", model,
                            "--decode", "1", "--prefill", "1", "--time", "0.05"], env=env, capture_output=True, text=True)
        m = re.search(r"read ([0-9.]+) GB/s; peak f32 ([0-9.]+) GFLOP/s", r.stdout + r.stderr)
        lim[n] = (float(m.group(1)), float(m.group(2))) if m else None
    if lim[1] and lim[2]:
        print("   machine, 1 core / 2 cores at once: read %.1f / %.1f GB/s (x%.2f), f32 peak %.0f / %.0f GFLOP/s (x%.2f)"
              % (lim[1][0], lim[2][0], lim[2][0] / lim[1][0], lim[1][1], lim[2][1], lim[2][1] / lim[1][1]))

if "2" not in skip or "3" not in skip:
    pp2 = run("pp2", 2, ["--dp", "1", "--pp", "2"])
    rows = [("after", one, pp2)]
    if a.before:
        b1 = run("before_pp1", 1, ["--pp", "1", "--tp", "1"], binary=a.before)
        b2 = run("before_pp2", 2, ["--pp", "2", "--tp", "1"], binary=a.before)
        rows.insert(0, ("before", b1, b2))
    print("\n2. pp 2 vs pp 1, the same batched work (records identical to pp 1: %s)" % (pp2["_records"] == one["_records"]))
    print("   %-7s %9s %9s %6s %7s | per rank: wait s, sampling s, io s, compute s" % ("", "pp1 tok/s", "pp2 tok/s",
                                                                                       "ratio", "bubble"))
    for what, s1, s2 in rows:
        causes = "; ".join("r%d %.2f %.2f %.2f %.2f" % (x["rank"], x["seconds"]["wait"], x["seconds"]["sampling"],
                                                       x["seconds"]["io"], x["seconds"]["compute"])
                           for x in s2["per_rank"])
        print("   %-7s %9.1f %9.1f %6.2f %7.3f | %s" % (what, tok_s(s1), tok_s(s2), tok_s(s2) / tok_s(s1),
                                                       s2["pipeline_bubble"], causes))
    print("   (stage 0 = rank 0: its sampling + io are on the pipeline's critical path; after the move it only "
          "keeps the stop rules and records)")
    # --batch is per micro-batch: pp 2 holds micro_batches x --batch sequences, pp 1 only --batch;
    # pp 1 with as many in flight (its kernels on that many rows) is the other fair baseline
    same = run("pp1_slots", 1, ["--dp", "1"], batch=pp2["batch"])
    print("   pp 2 holds %d sequences (%d micro-batches of %d); pp 1 with --batch %d: %.1f tok/s, ratio %.2f"
          % (pp2["batch"], pp2["micro_batches"], a.batch, pp2["batch"], tok_s(same), tok_s(pp2) / tok_s(same)))
    print("\n3. bytes between ranks per generated token (pp 2: activations + what the logits become)")
    for what, _, s2 in rows:
        b = s2["bytes_communicated"]
        print("   %-7s %9.0f bytes/token (p2p %.0f, gather %.0f, sampling %.0f, control %.0f)" %
              (what, net_bytes(s2) / gen_tokens(s2), b.get("p2p", 0) / gen_tokens(s2), b.get("gather", 0) / gen_tokens(s2),
               b.get("sampling", 0) / gen_tokens(s2), b.get("control", 0) / gen_tokens(s2)))

if "4" not in skip:
    mp = run("dp2_mapped", 2, ["--dp", "2"])
    sh = run("dp2_shared", 2, ["--dp", "2"], extra_env={"MPILLAMA_MAP": "0"})
    pv = run("dp2_private", 2, ["--dp", "2"], extra_env={"MPILLAMA_MAP": "0", "MPILLAMA_PRIVATE_WEIGHTS": "1"})
    print("\n4. memory per node, dp 2 on one node (peak RSS counts shared pages in every rank)")
    print("   %-34s %12s %12s %14s" % ("", "weights MiB", "KV MiB", "peak RSS MiB"))
    for what, s in (("file mapping (default)", mp), ("read once into a shared window", sh),
                    ("read into a copy per rank", pv)):
        n = s["memory_per_node"][0]
        print("   %-34s %12.1f %12.1f %14.1f" % (what, n["weight_bytes"] / 2**20, n["kv_bytes"] / 2**20,
                                                 n["peak_rss_bytes"] / 2**20))

if "5" not in skip:
    print("\n5. rank 0's work per generated token (io: intake, the replicas' requests and results, records; "
          "sampling: its own replica's stop rules)")
    print("   %-4s %10s %14s %18s %12s" % ("dp", "tokens", "io us/token", "sampling us/token", "control B/token"))
    for d in (1, 2, 4):
        name = "dp1" if d == 1 else "r0_dp%d" % d
        s = one if d == 1 else run(name, d, ["--dp", str(d)], bind=d <= 2)
        io, samp = rank0_run_seconds(name)
        print("   %-4d %10d %14.1f %18.1f %12.1f" % (d, gen_tokens(s), 1e6 * io / gen_tokens(s), 1e6 * samp / gen_tokens(s),
                                                    s["bytes_communicated"].get("control", 0) / gen_tokens(s)))
