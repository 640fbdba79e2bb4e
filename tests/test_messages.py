"""Messages a user can act on (issue 13 point 4) and progress under mpirun (point 5): one line
without source paths (they come with --verbose), no MPI abort banner for an error found before
work starts, a JSON parse error with line and column, the grid error showing what was asked, a
last line with the counts, the output's path and the exit code (3: finished, but some requests
failed; 0: all completed); a progress line with the first micro-batch, ETA "unknown" until a
request has finished; the live bar under mpirun when the user's stderr is a terminal (a pty)."""
import os
import pty
import re
import select
import subprocess

import common as c

args = c.parse_args()
W = args.work
ok = c.ok


model = c.small_model(args.mpillama, W, 256)
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
if r.returncode != 3:
    c.fail("run with a bad line: exit %d, expected 3 (finished, some requests failed)\n%s" % (r.returncode, r.stderr[-1500:]))
ok("a run that finished with an error record exits 3")
recs = {x["custom_id"]: x for x in c.read_jsonl(out)}
# the line has no readable custom_id: its line number stands in; column 40 is the second comma
e = recs.get("2", {})
if e.get("line") != 2 or "(at column 40)" not in e.get("error", ""):
    c.fail("a JSON syntax error: expected line 2 and the column where parsing stopped, got %s" % recs)
ok("a JSON syntax error's record names the line and where on it: line %d, %r" % (e["line"], e["error"]))
final = [x for x in r.stderr.splitlines() if x.startswith("mpillama:")][-1:]  # mpirun's notice of a non-zero exit follows
if not final or not final[0].startswith("mpillama: 3 prompts:") or "2 completed, 1 error records" not in final[0] \
        or "'%s'" % out not in final[0] or "exit 3" not in final[0]:
    c.fail("final line: expected the counts, the output's path and exit 3, got:\n" + r.stderr[-1500:])
ok("the last line gives the counts, where the records are and the exit code: %s" % final[0])
good = os.path.join(W, "good_prompts.jsonl")
with open(good, "w") as f:
    f.write('{"custom_id": "a", "prompt_ids": [1, 5, 9], "max_tokens": 4}\n')
r0 = c.mpirun(args, 2, ["generate", "--model", model, "--prompts", good, "--output", os.path.join(W, "good.jsonl")], check=False)
if r0.returncode != 0 or not r0.stderr.strip().splitlines()[-1].endswith("exit 0"):
    c.fail("a run without failures: exit %d, expected 0 and a last line ending 'exit 0':\n%s" % (r0.returncode, r0.stderr[-800:]))
ok("a run where every request completed exits 0")
prog = [x for x in r.stderr.splitlines() if x.startswith("mpillama: progress")]
if len(prog) < 2 or "ETA unknown" not in prog[0]:
    c.fail("progress with --progress-interval 1000: expected a first line (ETA unknown) and the final one, got %s" % prog)
ok("progress: a line with the first micro-batch (%s), the last at the end" % prog[0][10:])
# two replicas, a batch that lets replica 1 take every prompt: rank 0 schedules nothing itself, and
# its progress comes with the other replica's results
r = gen(2, os.path.join(W, "dp2.jsonl"), ["--progress-interval", "1000", "--batch", "16", "--dp", "2"])
prog = [x for x in r.stderr.splitlines() if x.startswith("mpillama: progress")]
if r.returncode != 3 or len(prog) < 2:
    c.fail("progress with --dp 2: expected a line with the first results and the final one, got exit %d, %s"
           % (r.returncode, prog))
ok("progress with --dp 2 while rank 0's own replica is idle: %d lines" % len(prog))

# ---- the live bar under mpirun whenever the user's stderr is a terminal (a pty here)

master, slave = pty.openpty()
cmd = [args.mpiexec, "-n", "2", args.mpillama, "generate", "--model", model, "--prompts", prompts, "--output",
       os.path.join(W, "tty.jsonl"), "--batch", "1", "--dp", "1"]
p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, env=c.mpi_env(), close_fds=True)
os.close(slave)
got = b""
while True:
    ready, _, _ = select.select([master], [], [], 120)
    if not ready:
        p.kill()
        c.fail("mpirun in a pty: no output for 120 s; so far:\n%r" % got[-1500:])
    try:
        chunk = os.read(master, 65536)
    except OSError:  # EIO: every writer closed the pty
        break
    if not chunk:
        break
    got += chunk
p.wait(timeout=60)
os.close(master)
text = got.decode("utf-8", "replace")
bars = re.findall(r"\r\[[#.]{30}\] \d+/\d+ prompts", text)
if p.returncode != 3 or not bars or "mpillama: progress" in text:
    c.fail("mpirun -n 2 in a terminal: expected the live bar (\\r[###...] n/m prompts), no log lines, exit 3; got exit %d:\n%r"
           % (p.returncode, text[-1500:]))
ok("under mpirun -n 2 in a terminal the progress is the live bar (%d updates, the last %r)" % (len(bars), bars[-1][1:]))
c.done()
