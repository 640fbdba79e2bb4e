#!/usr/bin/python3
"""Scaling report for mpillama runs: tables, plots and a fitted performance model.

    /usr/bin/python3 analysis/report.py RUNS_DIR OUT_DIR [options]

Reads every summary.json under RUNS_DIR (recursively; docs/TRACE.md), and the trace.json beside
it when there is one (message and step counts). Writes to OUT_DIR: scaling.csv, predictions.csv,
report.md and PNG plots (throughput.png, efficiency.png, categories.png, bubble.png,
prediction.png). Needs numpy (the fit) and matplotlib (the plots; Debian: python3-matplotlib);
without either it still writes what it can and says what it left out. Bad or partial input gives
notes in the report, never a traceback. Exit status: 0 when report.md was written, 2 on a usage
error. analysis/README.md describes the model."""
import argparse
import csv
import json
import math
import os
import sys
import traceback

try:
    import numpy as np
except Exception:  # the report still comes out, without the fit
    np = None

CATS = ["compute", "allreduce", "p2p", "gather", "wait", "sampling", "io"]
CAT_COLORS = {"compute": "#4c72b0", "allreduce": "#dd8452", "p2p": "#55a868", "gather": "#c44e52",
              "wait": "#bbbbbb", "sampling": "#8172b3", "io": "#937860"}

# the shapes of `mpillama synth` (src/synth.c), for predictions of models not measured
SHAPES = {
    "llama-3.2-1b": dict(dim=2048, hidden_dim=8192, n_layers=16, n_heads=32, n_kv_heads=8, head_size=64, vocab_size=128256, tied=1),
    "llama-3.2-3b": dict(dim=3072, hidden_dim=8192, n_layers=28, n_heads=24, n_kv_heads=8, head_size=128, vocab_size=128256, tied=1),
    "llama-3.1-8b": dict(dim=4096, hidden_dim=14336, n_layers=32, n_heads=32, n_kv_heads=8, head_size=128, vocab_size=128256, tied=0),
    "llama-3.1-70b": dict(dim=8192, hidden_dim=28672, n_layers=80, n_heads=64, n_kv_heads=8, head_size=128, vocab_size=128256, tied=0),
    "tiny": dict(dim=64, hidden_dim=172, n_layers=5, n_heads=8, n_kv_heads=4, head_size=8, vocab_size=512, tied=1),
    "small": dict(dim=256, hidden_dim=768, n_layers=8, n_heads=8, n_kv_heads=2, head_size=32, vocab_size=2048, tied=0),
    "medium": dict(dim=1024, hidden_dim=2816, n_layers=8, n_heads=16, n_kv_heads=4, head_size=64, vocab_size=8192, tied=0),
}


# ------------------------------------------------------------------------------------------ helpers

def get(d, path, default=None):
    """d['a']['b'] for path 'a.b', or default when any part is missing or of the wrong type"""
    cur = d
    for part in path.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return default
        cur = cur[part]
    return cur


def num(x, default=None):
    """a finite float, or default"""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return default
    return v if math.isfinite(v) else default


def inum(x, default=None):
    v = num(x)
    return int(round(v)) if v is not None else default


def fmt(v, digits=3, none="–"):
    if v is None:
        return none
    if isinstance(v, int):
        return str(v)
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1000:
        return "%.0f" % v
    if a >= 1:
        return ("%%.%dg" % max(digits, int(math.log10(a)) + 1)) % v
    return ("%%.%dg" % digits) % v


def first_line(e):
    lines = str(e).splitlines()
    return (lines[0] if lines else type(e).__name__)[:120]


def median(xs):
    xs = sorted(xs)
    n = len(xs)
    if not n:
        return None
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


def layer_params(m):
    """parameters of one layer (src/plan.c layer_bytes / 4)"""
    d, q, kv, h = m["dim"], m["n_heads"] * m["head_size"], m["n_kv_heads"] * m["head_size"], m["hidden_dim"]
    return 2 * d + q * d + 2 * kv * d + d * q + 3 * h * d


def grid_valid(m, pp, tp):
    """src/plan.c plan_check_grid"""
    if pp < 1 or tp < 1 or pp > m["n_layers"] or m["n_heads"] % tp:
        return False
    kv = m["n_kv_heads"]
    if (kv % tp) if kv >= tp else (tp % kv):
        return False
    return tp <= m["hidden_dim"] and tp <= m["vocab_size"]


def plan_layers(m, pp):
    """layers per stage: src/plan.c plan_make (stages balanced by weight bytes, by DP)"""
    L = m["n_layers"]
    if pp <= 1:
        return [L]
    if pp > L:
        pp = L
    lb = 4 * layer_params(m)
    emb = 4 * m["vocab_size"] * m["dim"]
    tied = m.get("tied", 0)
    first = emb
    last = 4 * m["dim"] + (emb if (tied and pp > 1) else (0 if tied else emb))
    INF = float("inf")
    best = [[INF] * (L + 1) for _ in range(pp + 1)]
    cut = [[0] * (L + 1) for _ in range(pp + 1)]
    best[0][0] = 0
    for s in range(1, pp + 1):
        for l in range(s, L - (pp - s) + 1):
            for k in range(s - 1, l):
                if best[s - 1][k] == INF:
                    continue
                cost = (l - k) * lb + (first if s == 1 else 0) + (last if s == pp else 0)
                mm = max(cost, best[s - 1][k])
                if mm < best[s][l]:
                    best[s][l] = mm
                    cut[s][l] = k
    starts = [0] * (pp + 1)
    starts[pp] = L
    l = L
    for s in range(pp, 0, -1):
        l = cut[s][l]
        starts[s - 1] = l
    return [starts[s + 1] - starts[s] for s in range(pp)]


def rank_weight_bytes(m, pp, tp, stage, layers):
    """src/plan.c plan_rank_share, for rank 0 of the tp group (the largest share)"""
    d, hs = m["dim"], m["head_size"]
    nh = m["n_heads"] // tp
    nkv = m["n_kv_heads"] // tp if m["n_kv_heads"] >= tp else 1
    hid = -(-m["hidden_dim"] // tp)
    voc = -(-m["vocab_size"] // tp)
    per_layer = 2 * d + nh * hs * d * 2 + 2 * nkv * hs * d + 3 * hid * d
    b = per_layer * layers[stage]
    if stage == 0:
        b += voc * d
    if stage == pp - 1:
        b += d
        if not (m.get("tied", 0) and stage == 0):
            b += voc * d
    return 4 * b, nkv


# ------------------------------------------------------------------------------------------ input

class Notes:
    def __init__(self):
        self.items = []

    def add(self, msg):
        if msg not in self.items:
            self.items.append(msg)


def read_trace_counts(path, notes, max_bytes):
    """per rank (pid): steps, tokens through the steps, messages per category, from trace.json"""
    try:
        size = os.path.getsize(path)
        if size > max_bytes:
            notes.add("%s: %.0f MB, above --max-trace-mb: counts estimated instead" % (path, size / 1e6))
            return None
        with open(path) as f:
            t = json.load(f)
    except Exception as e:
        notes.add("%s: unreadable (%s): counts estimated instead" % (path, first_line(e)))
        return None
    events = t.get("traceEvents") if isinstance(t, dict) else t if isinstance(t, list) else None
    if not isinstance(events, list):
        notes.add("%s: no traceEvents: counts estimated instead" % path)
        return None
    counts = {}
    for e in events:
        if not isinstance(e, dict) or e.get("ph") != "X":
            continue
        pid = e.get("pid")
        c = counts.setdefault(pid, {"steps": 0, "step_tokens": 0, "allreduce": 0, "p2p": 0, "gather": 0})
        cat = e.get("cat")
        if cat == "step":
            c["steps"] += 1
            n = inum(get(e, "args.n"))
            if n is not None:
                c["step_tokens"] += n
        elif cat in ("allreduce", "p2p", "gather"):
            c[cat] += 1
    return counts


def infer_tied(m):
    """the summary has no tied flag: compare params with both layouts"""
    p = num(m.get("params"))
    if p is None:
        return 0
    base = m["n_layers"] * layer_params(m) + m["dim"]
    emb = m["vocab_size"] * m["dim"]
    return 1 if abs(p - (base + emb)) < abs(p - (base + 2 * emb)) else 0


def normalize(s, path, runs_dir, notes, args):
    """one summary.json -> a run dict, or None (with a note) when it cannot be used at all"""
    if not isinstance(s, dict):
        notes.add("%s: not a JSON object: skipped" % path)
        return None
    rel = os.path.relpath(os.path.dirname(path), runs_dir)
    parts = [p for p in rel.split(os.sep) if p not in (".", "")]
    if parts and parts[-1] in ("trace", "traces"):
        parts = parts[:-1]
    label = "/".join(parts) if parts else "."
    r = {"label": label, "path": path, "notes": []}
    missing = []

    def need(key, value):
        if value is None:
            missing.append(key)
        return value

    per_rank = s.get("per_rank") if isinstance(s.get("per_rank"), list) else []
    ranks_list = []
    for i, x in enumerate(per_rank):
        if not isinstance(x, dict):
            continue
        ranks_list.append({
            "rank": inum(x.get("rank"), i), "stage": inum(x.get("stage"), 0), "tp": inum(x.get("tp"), 0),
            "host": str(x.get("host", "?")),
            "seconds": {c: num(get(x, "seconds." + c), 0.0) for c in CATS},
            "has_seconds": isinstance(x.get("seconds"), dict),
            "bytes": {c: num(get(x, "bytes." + c), 0.0) for c in ("allreduce", "p2p", "gather")},
            "weight_bytes": num(x.get("weight_bytes")), "kv_bytes": num(x.get("kv_bytes")),
        })
    if not ranks_list:
        missing.append("per_rank")
    r["per_rank"] = ranks_list

    pp = inum(get(s, "grid.pp"))
    tp = inum(get(s, "grid.tp"))
    if pp is None and ranks_list:
        pp = max(x["stage"] for x in ranks_list) + 1
    if tp is None and ranks_list:
        tp = max(x["tp"] for x in ranks_list) + 1
    r["pp"], r["tp"] = need("grid.pp", pp) or 1, need("grid.tp", tp) or 1
    r["ranks"] = inum(s.get("ranks")) or (len(ranks_list) or r["pp"] * r["tp"])
    nodes = inum(s.get("nodes"))
    if nodes is None:
        hosts = {x["host"] for x in ranks_list if x["host"] != "?"}
        nodes = len(hosts) or 1
        missing.append("nodes")
    r["nodes"] = nodes
    r["threads"] = inum(s.get("threads_per_rank"), 1)
    r["batch"] = need("batch", inum(s.get("batch")))
    r["micro_batches"] = inum(s.get("micro_batches")) or min(r["pp"], r["batch"] or r["pp"])
    r["prefill_chunk"] = inum(s.get("prefill_chunk"), 128)
    r["max_seq_len"] = inum(s.get("max_seq_len"))
    r["command"] = str(s.get("command", "generate"))
    r["tok_prompt"] = need("tokens.prompt", num(get(s, "tokens.prompt")))
    r["tok_completion"] = need("tokens.completion", num(get(s, "tokens.completion")))
    r["prompts"] = num(get(s, "prompts.completed")) or num(get(s, "prompts.total"))
    r["wall_s"] = need("wall_s", num(s.get("wall_s")))
    tok = num(s.get("total_tok_s"))
    if tok is None and r["wall_s"] and r["tok_prompt"] is not None and r["tok_completion"] is not None:
        tok = (r["tok_prompt"] + r["tok_completion"]) / r["wall_s"]
    r["tok_s"] = tok if tok else None
    r["decode_tok_s"] = num(s.get("decode_tok_s"))
    r["prefill_tok_s"] = num(s.get("prefill_tok_s"))
    r["bubble"] = num(s.get("pipeline_bubble"))

    m = s.get("model") if isinstance(s.get("model"), dict) else {}
    model = {}
    for k in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "head_size", "vocab_size"):
        model[k] = inum(m.get(k))
    if model["head_size"] is None and model["dim"] and model["n_heads"]:
        model["head_size"] = model["dim"] // model["n_heads"]
    model["params"] = num(m.get("params"))
    mpath = m.get("path") if isinstance(m.get("path"), str) else None
    name = os.path.basename(mpath) if mpath else None
    if name and name.endswith(".h5"):
        name = name[:-3]
    r["model_ok"] = all(model[k] for k in ("dim", "hidden_dim", "n_layers", "n_heads", "n_kv_heads", "head_size", "vocab_size"))
    if not r["model_ok"]:
        missing.append("model shape")
    else:
        model["tied"] = infer_tied(model)
    if not name:
        name = "dim%s-L%s" % (model.get("dim"), model.get("n_layers"))
    model["name"] = name
    r["model"] = model
    r["model_key"] = (name, model.get("dim"), model.get("n_layers"), model.get("vocab_size"))

    counts = None
    tpath = os.path.join(os.path.dirname(path), "trace.json")
    if os.path.exists(tpath):
        counts = read_trace_counts(tpath, notes, args.max_trace_mb * 1e6)
    r["counts"] = counts
    r["missing"] = missing
    if missing:
        notes.add("%s: missing %s (left out where needed)" % (path, ", ".join(missing)))
    return r


def load_runs(runs_dir, notes, args):
    runs = []
    paths = []
    for root, dirs, files in os.walk(runs_dir):
        dirs.sort()
        if "summary.json" in files:
            paths.append(os.path.join(root, "summary.json"))
    for p in paths:
        try:
            with open(p) as f:
                s = json.load(f)
        except Exception as e:
            notes.add("%s: not valid JSON (%s): skipped" % (p, first_line(e)))
            continue
        try:
            r = normalize(s, p, runs_dir, notes, args)
        except Exception as e:  # never a traceback for bad input
            notes.add("%s: could not be read (%s: %s): skipped" % (p, type(e).__name__, e))
            r = None
        if r:
            runs.append(r)
    # the same label twice (e.g. two trace dirs in one run dir): make labels unique
    seen = {}
    for r in runs:
        if r["label"] in seen:
            seen[r["label"]] += 1
            r["label"] += "#%d" % seen[r["label"]]
        else:
            seen[r["label"]] = 1
    return runs, len(paths)


# ------------------------------------------------------------------------------------------ scaling

def grid_name(r):
    return "%dx%d" % (r["pp"], r["tp"])


def model_label(r):
    m = r["model"]
    if not r["model_ok"]:
        return m["name"]
    return "%s (dim %d, %d layers)" % (m["name"], m["dim"], m["n_layers"])


def scaling(runs, notes):
    """speed-up and efficiency vs the smallest run of the same model and batch (strong scaling),
    and vs the smallest of the same model and batch per rank (weak scaling)"""
    usable = [r for r in runs if r["tok_s"] and r["batch"]]
    for r in runs:
        r["speedup"] = r["efficiency"] = r["weak_eff"] = None
        r["base_label"] = None
    groups = {}
    for r in usable:
        groups.setdefault((r["model_key"], r["batch"]), []).append(r)
    for key, g in groups.items():
        rmin = min(x["ranks"] for x in g)
        base = [x for x in g if x["ranks"] == rmin]
        base_tok = median([x["tok_s"] for x in base])
        for x in g:
            x["speedup"] = x["tok_s"] / base_tok
            x["efficiency"] = x["speedup"] / (x["ranks"] / rmin)
            x["base_label"] = "%s (%d rank%s)" % (grid_name(base[0]), rmin, "s" if rmin > 1 else "")
        if len({x["ranks"] for x in g}) < 2:
            notes.add("model %s, batch %d: runs on one rank count only (%d): no strong-scaling series"
                      % (model_label(g[0]), key[1], rmin))
    weak = {}
    for r in usable:
        if r["batch"] % r["ranks"] == 0:
            weak.setdefault((r["model_key"], r["batch"] // r["ranks"]), []).append(r)
    series = []
    for key, g in weak.items():
        if len({x["ranks"] for x in g}) < 2:
            continue
        rmin = min(x["ranks"] for x in g)
        base_tok = median([x["tok_s"] for x in g if x["ranks"] == rmin])
        for x in g:
            x["weak_eff"] = (x["tok_s"] / base_tok) / (x["ranks"] / rmin)
        series.append((key, sorted(g, key=lambda x: (x["ranks"], x["pp"]))))
    return groups, series


# ------------------------------------------------------------------------------------------ model

def run_workload(r):
    """tokens through every stage, rows of logits, steps (micro-batch forward passes) per rank"""
    prompts = r["prompts"] or 0
    tp_, tc = r["tok_prompt"] or 0, r["tok_completion"] or 0
    n_tok = tp_ + tc - (prompts if r["command"] == "generate" else 0)
    n_logit = tc if r["command"] == "generate" else max(0, tp_ - prompts)
    steps = None
    c = r.get("counts")
    if c:
        c0 = c.get(0) or next(iter(c.values()), None)
        if c0 and c0["steps"] > 0:
            steps = c0["steps"]
            if c0["step_tokens"] > 0:
                n_tok = c0["step_tokens"]
    est = False
    if steps is None:
        # every round each in-flight sequence advances one step (a prefill chunk or one token)
        b = r["batch"] or 1
        avg_prompt = tp_ / prompts if prompts else 0
        seq_steps = prompts * max(1, math.ceil(avg_prompt / max(1, r["prefill_chunk"]))) + max(0, tc - prompts)
        rounds = max(1.0, seq_steps / b)
        steps = rounds * r["micro_batches"]
        est = True
    return {"n_tok": float(max(n_tok, 0)), "n_logit": float(n_logit), "prompts": float(prompts),
            "steps": float(steps), "rounds": float(steps) / max(1, r["micro_batches"]), "steps_estimated": est,
            "batch": r["batch"], "seq_len": r["max_seq_len"] or 512, "tokens_total": float(tp_ + tc)}


def work_units(m, layers, stage, pp, tp, wl):
    """compute work of a rank in layer-tokens: tokens x layers / tp, plus the classifier as
    layer-equivalents (dim x vocab per logit row) on the last stage"""
    u = wl["n_tok"] * layers[stage]
    if stage == pp - 1:
        u += wl["n_logit"] * m["dim"] * m["vocab_size"] / layer_params(m)
    return u / tp


def fit_alpha_beta(rows, alpha_default):
    """t = alpha * x_lat + x_bytes * inv_beta by least squares; rows (x_lat or None, x_bytes, t).
    Falls back to alpha = alpha_default when the rows cannot separate latency from bandwidth."""
    rows = [x for x in rows if x[1] > 0 and x[2] is not None and x[2] >= 0]
    if not rows:
        return None
    have_lat = all(x[0] is not None and x[0] > 0 for x in rows)
    if have_lat and np is not None and len(rows) >= 2:
        ratios = [x[1] / x[0] for x in rows]
        if max(ratios) > 1.1 * min(ratios):
            A = np.array([[x[0], x[1]] for x in rows], dtype=float)
            t = np.array([x[2] for x in rows], dtype=float)
            sol, *_ = np.linalg.lstsq(A, t, rcond=None)
            if sol[0] >= 0 and sol[1] > 0:
                return {"alpha": float(sol[0]), "inv_beta": float(sol[1]), "method": "least squares (latency and bandwidth)", "n": len(rows)}
    a = alpha_default if have_lat else 0.0
    num_ = sum(x[1] * (x[2] - a * (x[0] or 0)) for x in rows)
    den = sum(x[1] * x[1] for x in rows)
    inv_beta = num_ / den if den > 0 else 0
    if inv_beta <= 0:
        a, inv_beta = 0.0, sum(x[1] * x[2] for x in rows) / den if den > 0 else 0
        if inv_beta <= 0:
            return None
        return {"alpha": 0.0, "inv_beta": inv_beta, "method": "bandwidth only (latency folded in)", "n": len(rows)}
    how = ("bandwidth fitted, latency fixed at %.3g us" % (a * 1e6)) if have_lat else "bandwidth only (no message counts: latency folded in)"
    return {"alpha": a, "inv_beta": inv_beta, "method": how, "n": len(rows)}


class PerfModel:
    def __init__(self, args):
        self.args = args
        self.t_layer = {}      # (model_key, batch) -> seconds per layer-token at tp 1
        self.t_layer_info = {}
        self.comm = {}         # category -> fit
        self.sigma = None      # sampling seconds per logit element (row x vocab)
        self.iota = None       # driver io seconds per prompt
        self.compute_err = {}

    # ---- fit
    def fit(self, runs, notes):
        usable = [r for r in runs if r["model_ok"] and r["per_rank"] and r["tok_prompt"] is not None
                  and r["tok_completion"] is not None and r["batch"]]
        if len(usable) < len(runs):
            notes.add("performance model: %d of %d runs lack the model shape, tokens, batch or per-rank data and are left out of the fit"
                      % (len(runs) - len(usable), len(runs)))
        if np is None:
            notes.add("numpy is missing: latency/bandwidth fits use closed forms only")
        groups = {}
        ar_rows, p2p_rows, g_rows = [], [], []
        samp_num = samp_den = io_num = io_den = 0.0
        for r in usable:
            m = r["model"]
            wl = run_workload(r)
            r["workload"] = wl
            if wl["steps_estimated"]:
                notes.add("%s: no trace.json step counts: steps estimated from tokens and batch" % r["path"])
            layers = plan_layers(m, r["pp"])
            cnt = r.get("counts") or {}
            for x in r["per_rank"]:
                if not x["has_seconds"]:
                    continue
                st = min(x["stage"], r["pp"] - 1)
                u = work_units(m, layers, st, r["pp"], r["tp"], wl)
                groups.setdefault((r["model_key"], r["batch"]), []).append((u, x["seconds"]["compute"], r, x))
                c = cnt.get(x["rank"])
                tp = r["tp"]
                if tp > 1 and x["bytes"]["allreduce"] > 0:
                    n = c["allreduce"] if c and c["allreduce"] > 0 else wl["steps"] * (2 * layers[st] + (1 if st == 0 else 0))
                    ar_rows.append((n * 2 * (tp - 1), x["bytes"]["allreduce"] * 2 * (tp - 1) / tp, x["seconds"]["allreduce"]))
                if x["bytes"]["p2p"] > 0:
                    n = c["p2p"] if c and c["p2p"] > 0 else wl["steps"]
                    p2p_rows.append((n, x["bytes"]["p2p"], x["seconds"]["p2p"]))
                if x["bytes"]["gather"] > 0:
                    n = c["gather"] if c and c["gather"] > 0 else wl["steps"]
                    g_rows.append((n, x["bytes"]["gather"], x["seconds"]["gather"]))
            r0 = next((x for x in r["per_rank"] if x["rank"] == 0), None)
            if r0 and r0["has_seconds"]:
                samp_num += r0["seconds"]["sampling"]
                samp_den += wl["n_logit"] * m["vocab_size"]
                io_num += r0["seconds"]["io"]
                io_den += wl["prompts"]
        for key, rows in groups.items():
            rows = [x for x in rows if x[0] > 0]
            if not rows:
                continue
            su = sum(u * u for u, *_ in rows)
            t = sum(u * s for u, s, *_ in rows) / su if su > 0 else None
            if not t or t <= 0:
                continue
            self.t_layer[key] = t
            errs = [abs(t * u - s) / s for u, s, *_ in rows if s > 0]
            self.compute_err[key] = median(errs) if errs else None
            m = rows[0][2]["model"]
            self.t_layer_info[key] = {"model": model_label(rows[0][2]), "batch": key[1], "t_layer": t,
                                      "layer_params": layer_params(m), "ranks_fitted": len(rows),
                                      "gflops": 2 * layer_params(m) / t / 1e9,
                                      "threads": rows[0][2]["threads"]}
        intra_alpha = self.args.intra_latency_us * 1e-6 if self.args.intra_latency_us is not None else 1e-6
        self.comm["allreduce"] = fit_alpha_beta(ar_rows, intra_alpha)
        self.comm["p2p"] = fit_alpha_beta(p2p_rows, intra_alpha)
        self.comm["gather"] = fit_alpha_beta(g_rows, intra_alpha)
        self.sigma = samp_num / samp_den if samp_den > 0 else None
        self.iota = io_num / io_den if io_den > 0 else None
        f = self.comm.get("allreduce")
        if f and f["inv_beta"] > 0 and self.args.intra_gbps is None and 1.0 / f["inv_beta"] < self.args.net_gbps * 1e9 / 8:
            notes.add("the fitted all-reduce bandwidth within a node (%.3g GB/s) is below the stated network's (%.3g GB/s): "
                      "the measured runs were probably oversubscribed or contended (all-reduce seconds include waiting for the "
                      "slowest partner), so predictions favour tp across nodes; give --intra-gbps to override"
                      % (1e-9 / f["inv_beta"], self.args.net_gbps / 8))
        if not self.t_layer:
            notes.add("performance model: no compute times to fit: no predictions")
        if ar_rows == []:
            notes.add("performance model: no run with tp > 1: the all-reduce cost within a node is not measured "
                      "(predictions use --intra-gbps / --intra-latency-us)")
        if p2p_rows == []:
            notes.add("performance model: no run with pp > 1: the point-to-point cost is not measured")

    # ---- link parameters
    def link(self, crosses_nodes, what):
        """(alpha s, inv_beta s/byte) of one transfer"""
        a = self.args
        if crosses_nodes:
            return a.net_latency_us * 1e-6, 8.0 / (a.net_gbps * 1e9)
        if a.intra_gbps is not None:
            return (a.intra_latency_us or 0) * 1e-6, 8.0 / (a.intra_gbps * 1e9)
        f = self.comm.get(what) or self.comm.get("allreduce")
        if f:
            return f["alpha"], f["inv_beta"]
        return (a.intra_latency_us if a.intra_latency_us is not None else 1.0) * 1e-6, 8.0 / (200e9)

    def t_layer_for(self, model_key, m, batch):
        """per-layer compute seconds per token at tp 1: the fit of this model and batch, else
        scaled by parameters per layer from the largest measured model (same batch if any)"""
        if (model_key, batch) in self.t_layer:
            return self.t_layer[(model_key, batch)], "fitted"
        cands = [(k, v) for k, v in self.t_layer.items() if k[1] == batch] or list(self.t_layer.items())
        if not cands:
            return None, None
        k, v = max(cands, key=lambda kv: self.t_layer_info[kv[0]]["layer_params"])
        ref = self.t_layer_info[k]
        return v * layer_params(m) / ref["layer_params"], "scaled from %s, batch %d" % (ref["model"], k[1])

    # ---- predict
    def predict(self, model_key, m, pp, tp, wl, nodes, rpn, m_batches=None, compute_scale=1.0):
        t_layer, how = self.t_layer_for(model_key, m, wl["batch"])
        if t_layer is None:
            return None
        t_layer /= compute_scale
        layers = plan_layers(m, pp)
        pp = len(layers)
        mb = m_batches or max(1, min(pp, wl["batch"] or pp, 63))
        steps = wl["rounds"] * mb
        d, V = m["dim"], m["vocab_size"]
        node_of = lambda rank: rank // max(1, rpn)
        busy = {}
        stage_busy = []
        detail = {c: 0.0 for c in ("compute", "allreduce", "p2p", "gather")}
        for s in range(pp):
            worst = 0.0
            for t in range(tp):
                rank = s * tp + t
                comp = t_layer * work_units(m, layers, s, pp, tp, wl)
                ar = 0.0
                if tp > 1:
                    cross = node_of(s * tp) != node_of(s * tp + tp - 1)
                    a, ib = self.link(cross, "allreduce")
                    n = steps * (2 * layers[s] + (1 if s == 0 else 0))
                    byts = wl["n_tok"] * d * 4 * (2 * layers[s] + (1 if s == 0 else 0))
                    ar = a * n * 2 * (tp - 1) + byts * 2 * (tp - 1) / tp * ib
                p2p = 0.0
                if s < pp - 1:
                    f = self.comm.get("p2p")
                    if f:  # the sender's cost (non-blocking sends); the transfer itself is below
                        p2p = f["alpha"] * steps + wl["n_tok"] * d * 4 * f["inv_beta"]
                g = 0.0
                if s == pp - 1:
                    if tp > 1:
                        cross = node_of(s * tp) != node_of(s * tp + tp - 1)
                        a, ib = self.link(cross, "gather")
                        g += a * steps + wl["n_logit"] * V * 4 / tp * ib
                    if pp > 1 and t == 0:
                        f = self.comm.get("gather")
                        if f:
                            g += f["alpha"] * steps + wl["n_logit"] * V * 4 * f["inv_beta"]
                b = comp + ar + p2p + g
                busy[rank] = b
                worst = max(worst, b)
                if t == 0:
                    for k, v in (("compute", comp), ("allreduce", ar), ("p2p", p2p), ("gather", g)):
                        detail[k] += v
            stage_busy.append(worst)
        fb = (self.sigma or 0) * wl["n_logit"] * V + (self.iota or 0) * wl["prompts"]
        transit = 0.0
        if pp > 1:
            for s in range(pp - 1):
                a, ib = self.link(node_of(s * tp) != node_of((s + 1) * tp), "p2p")
                transit += a * steps + wl["n_tok"] * d * 4 * ib
            a, ib = self.link(node_of((pp - 1) * tp) != node_of(0), "gather")
            transit += a * steps + wl["n_logit"] * V * 4 * ib
        wall = max(stage_busy[0] + fb, max(stage_busy), (sum(stage_busy) + fb + transit) / mb)
        busy[0] = busy.get(0, 0) + fb
        ranks = pp * tp
        bubble = sum(max(0.0, wall - busy.get(i, 0)) for i in range(ranks)) / ranks / wall if wall > 0 else None
        wb, nkv = rank_weight_bytes(m, pp, tp, 0, layers)
        kv = (wl["batch"] or 1) * wl["seq_len"] * 2 * nkv * m["head_size"] * 4 * max(layers)
        dom = max(detail, key=lambda k: detail[k])
        if transit > max(detail.values()):
            dom = "pipeline transfers"
        return {"wall": wall, "tok_s": wl["tokens_total"] / wall if wall > 0 else None, "bubble": bubble,
                "layers": layers, "micro_batches": mb, "rank_bytes": wb + kv, "weights_rank": wb, "kv_rank": kv,
                "dominant": dom, "t_layer_how": how, "fb": fb, "transit": transit, "stage_busy": stage_busy}


# ------------------------------------------------------------------------------------------ output

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


def plots(runs, groups, model, predictions, out_dir, notes, args):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except Exception as e:
        notes.add("plots skipped: matplotlib is missing (%s); Debian: apt-get install python3-matplotlib" % e)
        return []
    made = []

    def save(fig, name):
        p = os.path.join(out_dir, name)
        fig.tight_layout()
        fig.savefig(p, dpi=110)
        plt.close(fig)
        made.append(name)

    series = sorted(groups.items(), key=lambda kv: (str(kv[0][0]), kv[0][1]))
    # throughput and efficiency vs ranks
    for what, ylabel, name in (("tok_s", "tokens/s (prompt + completion)", "throughput.png"),
                               ("efficiency", "parallel efficiency", "efficiency.png")):
        try:
            fig, ax = plt.subplots(figsize=(7, 4.5))
            all_ranks = set()
            for (mk, batch), g in series:
                g = sorted([x for x in g if x.get(what) is not None], key=lambda x: (x["ranks"], x["pp"]))
                if not g:
                    continue
                xs = [x["ranks"] for x in g]
                ys = [x[what] for x in g]
                # every run a marker; the line joins the best grid of each rank count
                best = {}
                for x in g:
                    if x["ranks"] not in best or x[what] > best[x["ranks"]]:
                        best[x["ranks"]] = x[what]
                bx = sorted(best)
                line, = ax.plot(bx, [best[k] for k in bx], "-", label="%s, batch %d" % (model_label(g[0]), batch))
                ax.plot(xs, ys, "o", color=line.get_color())
                all_ranks.update(xs)
                for x in g:
                    ax.annotate(grid_name(x), (x["ranks"], x[what]), textcoords="offset points", xytext=(4, 4), fontsize=8)
                if what == "tok_s":
                    rmin = min(xs)
                    base = median([x["tok_s"] for x in g if x["ranks"] == rmin])
                    xr = sorted(set(xs))
                    ax.plot(xr, [base * x / rmin for x in xr], ":", color=line.get_color(), alpha=0.6)
                    pr = [(x["ranks"], x["pred_tok_s"]) for x in g if x.get("pred_tok_s")]
                    if pr:
                        ax.plot([p[0] for p in pr], [p[1] for p in pr], "x", color=line.get_color(), alpha=0.8)
            if what == "efficiency":
                ax.axhline(1.0, color="gray", lw=0.8, ls=":")
                ax.set_ylim(bottom=0)
            ax.set_xlabel("ranks")
            ax.set_ylabel(ylabel)
            ax.set_xscale("log", base=2)
            if all_ranks:
                ticks = sorted(all_ranks)
                ax.set_xticks(ticks)
                ax.set_xticklabels([str(t) for t in ticks])
                ax.minorticks_off()
                if len(ticks) == 1:
                    ax.set_xlim(ticks[0] / 1.5, ticks[0] * 1.5)
            ax.set_title("%s vs ranks%s" % ("throughput" if what == "tok_s" else "efficiency",
                                            " (dotted: ideal; x: model)" if what == "tok_s" else ""))
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
            save(fig, name)
        except Exception as e:
            notes.add("plot %s failed: %s" % (name, e))
    # time per category per rank, one panel per run
    try:
        rr = [r for r in runs if r["per_rank"]]
        if len(rr) > args.max_panels:
            notes.add("categories.png shows the first %d of %d runs (--max-panels)" % (args.max_panels, len(rr)))
            rr = rr[:args.max_panels]
        if rr:
            cols = min(3, len(rr))
            rows = -(-len(rr) // cols)
            fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
            for i, r in enumerate(rr):
                ax = axes[i // cols][i % cols]
                pr = sorted(r["per_rank"], key=lambda x: x["rank"])
                xs = list(range(len(pr)))
                bottom = [0.0] * len(pr)
                for c in CATS:
                    v = [x["seconds"][c] for x in pr]
                    ax.bar(xs, v, bottom=bottom, color=CAT_COLORS[c], label=c, width=0.7)
                    bottom = [b + y for b, y in zip(bottom, v)]
                if r["wall_s"]:
                    ax.axhline(r["wall_s"], color="black", lw=0.8, ls="--")
                ax.set_xticks(xs)
                ax.set_xticklabels(["%d\ns%d t%d" % (x["rank"], x["stage"], x["tp"]) for x in pr], fontsize=7)
                ax.set_title("%s: %s, %s" % (r["label"], grid_name(r), r["model"]["name"]), fontsize=8)
                ax.set_ylabel("seconds", fontsize=8)
            for j in range(len(rr), rows * cols):
                axes[j // cols][j % cols].axis("off")
            h, l = axes[0][0].get_legend_handles_labels()
            fig.legend(h, l, loc="upper center", ncol=len(CATS), fontsize=8, bbox_to_anchor=(0.5, 1.0))
            fig.tight_layout(rect=(0, 0, 1, 0.94))
            p = os.path.join(out_dir, "categories.png")
            fig.savefig(p, dpi=110)
            plt.close(fig)
            made.append("categories.png")
    except Exception as e:
        notes.add("plot categories.png failed: %s" % e)
    # pipeline bubble vs pp
    try:
        fig, ax = plt.subplots(figsize=(6, 4))
        any_pt = False
        for (mk, batch), g in series:
            g = sorted([x for x in g if x["bubble"] is not None], key=lambda x: (x["pp"], x["tp"]))
            if not g:
                continue
            any_pt = True
            line, = ax.plot([x["pp"] for x in g], [x["bubble"] for x in g], "o", label="%s, batch %d: measured" % (model_label(g[0]), batch))
            pg = [x for x in g if x.get("pred_bubble") is not None]
            if pg:
                ax.plot([x["pp"] for x in pg], [x["pred_bubble"] for x in pg], "x", color=line.get_color(), label="model")
        if any_pt:
            pps = sorted({x["pp"] for x in runs if x["bubble"] is not None})
            ax.set_xticks(pps)
            ax.set_xlim(min(pps) - 0.5, max(pps) + 0.5)
            ax.set_xlabel("pipeline stages (pp)")
            ax.set_ylabel("pipeline bubble (mean wait / wall)")
            ax.set_ylim(0, 1)
            ax.legend(fontsize=8)
            ax.set_title("pipeline bubble vs pp")
            save(fig, "bubble.png")
        else:
            plt.close(fig)
            notes.add("bubble.png: no run reports pipeline_bubble")
    except Exception as e:
        notes.add("plot bubble.png failed: %s" % e)
    # predictions vs nodes
    try:
        pts = {}
        for p in predictions:
            if p.get("nodes_series") and p.get("tok_s"):
                pts.setdefault(p["model"], []).append((p["nodes"], p["tok_s"]))
        if pts:
            fig, ax = plt.subplots(figsize=(6, 4))
            for name, v in sorted(pts.items()):
                v = sorted(v)
                ax.plot([x[0] for x in v], [x[1] for x in v], "o-", label=name)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ticks = sorted({x[0] for v in pts.values() for x in v})
            ax.set_xticks(ticks)
            ax.set_xticklabels([str(t) for t in ticks])
            ax.minorticks_off()
            from matplotlib.ticker import FuncFormatter
            ax.yaxis.set_major_formatter(FuncFormatter(lambda y, _: "%g" % y))
            ax.set_xlabel("nodes")
            ax.set_ylabel("predicted tokens/s (best grid)")
            ax.set_title("model prediction: %g Gb/s, %g us network" % (args.net_gbps, args.net_latency_us))
            ax.legend(fontsize=8)
            save(fig, "prediction.png")
    except Exception as e:
        notes.add("plot prediction.png failed: %s" % e)
    return made


def md_table(header, rows):
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for r in rows:
        out.append("| " + " | ".join(str(c) for c in r) + " |")
    return "\n".join(out)


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


OUTPUTS = ["report.md", "scaling.csv", "predictions.csv", "throughput.png", "efficiency.png", "categories.png",
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

    fields = ["label", "model", "dim", "n_layers", "batch", "grid", "pp", "tp", "ranks", "nodes", "threads_per_rank",
              "micro_batches", "prompt_tokens", "completion_tokens", "wall_s", "tok_s", "decode_tok_s", "prefill_tok_s",
              "speedup", "efficiency", "weak_efficiency", "pipeline_bubble", "predicted_tok_s", "prediction_error_pct",
              "predicted_bubble"] + ["max_%s_s" % c for c in CATS]

    def row(r):
        d = {"label": r["label"], "model": r["model"]["name"], "dim": r["model"].get("dim"), "n_layers": r["model"].get("n_layers"),
             "batch": r["batch"], "grid": grid_name(r), "pp": r["pp"], "tp": r["tp"], "ranks": r["ranks"], "nodes": r["nodes"],
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
    made = plots(runs, groups, model, predictions, out, notes, args) if runs else []
    write_markdown(out, args, runs, groups, weak, model, predictions, made, notes, n_files)
    print("report.py: %d run(s) from %s -> %s/report.md, scaling.csv, predictions.csv, %d plot(s)%s"
          % (len(runs), args.runs_dir, out, len(made), "; %d note(s) in the report" % len(notes.items) if notes.items else ""))
    return 0


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


if __name__ == "__main__":
    sys.exit(main())
