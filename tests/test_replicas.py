"""Data-parallel replicas (issue 12): dp 2, dp 2 x tp 2, dp 2 x pp 2 and the default layout give
the same records as one replica, with skewed prompt lengths and every kind of sampling (so the
vocab-parallel sampler on the last stage and the dynamic hand-out of requests are both checked);
score's log-probs too; SIGKILL + --resume with dp 2 loses nothing; the summary reports the
replicas and one copy of the weights per node; impossible layouts are refused naming valid ones."""
import json
import os
import random
import signal
import subprocess
import time

import common as c

args = c.parse_args()
W = args.work
c.need_shared(args, "models/stories260K.bin", "models/tok512.bin")
model = os.path.join(W, "m.h5")
c.run([args.mpillama, "convert", os.path.join(args.shared, "models/stories260K.bin"), "-o", model, "--tokenizer",
       os.path.join(args.shared, "models/tok512.bin")])

# skewed prompt lengths: a few long prompts (several prefill chunks) among many short ones
rng = random.Random(12)
prompts = []
for i in range(40):
    n = rng.randrange(150, 230) if i % 9 == 0 else rng.randrange(0, 12)
    p = {"custom_id": "q%02d" % i, "prompt_ids": [1] + [rng.randrange(3, 500) for _ in range(n)],
         "max_tokens": rng.randrange(1, 36)}
    kind = i % 6
    if kind == 0:
        p["temperature"] = 0
    elif kind == 1:
        p.update(top_k=0, top_p=0.9)                      # no top-k: every shard's survivors
    elif kind == 2:
        p.update(top_k=0, top_p=1.0, min_p=0.05, repetition_penalty=1.3)
    elif kind == 3:
        p.update(frequency_penalty=0.5, presence_penalty=0.3, temperature=1.2)
    elif kind == 4:
        p.update(temperature=0, repetition_penalty=1.5, stop=["the"])
    prompts.append(p)
rng.shuffle(prompts)
pin = os.path.join(W, "prompts.jsonl")
c.write_jsonl(pin, prompts)


def records(path):
    out = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r["custom_id"] in out:
                c.fail("%s: custom_id %s written twice" % (path, r["custom_id"]))
            out[r["custom_id"]] = {k: v for k, v in r.items() if k != "timing"}
    return out


def run(name, n, extra, cmd="generate", inp=pin):
    out = os.path.join(W, name + ".jsonl")
    r = c.mpirun(args, n, [cmd, "--model", model, "--prompts", inp, "--output", out, "--seed", "31", "--batch", "4",
                           "--prefill-chunk", "64"] + list(extra))
    return out, r


def same(name, base, other):
    for k, v in base.items():
        if other.get(k) != v:
            c.fail("%s: record %s differs from one replica:\n  1 rank: %s\n  %s: %s" % (name, k, v, name, other.get(k)))
    if len(other) != len(base):
        c.fail("%s: %d records, one replica wrote %d" % (name, len(other), len(base)))


base = records(run("one", 1, [])[0])
for name, n, extra, layout in [("dp2", 2, ["--dp", "2"], "--dp 2 --pp 1 --tp 1"),
                               ("default2", 2, [], "--dp 2 --pp 1 --tp 1"),
                               ("dp2tp2", 4, ["--dp", "2", "--tp", "2"], "--dp 2 --pp 1 --tp 2"),
                               ("dp2pp2", 4, ["--dp", "2", "--pp", "2"], "--dp 2 --pp 2 --tp 1"),
                               ("tp4", 4, ["--dp", "1", "--tp", "4"], "--dp 1 --pp 1 --tp 4")]:
    out, r = run(name, n, extra)
    if "layout " + layout not in r.stderr:
        c.fail("%s: expected 'layout %s' in:\n%s" % (name, layout, r.stderr[-1500:]))
    same(name, base, records(out))
    print("%-8s (%s): all %d records identical to one replica" % (name, layout, len(base)))

# score: log-probs computed on the last stage (gathered within the stage), only they travel back
sbase = records(run("score1", 1, [], "score")[0])
for name, n, extra in [("score_dp2", 2, ["--dp", "2"]), ("score_dp2pp2", 4, ["--dp", "2", "--pp", "2"])]:
    same(name, sbase, records(run(name, n, extra, "score")[0]))
    print("%-12s: all %d score records identical to one replica" % (name, len(sbase)))

# the summary: two replicas, one copy of the weights on the node, control and sampling bytes
tdir = os.path.join(W, "trace")
run("traced", 2, ["--dp", "2", "--trace", tdir])
with open(os.path.join(tdir, "summary.json")) as f:
    s = json.load(f)
if s.get("dp") != 2 or s["grid"] != {"pp": 1, "tp": 1}:
    c.fail("summary.json dp %s grid %s, expected dp 2 of 1 x 1" % (s.get("dp"), s["grid"]))
nodes = s.get("memory_per_node") or []
if len(nodes) != 1 or nodes[0]["ranks"] != 2 or nodes[0]["weight_bytes_private"] != 2 * nodes[0]["weight_bytes"]:
    c.fail("memory_per_node %s: expected one node whose 2 replicas hold one copy of the weights" % nodes)
if {x["replica"] for x in s["per_rank"]} != {0, 1} or s["bytes_communicated"].get("control", 0) <= 0:
    c.fail("summary.json: per-rank replicas %s, control bytes %s" %
           ([x["replica"] for x in s["per_rank"]], s["bytes_communicated"].get("control")))
print("summary.json: dp 2, one node holding %d weight bytes for 2 replicas (%d with a copy each), %d control bytes"
      % (nodes[0]["weight_bytes"], nodes[0]["weight_bytes_private"], s["bytes_communicated"]["control"]))

# impossible layouts are refused up front, naming the valid ones
r = c.mpirun(args, 2, ["generate", "--model", model, "--prompts", pin, "--output", os.path.join(W, "bad.jsonl"),
                       "--dp", "3"], check=False)
if r.returncode != 1 or "impossible grid" not in r.stderr or "with replicas: --dp 2 --pp 1 --tp 1" not in r.stderr:
    c.fail("--dp 3 on 2 ranks: exit %d, stderr:\n%s" % (r.returncode, r.stderr[-1500:]))
if os.path.exists(os.path.join(W, "bad.jsonl")) and os.path.getsize(os.path.join(W, "bad.jsonl")) > 0:
    c.fail("a refused layout wrote records")
print("--dp 3 on 2 ranks: refused, naming the valid layouts")
info = c.run([args.mpillama, "info", model, "--plan", "--dp", "2", "--tp", "2"])
if "2 replicas" not in info.stdout or "shared by the replicas" not in info.stdout:
    c.fail("info --plan --dp 2 --tp 2 does not show the replicas:\n%s" % info.stdout[-1500:])
print("info --plan shows the replicas and the weights they share")


# SIGKILL at a random moment with dp 2, then --resume: every record, none twice
def wait_records(path, k, proc, timeout=180):
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if os.path.exists(path):
            with open(path, "rb") as f:
                if f.read().count(b"\n") >= k:
                    return
        time.sleep(0.01)


long_prompts = [dict(p, custom_id="%s-%d" % (p["custom_id"], k), max_tokens=200, ignore_eos=True)
                for k in range(2) for p in prompts]
lin = os.path.join(W, "long.jsonl")
c.write_jsonl(lin, long_prompts)
ref = records(run("long_ref", 2, ["--dp", "2"], inp=lin)[0])
kp = os.path.join(W, "killed.jsonl")
cmd = [args.mpiexec, "-n", "2", "--oversubscribe", args.mpillama, "generate", "--model", model, "--prompts", lin,
       "--output", kp, "--seed", "31", "--batch", "4", "--prefill-chunk", "64", "--dp", "2"]
proc = subprocess.Popen(cmd, env=c.mpi_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
wait_records(kp, random.Random(5).randrange(4, len(long_prompts) - 20), proc)
if proc.poll() is not None:
    c.fail("the dp 2 run to be killed ended first")
os.killpg(proc.pid, signal.SIGKILL)
proc.wait()
subprocess.run(["pkill", "-9", "-f", kp], check=False)  # ranks orphaned by the kill
before = sum(1 for _ in open(kp))
c.mpirun(args, 2, ["generate", "--model", model, "--prompts", lin, "--output", kp, "--seed", "31", "--batch", "4",
                   "--prefill-chunk", "64", "--dp", "2", "--resume"])
got = records(kp)
if got != ref:
    missing = set(ref) - set(got)
    diff = [k for k in ref if k in got and got[k] != ref[k]]
    c.fail("dp 2: after SIGKILL (%d records kept) and --resume: %d missing, %d differ" % (before, len(missing), len(diff)))
print("dp 2: SIGKILL after %d of %d records, then --resume: all records, none duplicated or torn" % (before, len(ref)))
print("test_replicas: all checks passed")
