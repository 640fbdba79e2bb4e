#!/usr/bin/python3
"""make_llama2c_model.py: write a random but well-behaved llama2.c checkpoint (numpy only).

usage: make_llama2c_model.py OUT.bin --dim D --hidden H --layers L --heads NH --kv-heads KV
                             --vocab V --seq-len S [--untied] [--seed N] [--logit-scale X]
                             [--branch-scale B]

Format (llama2.c, legacy version 0): 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
vocab_size -- negative when an unshared classifier follows --, seq_len), then float32:
token_embedding (V,D), rms_att (L,D), wq (L,NH*hs,D), wk (L,KV*hs,D), wv (L,KV*hs,D),
wo (L,D,NH*hs), rms_ffn (L,D), w1 (L,H,D), w2 (L,D,H), w3 (L,H,D), rms_final (D),
freq_cis_real (S,hs/2), freq_cis_imag (S,hs/2), [wcls (V,D) when --untied]; hs = D/NH.

The weights are scaled like a trained net's: matrices normal * 1/sqrt(fan_in), the residual
branches' output projections (wo, w2) by --branch-scale / sqrt(2L) more, norm weights around 1.
The classifier (the embedding when tied) is scaled so that logits have a standard deviation of
about --logit-scale (default 5): greedy decoding then has clear argmax margins (typically 1-2,
rarely below 0.01), so that its ids do not depend on the last bits of the arithmetic. The
branch scale (default 6) lets the layers dominate the residual stream: when the current token's
embedding dominates it, a tied classifier predicts that same token again and greedy decoding
repeats one token forever. The rows of tokens 1 and 2 (BOS and EOS, both of which end a llama2.c story) are
damped in the classifier so that greedy completions run to --max-tokens.
Deterministic: the same arguments and --seed give the same bytes.

As a module it also offers read_checkpoint(path) and forward(weights, ids) (a float64 numpy
reference of llama2.c's forward pass), used by test_grids.py to check margins and log-probs.
"""
import argparse
import struct
import sys

import numpy as np

EOS_DAMP = 0.2  # classifier rows of tokens 1 and 2 are scaled by this


def make_weights(dim, hidden, layers, heads, kv_heads, vocab, seq_len, untied=False, seed=0, logit_scale=5.0,
                 branch=6.0):
    if dim % heads or heads % kv_heads:
        raise ValueError("dim must be a multiple of heads, heads a multiple of kv_heads")
    hs = dim // heads
    if hs % 2:
        raise ValueError("head size dim/heads must be even (RoPE rotates pairs)")
    rng = np.random.default_rng(seed)
    D, H, L, V = dim, hidden, layers, vocab
    q, kv = heads * hs, kv_heads * hs

    def mat(*shape, scale=1.0):  # (..., out, in): normal / sqrt(fan_in)
        return (rng.standard_normal(shape) * (scale / np.sqrt(shape[-1]))).astype(np.float32)

    def norm(*shape):
        return (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)

    res = branch / np.sqrt(2.0 * L)
    w = {}
    # tied: the embedding is the classifier too, so its rows carry the logit scale (the first
    # rmsnorm removes the scale from the input side); untied: unit-variance embedding entries
    emb_scale = logit_scale if not untied else np.sqrt(D)
    w["emb"] = mat(V, D, scale=emb_scale)
    w["rms_att"] = norm(L, D)
    w["wq"] = mat(L, q, D)
    w["wk"] = mat(L, kv, D)
    w["wv"] = mat(L, kv, D)
    w["wo"] = mat(L, D, q, scale=res)
    w["rms_ffn"] = norm(L, D)
    w["w1"] = mat(L, H, D)
    w["w2"] = mat(L, D, H, scale=2.0 * res)  # silu(a) * b has a smaller spread than a normal
    w["w3"] = mat(L, H, D)
    w["rms_final"] = norm(D)
    inv = 1.0 / (10000.0 ** (np.arange(0, hs, 2, dtype=np.float64) / hs))
    ang = np.outer(np.arange(seq_len, dtype=np.float64), inv)
    w["freq_real"] = np.cos(ang).astype(np.float32)
    w["freq_imag"] = np.sin(ang).astype(np.float32)
    if untied:
        w["wcls"] = mat(V, D, scale=logit_scale)
        w["wcls"][1:3] *= EOS_DAMP
    else:
        w["emb"][1:3] *= EOS_DAMP
    w["config"] = dict(dim=D, hidden=H, layers=L, heads=heads, kv_heads=kv_heads, vocab=V, seq_len=seq_len,
                       untied=untied)
    return w


ORDER = ["emb", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3", "rms_final", "freq_real",
         "freq_imag"]


def write_checkpoint(path, w):
    c = w["config"]
    with open(path, "wb") as f:
        f.write(struct.pack("<7i", c["dim"], c["hidden"], c["layers"], c["heads"], c["kv_heads"],
                            -c["vocab"] if c["untied"] else c["vocab"], c["seq_len"]))
        for k in ORDER + (["wcls"] if c["untied"] else []):
            f.write(np.ascontiguousarray(w[k], dtype="<f4").tobytes())


def read_checkpoint(path):
    with open(path, "rb") as f:
        raw = f.read()
    D, H, L, NH, KV, V, S = struct.unpack("<7i", raw[:28])
    untied = V < 0
    V = abs(V)
    hs = D // NH
    data = np.frombuffer(raw, dtype="<f4", offset=28)
    shapes = {"emb": (V, D), "rms_att": (L, D), "wq": (L, NH * hs, D), "wk": (L, KV * hs, D),
              "wv": (L, KV * hs, D), "wo": (L, D, NH * hs), "rms_ffn": (L, D), "w1": (L, H, D),
              "w2": (L, D, H), "w3": (L, H, D), "rms_final": (D,), "freq_real": (S, hs // 2),
              "freq_imag": (S, hs // 2), "wcls": (V, D)}
    w, pos = {}, 0
    for k in ORDER + (["wcls"] if untied else []):
        n = int(np.prod(shapes[k]))
        w[k] = data[pos:pos + n].reshape(shapes[k])
        pos += n
    if pos != data.size:
        raise ValueError("'%s': %d floats, the header implies %d" % (path, data.size, pos))
    w["config"] = dict(dim=D, hidden=H, layers=L, heads=NH, kv_heads=KV, vocab=V, seq_len=S, untied=untied)
    return w


def forward(w, ids, eps=1e-5, theta=10000.0, inv_freq=None):
    """logits (len(ids), V) in float64 for one sequence, as llama2.c computes them; inv_freq (hs/2)
    replaces theta's RoPE frequencies (e.g. Llama 3 scaled ones)"""
    c = w["config"]
    D, L, NH, KV = c["dim"], c["layers"], c["heads"], c["kv_heads"]
    hs = D // NH
    T = len(ids)
    f64 = lambda a: np.asarray(a, dtype=np.float64)

    def rmsnorm(x, g):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * f64(g)

    inv = 1.0 / (theta ** (np.arange(0, hs, 2, dtype=np.float64) / hs)) if inv_freq is None else np.asarray(inv_freq)
    ang = np.outer(np.arange(T, dtype=np.float64), inv)  # (T, hs/2)
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(x):  # (T, heads, hs), adjacent pairs rotated
        a, b = x[..., 0::2], x[..., 1::2]
        out = np.empty_like(x)
        out[..., 0::2] = a * cos - b * sin
        out[..., 1::2] = a * sin + b * cos
        return out

    x = f64(w["emb"])[np.asarray(ids)]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(L):
        xb = rmsnorm(x, w["rms_att"][l])
        q = rope((xb @ f64(w["wq"][l]).T).reshape(T, NH, hs))
        k = rope((xb @ f64(w["wk"][l]).T).reshape(T, KV, hs))
        v = (xb @ f64(w["wv"][l]).T).reshape(T, KV, hs)
        rep = NH // KV
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        s = np.einsum("thd,uhd->htu", q, k) / np.sqrt(hs) + mask
        s = np.exp(s - s.max(axis=-1, keepdims=True))
        s /= s.sum(axis=-1, keepdims=True)
        att = np.einsum("htu,uhd->thd", s, v).reshape(T, NH * hs)
        x = x + att @ f64(w["wo"][l]).T
        xb = rmsnorm(x, w["rms_ffn"][l])
        a, b = xb @ f64(w["w1"][l]).T, xb @ f64(w["w3"][l]).T
        x = x + (a / (1.0 + np.exp(-a)) * b) @ f64(w["w2"][l]).T
    x = rmsnorm(x, w["rms_final"])
    return x @ f64(w["wcls"] if c["untied"] else w["emb"]).T


def log_softmax(z):
    m = z.max(axis=-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(axis=-1, keepdims=True))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("out")
    p.add_argument("--dim", type=int, required=True)
    p.add_argument("--hidden", type=int, required=True)
    p.add_argument("--layers", type=int, required=True)
    p.add_argument("--heads", type=int, required=True)
    p.add_argument("--kv-heads", type=int, required=True)
    p.add_argument("--vocab", type=int, required=True)
    p.add_argument("--seq-len", type=int, required=True)
    p.add_argument("--untied", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--logit-scale", type=float, default=5.0)
    p.add_argument("--branch-scale", type=float, default=6.0)
    a = p.parse_args()
    try:
        w = make_weights(a.dim, a.hidden, a.layers, a.heads, a.kv_heads, a.vocab, a.seq_len, a.untied, a.seed,
                         a.logit_scale, a.branch_scale)
    except ValueError as e:
        sys.exit("make_llama2c_model.py: %s" % e)
    write_checkpoint(a.out, w)


if __name__ == "__main__":
    main()
