"""Weight loading and the binding warning.

1. Tensors copied from the file into the rank's own memory (the default) give the same log-probs
   and greedy ids, bit for bit, as tensors read through HDF5 (MPILLAMA_MAP=0), and tensors used in
   place (MPILLAMA_WEIGHTS=map; mfile_view: straight from the file's mapping) the same greedy ids
   and log-probs within 1e-4 (f32 packed for AVX-512 when copied, not in place), on 1x1, 1x2 (column
   blocks copied packed, row blocks in place) and 2x1; the first log line and summary.json say how much was
   used in place and copied, the load's GB/s and the time to the first token. An unknown
   MPILLAMA_WEIGHTS is refused in one line naming it.
2. A rank bound to fewer cores than its share of the node is told so once, with the flags that fix
   it; a fitting binding gets no warning, and the binding is kept either way."""
import json
import os
import re
import shutil
import subprocess

import common as c

WARN = "fewer than their share of the node"

args = c.parse_args()
c.need_shared(args, "models/stories260K.bin", "models/tok512.bin")
model = os.path.join(args.work, "stories260K.h5")
c.run([args.mpillama, "convert", os.path.join(args.shared, "models/stories260K.bin"), "-o", model,
       "--tokenizer", os.path.join(args.shared, "models/tok512.bin")])
prompts = os.path.join(args.work, "prompts.jsonl")
c.write_jsonl(prompts, [{"custom_id": str(i), "prompt_ids": [1] + [(7 * i + 13 * k) % 500 + 3 for k in range(6 + i)]}
                        for i in range(6)])


def run_env(cmd, extra):
    env = c.mpi_env()
    env.update(extra)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    if r.returncode != 0:
        c.fail("command failed (exit %d): %s\n%s" % (r.returncode, " ".join(cmd), r.stderr[-3000:]))
    return r


# ---- 1. in place against read
for pp, tp in [(1, 1), (1, 2), (2, 1)]:
    res = {}
    for how, env in [("map", {"MPILLAMA_WEIGHTS": "map"}), ("copy", {}), ("read", {"MPILLAMA_MAP": "0"})]:
        tag = "%s_%dx%d" % (how, pp, tp)
        so, go, tr = [os.path.join(args.work, "%s_%s" % (k, tag)) for k in ("score.jsonl", "gen.jsonl", "trace")]
        grid = ["--pp", str(pp), "--tp", str(tp)]
        launch = [args.mpiexec, "-n", str(pp * tp), "--oversubscribe", args.mpillama]
        r = run_env(launch + ["score", "--model", model, "--prompts", prompts, "--output", so] + grid, env)
        m = re.search(r"loaded [0-9.]+ MiB of weights in [0-9.]+ s \(([0-9.]+) GB/s, [0-9.]+ GB/s per rank, (\d+)% used in "
                      r"place, (\d+)% copied to own memory\)", r.stderr)
        if not m:
            c.fail("%s: no load line with GB/s and the share used in place in:\n%s" % (tag, r.stderr[-2000:]))
        in_place, copied = int(m.group(2)), int(m.group(3))
        if how == "map" and in_place < (90 if tp == 1 else 50):
            c.fail("%s: only %d%% of the weights used in place (the converter aligns every tensor of 4 KiB or more; "
                   "tp splits the columns of wo and w2, which are copied)"
                   % (tag, in_place))
        if how == "read" and (in_place != 0 or copied != 0):
            c.fail("%s: MPILLAMA_MAP=0 still used %d%% in place, %d%% copied" % (tag, in_place, copied))
        if how == "copy" and (in_place != 0 or copied < 90):
            c.fail("%s: the default (copy) used %d%% in place and copied only %d%% (every tensor of 4 KiB or more "
                   "is aligned in the file)" % (tag, in_place, copied))
        if how == "map" and tp == 1 and copied != 0:
            c.fail("%s: %d%% copied with MPILLAMA_WEIGHTS=map (whole rows are used in place)" % (tag, copied))
        if how == "map" and tp > 1 and not 10 <= copied <= 50:
            c.fail("%s: %d%% copied: a tp rank's columns of wo and w2 are copied packed, the rest used in place"
                   % (tag, copied))
        run_env(launch + ["generate", "--model", model, "--prompts", prompts, "--output", go, "--temperature", "0",
                          "--max-tokens", "24", "--trace", tr] + grid, env)
        with open(os.path.join(tr, "summary.json")) as f:
            s = json.load(f)
        for k in ("load_gbs", "first_token_s"):
            if not isinstance(s.get(k), (int, float)) or s[k] <= 0:
                c.fail("%s: summary.json has %s = %r, expected a positive number" % (tag, k, s.get(k)))
        if s["first_token_s"] < s["load_s"]:
            c.fail("%s: first token after %.3f s, before the load ended (%.3f s)" % (tag, s["first_token_s"], s["load_s"]))
        res[how] = ({r["custom_id"]: r["logprobs"] for r in c.read_jsonl(so)},
                    {r["custom_id"]: r["completion_ids"] for r in c.read_jsonl(go)})
        print("%s: %d%% in place, %d%% copied, load %.2f GB/s, first token after %.3f s"
              % (tag, in_place, copied, s["load_gbs"], s["first_token_s"]))
    if res["copy"] != res["read"]:
        c.fail("%dx%d: log-probs or greedy ids differ between weights copied and weights read" % (pp, tp))
    # in place, f32 matrices keep the file's rows: where the kernels pack f32 (AVX-512) the others
    # take them, whose sums round in another order; the same greedy ids, log-probs within 1e-4
    worst, same_rows = 0.0, set(res["map"][0]) == set(res["copy"][0])
    for k, lp in res["copy"][0].items():
        other = res["map"][0].get(k) or []
        same_rows = same_rows and len(other) == len(lp)
        worst = max([worst] + [abs(a - b) for a, b in zip(other, lp)])
    if not same_rows:
        c.fail("%dx%d: weights in place and weights copied scored different rows or lengths" % (pp, tp))
    if res["map"][1] != res["copy"][1] or worst > 1e-4:
        c.fail("%dx%d: weights in place and weights copied differ: greedy ids %s, log-probs by up to %.2e (bound 1e-4)"
               % (pp, tp, "equal" if res["map"][1] == res["copy"][1] else "differ", worst))
    print("%dx%d: copied and read agree bit for bit, in place within %.1e" % (pp, tp, worst))

bad = os.path.join(args.work, "bad_weights.jsonl")
env = c.mpi_env()
env["MPILLAMA_WEIGHTS"] = "hugepages"
r = subprocess.run([args.mpillama, "score", "--model", model, "--prompts", prompts, "--output", bad], capture_output=True,
                   text=True, timeout=120, env=env)
lines = [l for l in r.stderr.splitlines() if l.strip()]
if r.returncode == 0 or not lines or "MPILLAMA_WEIGHTS='hugepages'" not in lines[-1] or os.path.exists(bad):
    c.fail("MPILLAMA_WEIGHTS=hugepages: expected a non-zero exit, one line naming it and no output file; got exit %d, "
           "output file %s:\n%s" % (r.returncode, os.path.exists(bad), r.stderr[-2000:]))
print("MPILLAMA_WEIGHTS=hugepages refused: %s" % lines[-1])

# ---- 2. the binding warning
try:
    cores = len(os.sched_getaffinity(0))
except AttributeError:
    cores = os.cpu_count() or 1
if cores < 2 or shutil.which("taskset") is None:
    c.skip("the binding warning needs two free cores and taskset (have %d cores)" % cores)
gen = ["generate", "--model", model, "--prompts", prompts, "--temperature", "0", "--max-tokens", "4"]
cases = [
    ("mpirun --bind-to core, one rank", [args.mpiexec, "-n", "1", "--bind-to", "core", args.mpillama], True),
    ("taskset -c 0, no launcher", ["taskset", "-c", "0", args.mpillama], True),
    ("mpirun --bind-to none, one rank", [args.mpiexec, "-n", "1", "--bind-to", "none", args.mpillama], False),
    ("two ranks on two cores", [args.mpiexec, "-n", "2", "--bind-to", "core", args.mpillama], False),
]
for i, (what, launch, want) in enumerate(cases):
    out = os.path.join(args.work, "bind_%d.jsonl" % i)
    r = run_env(launch + gen + ["--output", out, "--verbose"], {})
    n = r.stderr.count(WARN)
    if want and n != 1:
        c.fail("%s: expected the binding warning once, got it %d times:\n%s" % (what, n, r.stderr[-2000:]))
    if want and not all(f in r.stderr for f in ("--bind-to none", "--map-by slot:PE=", "--cpus-per-task", "--cpu-bind")):
        c.fail("%s: the warning lacks the Open MPI and Slurm flags:\n%s" % (what, r.stderr[-2000:]))
    if want and "binding kept from the launcher" not in r.stderr:
        c.fail("%s: the binding was not kept:\n%s" % (what, r.stderr[-2000:]))
    if not want and n:
        c.fail("%s: unexpected binding warning:\n%s" % (what, r.stderr[-2000:]))
    print("%s: %s" % (what, "warned once" if want else "no warning"))
print("PASS")
