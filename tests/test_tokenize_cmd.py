#!/usr/bin/python3
"""test_tokenize_cmd: `mpillama tokenize` and `mpillama convert` on every tokenizer source.

The reference ids (../shared/reference/tokenizers/*_encode.jsonl, computed with
llama-tokenizer-js and llama3-tokenizer-js) must come out exactly, through:
  - the tokenize command on the shared files: Llama 2 tokenizer.bin and tokenizer.model,
    Llama 3 tokenizer.model (tiktoken); --decode gives the texts back;
  - Hugging Face tokenizer.json files written here from those files the way Hugging Face's
    converters write them (byte-level from tiktoken ranks: vocab in GPT-2's byte alphabet,
    merges from every split of every token; SentencePiece-style: merges from the scores,
    byte_fallback, Prepend/Replace or Metaspace), alone and as a model directory with
    tokenizer_config.json;
  - model files converted from tiny Hugging Face Llama directories holding those tokenizers
    (vocab 128256, and 128260 for an embedding rounded up) and from the llama2.c checkpoint
    with a tokenizer.json, read back by `tokenize --model`;
and: messages rendered with the stored chat template, special tokens only with
--allow-special, lines with errors, only rank 0 writing under mpiexec -n 2, --bench's MB/s line.
"""
import base64
import json
import os
import struct
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common as c  # noqa: E402

LLAMA3_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                  r"|\s*[\r\n]+|\s+(?!\S)|\s+")
# Meta's Llama 3.1 special tokens, 128000 + i
LLAMA3_NAMED = {0: "<|begin_of_text|>", 1: "<|end_of_text|>", 4: "<|finetune_right_pad_id|>",
                6: "<|start_header_id|>", 7: "<|end_header_id|>", 8: "<|eom_id|>", 9: "<|eot_id|>",
                10: "<|python_tag|>"}
LLAMA3_CHAT_JINJA = ("{% set loop_messages = messages %}{% for message in loop_messages %}"
                     "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'"
                     "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
                     "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
                     "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}")
LLAMA2_CHAT_JINJA = ("{% if messages[0]['role'] == 'system' %}{% set system_message = '<<SYS>>\\n' + "
                     "messages[0]['content'] | trim + '\\n<</SYS>>\\n\\n' %}{% endif %}"
                     "{{ bos_token + '[INST] ' + content | trim + ' [/INST]' }}")


def llama3_specials():
    out, reserved = [], 0
    for i in range(256):
        if i in LLAMA3_NAMED:
            out.append(LLAMA3_NAMED[i])
        else:
            out.append("<|reserved_special_token_%d|>" % reserved)
            reserved += 1
    return out


def bytes_to_unicode():
    """GPT-2's byte alphabet (openai/gpt-2 encoder.py)"""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def byte_level_json(ranks, pre_tokenizer, ignore_merges, with_bos):
    """tokenizer.json as Hugging Face's tiktoken converter writes it"""
    enc = bytes_to_unicode()
    s = lambda b: "".join(enc[x] for x in b)  # noqa: E731
    vocab, merges = {}, []
    for tok, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        vocab[s(tok)] = rank
        if len(tok) == 1:
            continue
        local = [(tok[:i], tok[i:], rank) for i in range(1, len(tok))
                 if tok[:i] in ranks and tok[i:] in ranks]
        local.sort(key=lambda x: (ranks[x[0]], ranks[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: m[2])
    added = [{"id": 128000 + i, "content": name, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for i, name in enumerate(llama3_specials())]
    post = None
    if with_bos:
        post = {"type": "Sequence", "processors": [
            {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
            {"type": "TemplateProcessing",
             "single": [{"SpecialToken": {"id": "<|begin_of_text|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
             "pair": [], "special_tokens": {"<|begin_of_text|>": {"id": "<|begin_of_text|>", "ids": [128000], "tokens": ["<|begin_of_text|>"]}}}]}
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": None, "pre_tokenizer": pre_tokenizer, "post_processor": post,
            "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
            "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False,
                      "ignore_merges": ignore_merges, "vocab": vocab,
                      "merges": ["%s %s" % (s(a), s(b)) for a, b, _ in merges]}}


def read_llama2c_tokenizer(path):
    raw = open(path, "rb").read()
    pos, pieces = 4, []
    while pos < len(raw):
        score, n = struct.unpack("<fi", raw[pos:pos + 8])
        pieces.append((raw[pos + 8:pos + 8 + n].decode("utf-8"), score))
        pos += 8 + n
    out = []
    for p, sc in pieces:
        p = {"\n<s>\n": "<s>", "\n</s>\n": "</s>"}.get(p, p).replace(" ", "\u2581")
        out.append((p, sc))
    return out


def sentencepiece_json(pieces, metaspace):
    """tokenizer.json as Hugging Face's LlamaConverter writes it (SentencePieceExtractor merges)"""
    vocab = {p: i for i, (p, _) in enumerate(pieces)}
    scores = {p: sc for p, sc in pieces}
    merges = []
    for piece, score in scores.items():
        local = [(piece[:i], piece[i:], score) for i in range(1, len(piece))
                 if piece[:i] in vocab and piece[i:] in vocab]
        local.sort(key=lambda x: (vocab[x[0]], vocab[x[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: m[2], reverse=True)
    added = [{"id": vocab[t], "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for t in ("<unk>", "<s>", "</s>")]
    if metaspace:  # the newer (legacy=False) form
        normalizer = None
        pre = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": False}
    else:
        normalizer = {"type": "Sequence", "normalizers": [
            {"type": "Prepend", "prepend": "\u2581"},
            {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
        pre = None
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
            "normalizer": normalizer, "pre_tokenizer": pre,
            "post_processor": {"type": "TemplateProcessing",
                               "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                               "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
            "decoder": None,
            "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                      "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True,
                      "vocab": vocab, "merges": [[a, b] for a, b, _ in merges]}}


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, ensure_ascii=False)


def write_tiny_llama(d, vocab, bos, eos):
    """a 1-layer Hugging Face Llama directory (random weights) with this vocabulary size"""
    os.makedirs(d, exist_ok=True)
    dim, hid = 8, 16
    write_json(os.path.join(d, "config.json"), {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": dim,
        "intermediate_size": hid, "num_hidden_layers": 1, "num_attention_heads": 2,
        "num_key_value_heads": 2, "vocab_size": vocab, "max_position_embeddings": 64,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": True,
        "hidden_act": "silu", "bos_token_id": bos, "eos_token_id": eos})
    rng = np.random.default_rng(5)
    shapes = [("model.embed_tokens.weight", (vocab, dim)), ("model.norm.weight", (dim,))]
    for name, shape in [("input_layernorm", (dim,)), ("self_attn.q_proj", (dim, dim)),
                        ("self_attn.k_proj", (dim, dim)), ("self_attn.v_proj", (dim, dim)),
                        ("self_attn.o_proj", (dim, dim)), ("post_attention_layernorm", (dim,)),
                        ("mlp.gate_proj", (hid, dim)), ("mlp.down_proj", (dim, hid)), ("mlp.up_proj", (hid, dim))]:
        shapes.append(("model.layers.0.%s.weight" % name, shape))
    header, blobs, off = {}, [], 0
    for name, shape in shapes:
        b = rng.standard_normal(shape).astype("<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


class Tester:
    def __init__(self, args):
        self.args = args
        self.failed = 0
        self.passed = 0

    def check(self, ok, what):
        if ok:
            self.passed += 1
            print("ok   " + what)
        else:
            self.failed += 1
            print("FAIL " + what)

    def tokenize(self, opts, rows, expect_rc=0, launcher=None):
        inp = "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)
        cmd = (launcher or []) + [self.args.mpillama, "tokenize"] + opts
        r = subprocess.run(cmd, input=inp, capture_output=True, text=True, timeout=600, env=c.mpi_env())
        if r.returncode != expect_rc:
            c.fail("%s exited %d (expected %d)\nstderr: %s" % (" ".join(cmd), r.returncode, expect_rc, r.stderr[-3000:]))
        return [json.loads(l) if l.strip() else None for l in r.stdout.splitlines()], r

    def reference(self, what, opts, ref, decode=True):
        """every reference line's ids exactly, and --decode gives the text back"""
        rows = c.read_jsonl(ref)
        got, _ = self.tokenize(opts, [{"text": r["text"]} for r in rows])
        bad = []
        for r, g in zip(rows, got):
            want = r["ids"] or [1]  # llama-tokenizer-js gives [] for "", SentencePiece [BOS]
            if g is None or g.get("ids") != want:
                bad.append("%r: want %s got %s" % (r["text"], want, g and g.get("ids")))
        self.check(len(got) == len(rows) and not bad,
                   "%s: %d reference lines%s" % (what, len(rows), "".join("\n     " + b for b in bad[:5])))
        if decode:
            back, _ = self.tokenize(opts + ["--decode"], [{"ids": r["ids"]} for r in rows])
            bad = [r["text"] for r, b in zip(rows, back) if b is None or b.get("text") != r["text"]]
            self.check(len(back) == len(rows) and not bad, "%s: --decode gives the texts back %s" % (what, bad[:3]))


def main():
    args = c.parse_args()
    c.need_shared(args, "tokenizers/llama2/tokenizer.bin", "tokenizers/llama2/tokenizer.model",
                  "tokenizers/llama3/tokenizer.model", "reference/tokenizers/llama2_encode.jsonl",
                  "reference/tokenizers/llama3_encode.jsonl", "models/stories260K.bin",
                  "models/tok512.bin", "reference/stories260K/greedy.jsonl")
    sh = lambda *p: os.path.join(args.shared, *p)  # noqa: E731
    wk = lambda *p: os.path.join(args.work, *p)  # noqa: E731
    t = Tester(args)
    l2_ref, l3_ref = sh("reference/tokenizers/llama2_encode.jsonl"), sh("reference/tokenizers/llama3_encode.jsonl")
    l2_bin, l2_model = sh("tokenizers/llama2/tokenizer.bin"), sh("tokenizers/llama2/tokenizer.model")
    l3_model = sh("tokenizers/llama3/tokenizer.model")

    # ---- the shared files
    t.reference("llama2 tokenizer.bin", ["--tokenizer", l2_bin], l2_ref)
    t.reference("llama2 tokenizer.model", ["--tokenizer", l2_model], l2_ref)
    t.reference("llama3 tokenizer.model (tiktoken)", ["--tokenizer", l3_model], l3_ref)

    # ---- Hugging Face tokenizer.json, written here the way Hugging Face's converters do
    ranks = {}
    for line in open(l3_model, "rb"):
        if line.strip():
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    split = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3_PATTERN}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    hf3 = wk("hf_llama3")
    os.makedirs(hf3)
    write_json(os.path.join(hf3, "tokenizer.json"), byte_level_json(ranks, split, True, True))
    write_json(os.path.join(hf3, "tokenizer_config.json"), {
        "bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>", "chat_template": LLAMA3_CHAT_JINJA})
    t.reference("llama3 tokenizer.json (byte-level, merges)", ["--tokenizer", os.path.join(hf3, "tokenizer.json")], l3_ref)
    # without ignore_merges, every chunk goes through the merges
    nomerge = wk("llama3_no_ignore_merges.json")
    write_json(nomerge, byte_level_json(ranks, split, False, True))
    t.reference("llama3 tokenizer.json without ignore_merges", ["--tokenizer", nomerge], l3_ref, decode=False)
    # GPT-2's pre-tokenizer (ByteLevel use_regex): the same pieces split by GPT-2's pattern
    gpt2 = wk("gpt2_style.json")
    write_json(gpt2, byte_level_json(ranks, {"type": "ByteLevel", "add_prefix_space": False,
                                             "trim_offsets": True, "use_regex": True}, False, False))
    # GPT-2's contractions are lower-case only: "HE'S" is "HE", "'", "S"; Llama 3's "HE", "'S"
    got, _ = t.tokenize(["--tokenizer", gpt2], [{"text": "Hello world"}, {"text": "HE'S"}])
    parts, _ = t.tokenize(["--tokenizer", l3_model, "--no-bos"],
                          [{"text": x} for x in ("HE'S", "HE", "'", "S", "'S")])
    p = [r["ids"] for r in parts]
    t.check(got[0]["ids"] == [9906, 1917] and got[1]["ids"] == p[1] + p[2] + p[3] and p[0] == p[1] + p[4]
            and got[1]["ids"] != p[0],
            "GPT-2 pattern: 'Hello world' %s, \"HE'S\" %s (Llama 3's pattern: %s)" % (got[0]["ids"], got[1]["ids"], p[0]))
    back, _ = t.tokenize(["--tokenizer", gpt2, "--decode"], [{"ids": got[1]["ids"]}])
    t.check(back[0]["text"] == "HE'S", "GPT-2 pattern: decodes back")
    # ByteLevel add_prefix_space: a space before text that does not start with one
    spaced = wk("gpt2_prefix_space.json")
    write_json(spaced, byte_level_json(ranks, {"type": "ByteLevel", "add_prefix_space": True,
                                               "trim_offsets": True, "use_regex": True}, False, False))
    got, _ = t.tokenize(["--tokenizer", spaced], [{"text": "Hello world"}, {"text": " Hello world"}])
    t.check(got[0]["ids"] == [22691, 1917] and got[1]["ids"] == [22691, 1917],
            "ByteLevel add_prefix_space: %s and %s (' Hello' is 22691)" % (got[0]["ids"], got[1]["ids"]))

    l2_pieces = read_llama2c_tokenizer(l2_bin)
    hf2 = wk("hf_llama2")
    os.makedirs(hf2)
    write_json(os.path.join(hf2, "tokenizer.json"), sentencepiece_json(l2_pieces, False))
    write_json(os.path.join(hf2, "tokenizer_config.json"), {
        "bos_token": {"content": "<s>", "__type": "AddedToken"}, "eos_token": "</s>", "chat_template": LLAMA2_CHAT_JINJA})
    t.reference("llama2 tokenizer.json (byte_fallback, Prepend + Replace)", ["--tokenizer", os.path.join(hf2, "tokenizer.json")], l2_ref)
    meta = wk("llama2_metaspace.json")
    write_json(meta, sentencepiece_json(l2_pieces, True))
    t.reference("llama2 tokenizer.json (Metaspace)", ["--tokenizer", meta], l2_ref, decode=False)

    # a tokenizer.json this code does not implement: one line naming the file
    uni = wk("unigram.json")
    write_json(uni, {"model": {"type": "Unigram", "vocab": [["a", 0.0]]}})
    _, r = t.tokenize(["--tokenizer", uni], [], expect_rc=1)
    t.check("unigram.json" in r.stderr and "Unigram" in r.stderr, "an unsupported tokenizer.json is refused: " + r.stderr.strip()[-200:])

    # ---- directories: tokenizer_config.json brings the chat template
    conv = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"}]
    got, _ = t.tokenize(["--tokenizer", hf3], [{"messages": conv[1:]}])
    want = [128000, 128006, 882, 128007, 271, 9906, 128009, 128006, 78191, 128007, 271]
    t.check(got[0]["ids"] == want and got[0]["text"].startswith("<|begin_of_text|><|start_header_id|>user"),
            "llama3 directory: chat template from tokenizer_config.json, messages -> %s" % got[0]["ids"])
    got, _ = t.tokenize(["--tokenizer", hf2], [{"messages": conv}])
    t.check(got[0]["ids"][:4] == [1, 518, 25580, 29962] and got[0]["ids"][-4:] == [518, 29914, 25580, 29962]
            and got[0]["text"] == "<s>[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHello [/INST]",
            "llama2 directory: chat template from tokenizer_config.json: %r" % got[0].get("text"))

    # ---- special tokens only when allowed
    rows = [{"text": "<|begin_of_text|>Hi<|eot_id|>"}]
    plain, _ = t.tokenize(["--tokenizer", l3_model, "--no-bos"], rows)
    special, _ = t.tokenize(["--tokenizer", l3_model, "--no-bos", "--allow-special"], rows)
    t.check(all(i < 128000 for i in plain[0]["ids"]) and special[0]["ids"] == [128000, 13347, 128009],
            "special tokens: as text %s, with --allow-special %s" % (plain[0]["ids"], special[0]["ids"]))
    back, _ = t.tokenize(["--tokenizer", l3_model, "--decode", "--allow-special"], [{"ids": special[0]["ids"]}])
    t.check(back[0]["text"] == rows[0]["text"], "--decode --allow-special writes special tokens out")

    # ---- converted model files
    # tiny Llama 3 with the tokenizer.json directory, and with its embedding rounded up
    for vocab in (128256, 128260):
        d = wk("model_llama3_%d" % vocab)
        write_tiny_llama(d, vocab, 128000, [128001, 128009])
        for f in ("tokenizer.json", "tokenizer_config.json"):
            os.link(os.path.join(hf3, f), os.path.join(d, f))
        h5 = d + ".h5"
        r = c.run([args.mpillama, "convert", d, "-o", h5])
        t.check("tokenizer: byte-bpe, %d pieces, bos 128000, eos 128009, chat template llama3" % vocab in r.stdout,
                "convert Llama 3 directory (vocab %d): %s" % (vocab, r.stdout.strip().splitlines()[-1]))
        t.reference("model file from tokenizer.json (vocab %d)" % vocab, ["--model", h5], l3_ref)
        got, _ = t.tokenize(["--model", h5], [{"messages": conv[1:]}])
        t.check(got[0]["ids"] == want, "model file: stored chat template llama3")
    # tiny Llama 3 with only Meta's tokenizer.model
    d = wk("model_llama3_tiktoken")
    write_tiny_llama(d, 128256, 128000, 128001)
    os.link(l3_model, os.path.join(d, "tokenizer.model"))
    r = c.run([args.mpillama, "convert", d, "-o", d + ".h5"])
    t.check("tokenizer: byte-bpe, 128256 pieces" in r.stdout, "convert a directory with only tiktoken tokenizer.model")
    t.reference("model file from tiktoken tokenizer.model", ["--model", d + ".h5"], l3_ref, decode=False)
    info = c.run([args.mpillama, "info", d + ".h5"]).stdout
    t.check("tokenizer: byte-bpe, 128256 pieces" in info, "info shows the stored tokenizer")
    # tiny Llama 2 with SentencePiece's tokenizer.model and the chat template
    d = wk("model_llama2_sp")
    write_tiny_llama(d, 32000, 1, 2)
    os.link(l2_model, os.path.join(d, "tokenizer.model"))
    os.link(os.path.join(hf2, "tokenizer_config.json"), os.path.join(d, "tokenizer_config.json"))
    r = c.run([args.mpillama, "convert", d, "-o", d + ".h5"])
    t.check("tokenizer: sentencepiece-bpe, 32000 pieces, bos 1, eos 2, chat template llama2" in r.stdout,
            "convert a directory with SentencePiece tokenizer.model: " + r.stdout.strip().splitlines()[-1])
    t.reference("model file from SentencePiece tokenizer.model", ["--model", d + ".h5"], l2_ref, decode=False)
    # llama2.c checkpoint with a tokenizer.json for its 512 pieces (detected from the content)
    tok512_json = wk("tok512.json")
    write_json(tok512_json, sentencepiece_json(read_llama2c_tokenizer(sh("models/tok512.bin")), False))
    h5 = wk("stories260K_json.h5")
    c.run([args.mpillama, "convert", sh("models/stories260K.bin"), "--tokenizer", tok512_json, "-o", h5])
    greedy = c.read_jsonl(sh("reference/stories260K/greedy.jsonl"))
    got, _ = t.tokenize(["--model", h5], [{"text": g["prompt"]} for g in greedy])
    t.check([g["ids"] for g in got] == [g["prompt_ids"] for g in greedy],
            "llama2.c checkpoint + tokenizer.json: stories260K prompt ids")

    # ---- errors, several ranks, the benchmark
    got, r = t.tokenize(["--tokenizer", l3_model], ['{"text": "a"}', "not json", '{"ids": [1]}', "", '{"text": "b"}'], expect_rc=1)
    t.check(len(got) == 5 and got[0]["ids"] == [128000, 64] and got[1]["error"].startswith("not valid JSON") and got[1]["line"] == 2
            and "error" in got[2] and got[3] is None and got[4]["ids"] == [128000, 65],
            "bad lines get an error object, the others go on, exit 1")
    # ids outside the vocabulary, fractions, duplicate keys: error records, not "" or a truncation
    got, r = t.tokenize(["--tokenizer", l3_model, "--decode"],
                        ['{"ids": [9906, 128256]}', '{"ids": [-1]}', '{"ids": [1.5]}', '{"ids": [1], "ids": [2]}',
                         '{"ids": [9906]}'], expect_rc=1)
    t.check(len(got) == 5 and "128256" in got[0]["error"] and "outside the vocabulary" in got[1]["error"]
            and "not an integer" in got[2]["error"] and "duplicate key 'ids'" in got[3]["error"] and got[4]["text"] == "Hello",
            "--decode: out-of-range, fractional and duplicated ids are error records (%s)" % [g.get("error") for g in got[:4]])
    r = subprocess.run([args.mpillama, "tokenize"], capture_output=True, text=True, env=c.mpi_env(), stdin=subprocess.DEVNULL)
    t.check(r.returncode == 2 and "--model" in r.stderr, "no tokenizer given: exit 2 with usage")
    rows = [{"text": "Hello world", "id": i} for i in range(5)]
    got, _ = t.tokenize(["--tokenizer", l3_model], rows, launcher=[args.mpiexec, "-n", "2", "--oversubscribe"])
    t.check(len(got) == 5 and all(g["ids"] == [128000, 9906, 1917] and g["id"] == i for i, g in enumerate(got)),
            "mpiexec -n 2: rank 0 alone writes, other fields copied (%d lines)" % len(got))
    bench = wk("bench.txt")
    with open(bench, "w") as f:
        f.write("".join(r["text"] + "\n" for r in c.read_jsonl(l3_ref)) * 40)
    r = c.run([args.mpillama, "tokenize", "--tokenizer", l3_model, "--bench", bench])
    t.check("MB/s" in r.stdout, "--bench: " + " / ".join(l for l in r.stdout.splitlines() if "MB/s" in l))

    print("%d passed, %d failed" % (t.passed, t.failed))
    sys.exit(1 if t.failed else 0)


if __name__ == "__main__":
    main()
