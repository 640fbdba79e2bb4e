#!/usr/bin/python3
"""make_seeds.py: writes the seed corpus of the fuzz targets (tests/fuzz/corpus/<target>/)
except mfile's, which tests/fuzz/make_mfile_seeds.sh converts with mpillama. Deterministic;
rerun it after changing a seed here, and commit the files."""
import json
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))


def put(target, name, data):
    d = os.path.join(HERE, "corpus", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())


# ---- JSONL request lines
lines = [
    {"custom_id": "a", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.7, "top_p": 0.9, "seed": 7},
    {"custom_id": 3, "prompt_ids": [1, 403, 407, 261], "stop_token_ids": [2], "ignore_eos": True},
    {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
     "stop": ["\n", "The end"], "top_k": 40, "min_p": 0.05, "repetition_penalty": 1.1},
    {"prompt": "x", "frequency_penalty": -0.5, "presence_penalty": 1.5, "stop": "."},
]
for i, l in enumerate(lines):
    put("prompts", "line%d" % i, json.dumps(l))
put("prompts", "bad_trailing", '{"prompt": "a"} {"prompt": "b"}')
put("prompts", "bad_dup", '{"prompt": "a", "prompt": "b"}')


# ---- safetensors images
def st(tensors, pad=0):
    hdr, data = {"__metadata__": {"format": "pt"}}, b""
    for name, dtype, shape in tensors:
        size = {"F32": 4, "F16": 2, "BF16": 2}[dtype]
        n = 1
        for s in shape:
            n *= s
        hdr[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + n * size]}
        data += bytes((i * 7) & 255 for i in range(n * size))
    h = json.dumps(hdr, separators=(",", ":")).encode()
    h += b" " * pad
    return struct.pack("<Q", len(h)) + h + data


put("safetensors", "two", st([("model.norm.weight", "F32", [8]), ("model.embed_tokens.weight", "BF16", [4, 8])]))
put("safetensors", "scalar", st([("a", "F16", []), ("b", "F32", [2, 1, 2])], pad=5))
put("safetensors", "empty_dim", st([("a", "F32", [0, 4]), ("b", "F16", [3])]))

# ---- config.json
base = {"model_type": "llama", "hidden_size": 64, "intermediate_size": 172, "num_hidden_layers": 5,
        "num_attention_heads": 8, "num_key_value_heads": 4, "vocab_size": 512, "max_position_embeddings": 512,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2,
        "tie_word_embeddings": True, "hidden_act": "silu"}
put("config", "tiny", json.dumps(base, indent=2))
l3 = dict(base, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
          eos_token_id=[2, 3], head_dim=16, rope_theta=500000.0)
put("config", "llama3", json.dumps(l3))
put("config", "nulls", json.dumps(dict(base, bos_token_id=None, rope_scaling=None, attention_bias=False)))

# ---- tokenizer texts (first byte: tokenizer and mode, see fuzz_tokenizer.c)
texts = ["Hello world", "  leading spaces and\ttabs\n\nnewlines", "caf\u00e9 \u4f60\u597d \U0001f999 \u2581x",
         "<s>special</s><|eot_id|><|begin_of_text|>", "1234567890 don't I'll we're", "\xff\xfe bad utf8"]
for i, t in enumerate(texts):
    for sel in (0, 1, 2):
        put("tokenizer", "text%d_%d" % (i, sel), bytes([sel | (i % 4) << 3]) + t.encode("utf-8", "surrogateescape"))
put("tokenizer", "decode", bytes([4]) + bytes(range(64)))
put("tokenizer", "decode_range", bytes([4 | 8 | 1]) + bytes(range(255, 191, -1)))

# ---- tokenizer files
def llama2c_tok(pieces):
    out = struct.pack("<i", max(len(p) for p in pieces))
    for i, p in enumerate(pieces):
        b = p.encode()
        out += struct.pack("<fi", -float(i), len(b)) + b
    return out


put("tokenizer_file", "llama2c", llama2c_tok(["<unk>", "\n<s>\n", "\n</s>\n"] + ["<0x%02X>" % b for b in range(256)]
                                             + [" ", "e", " t", "he", " the", "a", "b", "ab"]))
hf = {"model": {"type": "BPE", "byte_fallback": True, "unk_token": "<unk>",
                "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "\u2581": 3, "a": 4, "b": 5, "\u2581a": 6, "ab": 7},
                "merges": ["\u2581 a", "a b"]},
      "added_tokens": [{"id": 1, "content": "<s>", "special": True}, {"id": 2, "content": "</s>", "special": True}],
      "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "\u2581"},
                                                         {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]},
      "pre_tokenizer": None}
put("tokenizer_file", "hf_sp.json", json.dumps(hf))
bl = {"model": {"type": "BPE", "vocab": {chr(c) if 33 <= c <= 126 else "\u0100" if c == 0 else chr(0x100 + c): c
                                         for c in range(256)}, "merges": []},
      "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "use_regex": True},
      "added_tokens": [{"id": 256, "content": "<|endoftext|>", "special": True}]}
put("tokenizer_file", "hf_bytelevel.json", json.dumps(bl))

# ---- chat conversations (first byte: template and generation prompt)
convs = [[("system", "You are kind."), ("user", "Hello"), ("assistant", " Hi! "), ("user", "Bye")],
         [("user", "<|eot_id|> [INST] <<SYS>>")], [("tool", "x"), ("user", "  ")]]
for i, c in enumerate(convs):
    for sel in range(8):
        put("chat", "conv%d_%d" % (i, sel), bytes([sel]) + b"\0".join(f.encode() for m in c for f in m))
