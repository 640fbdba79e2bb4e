"""The command line: options, the report from start to end."""
import argparse
import os
import sys
import traceback

from .common import *  # noqa: F401,F403
from .runs import *  # noqa: F401,F403
from .model import *  # noqa: F401,F403
from .tables import *  # noqa: F401,F403
from .plots import *  # noqa: F401,F403


def parse_list(s, cast):
    out = []
    for x in str(s).split(","):
        x = x.strip()
        if x:
            out.append(cast(x))
    return out


def main():
    p = argparse.ArgumentParser(description="mpillama scaling report (see analysis/README.md)")
    p.add_argument("runs_dir")
    p.add_argument("out_dir")
    p.add_argument("--net-gbps", type=float, default=100.0, help="network bandwidth between nodes, Gb/s (default 100)")
    p.add_argument("--net-latency-us", type=float, default=5.0, help="network latency between nodes, us (default 5)")
    p.add_argument("--intra-gbps", type=float, default=None, help="within a node (default: fitted from the runs, else 200)")
    p.add_argument("--intra-latency-us", type=float, default=None, help="within a node (default: fitted, else 1)")
    p.add_argument("--ranks-per-node", type=int, default=1, help="ranks per node in predictions (default 1)")
    p.add_argument("--compute-scale", type=float, default=1.0,
                   help="a predicted rank computes this many times faster than a measured one (e.g. its cores / the measured threads per rank)")
    p.add_argument("--predict-models", default="llama-3.1-70b", help="comma-separated shapes (%s)" % ", ".join(SHAPES))
    p.add_argument("--predict-nodes", default="8,16,32,64")
    p.add_argument("--predict-batch", type=int, default=None, help="default: the batch of the reference runs")
    p.add_argument("--node-mem-gb", type=float, default=512.0, help="memory per node for the fits-in-memory check")
    p.add_argument("--dp-models", default="llama-3.2-1b,llama-3.1-8b", help="shapes for the data-parallel table")
    p.add_argument("--dp-nodes", default="1,2,4,8,16,32,64", help="node counts for the data-parallel table")
    p.add_argument("--dp-prompts", type=int, default=100000, help="prompts of the job the data-parallel table assumes")
    p.add_argument("--max-panels", type=int, default=24, help="runs shown in categories.png")
    p.add_argument("--max-trace-mb", type=float, default=2000.0, help="larger trace.json files are not read")
    try:
        args = p.parse_args()
    except SystemExit as e:
        return 2 if e.code else 0
    for k in ("net_gbps", "compute_scale", "node_mem_gb"):
        if not getattr(args, k) or getattr(args, k) <= 0:
            print("report.py: --%s must be > 0" % k.replace("_", "-"), file=sys.stderr)
            return 2
    if args.ranks_per_node < 1 or args.max_panels < 1:
        print("report.py: --ranks-per-node and --max-panels must be >= 1", file=sys.stderr)
        return 2
    if args.intra_gbps is not None and args.intra_gbps <= 0:
        print("report.py: --intra-gbps must be > 0", file=sys.stderr)
        return 2
    try:
        pred_nodes = parse_list(args.predict_nodes, int)
        pred_models = parse_list(args.predict_models, str)
    except ValueError:
        print("report.py: --predict-nodes takes integers, comma-separated", file=sys.stderr)
        return 2
    for name in pred_models:
        if name not in SHAPES:
            print("report.py: unknown --predict-models shape '%s' (known: %s)" % (name, ", ".join(SHAPES)), file=sys.stderr)
            return 2
    try:
        os.makedirs(args.out_dir, exist_ok=True)
    except OSError as e:
        print("report.py: cannot create %s: %s" % (args.out_dir, e), file=sys.stderr)
        return 2
    notes = Notes()
    try:
        return report(args, pred_nodes, pred_models, notes)
    except Exception as e:  # last resort: still a report, with the error in it
        tb = traceback.format_exc()
        with open(os.path.join(args.out_dir, "report.md"), "w") as f:
            f.write("# mpillama scaling report\n\nThe report failed part-way (%s: %s); this is a bug in analysis/report.py.\n\n"
                    "```\n%s```\n" % (type(e).__name__, e, tb))
            if notes.items:
                f.write("\nNotes:\n\n" + "\n".join("- " + n for n in notes.items) + "\n")
        print("report.py: internal error (%s: %s); wrote %s/report.md with the details" % (type(e).__name__, e, args.out_dir), file=sys.stderr)
        return 1


OUTPUTS = ["report.md", "scaling.csv", "predictions.csv", "dp_predictions.csv", "throughput.png", "efficiency.png", "categories.png",
           "bubble.png", "prediction.png"]


def report(args, pred_nodes, pred_models, notes):
    out = args.out_dir
    for name in OUTPUTS:  # nothing stale from an earlier report in the same directory
        try:
            os.remove(os.path.join(out, name))
        except OSError:
            pass
    if not os.path.isdir(args.runs_dir):
        notes.add("%s is not a directory" % args.runs_dir)
        runs, n_files = [], 0
    else:
        runs, n_files = load_runs(args.runs_dir, notes, args)
    runs.sort(key=lambda r: (str(r["model_key"]), r["batch"] or 0, r["ranks"], r["pp"], r["label"]))
    if not runs:
        notes.add("no usable summary.json under %s (%d found)" % (args.runs_dir, n_files))
    elif len(runs) == 1:
        notes.add("a single run: no speed-up or efficiency to compute, and the model fit rests on one run")
    groups, weak = scaling(runs, notes)

    model = PerfModel(args)
    predictions = []
    try:
        if runs:
            model.fit(runs, notes)
        # predictions of the measured runs
        for r in runs:
            r["pred_tok_s"] = r["pred_err"] = r["pred_bubble"] = None
            if "workload" not in r or not r["model_ok"]:
                continue
            rpn = max(1, r["ranks"] // max(1, r["nodes"]))
            if r.get("dp", 1) > 1:
                pr = predict_dp(model, r["model_key"], r["model"], r["dp"], r["pp"], r["tp"], r["workload"], r["nodes"], rpn)
            else:
                pr = model.predict(r["model_key"], r["model"], r["pp"], r["tp"], r["workload"], r["nodes"], rpn,
                                   m_batches=r["micro_batches"])
            if pr and pr["tok_s"]:
                r["pred_tok_s"] = pr["tok_s"]
                r["pred_bubble"] = pr["bubble"] if r["pp"] > 1 or r["tp"] > 1 else 0.0
                if r["tok_s"]:
                    r["pred_err"] = 100.0 * (pr["tok_s"] - r["tok_s"]) / r["tok_s"]
        # predictions of other grids, models and node counts
        predictions = predict_others(runs, model, pred_models, pred_nodes, args, notes)
    except Exception as e:
        notes.add("performance model failed (%s: %s): tables without predictions" % (type(e).__name__, e))
        for r in runs:
            r.setdefault("pred_tok_s", None)
            r.setdefault("pred_err", None)
            r.setdefault("pred_bubble", None)

    fields = ["label", "model", "dim", "n_layers", "batch", "grid", "dp", "pp", "tp", "ranks", "nodes", "threads_per_rank",
              "micro_batches", "prompt_tokens", "completion_tokens", "wall_s", "tok_s", "decode_tok_s", "prefill_tok_s",
              "speedup", "efficiency", "weak_efficiency", "pipeline_bubble", "predicted_tok_s", "prediction_error_pct",
              "predicted_bubble"] + ["max_%s_s" % c for c in CATS]

    def row(r):
        d = {"label": r["label"], "model": r["model"]["name"], "dim": r["model"].get("dim"), "n_layers": r["model"].get("n_layers"),
             "batch": r["batch"], "grid": grid_name(r), "dp": r.get("dp", 1), "pp": r["pp"], "tp": r["tp"], "ranks": r["ranks"], "nodes": r["nodes"],
             "threads_per_rank": r["threads"], "micro_batches": r["micro_batches"], "prompt_tokens": r["tok_prompt"],
             "completion_tokens": r["tok_completion"], "wall_s": r["wall_s"], "tok_s": r["tok_s"],
             "decode_tok_s": r["decode_tok_s"], "prefill_tok_s": r["prefill_tok_s"], "speedup": r["speedup"],
             "efficiency": r["efficiency"], "weak_efficiency": r["weak_eff"], "pipeline_bubble": r["bubble"],
             "predicted_tok_s": r.get("pred_tok_s"), "prediction_error_pct": r.get("pred_err"), "predicted_bubble": r.get("pred_bubble")}
        for c in CATS:
            v = [x["seconds"][c] for x in r["per_rank"] if x["has_seconds"]]
            d["max_%s_s" % c] = max(v) if v else None
        return {k: csv_val(v) for k, v in d.items()}

    write_csv(os.path.join(out, "scaling.csv"), runs, fields, row)
    pfields = ["model", "nodes", "ranks_per_node", "ranks", "grid", "pp", "tp", "micro_batches", "batch", "tok_s", "wall_s",
               "bubble", "gb_per_rank", "fits", "dominant", "choice", "compute_from"]
    write_csv(os.path.join(out, "predictions.csv"), predictions, pfields,
              lambda p: {k: csv_val(p.get(k)) for k in pfields})
    dfields = ["model", "nodes", "ranks_per_node", "prompts", "batch", "dp_layout", "dp_tok_s", "dp_gb_per_node", "dp_bubble",
               "nodp_layout", "nodp_tok_s", "nodp_gb_per_node", "nodp_bubble", "ratio"]
    write_csv(os.path.join(out, "dp_predictions.csv"), getattr(model, "dp_rows", None) or [], dfields,
              lambda p: {k: csv_val(p.get(k)) for k in dfields})
    made = plots(runs, groups, model, predictions, out, notes, args) if runs else []
    write_markdown(out, args, runs, groups, weak, model, predictions, made, notes, n_files)
    print("report.py: %d run(s) from %s -> %s/report.md, scaling.csv, predictions.csv, %d plot(s)%s"
          % (len(runs), args.runs_dir, out, len(made), "; %d note(s) in the report" % len(notes.items) if notes.items else ""))
    return 0
