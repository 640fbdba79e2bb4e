#!/usr/bin/env python3
"""Side by side with llama.cpp: the same random weights timed by `mpillama bench` and by
llama.cpp's own benchmarks, in alternating rounds, on this machine.

  jobs/bench_llamacpp.py --llama-cpp DIR [--shape llama-1.1b] [--dtypes f32,bf16,q8] [--rounds 3]
                         [--threads 2] [--work DIR] [--time S]

DIR is a llama.cpp checkout built outside this repository (never vendored here): its
build/bin/llama-batched-bench and llama-bench, and its gguf-py to write GGUF files. For each type
the synthetic model (`mpillama synth --shape S --dtype T`, made once in --work) is written to GGUF
as stored: f32 as F32, bf16 as BF16 (the same bits), q8 as Q8_0 (the same int8 values; the
per-block scale rounded from f32 to f16, as Q8_0 stores it). The vocabulary is a placeholder
(no text is tokenised: both sides time token ids).

Per round and type: ours (`mpillama bench --decode 1,32 --prefill 128`), then llama.cpp's
(`llama-batched-bench -npp 128 -ntg N -npl 1,32 -pps`: S_TG at 1 and 32 sequences, decoding at
positions 128 on, like ours; `llama-bench -p 128 -n 0`: prefill), both with --threads threads.
Prints tok/s, the median of the rounds (their range in brackets), and ours / llama.cpp. Llama
models only (no biases, q/k norms or sliding window; head size dim / heads); RoPE scaling is not
written (it costs the same). Run it with Debian's /usr/bin/python3 (python3-numpy, python3-h5py,
and for gguf-py python3-yaml and python3-sentencepiece). Prints numbers; asserts nothing."""
import argparse
import csv
import io
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("--llama-cpp", required=True, help="llama.cpp checkout with build/bin and gguf-py")
ap.add_argument("--mpillama", default=os.path.join(ROOT, "build", "mpillama"))
ap.add_argument("--shape", default="llama-1.1b")
ap.add_argument("--dtypes", default="f32,bf16,q8")
ap.add_argument("--rounds", type=int, default=3)
ap.add_argument("--threads", type=int, default=2)
ap.add_argument("--time", default="2", help="mpillama bench --time (seconds a measurement)")
ap.add_argument("--ntg", type=int, default=32, help="tokens decoded by llama-batched-bench")
ap.add_argument("--work", default=os.environ.get("WORK", "/tmp/mpillama-bench"))
a = ap.parse_args()

BIN = os.path.join(a.llama_cpp, "build", "bin")
for tool in ("llama-batched-bench", "llama-bench"):
    if not os.access(os.path.join(BIN, tool), os.X_OK):
        sys.exit(f"bench_llamacpp: no {tool} in '{BIN}' (build llama.cpp there first)")
if not os.path.isdir(os.path.join(a.llama_cpp, "gguf-py")):
    sys.exit(f"bench_llamacpp: no gguf-py in '{a.llama_cpp}'")
sys.path.insert(0, os.path.join(a.llama_cpp, "gguf-py"))
try:
    import gguf  # noqa: E402
    import h5py  # noqa: E402
    import numpy as np  # noqa: E402
except ImportError as e:
    sys.exit(f"bench_llamacpp: {e} (Debian: python3-numpy python3-h5py python3-yaml python3-sentencepiece; "
             "run with /usr/bin/python3)")

os.makedirs(a.work, exist_ok=True)


def attr(f, k):
    return np.asarray(f.attrs[k]).ravel()[0]


def write_gguf(src, dst):
    """src (an mpillama HDF5 file) as GGUF at dst, tensor by tensor, each in its stored type"""
    f = h5py.File(src, "r")
    dim, hid, nl, nh, nkv, hs, V = (int(attr(f, k)) for k in ("dim", "hidden_dim", "n_layers", "n_heads",
                                                              "n_kv_heads", "head_size", "vocab_size"))
    unsupported = [k for k in ("attn_qkv_bias", "attn_qk_norm", "sliding_window") if k in f.attrs and attr(f, k)]
    if hs * nh != dim:
        unsupported.append(f"head_size {hs} != dim / n_heads")
    if unsupported:
        sys.exit(f"bench_llamacpp: '{src}' has {', '.join(unsupported)}: this script writes plain Llama GGUF only")
    if V < 259:
        sys.exit(f"bench_llamacpp: '{src}' has a vocabulary of {V}; the placeholder needs 259 or more")
    w = gguf.GGUFWriter(dst, "llama")
    w.add_name("mpillama-synth")
    w.add_context_length(min(int(attr(f, "max_seq_len")), 8192))
    w.add_embedding_length(dim)
    w.add_block_count(nl)
    w.add_feed_forward_length(hid)
    w.add_head_count(nh)
    w.add_head_count_kv(nkv)
    w.add_rope_dimension_count(hs)
    w.add_layer_norm_rms_eps(float(attr(f, "norm_eps")))
    w.add_rope_freq_base(float(attr(f, "rope_theta")))
    # placeholder vocabulary: unknown, BOS, EOS, the 256 byte pieces, then plain pieces
    toks = [b"<unk>", b"<s>", b"</s>"] + [b"<0x%02X>" % k for k in range(256)]
    types = [2, 3, 3] + [6] * 256
    toks += [("\u2581t%d" % k).encode() for k in range(len(toks), V)]
    types += [1] * (V - len(types))
    w.add_tokenizer_model("llama")
    w.add_token_list(toks)
    w.add_token_scores([0.0] * 3 + [-1000.0] * 256 + [-float(k) for k in range(V - 259)])
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    names = {"attention_norm": "attn_norm", "wq": "attn_q", "wk": "attn_k", "wv": "attn_v",
             "wo": "attn_output", "ffn_norm": "ffn_norm", "w1": "ffn_gate", "w3": "ffn_up", "w2": "ffn_down"}
    order = [("token_embd.weight", "tok_embeddings")]
    order += [(f"blk.{L}.{v}.weight", f"layers/{L}/{k}") for L in range(nl) for k, v in names.items()]
    order.append(("output_norm.weight", "norm"))
    if "output" in f:
        order.append(("output.weight", "output"))

    def tensor(path):  # (array, raw GGML type or None)
        d = f[path]
        if d.dtype == np.int8:  # q8: int8 values, an f32 scale a block of 32 -> Q8_0 blocks (f16 d, 32 qs)
            q = np.asarray(d)
            s = np.asarray(f[path + ".scale"], dtype=np.float32).astype(np.float16)
            rows, nb = s.shape
            blocks = np.concatenate([s.view(np.uint8).reshape(rows, nb, 2), q.view(np.uint8).reshape(rows, nb, 32)],
                                    axis=2)
            return blocks.reshape(rows, nb * 34), gguf.GGMLQuantizationType.Q8_0
        if d.dtype == np.uint16:  # bf16 bits
            return np.asarray(d), gguf.GGMLQuantizationType.BF16
        return np.asarray(d, dtype=np.float32), None

    for name, path in order:
        d = f[path]
        if d.dtype == np.int8:
            shape, dt, raw = (d.shape[0], d.shape[1] // 32 * 34), np.uint8, gguf.GGMLQuantizationType.Q8_0
        elif d.dtype == np.uint16:
            shape, dt, raw = d.shape, np.uint16, gguf.GGMLQuantizationType.BF16
        else:
            shape, dt, raw = d.shape, np.float32, None
        w.add_tensor_info(name, shape, np.dtype(dt), int(np.prod(shape)) * np.dtype(dt).itemsize, raw_dtype=raw)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for name, path in order:
        w.write_tensor_data(np.ascontiguousarray(tensor(path)[0]))
    w.close()


def run(cmd, env=None):
    """the command's standard output (its errors end the script, with the tail of what it said)"""
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        sys.exit(f"bench_llamacpp: {' '.join(cmd)} failed ({p.returncode}): {(p.stderr or p.stdout).strip()[-300:]}")
    return p.stdout


def ours(model):
    out = run([a.mpillama, "bench", "--model", model, "--decode", "1,32", "--prefill", "128", "--time", a.time],
              env=dict(os.environ, OPENBLAS_NUM_THREADS=str(a.threads)))  # bench's threads a rank
    got = {}
    for line in out.splitlines():
        m = re.match(r"(decode B=1|decode B=32|prefill 128)\s+\d+\s*\|\s*[\d.]+\s+([\d.]+)\s*\|", line)
        if m:  # work tokens | ms/step tok/s | ...
            got[m.group(1)] = float(m.group(2))
        if line.startswith("decode_bw_fraction="):
            got["last"] = line.strip()
    return [got.get("decode B=1"), got.get("decode B=32"), got.get("prefill 128")], got.get("last", "")


def theirs(g):
    ctx = max(4096, 128 + 32 * a.ntg)  # -pps: the prompt once, then ntg tokens for each of 32 sequences
    out = run([os.path.join(BIN, "llama-batched-bench"), "-m", g, "-t", str(a.threads), "-c", str(ctx), "-b", "2048",
               "-ub", "512", "-npp", "128", "-ntg", str(a.ntg), "-npl", "1,32", "-pps"])
    tg = {}
    for line in out.splitlines():  # | PP | TG | B | N_KV | T_PP s | S_PP t/s | T_TG s | S_TG t/s | ...
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 8 and cells[2].isdigit():
            tg[int(cells[2])] = float(cells[7])
    out = run([os.path.join(BIN, "llama-bench"), "-m", g, "-t", str(a.threads), "-p", "128", "-n", "0", "-r", "2",
               "-o", "csv"])
    rows = list(csv.DictReader(io.StringIO(out[out.index("build_commit"):]))) if "build_commit" in out else []
    pf = float(rows[-1]["avg_ts"]) if rows else None
    return [tg.get(1), tg.get(32), pf]


models = {}
name = os.path.basename(os.path.normpath(a.shape))  # a shape's name, or a config.json's (or its folder's)
if name == "config.json":
    name = os.path.basename(os.path.dirname(os.path.abspath(a.shape))) or "config"
for t in a.dtypes.split(","):
    h5 = os.path.join(a.work, f"{name}-{t}.h5")
    g = os.path.join(a.work, f"{name}-{t}.gguf")
    if not os.path.exists(h5):
        print(f"# synth {a.shape} {t} -> {h5}", flush=True)
        run([a.mpillama, "synth", "--shape", a.shape, "--dtype", t, "-o", h5])
    if not os.path.exists(g) or os.path.getmtime(g) < os.path.getmtime(h5):
        print(f"# GGUF {g}", flush=True)
        write_gguf(h5, g + ".part")
        os.replace(g + ".part", g)
    models[t] = (h5, g)

res = {t: ([], [], []) for t in models}  # per type: ours' rows, llama.cpp's rows, last lines
for r in range(a.rounds):
    for t, (h5, g) in models.items():
        o, last = ours(h5)
        l = theirs(g)
        res[t][0].append(o)
        res[t][1].append(l)
        res[t][2].append(last)
        print(f"# round {r + 1} {t}: ours {o} [{last}] | llama.cpp {l}", flush=True)


def col(rows, k):
    v = [row[k] for row in rows if row[k] is not None]
    if not v:
        return None, "-"
    m = statistics.median(v)
    return m, f"{m:.1f}" + (f" ({min(v):.1f}-{max(v):.1f})" if len(v) > 1 else "")


print(f"\n{a.shape}, {a.threads} threads, {a.rounds} rounds: tok/s, decode 1 / decode 32 sequences / prefill 128")
print("| type | mpillama, 1 rank | llama.cpp | ours / llama.cpp |")
print("|---|---|---|---|")
for t in models:
    o = [col(res[t][0], k) for k in range(3)]
    l = [col(res[t][1], k) for k in range(3)]
    ratio = " / ".join(f"{x[0] / y[0]:.2f}" if x[0] and y[0] else "-" for x, y in zip(o, l))
    print(f"| {t} | {' / '.join(x[1] for x in o)} | {' / '.join(y[1] for y in l)} | {ratio} |")


def fraction(last, k):
    m = re.search(k + r"=(-?[\d.]+)", last)
    return float(m.group(1)) if m else None


print("\nmpillama bench's last lines, medians of the rounds (fractions of the limits it measured):")
for t in models:
    parts = []
    for k in ("decode_bw_fraction", "gemm_fraction", "matmul_fraction"):
        v = [x for x in (fraction(last, k) for last in res[t][2]) if x is not None]
        parts.append(f"{k}={statistics.median(v):.3f}" if v else f"{k}=-")
    print(f"  {t}: " + " ".join(parts))
