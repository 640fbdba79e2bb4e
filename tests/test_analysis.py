"""End-to-end test of the scaling analysis: a synthetic tiny model, three small traced runs
(grids 1x1, 1x2, 2x1), then analysis/report.py; checks the table rows, the CSV and the plots.
Also checks that report.py turns bad input (broken, partial or no summaries) into a report with
notes rather than a traceback. Skips (77) when `generate --trace` is not there yet, or when
matplotlib is missing (Debian: python3-matplotlib)."""
import csv
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REPORT = os.path.join(ROOT, "analysis", "report.py")
PROMPTS = os.path.join(ROOT, "data", "bench_prompts.jsonl")
GRIDS = [(1, 1), (1, 2), (2, 1)]
PNGS = ["throughput.png", "efficiency.png", "categories.png", "bubble.png"]


def report(args, runs_dir, out_dir, extra=()):
    cmd = [sys.executable, REPORT, runs_dir, out_dir] + list(extra)
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    if r.returncode != 0 or "Traceback" in r.stderr:
        common.fail("report.py failed (exit %d) on %s\nstdout: %s\nstderr: %s" % (r.returncode, runs_dir, r.stdout[-2000:], r.stderr[-3000:]))
    md = os.path.join(out_dir, "report.md")
    if not os.path.exists(md):
        common.fail("report.py wrote no %s" % md)
    with open(md) as f:
        return f.read()


def main():
    args = common.parse_args()
    h = common.run([args.mpillama, "generate", "--help"], check=False)
    if "--trace" not in h.stdout + h.stderr:
        common.skip("this mpillama's generate has no --trace option yet")
    h = common.run([args.mpillama, "synth", "--help"], check=False)
    if h.returncode != 0 or "--shape" not in h.stdout:
        common.skip("this mpillama has no synth command")
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        common.skip("matplotlib is missing (Debian: apt-get install python3-matplotlib)")

    # a tiny synthetic model and the first 24 benchmark prompts (ids < 500 fit its 512 tokens)
    model = os.path.join(args.work, "tiny.h5")
    common.mpirun(args, 2, ["synth", "--shape", "tiny", "-o", model, "--seed", "3"])
    prompts = os.path.join(args.work, "prompts.jsonl")
    rows = common.read_jsonl(PROMPTS)[:24]
    common.write_jsonl(prompts, rows)

    runs = os.path.join(args.work, "runs")
    for pp, tp in GRIDS:
        d = os.path.join(runs, "%dx%d" % (pp, tp))
        os.makedirs(d)
        common.mpirun(args, pp * tp, ["generate", "--model", model, "--prompts", prompts, "--output", os.path.join(d, "out.jsonl"),
                                      "--pp", str(pp), "--tp", str(tp), "--trace", os.path.join(d, "trace"), "--batch", "8",
                                      "--max-tokens", "8", "--temperature", "0", "--ignore-eos", "--max-seq-len", "320"])
        s = os.path.join(d, "trace", "summary.json")
        if not os.path.exists(s):
            common.fail("generate --trace wrote no %s" % s)

    out = os.path.join(args.work, "report")
    md = report(args, runs, out, ["--predict-nodes", "2,4"])
    # the table: one row per grid, the smallest run is the baseline
    with open(os.path.join(out, "scaling.csv")) as f:
        table = list(csv.DictReader(f))
    grids = sorted(r["grid"] for r in table)
    if grids != sorted("%dx%d" % g for g in GRIDS):
        common.fail("scaling.csv grids %s, expected %s" % (grids, sorted("%dx%d" % g for g in GRIDS)))
    for r in table:
        if not r["tok_s"] or float(r["tok_s"]) <= 0:
            common.fail("scaling.csv row %s has no throughput" % r)
        if not r["speedup"] or not r["efficiency"] or not r["predicted_tok_s"]:
            common.fail("scaling.csv row %s lacks speed-up, efficiency or prediction" % r)
        if r["grid"] == "1x1" and abs(float(r["speedup"]) - 1) > 1e-9:
            common.fail("the 1x1 run is the baseline, its speed-up is %s" % r["speedup"])
        if int(r["ranks"]) != int(r["pp"]) * int(r["tp"]):
            common.fail("scaling.csv row %s: ranks != pp x tp" % r)
    for g in ("| 1x1 |", "| 1x2 |", "| 2x1 |"):
        if g not in md:
            common.fail("report.md has no table row for grid %s" % g)
    for sect in ("## Strong scaling", "## Performance model", "## Predictions", "## Model and assumptions"):
        if sect not in md:
            common.fail("report.md has no section '%s'" % sect)
    for png in PNGS:
        p = os.path.join(out, png)
        if not os.path.exists(p) or os.path.getsize(p) < 1000:
            common.fail("%s is missing or empty" % p)
        with open(p, "rb") as f:
            if f.read(8) != b"\x89PNG\r\n\x1a\n":
                common.fail("%s is not a PNG" % p)
        if "(%s)" % png not in md:
            common.fail("report.md does not show %s" % png)
    with open(os.path.join(out, "predictions.csv")) as f:
        pred = list(csv.DictReader(f))
    if not any(p["model"] == "llama-3.1-70b" and p["nodes"] == "4" for p in pred):
        common.fail("predictions.csv has no llama-3.1-70b row at 4 nodes")

    # bad input: a broken file, a partial summary and a single good run still give a report
    bad = os.path.join(args.work, "bad")
    for sub in ("broken", "partial", "good"):
        os.makedirs(os.path.join(bad, sub))
    with open(os.path.join(bad, "broken", "summary.json"), "w") as f:
        f.write('{"grid": {"pp": 1,')
    with open(os.path.join(bad, "partial", "summary.json"), "w") as f:
        json.dump({"grid": {"pp": 1, "tp": 2}, "wall_s": "soon", "per_rank": [7]}, f)
    with open(os.path.join(runs, "1x2", "trace", "summary.json")) as f:
        good = f.read()
    with open(os.path.join(bad, "good", "summary.json"), "w") as f:
        f.write(good)
    md = report(args, bad, os.path.join(args.work, "bad_report"))
    if "not valid JSON" not in md or "## Notes" not in md or "| good |" not in md:
        common.fail("report.md of bad input lacks the notes or the good run:\n" + md[-3000:])
    md = report(args, os.path.join(args.work, "empty_nonexistent"), os.path.join(args.work, "empty_report"))
    if "No runs to report" not in md:
        common.fail("report.md of no input does not say so")
    print("PASS: report of %d runs, %d plots, %d predictions; bad input gives notes" % (len(table), len(PNGS), len(pred)))


if __name__ == "__main__":
    main()
