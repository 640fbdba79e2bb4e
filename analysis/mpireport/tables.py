"""Tables: scaling.csv, predictions.csv, dp_predictions.csv and report.md."""
import csv
import math
import os

from .common import *  # noqa: F401,F403
from .runs import *  # noqa: F401,F403
from .model import *  # noqa: F401,F403


def write_csv(path, runs, fieldnames, rowfn):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fieldnames)
        w.writeheader()
        for r in runs:
            w.writerow(rowfn(r))


def csv_val(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return "%.6g" % v
    return v


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


def predict_others(runs, model, pred_models, pred_nodes, args, notes):
    """best grid per (model, node count), plus the tp-within-node and pure-pipeline grids"""
    fitted = [r for r in runs if "workload" in r and r["model_ok"] and (r["model_key"], r["batch"]) in model.t_layer]
    if not fitted:
        return []
    # the reference workload: the largest measured model, its most common batch
    big = max(fitted, key=lambda r: layer_params(r["model"]))
    cands = [r for r in fitted if r["model_key"] == big["model_key"]]
    batches = {}
    for r in cands:
        batches[r["batch"]] = batches.get(r["batch"], 0) + 1
    batch = args.predict_batch or max(batches, key=lambda b: (batches[b], b))
    ref = next((r for r in cands if r["batch"] == batch), cands[0])
    wl = dict(ref["workload"])
    if args.predict_batch and args.predict_batch != ref["batch"]:
        wl["rounds"] = wl["rounds"] * ref["batch"] / args.predict_batch
        wl["batch"] = args.predict_batch
        notes.add("predictions at --predict-batch %d scale the rounds of run %s (batch %d) by the batch ratio and reuse its per-layer time"
                  % (args.predict_batch, ref["label"], ref["batch"]))
    model.ref = ref
    model.ref_wl = wl
    model.dp_rows = predict_dp_table(model, wl, args, notes)
    out = []
    targets = []
    seen = set()
    for r in fitted:  # the measured models: other grids on one node
        if r["model_key"] in seen:
            continue
        seen.add(r["model_key"])
        targets.append((r["model"]["name"], r["model_key"], r["model"], "measured"))
    for name in pred_models:
        mm = dict(SHAPES[name])
        targets.append((name, (name, mm["dim"], mm["n_layers"], mm["vocab_size"]), mm, "shape"))
    mem = args.node_mem_gb * 1e9 / max(1, args.ranks_per_node)
    for name, key, m, kind in targets:
        node_counts = [(1, r_) for r_ in (1, 2, 4, 8)] if kind == "measured" else []
        node_counts += [(n, n * args.ranks_per_node) for n in pred_nodes]
        for nodes, ranks in node_counts:
            rpn = ranks if nodes == 1 else args.ranks_per_node
            options = []
            for tp in range(1, ranks + 1):
                if ranks % tp or not grid_valid(m, ranks // tp, tp):
                    continue
                pr = model.predict(key, m, ranks // tp, tp, wl, nodes, rpn, compute_scale=args.compute_scale)
                if pr and pr["tok_s"]:
                    options.append((ranks // tp, tp, pr))
            if not options:
                continue
            fit = [o for o in options if o[2]["rank_bytes"] <= mem]
            best = max(fit or options, key=lambda o: o[2]["tok_s"])
            picks = [("best", best)]
            tpn = [o for o in options if o[1] == rpn]
            if tpn and nodes > 1 and rpn > 1:
                picks.append(("tp = ranks per node", tpn[0]))
            pure = [o for o in options if o[1] == 1]
            if pure and nodes > 1:
                picks.append(("pipeline only", pure[0]))
            listed = set()
            for choice, (pp, tp, pr) in picks:
                if (pp, tp) in listed:
                    continue
                listed.add((pp, tp))
                out.append({"model": name, "nodes": nodes, "ranks_per_node": rpn, "ranks": ranks, "grid": "%dx%d" % (pp, tp),
                            "pp": pp, "tp": tp, "micro_batches": pr["micro_batches"], "batch": wl["batch"], "tok_s": pr["tok_s"],
                            "wall_s": pr["wall"], "bubble": pr["bubble"], "gb_per_rank": pr["rank_bytes"] / 1e9,
                            "fits": "yes" if pr["rank_bytes"] <= mem else "no", "dominant": pr["dominant"], "choice": choice,
                            "compute_from": pr["t_layer_how"], "nodes_series": choice == "best" and kind == "shape"})
    return out


def predict_dp_table(model, wl, args, notes):
    """the recommended dp x pp x tp layout per model and node count, against the best layout
    without replicas (dp = 1), for --dp-prompts prompts like the reference run's"""
    rows = []
    if not wl.get("prompts"):
        return rows
    big = scale_workload(wl, args.dp_prompts / wl["prompts"])
    for name in parse_names(args.dp_models):
        mm = dict(SHAPES[name])
        key = (name, mm["dim"], mm["n_layers"], mm["vocab_size"])
        for nodes in parse_ints(args.dp_nodes):
            rpn = args.ranks_per_node
            with_dp, without = best_layouts(model, key, mm, nodes, rpn, big, args.node_mem_gb * 1e9, args.compute_scale)
            if not with_dp and not without:
                continue
            row = {"model": name, "nodes": nodes, "ranks_per_node": rpn, "prompts": args.dp_prompts, "batch": big["batch"]}
            for tag, b in (("dp", with_dp), ("nodp", without)):
                if b:
                    dp, pp, tp, pr, nb = b
                    row.update({tag + "_layout": "%dx%dx%d" % (dp, pp, tp), tag + "_tok_s": pr["tok_s"],
                                tag + "_gb_per_node": nb / 1e9, tag + "_bubble": pr["bubble"]})
            if with_dp and without:
                row["ratio"] = with_dp[3]["tok_s"] / without[3]["tok_s"]
            rows.append(row)
    if rows:
        notes.add("dp predictions: %d prompts shaped like run %s's, %d ranks per node, %.0f GB per node; a layout must fit "
                  "85%% of a node's memory (weights once per node, KV caches per replica)"
                  % (args.dp_prompts, model.ref["label"], args.ranks_per_node, args.node_mem_gb))
    return rows


def parse_names(s):
    return [x.strip() for x in str(s).split(",") if x.strip() in SHAPES]


def parse_ints(s):
    return [int(x) for x in str(s).split(",") if x.strip()]


def write_markdown(out, args, runs, groups, weak, model, predictions, made, notes, n_files):
    L = []
    w = L.append
    w("# mpillama scaling report\n")
    w("Runs: %d (from %d summary.json under `%s`). Throughput counts prompt and completion tokens over the run's wall time "
      "(weights loading excluded), as `total_tok_s` in docs/TRACE.md.\n" % (len(runs), n_files, args.runs_dir))
    if not runs:
        w("No runs to report.\n")
    # ---- strong scaling
    if runs:
        w("## Strong scaling (fixed model and batch)\n")
        w("Speed-up and efficiency are relative to the run(s) with the fewest ranks of the same model and batch "
          "(efficiency = speed-up / (ranks / baseline ranks)).\n")
        rows = []
        for r in runs:
            rows.append([r["label"], r["ranks"], grid_name(r), r["nodes"], model_label(r), r["batch"] if r["batch"] else "–",
                         fmt(r["tok_s"]), fmt(r["speedup"]), fmt(r["efficiency"]), fmt(r["bubble"]),
                         fmt(r.get("pred_tok_s")), ("%+.1f%%" % r["pred_err"]) if r.get("pred_err") is not None else "–"])
        w(md_table(["run", "ranks", "grid (pp x tp)", "nodes", "model", "batch", "tok/s", "speed-up", "efficiency",
                    "bubble", "model tok/s", "model error"], rows) + "\n")
        w("## Weak scaling (fixed model and batch per rank)\n")
        if weak:
            rows = []
            for (mk, bpr), g in weak:
                for r in g:
                    rows.append([r["label"], r["ranks"], grid_name(r), model_label(r), r["batch"], bpr, fmt(r["tok_s"]), fmt(r["weak_eff"])])
            w(md_table(["run", "ranks", "grid", "model", "batch", "batch per rank", "tok/s", "weak efficiency"], rows) + "\n")
            w("Weak efficiency = (tok/s / baseline tok/s) / (ranks / baseline ranks).\n")
        else:
            w("No weak-scaling series: that needs runs of one model whose batch grows with the ranks (batch / ranks equal, at least two rank counts).\n")
    # ---- plots
    if made:
        w("## Plots\n")
        titles = {"throughput.png": "Throughput vs ranks (dotted: ideal from the smallest run; x: the model's prediction)",
                  "efficiency.png": "Parallel efficiency vs ranks",
                  "categories.png": "Seconds per category per rank (per_rank.seconds; dashed: the run's wall time)",
                  "bubble.png": "Pipeline bubble (mean over ranks of wait / wall) vs pipeline stages",
                  "prediction.png": "Predicted throughput vs nodes (best grid per node count)"}
        for name in made:
            w("%s:\n\n![%s](%s)\n" % (titles.get(name, name), name, name))
    # ---- performance model
    w("## Performance model\n")
    if not model.t_layer:
        w("No fit: no run had the model shape, token counts and per-rank compute seconds.\n")
    else:
        w("Fitted from the measured runs (per rank, least squares):\n")
        rows = []
        for key, info in sorted(model.t_layer_info.items(), key=lambda kv: (kv[1]["model"], kv[1]["batch"])):
            err = model.compute_err.get(key)
            rows.append([info["model"], info["batch"], fmt(info["t_layer"] * 1e6), fmt(info["gflops"]), info["threads"],
                         info["ranks_fitted"], ("%.1f%%" % (100 * err)) if err is not None else "–"])
        w(md_table(["model", "batch", "compute per layer per token (us, tp 1)", "effective GFLOP/s per rank",
                    "threads per rank", "ranks fitted", "median error"], rows) + "\n")
        rows = []
        for c, what in (("allreduce", "tensor-parallel all-reduce (ring: 2(tp-1) latencies, 2(tp-1)/tp of the bytes)"),
                        ("p2p", "pipeline send, sender's cost per message"),
                        ("gather", "logits gather / send to rank 0")):
            f = model.comm.get(c)
            if f:
                bw = 1.0 / f["inv_beta"] / 1e9 if f["inv_beta"] > 0 else None
                rows.append([what, fmt(f["alpha"] * 1e6), fmt(bw), f["n"], f["method"]])
            else:
                rows.append([what, "–", "–", 0, "not measured"])
        w(md_table(["cost", "latency (us)", "bandwidth (GB/s)", "ranks fitted", "how"], rows) + "\n")
        if model.sigma is not None:
            w("Sampling on rank 0: %s ns per logit element (row x vocab); driver I/O: %s ms per prompt.\n"
              % (fmt(model.sigma * 1e9), fmt((model.iota or 0) * 1e3)))
        errs = [abs(r["pred_err"]) for r in runs if r.get("pred_err") is not None]
        if errs:
            w("Prediction of the measured runs: median |error| %.1f%%, max %.1f%% (table above, `model tok/s`).\n"
              % (median(errs), max(errs)))
    # ---- data parallelism
    dp_rows = getattr(model, "dp_rows", None) or []
    if dp_rows:
        w("## Data parallelism: recommended layouts\n")
        w("Layouts dp x pp x tp (replicas x stages x tensor ranks) with the most predicted tok/s whose node "
          "memory fits, against the best without replicas (dp = 1: one grid, rank 0 samples from whole logits). "
          "Written to dp_predictions.csv.\n")
        w(md_table(["model", "nodes", "with dp", "tok/s", "GB/node", "dp = 1", "tok/s", "GB/node", "ratio"],
                   [[r["model"], r["nodes"], r.get("dp_layout", "–"), fmt(r.get("dp_tok_s"), 4), fmt(r.get("dp_gb_per_node"), 3),
                     r.get("nodp_layout", "–"), fmt(r.get("nodp_tok_s"), 4), fmt(r.get("nodp_gb_per_node"), 3),
                     fmt(r.get("ratio"), 3)] for r in dp_rows]))
        w("")
    # ---- predictions
    if predictions:
        ref = getattr(model, "ref", None)
        wl = getattr(model, "ref_wl", None)
        w("## Predictions\n")
        if ref is not None and wl is not None:
            w("Workload of run `%s` (%s): %d prompts, %.0f tokens through each stage, %.0f logit rows, %.0f rounds, batch %s. "
              "Network between nodes: %g Gb/s, %g us; %d rank(s) per node; compute %g x the measured per-rank rate; "
              "a grid fits when weights + KV cache per rank stay under %g GB / ranks per node.\n"
              % (ref["label"], model_label(ref), wl["prompts"], wl["n_tok"], wl["n_logit"], wl["rounds"], wl["batch"],
                 args.net_gbps, args.net_latency_us, args.ranks_per_node, args.compute_scale, args.node_mem_gb))
        rows = []
        for p in predictions:
            rows.append([p["model"], p["nodes"], p["ranks"], p["grid"], p["choice"], fmt(p["tok_s"]), fmt(p["bubble"]),
                         fmt(p["gb_per_rank"]), p["fits"], p["dominant"], p["compute_from"]])
        w(md_table(["model", "nodes", "ranks", "grid", "choice", "tok/s", "bubble", "GB/rank", "fits", "largest cost", "compute per layer"], rows) + "\n")
    # ---- assumptions
    w("## Model and assumptions\n")
    w("""- **Compute.** A rank's compute seconds = t_layer x (tokens through its stage x its layers + on the last stage the
  classifier as layer-equivalents, logit rows x dim x vocab / layer parameters) / tp. t_layer, the per-layer compute time
  per token at tp 1, is fitted per model and batch (batch sets the matrix shapes, so it is not transferred across batches).
  A model that was not measured takes t_layer of the largest measured model at that batch, scaled by parameters per layer
  (the same effective FLOP rate per rank). Attention over the context, the embedding and norms are not separated (they
  fall into t_layer). Tensor parallelism is assumed to divide compute exactly by tp.
- **Layers per stage** follow src/plan.c (stages balanced by weight bytes, embedding on the first, classifier on the last).
- **All-reduce** (tp > 1): per rank, 2(tp-1) x latency per call plus 2(tp-1)/tp x bytes / bandwidth (a ring). Calls per step:
  2 per layer, plus 1 on the first stage (vocab-parallel embedding). The fit uses the measured all-reduce seconds, so it
  includes waiting for the slowest tp partner (load imbalance), which it reports as latency or bandwidth.
- **Point-to-point**: sends are non-blocking, so the fitted p2p cost is the sender's; the transfer (latency + bytes /
  bandwidth per micro-batch per stage boundary, and the logits back to rank 0) is on the pipeline's loop, below.
- **Pipeline.** With m micro-batches (default pp, at most batch) and stage busy times B_s, rank 0 also sampling (F):
  wall = max(B_0 + F, max_s B_s, (sum_s B_s + F + transfers) / m). The bubble is the idle share this implies.
  Rounds (one step of every micro-batch) are taken from the reference run's step count (trace.json), else estimated
  from tokens and batch; a different pp only changes m.
- **Links.** Ranks are placed in order, `ranks per node` to a node (world rank = stage x tp + tp rank). Within a node the
  fitted all-reduce latency and bandwidth are used (or --intra-gbps / --intra-latency-us); a transfer between nodes uses
  the stated network (--net-gbps, --net-latency-us). No contention between links, no overlap of communication with compute.
- **Measured machine.** The fitted rates are those of the machine and threads per rank of the runs. For other nodes give
  --compute-scale (e.g. the ratio of cores per rank); memory is checked against --node-mem-gb.
""")
    if notes.items:
        w("## Notes\n")
        for n in notes.items:
            w("- %s" % n)
        w("")
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write("\n".join(L) + "\n")
