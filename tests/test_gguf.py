"""GGUF import.

1. stories260K as llama.cpp wrote it (../shared/models/gguf/stories260K-{f32,f16,bf16,q8_0}.gguf):
   converted with its tokenizer and scored on 1x1, 1x2 and 2x1. f32 must equal the llama2.c
   conversion of the same weights (log-probs within 1e-5, so within 1e-4 of llama2.c's
   reference) and reproduce its greedy ids from the prompt text within the file's context of
   128; every file stays within a documented bound of llama.cpp's own log-probs
   (../shared/reference/stories260K/llama_cpp_gguf.jsonl) and of llama2.c's.
2. Every tensor type (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q5_K, Q6_K): a random Llama-shaped
   checkpoint written as GGUF by tests/gguf_write.py, converted, must score exactly as the
   safetensors checkpoint of the values the GGUF holds (dequantised by numpy in gguf_write.py);
   the drift from the unquantised weights is printed.
3. Malformed files (truncated, huge counts, bad types, bad versions, ...) fail with one line
   naming the file and an exit code below 128."""
import json
import os
import struct
import subprocess
import sys

import numpy as np

import common as c

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gguf_write as gw  # noqa: E402

args = c.parse_args()
W = args.work
passed = 0
GRIDS = [(1, 1), (1, 2), (2, 1)]


def score(model, prompts_path, grid=(1, 1), tag=""):
    """log-probs by custom_id; an f32 KV cache, as llama.cpp's reference used"""
    out = os.path.join(W, "score-%s-%dx%d.jsonl" % (tag or os.path.basename(model), grid[0], grid[1]))
    c.mpirun(args, grid[0] * grid[1], ["score", "--model", model, "--prompts", prompts_path, "--output", out,
                                       "--pp", str(grid[0]), "--tp", str(grid[1]), "--kv-dtype", "f32"])
    return {r["custom_id"]: r["logprobs"] for r in c.read_jsonl(out)}


def max_diff(a, b):
    return max(abs(x - y) for k in a for x, y in zip(a[k], b[k]))


# ---------------------------------------------------------------- 1. stories260K from llama.cpp
shared_ok = all(os.path.exists(os.path.join(args.shared, p)) for p in
                ["models/gguf/stories260K-f32.gguf", "reference/stories260K/llama_cpp_gguf.jsonl",
                 "reference/stories260K/greedy.jsonl", "models/stories260K.bin", "models/tok512.bin"])
if not shared_ok:
    print("SKIP part 1: ../shared/models/gguf or the stories260K references are absent")
else:
    ref = c.read_jsonl(os.path.join(args.shared, "reference/stories260K/greedy.jsonl"))
    lcpp = c.read_jsonl(os.path.join(args.shared, "reference/stories260K/llama_cpp_gguf.jsonl"))
    prompts = os.path.join(W, "stories_prompts.jsonl")
    c.write_jsonl(prompts, [{"custom_id": str(i), "prompt_ids": r["prompt_ids"]} for i, r in enumerate(ref)
                            if len(r["prompt_ids"]) > 1])
    ref_lp = {str(i): r["prompt_logprobs"] for i, r in enumerate(ref) if len(r["prompt_ids"]) > 1}
    l2c = os.path.join(W, "stories-llama2c.h5")
    c.run([args.mpillama, "convert", os.path.join(args.shared, "models/stories260K.bin"), "-o", l2c,
           "--tokenizer", os.path.join(args.shared, "models/tok512.bin")])
    l2c_lp = score(l2c, prompts)
    # bounds: llama.cpp's own drift from llama2.c (../shared/README.md) plus ours
    # (bf16 stays bf16, q8_0 becomes q8 with int8 activations like llama.cpp's: llama.cpp's own drift
    # from llama2.c is 6.7e-2 and 1.1e-1 there)
    bounds = {"f32": (1e-4, 5e-3), "f16": (1e-2, 1e-2), "bf16": (1e-1, 5e-2), "q8_0": (1.5e-1, 1.5e-1)}
    for q, (b_ref, b_lcpp) in bounds.items():
        src = os.path.join(args.shared, "models/gguf/stories260K-%s.gguf" % q)
        model = os.path.join(W, "stories-%s.h5" % q)
        r = c.run([args.mpillama, "convert", src, "-o", model])
        info = c.run([args.mpillama, "info", model, "--config"]).stdout
        for want in ["architecture: llama", "max_seq_len: 128", "n_kv_heads: 4", "tokenizer: sentencepiece-bpe"]:
            if want not in info:
                c.fail("%s: info lacks %r:\n%s" % (q, want, info))
        lc = {str(i): next(x["logprobs"] for x in lcpp if x["file"] == "stories260K-%s.gguf" % q and
                           x["prompt_ids"] == rr["prompt_ids"]) for i, rr in enumerate(ref) if len(rr["prompt_ids"]) > 1}
        for grid in GRIDS:
            lp = score(model, prompts, grid, "stories-%s" % q)
            d_ref, d_lc = max_diff(lp, ref_lp), max_diff(lp, lc)
            if d_ref > b_ref or d_lc > b_lcpp:
                c.fail("stories260K-%s.gguf %dx%d: max |dlogprob| %.3g vs llama2.c (bound %g), %.3g vs llama.cpp "
                       "(bound %g)" % (q, grid[0], grid[1], d_ref, b_ref, d_lc, b_lcpp))
            if q == "f32" and max_diff(lp, l2c_lp) > 1e-5:
                c.fail("stories260K-f32.gguf %dx%d: differs from the llama2.c conversion by %.3g" % (
                    grid[0], grid[1], max_diff(lp, l2c_lp)))
        print("stories260K-%-4s GGUF: max |dlogprob| %.2e vs llama2.c, %.2e vs llama.cpp (bounds %g, %g) on %s" % (
            q, d_ref, d_lc, b_ref, b_lcpp, " ".join("%dx%d" % g for g in GRIDS)), flush=True)
        passed += 1
    # greedy from the prompt text, through the GGUF's own tokenizer
    gen_in = os.path.join(W, "stories_gen.jsonl")
    c.write_jsonl(gen_in, [{"custom_id": str(i), "prompt": r["prompt"]} for i, r in enumerate(ref)])
    for grid in GRIDS:
        go = os.path.join(W, "gen-%dx%d.jsonl" % grid)
        c.mpirun(args, grid[0] * grid[1], ["generate", "--model", os.path.join(W, "stories-f32.h5"), "--prompts",
                                           gen_in, "--output", go, "--temperature", "0", "--max-tokens", "200",
                                           "--pp", str(grid[0]), "--tp", str(grid[1])])
        gens = {g["custom_id"]: g for g in c.read_jsonl(go)}
        for i, r in enumerate(ref):
            g = gens[str(i)]
            if g.get("prompt_tokens") != len(r["prompt_ids"]):
                c.fail("f32 %dx%d prompt %d: encoded to %s tokens, llama2.c's reference %d" % (
                    grid[0], grid[1], i, g.get("prompt_tokens"), len(r["prompt_ids"])))
            room = min(len(r["greedy_ids"]), 128 - len(r["prompt_ids"]))  # the GGUF's context is 128
            if g["completion_ids"][:room] != r["greedy_ids"][:room]:
                c.fail("f32 %dx%d prompt %d: greedy ids differ from llama2.c's within the context" % (grid[0], grid[1], i))
    print("stories260K-f32 GGUF: prompt text encoded as llama2.c's reference, greedy ids equal within the "
          "128-token context on %s" % " ".join("%dx%d" % g for g in GRIDS))
    passed += 1

# ---------------------------------------------------------------- 2. every tensor type
rng = np.random.default_rng(7)
D, H, L, V, NH, NKV = 256, 512, 2, 256, 4, 2
cfg = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "hidden_size": D, "intermediate_size": H,
       "num_hidden_layers": L, "num_attention_heads": NH, "num_key_value_heads": NKV, "vocab_size": V,
       "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
       "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2}
hs = D // NH
weights = {"model.embed_tokens.weight": rng.standard_normal((V, D)) * 0.5,
           "model.norm.weight": 1 + 0.1 * rng.standard_normal(D), "lm_head.weight": rng.standard_normal((V, D)) / 16}
for l in range(L):
    pre = "model.layers.%d." % l
    for name, shape in [("self_attn.q_proj.weight", (NH * hs, D)), ("self_attn.k_proj.weight", (NKV * hs, D)),
                        ("self_attn.v_proj.weight", (NKV * hs, D)), ("self_attn.o_proj.weight", (D, NH * hs)),
                        ("mlp.gate_proj.weight", (H, D)), ("mlp.up_proj.weight", (H, D)), ("mlp.down_proj.weight", (D, H))]:
        weights[pre + name] = rng.standard_normal(shape) / np.sqrt(shape[1])
    weights[pre + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(D)
    weights[pre + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(D)
base = os.path.join(W, "rand")
os.makedirs(base)
json.dump(cfg, open(os.path.join(base, "config.json"), "w"))
gw.write_safetensors(os.path.join(base, "model.safetensors"), weights)
rprompts = os.path.join(W, "rand_prompts.jsonl")
c.write_jsonl(rprompts, [{"custom_id": str(i), "prompt_ids": [1] + [int(t) for t in rng.integers(3, V, n)]}
                         for i, n in enumerate([9, 30])])
c.run([args.mpillama, "convert", base, "-o", base + ".h5"])
full = score(base + ".h5", rprompts, tag="rand")
for q in ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k", "q5_k", "q6_k"]:
    g = os.path.join(W, "rand-%s.gguf" % q)
    deq = os.path.join(W, "rand-%s-deq" % q)
    c.run([sys.executable, os.path.join(HERE, "gguf_write.py"), base, g, "--type", q, "--dequantized", deq])
    # by default the nearest stored type: bf16 stays bf16, q8_0 becomes q8, the rest f32
    r = c.run([args.mpillama, "convert", g, "-o", g + ".default.h5"])
    want = {"bf16": "bf16", "q8_0": "q8"}.get(q, "f32")
    if "stored as %s" % want not in r.stdout:
        c.fail("%s GGUF: expected 'stored as %s' by default: %s" % (q, want, r.stdout))
    # exactness in f32: the GGUF's values against numpy's dequantisation of the same bytes
    c.run([args.mpillama, "convert", g, "-o", g + ".h5", "--dtype", "f32"])
    c.run([args.mpillama, "convert", deq, "-o", deq + ".h5", "--dtype", "f32"])
    a = score(g + ".h5", rprompts, (1, 2), "rand-%s" % q)
    b = score(deq + ".h5", rprompts, (1, 2), "rand-%s-deq" % q)
    if max_diff(a, b) > 1e-5:
        c.fail("%s: the GGUF converts to other values than numpy dequantised (max |dlogprob| %.3g)" % (q, max_diff(a, b)))
    dflt = score(g + ".default.h5", rprompts, (1, 2), "rand-%s-default" % q)
    print("%-5s GGUF == numpy-dequantised safetensors (max |dlogprob| %.1e); drift from the f32 weights %.2e "
          "(stored as %s by default: %.2e)" % (q, max_diff(a, b), max_diff(a, full), want, max_diff(dflt, full)), flush=True)
    passed += 1

# --dtype is honoured for a quantised source
r = c.run([args.mpillama, "convert", os.path.join(W, "rand-q4_k.gguf"), "-o", os.path.join(W, "rand-q4_k-bf16.h5"),
           "--dtype", "bf16"])
if "stored as bf16" not in r.stdout:
    c.fail("--dtype bf16 on a Q4_K GGUF: %s" % r.stdout)
print("--dtype bf16 on a Q4_K GGUF: stored as bf16")
passed += 1

# ---------------------------------------------------------------- 3. malformed files
good_kvs = [("general.architecture", "llama"), ("llama.context_length", 64), ("llama.embedding_length", 32),
            ("llama.feed_forward_length", 64), ("llama.block_count", 1), ("llama.attention.head_count", 2),
            ("llama.attention.layer_norm_rms_epsilon", 1e-5),
            ("tokenizer.ggml.model", "llama"), ("tokenizer.ggml.tokens", ["<unk>", "<s>", "</s>", "a"] + ["t%d" % i for i in range(60)])]
tiny = [(n, s, 0, np.zeros(s, dtype="<f4").tobytes()) for n, s in
        [("token_embd.weight", (64, 32)), ("blk.0.attn_norm.weight", (32,)), ("blk.0.attn_q.weight", (32, 32)),
         ("blk.0.attn_k.weight", (32, 32)), ("blk.0.attn_v.weight", (32, 32)), ("blk.0.attn_output.weight", (32, 32)),
         ("blk.0.ffn_norm.weight", (32,)), ("blk.0.ffn_gate.weight", (64, 32)), ("blk.0.ffn_down.weight", (32, 64)),
         ("blk.0.ffn_up.weight", (64, 32)), ("output_norm.weight", (32,))]]
good = os.path.join(W, "good.gguf")
gw.write_gguf(good, good_kvs, tiny)
c.run([args.mpillama, "convert", good, "-o", good + ".h5"])
raw = open(good, "rb").read()
kv0 = 24  # the first key/value starts after magic, version and the two counts
first_kv_type = kv0 + 8 + len("general.architecture")
after_kvs = 24 + sum(len(gw.kv_bytes(k, v)) for k, v in good_kvs)
first_ndims = after_kvs + 8 + len("token_embd.weight")
first_type = first_ndims + 4 + 16
tok_count = 24 + sum(len(gw.kv_bytes(k, v)) for k, v in good_kvs[:-1]) + 8 + len("tokenizer.ggml.tokens") + 4 + 4


def patched(offset, fmt, value):
    b = bytearray(raw)
    struct.pack_into(fmt, b, offset, value)
    return bytes(b)


cases = [
    ("truncated in the header", raw[:20], "too short"),
    ("truncated in the keys", raw[:60], "truncated or corrupt"),
    ("truncated in a key", b"GGUF" + struct.pack("<IQQQ", 3, 0, 1, 100) + b"general." * 3, "ends inside"),
    ("truncated in the tensor infos", raw[:after_kvs + 30], "ends inside"),
    ("truncated in the data", raw[:-100], "past the end"),
    ("version 1", patched(4, "<I", 1), "version 1"),
    ("version 4", patched(4, "<I", 4), "version 4"),
    ("big-endian", patched(4, ">I", 3), "big-endian"),
    ("2^62 tensors", patched(8, "<Q", 1 << 62), "more than a file"),
    ("2^62 keys", patched(16, "<Q", 1 << 62), "more than a file"),
    ("key length 2^63", patched(kv0, "<Q", 1 << 63), "ends inside"),
    ("value type 99", patched(first_kv_type, "<I", 99), "unknown value type 99"),
    ("2^60 strings in an array", patched(tok_count, "<Q", 1 << 60), "tokenizer.ggml.tokens"),
    ("5 dimensions", patched(first_ndims, "<I", 5), "dimensions"),
    ("tensor type IQ2_XXS", patched(first_type, "<I", 16), "IQ2_XXS"),
    ("tensor type 1000", patched(first_type, "<I", 1000), "not supported"),
    ("dimension 0", patched(first_ndims + 4, "<Q", 0), "bad dimension"),
    ("dimension 2^62", patched(first_ndims + 4, "<Q", 1 << 62), "bad dimension"),
    ("offset past the end", patched(first_type + 4, "<Q", 1 << 40), "past the end"),
    ("offset not aligned", patched(first_type + 4, "<Q", 3), "alignment"),
]
extra = [
    ("alignment 3", good_kvs + [("general.alignment", 3)], tiny, "power of two"),
    ("a key twice", good_kvs + [("llama.block_count", 1)], tiny, "twice"),
    ("a tensor twice", good_kvs, tiny + [tiny[1]], "twice"),
    ("architecture gemma", [("general.architecture", "gemma")] + good_kvs[1:], tiny, "gemma"),
    ("no context length", [kv for kv in good_kvs if kv[0] != "llama.context_length"], tiny, "context_length"),
    ("partial rotary", good_kvs + [("llama.rope.dimension_count", 8)], tiny, "partial rotary"),
    ("yarn scaling", good_kvs + [("llama.rope.scaling.type", "yarn")], tiny, "yarn"),
    ("experts", good_kvs + [("llama.expert_count", 8)], tiny, "expert_count"),
    ("a missing tensor", good_kvs, tiny[:-1], "output_norm.weight"),
    ("an unknown tensor", good_kvs, tiny + [("blk.0.attn_sinks", (2,), 0, b"\0" * 8)], "blk.0.attn_sinks"),
    ("a wrong shape", good_kvs, [tiny[0]] + [("blk.0.attn_norm.weight", (16,), 0, b"\0" * 64)] + tiny[2:], "shape"),
    ("a tokenizer model t5", good_kvs[:-2] + [("tokenizer.ggml.model", "t5")] + good_kvs[-1:], tiny, None),
]
# ---------------------------------------------------------------- 2b. a byte-level (gpt2) tokenizer
def byte_char(b):
    """GPT-2's byte-level alphabet"""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    return chr(b) if b in keep else chr(256 + sorted(set(range(256)) - set(keep)).index(b))


toks = [byte_char(b) for b in range(256)] + ["\u0120t", "he", "\u0120the", "<|endoftext|>"]
ttypes = [1] * 259 + [3]
bpe_kvs = [("general.architecture", "llama"), ("llama.context_length", 64), ("llama.embedding_length", 32),
           ("llama.feed_forward_length", 64), ("llama.block_count", 1), ("llama.attention.head_count", 2),
           ("llama.attention.layer_norm_rms_epsilon", 1e-5), ("tokenizer.ggml.model", "gpt2"),
           ("tokenizer.ggml.pre", "qwen2"), ("tokenizer.ggml.tokens", toks), ("tokenizer.ggml.token_type", ttypes),
           ("tokenizer.ggml.merges", ["\u0120 t", "h e", "\u0120t he"]), ("tokenizer.ggml.eos_token_id", 259),
           ("tokenizer.ggml.bos_token_id", 259), ("tokenizer.ggml.add_bos_token", False),
           ("tokenizer.chat_template", "{% for m in messages %}<|im_start|>{{ m.role }}<|im_end|>{% endfor %}")]
bpe_tensors = [("token_embd.weight", (260, 32), 0, np.zeros((260, 32), dtype="<f4").tobytes())] + tiny[1:]
bpe = os.path.join(W, "bpe.gguf")
gw.write_gguf(bpe, bpe_kvs, bpe_tensors)
r = c.run([args.mpillama, "convert", bpe, "-o", bpe + ".h5"])
if "byte-bpe, 260 pieces, bos -1, eos 259, chat template chatml" not in r.stdout:
    c.fail("gpt2 tokenizer: %s" % r.stdout)
tin = os.path.join(W, "bpe_in.jsonl")
c.write_jsonl(tin, [{"text": " the cat"}, {"text": "the<|endoftext|>"}])
r = subprocess.run([args.mpillama, "tokenize", "--model", bpe + ".h5", "--allow-special"], stdin=open(tin),
                   capture_output=True, text=True, env=c.mpi_env())
got = [json.loads(l)["ids"] for l in r.stdout.splitlines()]
# " the" is Ġ t h e -> Ġt, he -> Ġthe (merge ranks 0, 1, 2); " cat" has no merge; "the" has he only
want = [[258, 32, 99, 97, 116], [116, 257, 259]]
if got != want:
    c.fail("gpt2 tokenizer from GGUF: %s, expected %s (%s)" % (got, want, r.stderr))
print("gpt2 GGUF tokenizer: merges by rank, byte-level pieces, a control token, no BOS, chatml template: %s" % got)
passed += 1

for name, kvs, ts, want in extra:
    p = os.path.join(W, "bad-%s.gguf" % name.replace(" ", "_"))
    gw.write_gguf(p, kvs, ts)
    if want is None:  # converts, with a warning naming what it left out
        r = c.run([args.mpillama, "convert", p, "-o", p + ".h5"])
        if "no tokenizer stored" not in r.stderr or "t5" not in r.stderr:
            c.fail("%s: expected a warning that no tokenizer is stored, got %r" % (name, r.stderr))
        print("warned  %-30s %s" % (name, r.stderr.strip().split(": ", 2)[-1][:110]))
        passed += 1
        continue
    cases.append((name, open(p, "rb").read(), want))
for name, data, want in cases:
    p = os.path.join(W, "bad-%s.gguf" % name.replace(" ", "_").replace("^", ""))
    with open(p, "wb") as f:
        f.write(data)
    r = c.run([args.mpillama, "convert", p, "-o", p + ".h5"], check=False)
    lines = r.stderr.strip().splitlines()
    if r.returncode == 0 or r.returncode >= 128 or len(lines) != 1 or p not in lines[0] or want not in lines[0]:
        c.fail("%s: expected exit 1..127 and one line naming the file and %r, got exit %d: %r" % (
            name, want, r.returncode, r.stderr[-500:]))
    print("refused %-30s %s" % (name, lines[0].split("': ", 1)[-1][:110]))
    passed += 1
print("%d passed, 0 failed" % passed)
