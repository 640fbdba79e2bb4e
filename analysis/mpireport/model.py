"""The performance model: workload of a run, fits of compute and communication, predictions of
dp x pp x tp layouts."""
import math

from .common import *  # noqa: F401,F403
from .runs import *  # noqa: F401,F403


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
            if r.get("dp", 1) > 1:  # each rank works on its replica's share of the job
                wl = scale_workload(wl, 1.0 / r["dp"])
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
    def predict(self, model_key, m, pp, tp, wl, nodes, rpn, m_batches=None, compute_scale=1.0, sample_last=False,
                hub_prompts=None):
        """one replica: sample_last = sampling on the last stage, vocab-parallel (only tokens go
        back); hub_prompts = prompts whose I/O rank 0 does (the whole job's under dp)"""
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
                if s == pp - 1 and sample_last:
                    comp += (self.sigma or 0) * wl["n_logit"] * V / tp  # each rank samples its shard
                    if tp > 1:  # max, the ordered softmax sum and the candidates: latency-bound
                        cross = node_of(s * tp) != node_of(s * tp + tp - 1)
                        a, ib = self.link(cross, "gather")
                        g += 3 * a * steps + wl["n_logit"] * 64 * 8 * ib
                    if pp > 1 and t == 0:
                        f = self.comm.get("gather")
                        if f:
                            g += f["alpha"] * steps + wl["n_logit"] * 8 * f["inv_beta"]
                elif s == pp - 1:
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
        fb = (0 if sample_last else (self.sigma or 0) * wl["n_logit"] * V) + \
            (self.iota or 0) * (wl["prompts"] if hub_prompts is None else hub_prompts)
        transit = 0.0
        if pp > 1:
            for s in range(pp - 1):
                a, ib = self.link(node_of(s * tp) != node_of((s + 1) * tp), "p2p")
                transit += a * steps + wl["n_tok"] * d * 4 * ib
            a, ib = self.link(node_of((pp - 1) * tp) != node_of(0), "gather")
            transit += a * steps + wl["n_logit"] * (8 if sample_last else V * 4) * ib
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


def scale_workload(wl, f):
    """the workload with f times the prompts (tokens, logit rows, steps in proportion)"""
    out = dict(wl)
    for k in ("n_tok", "n_logit", "prompts", "steps", "rounds", "tokens_total"):
        out[k] = wl[k] * f
    return out


def node_bytes(m, dp, pp, tp, rpn, batch, seq_len, shared=True):
    """memory of the fullest node: weights (one copy per distinct slice when shared) and KV caches"""
    layers = plan_layers(m, pp)
    R = pp * tp
    ranks = list(range(min(rpn, dp * R)))
    slices, w, kv = set(), 0, 0
    for r in ranks:
        q = r % R
        st = q // tp
        wb, nkv = rank_weight_bytes(m, pp, tp, st, layers)
        if not shared or q not in slices:
            w += wb
        slices.add(q)
        kv += batch * seq_len * 2 * nkv * m["head_size"] * 4 * layers[st]
    return w, kv


def predict_dp(model, key, m, dp, pp, tp, wl, nodes, rpn, compute_scale=1.0):
    """dp replicas of pp x tp sharing the job (dynamic distribution: each gets 1/dp of the
    prompts); sampling on each replica's last stage; rank 0 (replica 0's scheduler) also does the
    intake and writing of every prompt. Throughput = the replicas' together."""
    part = scale_workload(wl, 1.0 / dp)
    other = model.predict(key, m, pp, tp, part, nodes, rpn, compute_scale=compute_scale, sample_last=True, hub_prompts=0)
    first = model.predict(key, m, pp, tp, part, nodes, rpn, compute_scale=compute_scale, sample_last=True,
                          hub_prompts=wl["prompts"])
    if not other or not first or not other["tok_s"] or not first["tok_s"]:
        return None
    rate = first["tok_s"] + (dp - 1) * other["tok_s"]
    out = dict(first)
    out["tok_s"] = rate
    out["wall"] = wl["tokens_total"] / rate
    out["hub_share"] = first["fb"] / first["wall"] if first["wall"] > 0 else None
    return out


def best_layouts(model, key, m, nodes, rpn, wl, node_mem, compute_scale=1.0):
    """(best with dp, best with dp = 1), each (dp, pp, tp, prediction, node bytes), among the
    layouts whose node memory fits; None where none fits"""
    ranks = nodes * rpn
    best = {True: None, False: None}
    for R in range(1, ranks + 1):
        if ranks % R:
            continue
        dp = ranks // R
        for tp in range(1, R + 1):
            if R % tp or not grid_valid(m, R // tp, tp):
                continue
            pp = R // tp
            w, kv = node_bytes(m, dp, pp, tp, rpn, wl["batch"] or 1, wl["seq_len"])
            if w + kv > 0.85 * node_mem:
                continue
            if dp == 1:  # today's driver: sampling on rank 0 from whole logits
                pr = model.predict(key, m, pp, tp, wl, nodes, rpn, compute_scale=compute_scale)
            else:
                pr = predict_dp(model, key, m, dp, pp, tp, wl, nodes, rpn, compute_scale=compute_scale)
            if not pr or not pr["tok_s"]:
                continue
            for with_dp in (True, False):
                if not with_dp and dp > 1:
                    continue
                cur = best[with_dp]
                if cur is None or pr["tok_s"] > cur[3]["tok_s"]:
                    best[with_dp] = (dp, pp, tp, pr, w + kv)
    return best[True], best[False]
