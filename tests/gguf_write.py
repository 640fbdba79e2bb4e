"""Writes a GGUF v3 file from a Hugging Face checkpoint directory of tests/data/arch, the way
llama.cpp's converter lays it out (for the tests; numpy only).

  gguf_write.py SRC_DIR OUT.gguf [--type f32|f16|bf16|q8_0|q4_0|q4_k|q5_k|q6_k]
                [--dequantized DIR]

Architectures: llama and mistral as general.architecture "llama" (q/k rows permuted from
rotate-half to llama.cpp's adjacent pairs; Llama 3 RoPE scaling as a rope_freqs tensor;
Mistral's window as llama.attention.sliding_window), qwen2 and qwen3 as themselves (rotate-half
rows kept). --type quantises the 2-D weights whose rows allow it (the embedding, norms and
biases stay f32). --dequantized DIR also writes a safetensors checkpoint (config.json copied) of
exactly the values the quantised file holds, dequantised here with numpy, so that a converted
GGUF can be compared with it bit for bit."""
import argparse
import json
import math
import os
import shutil
import struct
import sys

import numpy as np

GGML = {"f32": (0, 1, 4), "f16": (1, 1, 2), "q4_0": (2, 32, 18), "q8_0": (8, 32, 34),
        "q4_k": (12, 256, 144), "q5_k": (13, 256, 176), "q6_k": (14, 256, 210), "bf16": (30, 1, 2)}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        assert v["dtype"] == "F32", v["dtype"]
        b, e = v["data_offsets"]
        out[k] = np.frombuffer(data[b:e], dtype="<f4").reshape(v["shape"]).copy()
    return out


def write_safetensors(path, tensors):
    hdr, off, blobs = {}, 0, []
    for k, a in tensors.items():
        b = np.ascontiguousarray(a, dtype="<f4").tobytes()
        hdr[k] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(hdr).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


# ---- quantisation (simple, not llama.cpp's search) and dequantisation, by block ----

def f16(x):
    return np.asarray(x, dtype=np.float32).astype("<f2")


def q8_0(x):
    b = x.reshape(-1, 32)
    d = f16(np.abs(b).max(1) / 127)
    inv = np.where(d.astype(np.float32) == 0, 0, 1 / np.maximum(d.astype(np.float32), 1e-30))
    q = np.clip(np.rint(b * inv[:, None]), -127, 127).astype(np.int8)
    raw = np.concatenate([d.view(np.uint8).reshape(-1, 2), q.view(np.uint8)], 1)
    return raw, (d.astype(np.float32)[:, None] * q).reshape(-1)


def q4_0(x):
    b = x.reshape(-1, 32)
    d = f16(np.abs(b).max(1) / 7.5)
    df = d.astype(np.float32)
    inv = np.where(df == 0, 0, 1 / np.maximum(df, 1e-30))
    q = np.clip(np.rint(b * inv[:, None]) + 8, 0, 15).astype(np.uint8)
    packed = q[:, :16] | (q[:, 16:] << 4)
    raw = np.concatenate([d.view(np.uint8).reshape(-1, 2), packed], 1)
    return raw, (df[:, None] * (q.astype(np.float32) - 8)).reshape(-1)


def pack_scales_k(sc, mn):
    """8 six-bit scales and mins per block -> 12 bytes (ggml's K-quant packing)"""
    out = np.zeros((sc.shape[0], 12), dtype=np.uint8)
    out[:, 0:4] = (sc[:, 0:4] & 63) | ((sc[:, 4:8] >> 4) << 6)
    out[:, 4:8] = (mn[:, 0:4] & 63) | ((mn[:, 4:8] >> 4) << 6)
    out[:, 8:12] = (sc[:, 4:8] & 15) | ((mn[:, 4:8] & 15) << 4)
    return out


def q45_k(x, bits):
    b = x.reshape(-1, 8, 32)
    top = (1 << bits) - 1
    lo = np.minimum(b.min(2), 0)                          # (n, 8) sub-block minima (<= 0)
    rng = np.maximum(b.max(2) - lo, 1e-8) / top           # sub-block step
    d = f16(rng.max(1) / 63)
    dmin = f16((-lo).max(1) / 63)
    df, mf = d.astype(np.float32), dmin.astype(np.float32)
    sc = np.clip(np.ceil(rng / np.maximum(df[:, None], 1e-30)), 0, 63).astype(np.uint8)
    mn = np.clip(np.rint(-lo / np.maximum(mf[:, None], 1e-30)), 0, 63).astype(np.uint8)
    step = df[:, None] * sc
    off = mf[:, None] * mn
    q = np.clip(np.rint((b + off[:, :, None]) / np.maximum(step[:, :, None], 1e-30)), 0, top).astype(np.uint8)
    deq = (step[:, :, None] * q - off[:, :, None]).reshape(-1)
    # 32-byte chunks: low nibbles sub-block 2i, high nibbles 2i + 1
    qs = ((q[:, 0::2] & 15) | ((q[:, 1::2] & 15) << 4)).reshape(-1, 128)
    parts = [d.view(np.uint8).reshape(-1, 2), dmin.view(np.uint8).reshape(-1, 2), pack_scales_k(sc, mn)]
    if bits == 5:
        qh = np.zeros((q.shape[0], 32), dtype=np.uint8)
        for k in range(8):
            qh |= ((q[:, k] >> 4) & 1) << k
        parts.append(qh)
    parts.append(qs)
    return np.concatenate(parts, 1), deq


def q6_k(x):
    b = x.reshape(-1, 16, 16)
    amax = np.abs(b).max(2)
    d = f16(amax.max(1) / (31 * 127) + 1e-12)
    df = d.astype(np.float32)
    sc = np.clip(np.ceil(amax / 31 / np.maximum(df[:, None], 1e-30)), 1, 127).astype(np.int8)
    step = df[:, None] * sc
    q = (np.clip(np.rint(b / step[:, :, None]), -32, 31) + 32).astype(np.uint8).reshape(-1, 256)
    deq = (step[:, :, None] * (q.reshape(-1, 16, 16).astype(np.float32) - 32)).reshape(-1)
    ql = np.zeros((q.shape[0], 128), dtype=np.uint8)
    qh = np.zeros((q.shape[0], 64), dtype=np.uint8)
    for h in range(2):
        g = q[:, 128 * h:128 * h + 128]
        ql[:, 64 * h:64 * h + 32] = (g[:, 0:32] & 15) | ((g[:, 64:96] & 15) << 4)
        ql[:, 64 * h + 32:64 * h + 64] = (g[:, 32:64] & 15) | ((g[:, 96:128] & 15) << 4)
        qh[:, 32 * h:32 * h + 32] = ((g[:, 0:32] >> 4) | ((g[:, 32:64] >> 4) << 2) |
                                     ((g[:, 64:96] >> 4) << 4) | ((g[:, 96:128] >> 4) << 6))
    raw = np.concatenate([ql, qh, sc.view(np.uint8), d.view(np.uint8).reshape(-1, 2)], 1)
    return raw, deq


def encode(a, kind):
    """(ggml type, raw bytes, the values the bytes hold)"""
    flat = a.astype(np.float32).reshape(-1)
    if kind == "f32":
        return 0, flat.astype("<f4").tobytes(), flat
    if kind == "f16":
        h = flat.astype("<f2")
        return 1, h.tobytes(), h.astype(np.float32)
    if kind == "bf16":
        u = flat.view(np.uint32).astype(np.uint64)
        h = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype("<u2")
        return 30, h.tobytes(), (h.astype(np.uint32) << 16).view(np.float32)
    raw, deq = {"q8_0": q8_0, "q4_0": q4_0, "q4_k": lambda x: q45_k(x, 4),
                "q5_k": lambda x: q45_k(x, 5), "q6_k": q6_k}[kind](flat)
    return GGML[kind][0], raw.astype(np.uint8).tobytes(), deq.astype(np.float32)


# ---- the file ----

def gguf_str(s):
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def kv_bytes(key, val):
    out = gguf_str(key)
    if isinstance(val, bool):
        return out + struct.pack("<IB", 7, val)
    if isinstance(val, int):
        return out + struct.pack("<Ii", 5, val) if -2**31 <= val < 2**31 else out + struct.pack("<Iq", 11, val)
    if isinstance(val, float):
        return out + struct.pack("<If", 6, val)
    if isinstance(val, str):
        return out + struct.pack("<I", 8) + gguf_str(val)
    if isinstance(val, list):  # of strings, ints or floats
        if all(isinstance(v, str) for v in val):
            return out + struct.pack("<IIQ", 9, 8, len(val)) + b"".join(gguf_str(v) for v in val)
        if all(isinstance(v, int) for v in val):
            return out + struct.pack("<IIQ", 9, 5, len(val)) + struct.pack("<%di" % len(val), *val)
        return out + struct.pack("<IIQ", 9, 6, len(val)) + struct.pack("<%df" % len(val), *val)
    raise TypeError(val)


def write_gguf(path, kvs, tensors, align=32):
    """kvs: list of (key, value); tensors: list of (name, shape (rows, cols) or (n,), ggml type, raw)"""
    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs))
    head += b"".join(kv_bytes(k, v) for k, v in kvs)
    off, infos, blobs = 0, b"", []
    for name, shape, ty, raw in tensors:
        ne = list(reversed(shape))
        infos += gguf_str(name) + struct.pack("<I", len(ne)) + struct.pack("<%dQ" % len(ne), *ne)
        infos += struct.pack("<IQ", ty, off)
        pad = (-len(raw)) % align
        blobs.append(raw + b"\0" * pad)
        off += len(raw) + pad
    body = head + infos
    body += b"\0" * ((-len(body)) % align)
    with open(path, "wb") as f:
        f.write(body + b"".join(blobs))


def interleave_rows(w, n_heads):
    """rotate-half -> adjacent pairs: row h*hs + 2i + j <- row h*hs + j*hs/2 + i"""
    hs = w.shape[0] // n_heads
    idx = np.array([h * hs + j * (hs // 2) + i for h in range(n_heads) for i in range(hs // 2) for j in range(2)])
    return w[idx]


def llama3_factors(rp, hs):
    """per-frequency divisors of Llama 3 scaling, as llama.cpp stores them in rope_freqs"""
    inv = 1.0 / (rp["rope_theta"] ** (np.arange(0, hs, 2) / hs))
    lo_wl = rp["original_max_position_embeddings"] / rp["low_freq_factor"]
    hi_wl = rp["original_max_position_embeddings"] / rp["high_freq_factor"]
    out = []
    for f in inv:
        wl = 2 * math.pi / f
        if wl < hi_wl:
            out.append(1.0)
        elif wl > lo_wl:
            out.append(rp["factor"])
        else:
            s = (rp["original_max_position_embeddings"] / wl - rp["low_freq_factor"]) / (rp["high_freq_factor"] - rp["low_freq_factor"])
            out.append(1.0 / ((1 - s) / rp["factor"] + s))
    return np.array(out, dtype=np.float32)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("src")
    p.add_argument("out")
    p.add_argument("--type", default="f32", choices=sorted(GGML))
    p.add_argument("--dequantized")
    a = p.parse_args()
    cfg = json.load(open(os.path.join(a.src, "config.json")))
    w = read_safetensors(os.path.join(a.src, "model.safetensors"))
    mt = cfg["model_type"]
    arch = "llama" if mt in ("llama", "mistral") else mt
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hs = cfg.get("head_dim") or cfg["hidden_size"] // nh
    rp = cfg.get("rope_parameters") or {"rope_type": "default", "rope_theta": cfg.get("rope_theta", 10000.0)}
    kvs = [("general.architecture", arch), ("general.name", "mpillama test " + mt),
           (arch + ".context_length", cfg["max_position_embeddings"]),
           (arch + ".embedding_length", cfg["hidden_size"]),
           (arch + ".feed_forward_length", cfg["intermediate_size"]),
           (arch + ".block_count", cfg["num_hidden_layers"]),
           (arch + ".attention.head_count", nh), (arch + ".attention.head_count_kv", nkv),
           (arch + ".attention.key_length", hs), (arch + ".attention.value_length", hs),
           (arch + ".rope.dimension_count", hs),
           (arch + ".attention.layer_norm_rms_epsilon", float(cfg["rms_norm_eps"])),
           (arch + ".rope.freq_base", float(rp["rope_theta"])),
           ("tokenizer.ggml.bos_token_id", cfg["bos_token_id"]), ("tokenizer.ggml.eos_token_id", cfg["eos_token_id"])]
    if cfg.get("sliding_window"):
        kvs.append((arch + ".attention.sliding_window", cfg["sliding_window"]))
    names = {"input_layernorm.weight": "attn_norm.weight", "self_attn.q_proj.weight": "attn_q.weight",
             "self_attn.k_proj.weight": "attn_k.weight", "self_attn.v_proj.weight": "attn_v.weight",
             "self_attn.o_proj.weight": "attn_output.weight", "self_attn.q_proj.bias": "attn_q.bias",
             "self_attn.k_proj.bias": "attn_k.bias", "self_attn.v_proj.bias": "attn_v.bias",
             "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
             "post_attention_layernorm.weight": "ffn_norm.weight", "mlp.gate_proj.weight": "ffn_gate.weight",
             "mlp.up_proj.weight": "ffn_up.weight", "mlp.down_proj.weight": "ffn_down.weight"}
    tensors, deq = [], {}
    if rp.get("rope_type") == "llama3":
        f = llama3_factors(rp, hs)
        tensors.append(("rope_freqs.weight", (hs // 2,), 0, f.astype("<f4").tobytes()))
    for hf, arr in w.items():
        if hf == "model.embed_tokens.weight":
            name = "token_embd.weight"
        elif hf == "model.norm.weight":
            name = "output_norm.weight"
        elif hf == "lm_head.weight":
            name = "output.weight"
        else:
            parts = hf.split(".")
            name = "blk.%s.%s" % (parts[2], names[".".join(parts[3:])])
        x = arr
        if arch == "llama" and (".attn_q." in name or ".attn_k." in name):
            x = interleave_rows(arr, nh if ".attn_q." in name else nkv)
        kind = a.type if x.ndim == 2 and x.shape[1] % GGML[a.type][1] == 0 else "f32"
        ty, raw, vals = encode(x, kind)
        tensors.append((name, x.shape, ty, raw))
        vals = vals.reshape(x.shape)
        if arch == "llama" and (".attn_q." in name or ".attn_k." in name):  # back to HF's order
            n = nh if ".attn_q." in name else nkv
            inv = np.argsort(np.array([h * hs + j * (hs // 2) + i for h in range(n) for i in range(hs // 2) for j in range(2)]))
            vals = vals[inv]
        deq[hf] = vals
    write_gguf(a.out, kvs, tensors)
    if a.dequantized:
        os.makedirs(a.dequantized, exist_ok=True)
        shutil.copy(os.path.join(a.src, "config.json"), a.dequantized)
        write_safetensors(os.path.join(a.dequantized, "model.safetensors"), deq)
    return 0


if __name__ == "__main__":
    sys.exit(main())
