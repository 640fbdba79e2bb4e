"""The batch job (issue 4): seeded completions independent of the batch size, the grid and the
order of the prompt file (reversed); SIGKILL at three seeded random moments and a hand-made torn
last line, each resumed (--resume) to exactly the records of an uninterrupted run; SIGTERM with a
grace period (TERM to the ranks: in-flight requests finished, none interrupted, exit 75) and without
one (USR1 to mpiexec, passed on to the ranks: in-flight ones recorded as interrupted, exit 75), each
resumed likewise; the trace and summary files."""
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


def wait_records(path, k, proc, timeout=600):
    """waits until path holds at least k lines (or the process ended)"""
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None:
        if os.path.exists(path):
            with open(path, "rb") as f:
                if f.read().count(b"\n") >= k:
                    return
        time.sleep(0.01)


def gen(name, n=1, extra=(), check=True, prompts_file=None):
    out = os.path.join(W, name + ".jsonl")
    r = c.mpirun(args, n, ["generate", "--model", model, "--prompts", prompts_file or pin, "--output", out, "--seed", "99"]
                 + list(extra), check=check)
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
# the order of the prompt file does not matter: reversed, the same records
rev_in = os.path.join(W, "reversed.jsonl")
c.write_jsonl(rev_in, prompts[::-1])
rev = records(gen("rev", 1, ["--batch", "8"], prompts_file=rev_in)[0])
if rev != base:
    c.fail("the reversed prompt file gave different records: %s" % [k for k in base if rev.get(k) != base[k]][:5])
checks += 1
print("rev  (reversed prompt file, B=8) identical to B=1 on all 64 records")
greedy = [k for k, v in base.items() if any(p["custom_id"] == k and p.get("temperature") == 0 for p in prompts)]
print("greedy records checked against the one-sequence path: %d" % len(greedy))
stops = sum(1 for v in base.values() if v["finish_reason"] == "stop")
print("finish reasons: %d stop, %d length" % (stops, sum(1 for v in base.values() if v["finish_reason"] == "length")))

# ---- SIGKILL at seeded random moments, then --resume: the same set of records
# 64 x 200 tokens: a kill after at most 56 records leaves >= 8 requests, hundreds of steps
long_prompts = [dict(p, custom_id="%s-long" % p["custom_id"], max_tokens=200, ignore_eos=True) for p in prompts]
lin = os.path.join(W, "long.jsonl")
c.write_jsonl(lin, long_prompts)
LONG = ["generate", "--model", model, "--prompts", lin, "--seed", "5", "--batch", "4", "--pp", "2"]
ref_path = os.path.join(W, "long_ref.jsonl")
c.mpirun(args, 2, LONG + ["--output", ref_path], timeout=900)
ref = records(ref_path)


def start(out, extra=(), stderr=subprocess.DEVNULL):
    cmd = [args.mpiexec, "-n", "2", "--oversubscribe", args.mpillama] + LONG + ["--output", out] + list(extra)
    return subprocess.Popen(cmd, env=c.mpi_env(), stdout=subprocess.DEVNULL, stderr=stderr, text=True,
                            start_new_session=True)


def resume_to_ref(out, what):
    c.mpirun(args, 2, LONG + ["--output", out, "--resume"], timeout=900)
    got = records(out)
    if got != ref:
        missing = set(ref) - set(got)
        diff = [k for k in ref if k in got and got[k] != ref[k]]
        c.fail("%s, then --resume: %d missing, %d differ (e.g. %s)" % (what, len(missing), len(diff), (list(missing) + diff)[:3]))


for seed in range(3):
    r = random.Random(seed)
    k, delay = r.randrange(1, len(long_prompts) - 8), r.uniform(0, 0.05)  # after k records, mid-write or not
    kp = os.path.join(W, "killed%d.jsonl" % seed)
    proc = start(kp)
    wait_records(kp, k, proc)
    time.sleep(delay)
    if proc.poll() is not None:
        c.fail("the run to be killed ended first")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run(["pkill", "-9", "-f", kp], check=False)  # ranks orphaned by the kill
    with open(kp, "rb") as f:
        data = f.read()
    before, torn = data.count(b"\n"), not data.endswith(b"\n") and len(data) > 0
    resume_to_ref(kp, "SIGKILL (seed %d: %d records kept%s)" % (seed, before, ", a torn line" if torn else ""))
    checks += 1
    print("SIGKILL (seed %d) after %d records + %.3f s (%s), then --resume: all %d records, none duplicated or torn" %
          (seed, before, delay, "last line torn" if torn else "whole lines", len(ref)))

# a torn last line made by hand: whole records, then half of the next one without its newline
with open(ref_path, "rb") as f:
    lines = f.read().splitlines(keepends=True)
tp = os.path.join(W, "torn.jsonl")
with open(tp, "wb") as f:
    f.write(b"".join(lines[:len(lines) - 12]) + lines[len(lines) - 12][:40])
resume_to_ref(tp, "a hand-made torn last line")
checks += 1
print("a torn last line (40 bytes of a record), then --resume: all %d records" % len(ref))


def ranks_of(out):
    """pids of the mpillama ranks writing out (not mpiexec)"""
    pids = []
    for d in os.listdir("/proc"):
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except (OSError, ValueError):
            continue
        if argv and os.path.basename(argv[0]) == b"mpillama" and out.encode() in argv:
            pids.append(int(d))
    return pids


# ---- SIGTERM: in-flight requests finished within --grace, exit 75, traces; a rerun completes the rest.
# The signal goes where a batch system sends it: TERM to the ranks themselves, or USR1 to mpiexec,
# which passes it on to every rank (slurm/*.sbatch do that; a TERM to mpiexec would kill the ranks).
def term(name, grace, how):
    out, tdir = os.path.join(W, name + ".jsonl"), os.path.join(W, name + "_trace")
    proc = start(out, ["--grace", str(grace), "--trace", tdir], stderr=subprocess.PIPE)
    wait_records(out, 20, proc)
    if proc.poll() is not None:
        c.fail("SIGTERM (grace %s): the run ended before the signal" % grace)
    t0 = time.time()
    if how == "TERM to the ranks":
        pids = ranks_of(out)
        if len(pids) != 2:
            c.fail("found %d mpillama ranks writing %s, expected 2" % (len(pids), out))
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
    else:
        os.kill(proc.pid, signal.SIGUSR1)
    err = c.finish_or_kill(proc, 120, "SIGTERM (grace %s)" % grace)
    took = time.time() - t0
    if proc.returncode != 75 or "rerun with --resume" not in err:
        c.fail("SIGTERM (grace %s): exit %d (want 75) or no word of the interruption:\n%s" % (grace, proc.returncode, err[-2000:]))
    for f in ("summary.json", "trace.json"):
        if not os.path.exists(os.path.join(tdir, f)):
            c.fail("SIGTERM (grace %s): %s/%s not written" % (grace, tdir, f))
    part = records(out)
    return out, part, took


out, part, took = term("term_grace", 60, "TERM to the ranks")
done = {k: v for k, v in part.items() if v.get("finish_reason") != "interrupted"}
if len(done) != len(part) or not 20 <= len(part) < len(ref) or any(v != ref[k] for k, v in part.items()):
    c.fail("SIGTERM with --grace 60: %d records, %d interrupted, %d differ from the uninterrupted run (want >= 20, "
           "< %d, none interrupted, all equal)" % (len(part), len(part) - len(done),
                                                   sum(1 for k, v in part.items() if v != ref[k]), len(ref)))
print("SIGTERM to the ranks, --grace 60: exit 75 after %.1f s, %d records, in-flight ones finished (none interrupted), "
      "each equal to the uninterrupted run's" % (took, len(part)))
resume_to_ref(out, "SIGTERM with --grace 60")
checks += 1
out, part, took = term("term", 0, "USR1 to mpiexec")
n_int = sum(1 for v in part.values() if v.get("finish_reason") == "interrupted")
if n_int == 0:
    c.fail("SIGTERM with --grace 0: no request recorded as interrupted (%d records)" % len(part))
print("USR1 to mpiexec, --grace 0: exit 75 after %.1f s with %d records (%d interrupted), traces written" % (took, len(part), n_int))
resume_to_ref(out, "SIGTERM with --grace 0")
checks += 1
print("SIGTERM then --resume: the same %d records as an uninterrupted run (both grace periods)" % len(ref))

# ---- the trace and the summary of a complete run
tdir = os.path.join(W, "trace")
outp, _ = gen("traced", 2, ["--batch", "8", "--pp", "2", "--trace", tdir, "--trace-level", "kernels"])
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
        # a rank's spans nest on thread 0; its sends in flight (from posting to completion) have
        # their own thread 1, where they may overlap anything
        tracks.setdefault((e["pid"], e["tid"]), []).append(e)
    elif e["ph"] != "M":
        c.fail("unexpected phase %s" % e["ph"])
if sorted({pid for pid, _ in tracks}) != [0, 1]:
    c.fail("trace tracks %s, expected one per rank [0, 1]" % sorted(tracks))
if any(tid not in (0, 1) for _, tid in tracks) or any(e["name"] != "in_flight" for e in tracks.get((0, 1), []) + tracks.get((1, 1), [])):
    c.fail("thread 1 of a rank holds only in_flight spans: %s" % sorted(tracks))
for (pid, tid), evs in tracks.items():
    if tid == 1:
        continue
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
# --batch 8 is per micro-batch; 64 prompts fill pp + 1 = 3 of them: 24 sequences in flight
if s["micro_batches"] != 3 or s["batch"] != 24:
    c.fail("pp 2, --batch 8, 64 prompts: %d micro-batches, %d in flight; expected 3 of 8: 24" % (s["micro_batches"], s["batch"]))
for r in recs:
    t = r["timing"]
    if not all(k in t for k in ("queued_ms", "prefill_ms", "decode_ms")):
        c.fail("record without per-request timing: %s" % r)
checks += 1
print("trace: %d events on 2 tracks, nested and in order; summary: %d + %d tokens, bubble %.2f" %
      (len(events), s["tokens"]["prompt"], s["tokens"]["completion"], s["pipeline_bubble"]))
print("%d passed, 0 failed" % checks)
