"""The batch job (issue 4): batch-size and grid independence of seeded completions, resume after
SIGKILL at a random moment, SIGTERM with a grace period, and the trace and summary files."""
import json
import os
import random
import signal
import subprocess
import time

import common as c

args = c.parse_args()
W = args.work

# the model: stories260K when ../shared has it (text, stop strings), else a synthetic one
shared_bin = os.path.join(args.shared, "models/stories260K.bin")
model = os.path.join(W, "m.h5")
if os.path.exists(shared_bin):
    c.run([args.mpillama, "convert", shared_bin, "-o", model, "--tokenizer", os.path.join(args.shared, "models/tok512.bin")])
    has_text = True
else:
    print("note: ../shared is absent: using a synthetic model (no tokenizer, no stop strings)")
    binp = os.path.join(W, "m.bin")
    c.run(["/usr/bin/python3", os.path.join(os.path.dirname(__file__), "make_llama2c_model.py"), binp, "--dim", "64",
           "--hidden", "172", "--layers", "5", "--heads", "8", "--kv-heads", "4", "--vocab", "512", "--seq-len", "256"])
    c.run([args.mpillama, "convert", binp, "-o", model])
    has_text = False

rng = random.Random(1234)
prompts = []
for i in range(64):
    p = {"custom_id": "req-%02d" % i, "prompt_ids": [1] + [rng.randrange(3, 500) for _ in range(rng.randrange(0, 50))],
         "max_tokens": rng.randrange(1, 48)}
    kind = i % 8
    if kind == 0:
        p["temperature"] = 0
    elif kind == 1:
        p["seed"] = 1000 + i
    elif kind == 2:
        p.update(top_k=5, top_p=0.8, seed=7)
    elif kind == 3:
        p.update(min_p=0.05, repetition_penalty=1.3)
    elif kind == 4:
        p.update(frequency_penalty=0.5, presence_penalty=0.3, temperature=1.2)
    elif kind == 5:
        p.update(stop_token_ids=[rng.randrange(3, 500) for _ in range(20)], ignore_eos=True)
    elif kind == 6 and has_text:
        p.update(stop=["the", "."])
    prompts.append(p)
rng.shuffle(prompts)
pin = os.path.join(W, "prompts.jsonl")
c.write_jsonl(pin, prompts)


def strip(rec):
    return {k: v for k, v in rec.items() if k != "timing"}


def records(path):
    out = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)  # a torn or invalid line fails here
            if r["custom_id"] in out:
                c.fail("%s: custom_id %s written twice" % (path, r["custom_id"]))
            out[r["custom_id"]] = strip(r)
    return out


def wait_records(path, k, proc, timeout=120):
    """waits until path holds at least k lines (or the process ended)"""
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if os.path.exists(path):
            with open(path, "rb") as f:
                if f.read().count(b"\n") >= k:
                    return
        time.sleep(0.01)


def gen(name, n=1, extra=(), check=True):
    out = os.path.join(W, name + ".jsonl")
    r = c.mpirun(args, n, ["generate", "--model", model, "--prompts", pin, "--output", out, "--seed", "99"] + list(extra),
                 check=check)
    return out, r


checks = 0
base_path, _ = gen("b1", extra=["--batch", "1"])
base = records(base_path)
if len(base) != 64:
    c.fail("B=1 wrote %d records, expected 64" % len(base))
for name, n, extra in [("b8", 1, ["--batch", "8"]), ("b32", 1, ["--batch", "32", "--prefill-chunk", "7"]),
                       ("pp2", 2, ["--batch", "8", "--pp", "2", "--tp", "1"]),
                       ("tp2", 2, ["--batch", "16", "--pp", "1", "--tp", "2"])]:
    other = records(gen(name, n, extra)[0])
    for k, v in base.items():
        if other.get(k) != v:
            c.fail("%s: record %s differs from B=1:\n  B=1: %s\n  %s: %s" % (name, k, v, name, other.get(k)))
    checks += 1
    print("%-4s identical to B=1 on all 64 records" % name)
greedy = [k for k, v in base.items() if any(p["custom_id"] == k and p.get("temperature") == 0 for p in prompts)]
print("greedy records checked against the one-sequence path: %d" % len(greedy))
stops = sum(1 for v in base.values() if v["finish_reason"] == "stop")
print("finish reasons: %d stop, %d length" % (stops, sum(1 for v in base.values() if v["finish_reason"] == "length")))

# ---- SIGKILL at a random moment, then --resume: the same set of records
long_prompts = [dict(p, custom_id="%s-%d" % (p["custom_id"], k), max_tokens=300, ignore_eos=True)
                for k in range(3) for p in prompts]
lin = os.path.join(W, "long.jsonl")
c.write_jsonl(lin, long_prompts)
ref_path = os.path.join(W, "long_ref.jsonl")
c.mpirun(args, 2, ["generate", "--model", model, "--prompts", lin, "--output", ref_path, "--seed", "5", "--batch", "4", "--pp", "2"])
ref = records(ref_path)
for attempt in range(2):
    kp = os.path.join(W, "killed%d.jsonl" % attempt)
    cmd = [args.mpiexec, "-n", "2", "--oversubscribe", args.mpillama, "generate", "--model", model, "--prompts", lin,
           "--output", kp, "--seed", "5", "--batch", "4", "--pp", "2"]
    proc = subprocess.Popen(cmd, env=c.mpi_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    wait_records(kp, random.Random(attempt).randrange(1, len(long_prompts) - 8), proc)
    time.sleep(random.Random(attempt).uniform(0, 0.05))  # a random moment, mid-write or not
    if proc.poll() is not None:
        c.fail("the run to be killed ended first")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(["pkill", "-9", "-f", kp], check=False)  # ranks orphaned by the kill
    before = sum(1 for _ in open(kp)) if os.path.exists(kp) else 0
    c.mpirun(args, 2, ["generate", "--model", model, "--prompts", lin, "--output", kp, "--seed", "5", "--batch", "4",
                       "--pp", "2", "--resume"])
    got = records(kp)
    if got != ref:
        missing = set(ref) - set(got)
        diff = [k for k in ref if k in got and got[k] != ref[k]]
        c.fail("after SIGKILL (%d records kept) and --resume: %d missing, %d differ (e.g. %s)" %
               (before, len(missing), len(diff), (list(missing) + diff)[:3]))
    checks += 1
    print("SIGKILL after %d of %d records, then --resume: all records, none duplicated or torn" % (before, len(ref)))

# ---- SIGTERM: stops within the grace period, writes the traces; a rerun completes the rest
tp = os.path.join(W, "term.jsonl")
tdir = os.path.join(W, "term_trace")
cmd = [args.mpiexec, "-n", "2", "--oversubscribe", args.mpillama, "generate", "--model", model, "--prompts", lin,
       "--output", tp, "--seed", "5", "--batch", "4", "--pp", "2", "--grace", "0", "--trace", tdir]
proc = subprocess.Popen(cmd, env=c.mpi_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                        start_new_session=True)
wait_records(tp, 20, proc)
t0 = time.time()
os.killpg(proc.pid, signal.SIGTERM)
try:
    _, err = proc.communicate(timeout=30)
except subprocess.TimeoutExpired:
    os.killpg(proc.pid, signal.SIGKILL)
    c.fail("SIGTERM: the job did not exit within 30 s")
took = time.time() - t0
if proc.returncode == 0 or "rerun with --resume" not in err:
    c.fail("SIGTERM: exit %d and no word of the interruption (did the run end first?):\n%s" % (proc.returncode, err[-2000:]))
for f in ("summary.json", "trace.json"):
    if not os.path.exists(os.path.join(tdir, f)):
        c.fail("SIGTERM: %s/%s not written" % (tdir, f))
part = records(tp)
print("SIGTERM: exited in %.1f s (grace 0 s) with %d records (%d interrupted), traces written" %
      (took, len(part), sum(1 for v in part.values() if v.get("finish_reason") == "interrupted")))
c.mpirun(args, 2, ["generate", "--model", model, "--prompts", lin, "--output", tp, "--seed", "5", "--batch", "4",
                   "--pp", "2", "--resume"])
if records(tp) != ref:
    c.fail("after SIGTERM and --resume the records differ from an uninterrupted run")
checks += 1
print("SIGTERM then --resume: the same %d records as an uninterrupted run" % len(ref))

# ---- the trace and the summary of a complete run
tdir = os.path.join(W, "trace")
outp, _ = gen("traced", 2, ["--batch", "8", "--pp", "2", "--trace", tdir])
with open(os.path.join(tdir, "trace.json")) as f:
    trace = json.load(f)
events = trace["traceEvents"]
tracks = {}
for e in events:
    for k in ("name", "ph", "pid", "tid"):
        if k not in e:
            c.fail("trace event without '%s': %s" % (k, e))
    if e["ph"] == "X":
        if not (isinstance(e["ts"], (int, float)) and e["dur"] >= 0 and "cat" in e):
            c.fail("bad complete event %s" % e)
        tracks.setdefault(e["pid"], []).append(e)
    elif e["ph"] != "M":
        c.fail("unexpected phase %s" % e["ph"])
if sorted(tracks) != [0, 1]:
    c.fail("trace tracks %s, expected one per rank [0, 1]" % sorted(tracks))
for pid, evs in tracks.items():
    stack = []
    for i, e in enumerate(evs):
        if i and e["ts"] < evs[i - 1]["ts"]:
            c.fail("track %d: timestamps go back at event %d" % (pid, i))
        while stack and e["ts"] >= stack[-1] - 1e-3:
            stack.pop()
        if stack and e["ts"] + e["dur"] > stack[-1] + 1e-2:
            c.fail("track %d: event %s [%g, %g] overlaps its parent's end %g" % (pid, e["name"], e["ts"], e["ts"] + e["dur"], stack[-1]))
        stack.append(e["ts"] + e["dur"])
names = {e["name"] for e in events}
for want in ("matmul", "attention", "sampling", "send", "wait", "io"):
    if want not in names:
        c.fail("trace has no '%s' span (has %s)" % (want, sorted(names)))
with open(os.path.join(tdir, "summary.json")) as f:
    s = json.load(f)
recs = c.read_jsonl(outp)
if s["tokens"]["completion"] != sum(r["completion_tokens"] for r in recs):
    c.fail("summary completion tokens %d != records' %d" % (s["tokens"]["completion"], sum(r["completion_tokens"] for r in recs)))
if s["tokens"]["prompt"] != sum(r["prompt_tokens"] for r in recs):
    c.fail("summary prompt tokens %d != records' %d" % (s["tokens"]["prompt"], sum(r["prompt_tokens"] for r in recs)))
if s["grid"] != {"pp": 2, "tp": 1} or s["ranks"] != 2 or len(s["per_rank"]) != 2 or s["prompts"]["completed"] != 64:
    c.fail("summary grid/ranks/prompts wrong: %s" % {k: s[k] for k in ("grid", "ranks", "prompts")})
for r in recs:
    t = r["timing"]
    if not all(k in t for k in ("queued_ms", "prefill_ms", "decode_ms")):
        c.fail("record without per-request timing: %s" % r)
checks += 1
print("trace: %d events on 2 tracks, nested and in order; summary: %d + %d tokens, bubble %.2f" %
      (len(events), s["tokens"]["prompt"], s["tokens"]["completion"], s["pipeline_bubble"]))
print("%d passed, 0 failed" % checks)
