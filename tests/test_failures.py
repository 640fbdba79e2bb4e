"""Failures a batch job meets (issue 10, docs/FAILURES.md): a failed start leaves the output as it
was; an existing output needs --resume or --overwrite; error records run again on --resume;
duplicate custom_ids, another model or changed requests are refused; a locked output; a full disk
leaves whole records; SIGTERM to one rank alone and during a blocked write stop gracefully (75);
SIGKILL of rank 0 or of another rank ends the job and --resume completes it with the records of an
uninterrupted run; NaN logits give null log-probs in score records."""
import fcntl
import json
import os
import signal
import struct
import subprocess
import time

import common as c

args = c.parse_args()
W = args.work
c.need_shared(args, "models/stories260K.bin", "models/tok512.bin")
model = os.path.join(W, "m.h5")
tok = os.path.join(args.shared, "models/tok512.bin")
c.run([args.mpillama, "convert", os.path.join(args.shared, "models/stories260K.bin"), "-o", model, "--tokenizer", tok])
passed = 0


def ok(what):
    global passed
    passed += 1
    print("PASS " + what)


def gen(n, out, prompts, extra=(), sub="generate", timeout=300):
    return c.mpirun(args, n, [sub, "--model", model, "--prompts", prompts, "--output", out, "--seed", "5"] + list(extra),
                    check=False, timeout=timeout)


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def strip(path):
    """records by custom_id without timing; fails on a torn line or a duplicate"""
    out = {}
    for line in read_bytes(path).decode().splitlines():
        r = json.loads(line)
        r.pop("timing", None)
        if r["custom_id"] in out:
            c.fail("%s: custom_id %s twice" % (path, r["custom_id"]))
        out[r["custom_id"]] = r
    return out


def expect(r, code, text, what):
    if r.returncode != code or text not in r.stderr:
        c.fail("%s: expected exit %d and '%s'; got exit %d\nstderr: %s" % (what, code, text, r.returncode, r.stderr[-2000:]))


small = os.path.join(W, "small.jsonl")
c.write_jsonl(small, [{"custom_id": "s%d" % i, "prompt": "Once upon a time %d" % i, "max_tokens": 12} for i in range(6)])

# ---- a failed start never touches the output (1 and 2 ranks), and every rank exits 1
out = os.path.join(W, "kept.jsonl")
r = gen(1, out, small)
expect(r, 0, "", "first run")
before = read_bytes(out)
bad_prompts = os.path.join(W, "dup.jsonl")
c.write_jsonl(bad_prompts, [{"custom_id": "a", "prompt": "x"}, {"custom_id": "b", "prompt": "y"}, {"custom_id": "a", "prompt": "z"}])
cases = [("missing model", ["--model", os.path.join(W, "none.h5")], "cannot open model"),
         ("impossible grid", ["--pp", "3"], "impossible grid"),
         ("trace folder's parent missing", ["--trace", os.path.join(W, "no", "trace")], "cannot create trace folder"),
         ("missing prompt file", ["--prompts", os.path.join(W, "none.jsonl")], "cannot open prompts"),
         ("duplicate custom_ids", ["--prompts", bad_prompts], "'a' on lines 1 and 3")]
for n in (1, 2):
    for what, extra, msg in cases:
        if what == "impossible grid" and n == 1:
            extra = ["--pp", "2"]
        r = gen(n, out, small, list(extra) + ["--overwrite"])
        expect(r, 1, msg, "%s (%d ranks)" % (what, n))
        if read_bytes(out) != before:
            c.fail("%s (%d ranks): the output changed" % (what, n))
    ok("failed starts (%s) leave the output untouched, exit 1, on %d rank(s)" % (", ".join(x[0] for x in cases), n))

# ---- an existing output: refused without --resume / --overwrite; --overwrite replaces it
r = gen(1, out, small)
expect(r, 1, "give --resume to keep them and run the rest, or --overwrite", "existing output")
if read_bytes(out) != before:
    c.fail("a refused run changed the output")
r = gen(1, out, small, ["--resume", "--overwrite"])
expect(r, 2, "give one", "--resume with --overwrite")
r = gen(2, out, small, ["--overwrite", "--seed", "6"])
expect(r, 0, "", "--overwrite")
if len(strip(out)) != 6 or read_bytes(out) == before:
    c.fail("--overwrite did not replace the records")
ok("an existing output is refused naming --resume and --overwrite; --overwrite replaces it")

# ---- error records run again on --resume; records of another model or changed requests are refused
fixme = os.path.join(W, "fixme.jsonl")
rows = [{"custom_id": "s%d" % i, "prompt": "Once upon a time %d" % i, "max_tokens": 12} for i in range(6)]
c.write_jsonl(fixme, rows[:3] + [{"custom_id": "s3", "prompt_ids": [1, 99999]}] + rows[4:])
eout = os.path.join(W, "errors.jsonl")
expect(gen(1, eout, fixme), 3, "exit 3", "a run with a bad line")
if "error" not in strip(eout)["s3"]:
    c.fail("no error record for the bad line")
c.write_jsonl(fixme, rows)
expect(gen(1, eout, fixme, ["--resume"]), 0, "", "--resume after fixing the line")
got, ref = strip(eout), strip(os.path.join(W, "kept.jsonl"))
ref_run = os.path.join(W, "ref_small.jsonl")
expect(gen(1, ref_run, fixme), 0, "", "reference")
if got != strip(ref_run):
    c.fail("after the fix and --resume the records differ from a clean run")
ok("an error record runs again on --resume (the fixed line completes, no error record stays)")

changed = os.path.join(W, "changed.jsonl")
c.write_jsonl(changed, [dict(rows[0], prompt="Something else")] + rows[1:])
b = read_bytes(eout)
expect(gen(1, eout, changed, ["--resume"]), 1, "changed since its record", "--resume with a changed request")
other = os.path.join(W, "other.h5")
with open(model, "rb") as f, open(other, "wb") as g:
    g.write(f.read() + b"\0")  # another file (HDF5 ignores bytes after its end)
expect(gen(1, eout, fixme, ["--resume", "--model", other]), 1, "another model file", "--resume with another model")
expect(gen(1, eout, fixme, ["--resume"], sub="score"), 1, "holds generate records", "score --resume on generate records")
if read_bytes(eout) != b:
    c.fail("a refused --resume changed the output")
ok("--resume refuses a changed request, another model file and another command, leaving the output as it was")

# ---- every sampling field out of range or of the wrong type: an error record naming it; invalid
# UTF-8 in a prompt: a record (malformed bytes read as U+FFFD), never a crash
bad_fields = [("max_tokens", -1), ("max_tokens", "5"), ("temperature", -0.5), ("temperature", "hot"), ("top_k", -1),
              ("top_k", [3]), ("top_p", 0), ("top_p", 1.5), ("min_p", 2), ("min_p", None), ("repetition_penalty", 0),
              ("frequency_penalty", 3), ("presence_penalty", -3), ("presence_penalty", "x"), ("seed", -1),
              ("seed", "s"), ("ignore_eos", 1), ("stop", 5), ("stop", [""]), ("stop_token_ids", [-1]),
              ("stop_token_ids", "2")]
fin = os.path.join(W, "fields.jsonl")
with open(fin, "wb") as f:
    for i, (k, v) in enumerate(bad_fields):
        f.write((json.dumps({"custom_id": "f%d" % i, "prompt": "Once", "max_tokens": 3, k: v}) + "\n").encode()
                if k != "max_tokens" else (json.dumps({"custom_id": "f%d" % i, "prompt": "Once", k: v}) + "\n").encode())
    f.write(b'{"custom_id": "utf8", "prompt": "Once \xff\xfe upon \xc3", "max_tokens": 3}\n')
fout = os.path.join(W, "fields_out.jsonl")
r = gen(2, fout, fin)
expect(r, 3, "exit 3", "bad sampling fields")
recs = strip(fout)
for i, (k, v) in enumerate(bad_fields):
    e = recs.get("f%d" % i, {}).get("error", "")
    if k not in e:
        c.fail("%s = %r: expected an error record naming '%s', got %s" % (k, v, k, recs.get("f%d" % i)))
if recs["utf8"].get("completion_tokens") != 3:
    c.fail("invalid UTF-8 in a prompt: %s" % recs["utf8"])
ok("%d sampling fields out of range or of the wrong type give error records naming the field; invalid UTF-8 runs"
   % len(bad_fields))

# ---- workloads long enough to be interrupted
long_rows = [{"custom_id": "L%03d" % i, "prompt": "Once upon a time %d" % i, "max_tokens": 150, "ignore_eos": True}
             for i in range(32)]
lin = os.path.join(W, "long.jsonl")
c.write_jsonl(lin, long_rows)
ref_long = os.path.join(W, "ref_long.jsonl")
expect(gen(1, ref_long, lin, ["--batch", "4"], timeout=600), 0, "", "the uninterrupted long run")
REF = strip(ref_long)


def start(n, outp, extra=(), prompts=None):
    cmd = [args.mpiexec, "-n", str(n), "--oversubscribe", args.mpillama, "generate", "--model", model, "--prompts",
           prompts or lin,
           "--output", outp, "--seed", "5", "--batch", "4"] + list(extra)
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=c.mpi_env(),
                            start_new_session=True)


def lines_in(path):
    return read_bytes(path).count(b"\n") if os.path.exists(path) else 0


def wait_lines(path, k, proc, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout and proc.poll() is None and lines_in(path) < k:
        time.sleep(0.02)
    if proc.poll() is not None:
        c.fail("the run ended before it wrote %d records:\n%s" % (k, proc.stderr.read()[-2000:]))


def rank_pid(outp, rank):
    """the pid of the rank process whose command line names outp"""
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            cmd = read_bytes("/proc/%s/cmdline" % p).split(b"\0")
            env = read_bytes("/proc/%s/environ" % p).split(b"\0")
        except OSError:
            continue
        if outp.encode() in cmd and b"mpillama" in cmd[0] and ("OMPI_COMM_WORLD_RANK=%d" % rank).encode() in env:
            return int(p)
    return None


def finish_resume(outp, what):
    r = gen(2, outp, lin, ["--batch", "4", "--resume"], timeout=600)
    expect(r, 0, "", what + ": --resume")
    got = strip(outp)
    if got.keys() != REF.keys() or any(got[k] != REF[k] for k in REF):
        bad = [k for k in REF if got.get(k) != REF[k]]
        c.fail("%s: after --resume %d records differ from the uninterrupted run (e.g. %s)" % (what, len(bad), bad[:3]))


# ---- a second run on the same output is refused by the lock
lk = os.path.join(W, "locked.jsonl")
# a run far longer than the check (it is stopped right after): the long set finishes in about a
# second with the packed kernels, within a second run's start-up
lock_in = os.path.join(W, "lock_prompts.jsonl")
c.write_jsonl(lock_in, [{"custom_id": "K%04d" % i, "prompt": "Once upon a time %d" % i, "max_tokens": 250,
                         "ignore_eos": True} for i in range(2000)])
p = start(1, lk, prompts=lock_in)
try:
    wait_lines(lk, 1, p)
    r = gen(1, lk, lin, ["--batch", "4", "--resume"])
    expect(r, 1, "being written by another mpillama run", "a second run on a locked output")
finally:  # the long run never outlives the check, whatever it found
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    p.communicate(timeout=300)
ok("a second run on an output that a run is writing is refused (lock)")

# ---- --resume replaces the output (dropping an error record) by a rename: the new file is locked
# before it becomes the output, so no other run can take it in between (a shim holds the run there)
shim = os.path.join(os.path.dirname(os.path.abspath(args.mpillama)), "tests", "libslow_rename.so")
if not os.path.exists(shim):
    c.fail("the test shim %s is not built" % shim)
race = os.path.join(W, "race.jsonl")
race_prompts = os.path.join(W, "race_prompts.jsonl")
c.write_jsonl(race_prompts, rows[:2] + [{"custom_id": "bad", "prompt_ids": [1, 99999]}])
expect(gen(1, race, race_prompts), 3, "", "a run with an error record")
env = dict(c.mpi_env(), LD_PRELOAD=shim, SLOW_RENAME_SUFFIX="race.jsonl")
p = subprocess.Popen([args.mpillama, "generate", "--model", model, "--prompts", race_prompts, "--output", race,
                      "--seed", "5", "--resume"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
t0 = time.time()
while not os.path.exists(race + ".renamed") and p.poll() is None and time.time() - t0 < 120:
    time.sleep(0.05)
if not os.path.exists(race + ".renamed"):
    c.fail("--resume did not replace the output by a rename (exit %s)" % p.poll())
with open(race, "rb") as f:
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        taken = True
    except BlockingIOError:
        taken = False
open(race + ".probed", "w").close()
_, err = p.communicate(timeout=300)
if taken:
    c.fail("--resume: another process took the lock of the replaced output between the rename and the run")
expect(subprocess.CompletedProcess(p.args, p.returncode, "", err), 3, "", "--resume under the rename shim")
ok("--resume: the replaced output is locked the moment it is renamed into place")

# ---- SIGKILL of rank 0, of rank 1; SIGTERM to rank 1 alone
for what, rank, sig, code in [("SIGKILL of rank 0", 0, signal.SIGKILL, None), ("SIGKILL of rank 1", 1, signal.SIGKILL, None),
                              ("SIGTERM to rank 1 alone", 1, signal.SIGTERM, 75)]:
    outp = os.path.join(W, "kill_r%d_%d.jsonl" % (rank, sig))
    p = start(2, outp, ["--pp", "2", "--grace", "0"] if sig == signal.SIGTERM else ["--pp", "2"])
    wait_lines(outp, 6, p)
    pid = rank_pid(outp, rank)
    if pid is None:
        c.fail("%s: no process of rank %d found" % (what, rank))
    t0 = time.time()
    os.kill(pid, sig)
    err = c.finish_or_kill(p, 120, what)
    dt = time.time() - t0
    if code is not None and p.returncode != code:
        c.fail("%s: exit %d, expected %d\n%s" % (what, p.returncode, code, err[-2000:]))
    if code is None and p.returncode == 0:
        c.fail("%s: exit 0" % what)
    kept = lines_in(outp)
    finish_resume(outp, what)
    ok("%s: the job ended in %.1f s (exit %d) with %d records; --resume completes the records of an uninterrupted run"
       % (what, dt, p.returncode, kept))

# ---- SIGTERM while the write of a record is blocked (a FIFO nobody reads): the graceful 75
fifo = os.path.join(W, "fifo")
os.mkfifo(fifo)
rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
try:
    fcntl.fcntl(rfd, 1031, 4096)  # F_SETPIPE_SZ: the pipe fills after a few records
except OSError:
    pass
env = c.mpi_env()
p = subprocess.Popen([args.mpillama, "generate", "--model", model, "--prompts", lin, "--output", fifo, "--seed", "5",
                      "--batch", "4", "--grace", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
FIONREAD = 0x541B
t0 = t_change = time.time()
last = -1
while time.time() - t0 < 300 and p.poll() is None:
    n = struct.unpack("i", fcntl.ioctl(rfd, FIONREAD, b"\0\0\0\0"))[0]
    if n >= 4096 - 600:  # full up to less than a record: the next write blocks
        break
    if n != last:
        last, t_change = n, time.time()
    elif n > 0 and time.time() - t_change > 3:  # records stopped coming: the writer is blocked
        break
    time.sleep(0.05)
time.sleep(0.5)  # the writer reaches the blocked write
p.send_signal(signal.SIGTERM)
data = b""
while p.poll() is None:
    try:
        data += os.read(rfd, 65536)
    except BlockingIOError:
        time.sleep(0.01)
try:
    while True:
        chunk = os.read(rfd, 65536)
        if not chunk:
            break
        data += chunk
except BlockingIOError:
    pass
os.close(rfd)
err = p.stderr.read()
if p.returncode != 75:
    c.fail("SIGTERM during a blocked write: exit %d, expected 75\n%s" % (p.returncode, err[-2000:]))
for line in data.decode().splitlines():
    json.loads(line)
ok("SIGTERM while a write is blocked: exit 75, %d whole records" % len(data.decode().splitlines()))

# ---- a full disk: the job ends with a message, the output holds whole records only
mnt = os.path.join(W, "tiny")
os.makedirs(mnt)
m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", mnt], capture_output=True, text=True)
if m.returncode != 0:
    print("SKIP: full disk on a 16 KiB tmpfs: cannot mount one (%s)" % m.stderr.strip())
else:
    try:
        outp = os.path.join(mnt, "out.jsonl")
        r = gen(1, outp, lin, ["--batch", "4"], timeout=600)
        if r.returncode == 0 or "No space left on device" not in r.stderr:
            c.fail("full disk: exit %d\n%s" % (r.returncode, r.stderr[-2000:]))
        data = read_bytes(outp)
        if data and not data.endswith(b"\n"):
            c.fail("full disk: the output ends in a torn record")
        n_ok = len([json.loads(x) for x in data.decode().splitlines()])
        ok("full disk (16 KiB tmpfs): exit %d, '%s', %d whole records kept"
           % (r.returncode, [x for x in r.stderr.splitlines() if "No space" in x][0][-90:], n_ok))
    finally:
        subprocess.run(["umount", mnt])

# ---- NaN logits: score writes null (bare nan is not JSON)
nan_bin = os.path.join(W, "nan.bin")
raw = bytearray(read_bytes(os.path.join(args.shared, "models/stories260K.bin")))
dim = struct.unpack("i", raw[0:4])[0]
off = 28 + 7 * dim * 4  # token 7's embedding row, which is also its classifier row
raw[off:off + 4 * dim] = struct.pack("%df" % dim, *([float("nan")] * dim))
with open(nan_bin, "wb") as f:
    f.write(raw)
nan_h5 = os.path.join(W, "nan.h5")
r = c.run([args.mpillama, "convert", nan_bin, "-o", nan_h5, "--tokenizer", tok], check=False)
if r.returncode != 0:
    print("SKIP: NaN logits: convert refuses NaN weights (%s)" % r.stderr.strip()[-200:])
else:
    sout = os.path.join(W, "nan_score.jsonl")
    r = c.mpirun(args, 1, ["score", "--model", nan_h5, "--prompts", small, "--output", sout], check=False)
    expect(r, 0, "", "score with NaN logits")
    recs = [json.loads(x) for x in read_bytes(sout).decode().splitlines()]  # bare nan fails here
    if not any(v is None for rec in recs for v in rec["logprobs"]):
        c.fail("score with NaN logits: no null log-prob")
    ok("NaN logits: score writes null log-probs (valid JSON)")

# ---- a prompt on which the tokenizer's split pattern gives up (PCRE2's match limit): an error record
enc, bs = {}, list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
extra = 0
for b in range(256):
    enc[b] = chr(b) if b in bs else chr(256 + extra)
    extra += b not in bs
tj = {"version": "1.0", "added_tokens": [], "normalizer": None, "post_processor": None, "decoder": {"type": "ByteLevel"},
      "pre_tokenizer": {"type": "Sequence", "pretokenizers": [  # (a+)+$ backtracks exponentially on "aaa...a!"
          {"type": "Split", "pattern": {"Regex": "(a+)+$|[^a]+|a+"}, "behavior": "Isolated", "invert": False},
          {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]},
      "model": {"type": "BPE", "dropout": None, "unk_token": None, "byte_fallback": False, "ignore_merges": False,
                "vocab": {enc[b]: b for b in range(256)}, "merges": []}}
tjp = os.path.join(W, "tokenizer.json")
with open(tjp, "w") as f:
    json.dump(tj, f)
bin256 = os.path.join(W, "v256.bin")
c.run(["/usr/bin/python3", os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_llama2c_model.py"), bin256,
       "--dim", "32", "--hidden", "64", "--layers", "2", "--heads", "4", "--kv-heads", "4", "--vocab", "256", "--seq-len", "128"])
m256 = os.path.join(W, "v256.h5")
c.run([args.mpillama, "convert", bin256, "-o", m256, "--tokenizer", tjp])
pp = os.path.join(W, "pathological.jsonl")
c.write_jsonl(pp, [{"custom_id": "ok", "prompt": "hello aaa", "max_tokens": 3},
                   {"custom_id": "bad", "prompt": "a" * 40 + "!", "max_tokens": 3}])
pout = os.path.join(W, "pathological_out.jsonl")
r = c.mpirun(args, 2, ["generate", "--model", m256, "--prompts", pp, "--output", pout], check=False)
expect(r, 3, "exit 3", "a pathological prompt")
recs = strip(pout)
if "PCRE2" not in recs["bad"].get("error", "") or recs["ok"].get("completion_tokens") != 3:
    c.fail("a pathological prompt: expected an error record for it and a completion for the other: %s" % recs)
ok("a prompt on which the split pattern hits PCRE2's match limit gets an error record; the job goes on")

print("%d passed, 0 failed" % passed)
