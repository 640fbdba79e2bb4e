"""Constants, small helpers and the plan arithmetic (src/plan.c in Python) shared by the report."""
import math
import os
import sys

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
