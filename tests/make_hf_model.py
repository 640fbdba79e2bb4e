#!/usr/bin/python3
"""make_hf_model.py: turn a llama2.c checkpoint into a Hugging Face Llama model directory, for
testing `mpillama convert` on safetensors input (numpy only, no torch).

usage: make_hf_model.py SRC.bin OUTDIR [--dtype f32|f16|bf16] [--shards N] [--untied]
                        [--kv-heads K] [--seed S] [--also-bin PATH] [--no-rope-permute]
                        [--rope-scaling FACTOR,LOW,HIGH,ORIGINAL_MAX_POS]

Writes OUTDIR/config.json and OUTDIR/model.safetensors (or N shards plus
model.safetensors.index.json). q_proj/k_proj rows are permuted from llama2.c's adjacent-pair
RoPE layout into HF's rotate-half layout: HF[h*hs + j*hs/2 + i] = pairs[h*hs + 2i + j].

Modifications, applied in this order (all deterministic):
  --kv-heads K   grouped-query variant: each new KV head is the mean of n_kv_heads/K old ones
  --untied       lm_head.weight = embedding + small noise (seeded by --seed), and
                 tie_word_embeddings false (a source with its own classifier keeps it)
  --dtype        every tensor is rounded to f16 or bf16 (round to nearest even)
--also-bin PATH writes the same modified weights (after rounding, in f32) as a llama2.c
checkpoint, so that both converters see identical numbers.
--no-rope-permute leaves q/k in the pairs layout: a deliberately wrong model (negative control).
--rope-scaling writes Llama 3 rope_scaling (factor, low_freq_factor, high_freq_factor,
original_max_position_embeddings) into config.json; the weights are unchanged.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np


def read_llama2c(path):
    with open(path, "rb") as f:
        raw = f.read()
    dim, hidden, n_layers, n_heads, n_kv, vocab, seq_len = struct.unpack("<7i", raw[:28])
    shared = vocab > 0
    vocab = abs(vocab)
    hs = dim // n_heads
    data = np.frombuffer(raw, dtype="<f4", offset=28)
    pos = 0

    def take(*shape):
        nonlocal pos
        n = int(np.prod(shape))
        if pos + n > data.size:
            sys.exit(f"make_hf_model.py: '{path}' is truncated")
        a = data[pos:pos + n].reshape(shape).astype(np.float32)
        pos += n
        return a

    w = {}
    w["emb"] = take(vocab, dim)
    w["rms_att"] = take(n_layers, dim)
    w["wq"] = take(n_layers, n_heads * hs, dim)
    w["wk"] = take(n_layers, n_kv * hs, dim)
    w["wv"] = take(n_layers, n_kv * hs, dim)
    w["wo"] = take(n_layers, dim, n_heads * hs)
    w["rms_ffn"] = take(n_layers, dim)
    w["w1"] = take(n_layers, hidden, dim)
    w["w2"] = take(n_layers, dim, hidden)
    w["w3"] = take(n_layers, hidden, dim)
    w["rms_final"] = take(dim)
    w["freq_real"] = take(seq_len * hs // 2)
    w["freq_imag"] = take(seq_len * hs // 2)
    w["wcls"] = None if shared else take(vocab, dim)
    if pos != data.size:
        sys.exit(f"make_hf_model.py: '{path}' has {data.size - pos} extra floats")
    cfg = dict(dim=dim, hidden=hidden, n_layers=n_layers, n_heads=n_heads, n_kv=n_kv,
               vocab=vocab, seq_len=seq_len, hs=hs)
    return cfg, w


def write_llama2c(path, cfg, w):
    vocab = cfg["vocab"] if w["wcls"] is None else -cfg["vocab"]
    with open(path, "wb") as f:
        f.write(struct.pack("<7i", cfg["dim"], cfg["hidden"], cfg["n_layers"], cfg["n_heads"],
                            cfg["n_kv"], vocab, cfg["seq_len"]))
        for k in ["emb", "rms_att", "wq", "wk", "wv", "wo", "rms_ffn", "w1", "w2", "w3",
                  "rms_final", "freq_real", "freq_imag", "wcls"]:
            if w[k] is not None:
                f.write(np.ascontiguousarray(w[k], dtype="<f4").tobytes())


def bf16_bits(a):
    """f32 -> bf16 bit patterns, round to nearest even (as util_f32_to_bf16)"""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return u.astype(np.uint16)


def bf16_to_f32(bits):
    return (bits.astype(np.uint32) << 16).view(np.float32)


def round_to(a, dtype):
    if dtype == "f32":
        return a.astype(np.float32)
    if dtype == "f16":
        return a.astype(np.float16).astype(np.float32)
    return bf16_to_f32(bf16_bits(a))


def encode(a, dtype):
    """(safetensors dtype name, little-endian bytes)"""
    if dtype == "f32":
        return "F32", np.ascontiguousarray(a, dtype="<f4").tobytes()
    if dtype == "f16":
        return "F16", np.ascontiguousarray(a, dtype="<f2").tobytes()
    return "BF16", bf16_bits(a).astype("<u2").tobytes()


def to_rotate_half(w, n_heads, hs):
    """(n_heads*hs, cols) adjacent pairs -> HF rotate-half: row h*hs + j*hs/2 + i <- h*hs + 2i + j"""
    cols = w.shape[1]
    return w.reshape(n_heads, hs // 2, 2, cols).transpose(0, 2, 1, 3).reshape(n_heads * hs, cols)


def write_safetensors(path, tensors, dtype):
    """tensors: list of (name, array)"""
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, a in tensors:
        dt, b = encode(a, dtype)
        header[name] = {"dtype": dt, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)  # the reference writer pads the header to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    return off


def rope_scaling(spec):
    """'8,1,4,200' -> the config.json rope_scaling object of Llama 3.1 (None without a spec)"""
    if not spec:
        return None
    try:
        factor, low, high, orig = spec.split(",")
        return {"rope_type": "llama3", "factor": float(factor), "low_freq_factor": float(low),
                "high_freq_factor": float(high), "original_max_position_embeddings": int(orig)}
    except ValueError:
        sys.exit(f"make_hf_model.py: --rope-scaling '{spec}': want FACTOR,LOW,HIGH,ORIGINAL_MAX_POS")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("outdir")
    ap.add_argument("--dtype", choices=["f32", "f16", "bf16"], default="f32")
    ap.add_argument("--shards", type=int, default=1)
    ap.add_argument("--untied", action="store_true")
    ap.add_argument("--kv-heads", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--also-bin")
    ap.add_argument("--no-rope-permute", action="store_true")
    ap.add_argument("--rope-scaling", help="FACTOR,LOW,HIGH,ORIGINAL_MAX_POS: Llama 3 scaling")
    args = ap.parse_args()

    cfg, w = read_llama2c(args.src)
    L, hs = cfg["n_layers"], cfg["hs"]

    if args.kv_heads:
        k = args.kv_heads
        if not (0 < k < cfg["n_kv"]) or cfg["n_kv"] % k or cfg["n_heads"] % k:
            sys.exit(f"make_hf_model.py: --kv-heads {k} must be below and divide "
                     f"n_kv_heads {cfg['n_kv']} (and divide n_heads {cfg['n_heads']})")
        g = cfg["n_kv"] // k
        for name in ("wk", "wv"):
            a = w[name].reshape(L, k, g, hs, cfg["dim"])
            w[name] = a.mean(axis=2, dtype=np.float64).astype(np.float32).reshape(L, k * hs, cfg["dim"])
        cfg["n_kv"] = k

    if args.untied and w["wcls"] is None:
        rng = np.random.default_rng(args.seed)
        emb = w["emb"]
        w["wcls"] = (emb + 0.1 * float(emb.std()) * rng.standard_normal(emb.shape)).astype(np.float32)

    for key in w:
        if w[key] is not None and key not in ("freq_real", "freq_imag"):
            w[key] = round_to(w[key], args.dtype)

    if args.also_bin:
        write_llama2c(args.also_bin, cfg, w)

    def rope(a, heads):
        return a if args.no_rope_permute else to_rotate_half(a, heads, hs)

    tensors = [("model.embed_tokens.weight", w["emb"])]
    for l in range(L):
        p = f"model.layers.{l}."
        tensors += [
            (p + "input_layernorm.weight", w["rms_att"][l]),
            (p + "self_attn.q_proj.weight", rope(w["wq"][l], cfg["n_heads"])),
            (p + "self_attn.k_proj.weight", rope(w["wk"][l], cfg["n_kv"])),
            (p + "self_attn.v_proj.weight", w["wv"][l]),
            (p + "self_attn.o_proj.weight", w["wo"][l]),
            (p + "post_attention_layernorm.weight", w["rms_ffn"][l]),
            (p + "mlp.gate_proj.weight", w["w1"][l]),
            (p + "mlp.down_proj.weight", w["w2"][l]),
            (p + "mlp.up_proj.weight", w["w3"][l]),
        ]
    tensors.append(("model.norm.weight", w["rms_final"]))
    if w["wcls"] is not None:
        tensors.append(("lm_head.weight", w["wcls"]))

    os.makedirs(args.outdir, exist_ok=True)
    torch_dtype = {"f32": "float32", "f16": "float16", "bf16": "bfloat16"}[args.dtype]
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_act": "silu",
        "hidden_size": cfg["dim"],
        "intermediate_size": cfg["hidden"],
        "num_hidden_layers": L,
        "num_attention_heads": cfg["n_heads"],
        "num_key_value_heads": cfg["n_kv"],
        "head_dim": hs,
        "vocab_size": cfg["vocab"],
        "max_position_embeddings": cfg["seq_len"],
        "rms_norm_eps": 1e-05,
        "rope_theta": 10000.0,
        "rope_scaling": rope_scaling(args.rope_scaling),
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": w["wcls"] is None,
        "bos_token_id": 1,
        "eos_token_id": [2, 1],  # as the llama2.c converter: BOS also ends a story
        "torch_dtype": torch_dtype,
    }
    with open(os.path.join(args.outdir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")

    n = args.shards
    if n <= 1:
        write_safetensors(os.path.join(args.outdir, "model.safetensors"), tensors, args.dtype)
        return
    if n > len(tensors):
        sys.exit(f"make_hf_model.py: --shards {n} is more than the {len(tensors)} tensors")
    # contiguous groups of roughly equal byte size, each non-empty
    sizes = np.array([a.size for _, a in tensors], dtype=np.float64)
    cuts = np.searchsorted(np.cumsum(sizes) / sizes.sum(), np.arange(1, n) / n) + 1
    cuts = [min(max(int(c), i + 1), len(tensors) - (n - 1 - i)) for i, c in enumerate(cuts)]
    for i in range(1, len(cuts)):
        cuts[i] = max(cuts[i], cuts[i - 1] + 1)
    bounds = [0] + cuts + [len(tensors)]
    weight_map, total = {}, 0
    for i in range(n):
        fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        part = tensors[bounds[i]:bounds[i + 1]]
        total += write_safetensors(os.path.join(args.outdir, fname), part, args.dtype)
        for name, _ in part:
            weight_map[name] = fname
    with open(os.path.join(args.outdir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")


if __name__ == "__main__":
    main()
