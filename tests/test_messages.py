"""Messages a user can act on (issue 13 point 4) and progress under mpirun (point 5): one line
without source paths (they come with --verbose), no MPI abort banner for an error found before
work starts, a JSON parse error with line and column, the grid error showing what was asked, a
final line with the counts and the output's path; a progress line with the first micro-batch,
ETA "unknown" until a request has finished."""
import os
import re

import common as c

args = c.parse_args()
W = args.work
passed = 0


def ok(what):
    global passed
    passed += 1
    print("PASS " + what)


binp = os.path.join(W, "m.bin")
c.run(["/usr/bin/python3", os.path.join(os.path.dirname(os.path.abspath(__file__)), "make_llama2c_model.py"), binp,
       "--dim", "64", "--hidden", "172", "--layers", "4", "--heads", "8", "--kv-heads", "4", "--vocab", "512",
       "--seq-len", "256"])
model = os.path.join(W, "m.h5")
c.run([args.mpillama, "convert", binp, "-o", model])
prompts = os.path.join(W, "p.jsonl")
with open(prompts, "w") as f:
    f.write('{"custom_id": "a", "prompt_ids": [1, 5, 9], "max_tokens": 24}\n')
    f.write('{"custom_id": "b", "prompt_ids": [1, 5,, 9]}\n')
    f.write('{"custom_id": "c", "prompt_ids": [1, 7], "max_tokens": 24}\n')


def gen(n, out, extra=()):
    return c.mpirun(args, n, ["generate", "--model", model, "--prompts", prompts, "--output", out] + list(extra), check=False)


SOURCE = re.compile(r"\w+\.c:\d+")

# ---- a failure during the run (a write error): one line, a source path only with --verbose
r = gen(1, "/dev/full")
line = [x for x in r.stderr.splitlines() if "/dev/full" in x]
if r.returncode == 0 or not line or not line[0].startswith("mpillama: error: ") or SOURCE.search(r.stderr):
    c.fail("write error: expected one 'mpillama: error:' line without a source path, got:\n" + r.stderr[-1500:])
r = gen(1, "/dev/full", ["--verbose"])
if not re.search(r"\[rank 0\] \S*outfile\.c:\d+: cannot write output '/dev/full'", r.stderr):
    c.fail("write error with --verbose: expected the rank and source line, got:\n" + r.stderr[-1500:])
ok("a write error is one line without a source path; --verbose adds '[rank 0] outfile.c:N'")

# ---- errors found before work starts: every rank exits 1, no MPI abort banner
for what, extra, text in [("missing model", ["--model", os.path.join(W, "none.h5")], "cannot open model"),
                          ("not an HDF5 file", ["--model", prompts], "is not an HDF5 file"),
                          ("grid: only --pp", ["--pp", "3"], "--pp 3 does not divide the 2 ranks launched"),
                          ("grid: --pp and --tp", ["--pp", "2", "--tp", "2"], "--pp 2 --tp 2 makes 4 ranks, not the 2 launched")]:
    r = gen(2, os.path.join(W, "o_%d.jsonl" % len(text)), extra)
    if r.returncode != 1 or text not in r.stderr or "MPI_ABORT" in r.stderr or SOURCE.search(r.stderr):
        c.fail("%s: expected exit 1, '%s', no abort banner, no source path; got exit %d:\n%s"
               % (what, text, r.returncode, r.stderr[-1500:]))
    ok("%s (2 ranks): exit 1, '%s', no MPI abort banner" % (what, text))

# ---- a run: the JSON error's line and column; the final line; progress from the first batch
out = os.path.join(W, "out.jsonl")
r = gen(2, out, ["--progress-interval", "1000", "--batch", "1", "--dp", "1"])  # rank 0 schedules (with dp 2 it may idle)
if r.returncode != 0:
    c.fail("run: exit %d\n%s" % (r.returncode, r.stderr[-1500:]))
recs = {x["custom_id"]: x for x in c.read_jsonl(out)}
# the line has no readable custom_id: its line number stands in; byte 39 (from 0) is the second comma
e = recs.get("2", {})
if e.get("line") != 2 or "(at byte 39)" not in e.get("error", ""):
    c.fail("a JSON syntax error: expected line 2 and the byte where parsing stopped, got %s" % recs)
ok("a JSON syntax error's record names the line and where on it: line %d, %r" % (e["line"], e["error"]))
final = [x for x in r.stderr.splitlines() if x.startswith("mpillama: 3 prompts:")]
if not final or "2 completed, 1 error records" not in final[0] or "'%s'" % out not in final[0]:
    c.fail("final line: expected counts and the output's path, got:\n" + r.stderr[-1500:])
ok("the final line gives the counts and where the records are: %s" % final[0][:110])
prog = [x for x in r.stderr.splitlines() if x.startswith("mpillama: progress")]
if len(prog) < 2 or "ETA unknown" not in prog[0]:
    c.fail("progress with --progress-interval 1000: expected a first line (ETA unknown) and the final one, got %s" % prog)
ok("progress: a line with the first micro-batch (%s), the last at the end" % prog[0][10:])

print("%d passed, 0 failed" % passed)
