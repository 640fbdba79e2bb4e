"""End-to-end test of the scaling analysis. First the arithmetic, on hand-written summaries with
known throughput: tokens/s (given, or prompt + completion over wall time), speed-up and efficiency
against the 1-rank run of the same batch, weak-scaling efficiency at equal batch per rank, each
equal to the value computed here. Then a synthetic tiny model, three small traced runs (grids 1x1,
1x2, 2x1) and analysis/report.py on them: the table rows, the CSV and the plots.
Also checks that report.py turns bad input (broken, partial or no summaries) into a report with
notes rather than a traceback. Skips (77) when matplotlib is missing (Debian: python3-matplotlib),
which CI does not allow."""
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
GRIDS = [(1, 1, 1), (1, 1, 2), (1, 2, 1), (2, 1, 1)]  # dp, pp, tp


def gname(g):
    return "%dx%dx%d" % g if g[0] > 1 else "%dx%d" % g[1:]
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


def summary(pp, tp, batch, tok_s, prompt=1000, completion=3000, wall=2.0, prompts=10):
    """a summary.json as generate --trace writes it (docs/TRACE.md), with made-up times"""
    s = {"command": "generate", "dtype": "f32", "grid": {"pp": pp, "tp": tp}, "ranks": pp * tp, "nodes": 1,
         "model": {"path": "synthetic.h5", "dim": 64, "hidden_dim": 172, "n_layers": 4, "n_heads": 8, "n_kv_heads": 4,
                   "vocab_size": 512, "params": 260000, "weight_bytes": 1040000},
         "threads_per_rank": 1, "batch": batch, "max_seq_len": 512, "prefill_chunk": 128, "micro_batches": pp,
         "prompts": {"total": prompts, "completed": prompts, "errors": 0, "skipped": 0, "interrupted": 0},
         "tokens": {"prompt": prompt, "completion": completion}, "wall_s": wall, "load_s": 0.1,
         "pipeline_bubble": 0.1 if pp > 1 else 0.0,
         "per_rank": [{"rank": r, "stage": r // tp, "tp": r % tp, "host": "n1", "weight_bytes": 1000, "kv_bytes": 100,
                       "seconds": {"compute": 1.0, "allreduce": 0.1, "p2p": 0.05, "gather": 0.01, "wait": 0.1,
                                   "sampling": 0.05, "io": 0.01},
                       "bytes": {"allreduce": 1000, "p2p": 1000, "gather": 1000}} for r in range(pp * tp)]}
    if tok_s is not None:
        s["total_tok_s"] = tok_s
    return s


def check_arithmetic(args):
    """report.py's scaling numbers on summaries whose throughput is known"""
    runs = os.path.join(args.work, "synthetic_runs")
    # label: (pp, tp, batch, total_tok_s or None, prompt, completion, wall) and the expected
    # tok_s, speed-up, efficiency, weak efficiency (None: no weak series at that batch per rank)
    cases = {"s1x1": ((1, 1, 16, 1000.0), (1000.0, 1.0, 1.0, None)),
             "s1x2": ((1, 2, 16, None, 1000, 3000, 4000 / 1800.0), (1800.0, 1.8, 0.9, 1.0)),  # 4000 tokens / wall
             "s2x1": ((2, 1, 16, 1500.0), (1500.0, 1.5, 0.75, 1500 / 900 / 2)),
             "s2x2": ((2, 2, 16, 2400.0), (2400.0, 2.4, 0.6, None)),
             "w1x1": ((1, 1, 8, 900.0), (900.0, 1.0, 1.0, 1.0)),  # 8 a rank, as s1x2 and s2x1
             # the same model, batch and tokens over twice the prompts: another workload, compared with nothing
             "m1x2": ((1, 2, 16, 5000.0, 1000, 3000, 2.0, 20), (5000.0, 1.0, 1.0, None))}
    for label, (spec, _) in cases.items():
        os.makedirs(os.path.join(runs, label))
        with open(os.path.join(runs, label, "summary.json"), "w") as f:
            json.dump(summary(*spec), f)
    out = os.path.join(args.work, "synthetic_report")
    md = report(args, runs, out)
    with open(os.path.join(out, "scaling.csv")) as f:
        rows = {r["label"]: r for r in csv.DictReader(f)}
    for label, (_, want) in cases.items():
        r = rows.get(label)
        if r is None:
            common.fail("synthetic summaries: no scaling.csv row for %s" % label)
        for col, w in zip(("tok_s", "speedup", "efficiency", "weak_efficiency"), want):
            got = float(r[col]) if r[col] else None
            if (w is None) != (got is None) or (w is not None and abs(got - w) > 1e-4 * w):
                common.fail("synthetic summaries: %s %s = %s, expected %s" % (label, col, r[col], w))
        if "| %s |" % label not in md:
            common.fail("report.md has no row for %s" % label)
    if not any("m1x2" in ln and "different workloads" in ln for ln in md.splitlines()):
        common.fail("report.md does not say that m1x2 (20 prompts) is not compared with the 10-prompt runs")
    print("PASS: on %d hand-written summaries, tok/s, speed-up, efficiency and weak efficiency are the known values; "
          "a run of another workload (twice the prompts) is compared with nothing" % len(cases))


def check_plot_helpers():
    """the axis scale follows the values' span; labels placed at one point never overlap"""
    sys.path.insert(0, os.path.join(ROOT, "analysis"))
    from mpireport.plots import axis_scale, place_labels
    for values, want in (([900, 1500, 2400], "linear"), ([35, 900, 5000], "log"), ([12, 119], "linear"),
                         ([12, 121], "log"), ([0, 10, 1000], "linear"), ([5], "linear")):
        if axis_scale(values) != want:
            common.fail("axis_scale(%s) = %s, expected %s" % (values, axis_scale(values), want))
    anchors = [(100, 100)] * 5 + [(104, 102), (300, 50), (108, 95)]
    sizes = [(30, 12), (60, 12), (30, 12), (24, 12), (30, 12), (40, 12), (30, 12), (30, 12)]
    offs = place_labels(anchors, sizes)
    boxes = [(x + dx, y + dy, x + dx + w, y + dy + h) for (x, y), (dx, dy), (w, h) in zip(anchors, offs, sizes)]
    for i, a in enumerate(boxes):
        for b in boxes[:i]:
            if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                common.fail("place_labels: boxes %s and %s overlap" % (a, b))
    # at the right edge of the axes (x up to 200): the labels go to the left of their points
    edge = place_labels([(198, 50), (198, 52)], [(40, 12), (40, 12)], bounds=(0, 0, 200, 100))
    boxes = [(198 + dx, 50 + k * 2 + dy, 238 + dx, 62 + k * 2 + dy) for k, (dx, dy) in enumerate(edge)]
    if any(b[2] > 200 or b[0] < 0 for b in boxes) or not (boxes[0][3] <= boxes[1][1] or boxes[1][3] <= boxes[0][1]):
        common.fail("place_labels at the axes' right edge: %s" % boxes)
    print("PASS: log axes beyond a decade, linear otherwise; %d labels around one point do not overlap; labels at "
          "the edge stay inside the axes" % len(anchors))


def main():
    args = common.parse_args()
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        common.skip("matplotlib is missing (Debian: apt-get install python3-matplotlib)")
    check_plot_helpers()
    check_arithmetic(args)

    # a tiny synthetic model and the first 24 benchmark prompts (ids < 500 fit its 512 tokens)
    model = os.path.join(args.work, "tiny.h5")
    common.mpirun(args, 2, ["synth", "--shape", "tiny", "-o", model, "--seed", "3"])
    prompts = os.path.join(args.work, "prompts.jsonl")
    rows = common.read_jsonl(PROMPTS)[:24]
    common.write_jsonl(prompts, rows)

    runs = os.path.join(args.work, "runs")
    for dp, pp, tp in GRIDS:
        d = os.path.join(runs, gname((dp, pp, tp)))
        os.makedirs(d)
        common.mpirun(args, dp * pp * tp, ["generate", "--model", model, "--prompts", prompts, "--output", os.path.join(d, "out.jsonl"),
                                      "--dp", str(dp), "--pp", str(pp), "--tp", str(tp), "--trace", os.path.join(d, "trace"), "--batch", "8",
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
    if grids != sorted(gname(g) for g in GRIDS):
        common.fail("scaling.csv grids %s, expected %s" % (grids, sorted(gname(g) for g in GRIDS)))
    for r in table:
        if not r["tok_s"] or float(r["tok_s"]) <= 0:
            common.fail("scaling.csv row %s has no throughput" % r)
        if not r["speedup"] or not r["efficiency"] or not r["predicted_tok_s"]:
            common.fail("scaling.csv row %s lacks speed-up, efficiency or prediction" % r)
        if r["grid"] == "1x1" and abs(float(r["speedup"]) - 1) > 1e-9:
            common.fail("the 1x1 run is the baseline, its speed-up is %s" % r["speedup"])
        if int(r["ranks"]) != int(r["dp"]) * int(r["pp"]) * int(r["tp"]):
            common.fail("scaling.csv row %s: ranks != dp x pp x tp" % r)
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
    # data parallelism: a recommended dp x pp x tp for 1B and 8B at 1 to 64 nodes, never below dp = 1
    with open(os.path.join(out, "dp_predictions.csv")) as f:
        dpp = list(csv.DictReader(f))
    for name in ("llama-3.2-1b", "llama-3.1-8b"):
        rows_ = [p for p in dpp if p["model"] == name]
        if sorted(int(p["nodes"]) for p in rows_) != [1, 2, 4, 8, 16, 32, 64]:
            common.fail("dp_predictions.csv: %s rows at nodes %s" % (name, [p["nodes"] for p in rows_]))
        for p in rows_:
            if p["ratio"] and float(p["ratio"]) < 1 - 1e-9:
                common.fail("dp_predictions.csv: the best layout with dp is slower than without: %s" % p)
    if "Data parallelism" not in md:
        common.fail("report.md has no data-parallelism section")

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
