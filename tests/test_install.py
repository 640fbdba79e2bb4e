"""A cluster without root (issue 13 point 8): `cmake --install` puts the binary, the ready jobs, the
Slurm templates, the analysis and the docs under a prefix, and the installed binary runs; every
sbatch template carries the commented --partition, --account and `module load` lines a site fills
in; git ignores the demo's output folder."""
import os
import re
import subprocess

import common as c

args = c.parse_args()
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
build = os.path.dirname(os.path.abspath(args.mpillama))
prefix = os.path.join(args.work, "prefix")
r = subprocess.run(["cmake", "--install", build, "--prefix", prefix], capture_output=True, text=True, timeout=300)
if r.returncode != 0:
    c.fail("cmake --install %s --prefix %s: exit %d\n%s" % (build, prefix, r.returncode, r.stderr[-2000:]))
want = ["bin/mpillama", "share/mpillama/jobs/demo.sh", "share/mpillama/jobs/sort_records.py",
        "share/mpillama/slurm/one-node.sbatch", "share/mpillama/slurm/multi-node.sbatch",
        "share/mpillama/analysis/report.py", "share/mpillama/analysis/mpireport/runs.py", "share/doc/mpillama/README.md",
        "share/doc/mpillama/TRACE.md"]
missing = [w for w in want if not os.path.exists(os.path.join(prefix, w))]
if missing:
    c.fail("cmake --install left out %s" % missing)
if not os.access(os.path.join(prefix, "share/mpillama/jobs/demo.sh"), os.X_OK):
    c.fail("the installed jobs/demo.sh is not executable")
r = subprocess.run([os.path.join(prefix, "bin/mpillama"), "machine", "--help"], capture_output=True, text=True, timeout=60)
if r.returncode != 0 or "usage" not in (r.stdout + r.stderr):
    c.fail("the installed binary: 'mpillama machine --help' exit %d: %s" % (r.returncode, r.stdout + r.stderr))
print("PASS cmake --install: %s" % ", ".join(want))

templates = sorted(f for f in os.listdir(os.path.join(ROOT, "slurm")) if f.endswith(".sbatch"))
for t in templates:
    with open(os.path.join(ROOT, "slurm", t)) as f:
        text = f.read()
    for what, pat in (("--partition", r"^#+SBATCH --partition="), ("--account", r"^#+SBATCH --account="),
                      ("module load", r"^# *module load ")):
        if not re.search(pat, text, re.M):
            c.fail("slurm/%s has no commented %s line" % (t, what))
print("PASS %d sbatch templates carry commented --partition, --account and module load lines" % len(templates))
r = subprocess.run(["git", "-C", ROOT, "check-ignore", "-q", "demo-out/completions.jsonl"])
if r.returncode == 128:
    c.skip("not a git checkout: .gitignore not checked")
if r.returncode != 0:
    c.fail("git does not ignore demo-out/")
print("PASS git ignores demo-out/")
print("3 passed, 0 failed")
