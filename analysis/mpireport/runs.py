"""Reading runs: summary.json (and trace.json counts) into normalised run records; scaling groups."""
import json
import os

from .common import *  # noqa: F401,F403


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
    r["dp"] = inum(s.get("dp")) or 1  # replicas (absent before data parallelism: one)
    r["ranks"] = inum(s.get("ranks")) or (len(ranks_list) or r["dp"] * r["pp"] * r["tp"])
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


def grid_name(r):
    """PPxTP, or DPxPPxTP with replicas"""
    if r.get("dp", 1) > 1:
        return "%dx%dx%d" % (r["dp"], r["pp"], r["tp"])
    return "%dx%d" % (r["pp"], r["tp"])


def model_label(r):
    m = r["model"]
    if not r["model_ok"]:
        return m["name"]
    return "%s (dim %d, %d layers)" % (m["name"], m["dim"], m["n_layers"])


def close(a, b, rel=0.01):
    """two token counts equal within rel (tensor-parallel rounding may end a sampled completion a
    token earlier or later); None equals only None"""
    if a is None or b is None:
        return a is None and b is None
    return abs(a - b) <= rel * max(abs(a), abs(b), 1)


def same_workload(a, b, per_rank=False):
    """whether two runs did the same work: model, command, prompts and their tokens, and batch
    (strong scaling), or the same per prompt and the same batch per rank (weak scaling)"""
    if a["model_key"] != b["model_key"] or a["command"] != b["command"]:
        return False
    if not per_rank:
        return (a["batch"] == b["batch"] and a["prompts"] == b["prompts"] and close(a["tok_prompt"], b["tok_prompt"], 0)
                and close(a["tok_completion"], b["tok_completion"]))
    if a["batch"] * b["ranks"] != b["batch"] * a["ranks"]:
        return False
    pa, pb = a["prompts"] or 1, b["prompts"] or 1
    return all(close(None if a[k] is None else a[k] / pa, None if b[k] is None else b[k] / pb)
               for k in ("tok_prompt", "tok_completion"))


def workload_groups(runs, per_rank, notes, what):
    """runs split into groups of the same workload; a note for runs of one model and batch that
    are not compared because their prompts or tokens differ"""
    groups = []
    for r in runs:
        g = next((g for g in groups if same_workload(g[0], r, per_rank)), None)
        if g is None:
            groups.append([r])
        else:
            g.append(r)
    for i, g in enumerate(groups):
        for h in groups[i + 1:]:
            a, b = g[0], h[0]
            if a["model_key"] == b["model_key"] and (a["batch"] * b["ranks"] == b["batch"] * a["ranks"] if per_rank
                                                     else a["batch"] == b["batch"]):
                notes.add("%s: runs [%s] and [%s] have different workloads (%s): not compared"
                          % (what, ", ".join(x["label"] for x in g), ", ".join(x["label"] for x in h),
                             workload_text(a, b, per_rank)))
    return groups


def workload_text(a, b, per_rank):
    """what differs between two runs' workloads"""
    if a["command"] != b["command"]:
        return "command %s vs %s" % (a["command"], b["command"])
    out = []
    if per_rank:
        for k, name in (("tok_prompt", "prompt tokens"), ("tok_completion", "completion tokens")):
            va, vb = (None if r[k] is None else r[k] / (r["prompts"] or 1) for r in (a, b))
            if not close(va, vb):
                out.append("%s per prompt %s vs %s" % (name, fmt_plain(va), fmt_plain(vb)))
    else:
        for k, name in (("prompts", "prompts"), ("tok_prompt", "prompt tokens"), ("tok_completion", "completion tokens")):
            if a[k] != b[k]:
                out.append("%s %s vs %s" % (name, fmt_plain(a[k]), fmt_plain(b[k])))
    return ", ".join(out) or "tokens"


def fmt_plain(v):
    return "%g" % v if isinstance(v, (int, float)) else str(v)


def scaling(runs, notes):
    """speed-up and efficiency vs the smallest run of the same workload (model, command, prompts,
    tokens, batch: strong scaling), and vs the smallest of the same model, tokens per prompt and
    batch per rank (weak scaling). Runs whose workloads differ are not compared (a note says so)."""
    usable = [r for r in runs if r["tok_s"] and r["batch"]]
    for r in runs:
        r["speedup"] = r["efficiency"] = r["weak_eff"] = None
        r["base_label"] = None
    groups = {}
    for n, g in enumerate(workload_groups(usable, False, notes, "strong scaling")):
        groups[(g[0]["model_key"], g[0]["batch"], n)] = g
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
    series = []
    for g in workload_groups([r for r in usable if r["batch"] % r["ranks"] == 0], True, notes, "weak scaling"):
        if len({x["ranks"] for x in g}) < 2:
            continue
        rmin = min(x["ranks"] for x in g)
        base_tok = median([x["tok_s"] for x in g if x["ranks"] == rmin])
        for x in g:
            x["weak_eff"] = (x["tok_s"] / base_tok) / (x["ranks"] / rmin)
        series.append(((g[0]["model_key"], g[0]["batch"] // g[0]["ranks"]), sorted(g, key=lambda x: (x["ranks"], x["pp"]))))
    return groups, series
