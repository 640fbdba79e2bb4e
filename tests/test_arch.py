"""Llama (explicit head_dim, Llama 3 RoPE), Mistral (sliding window), Qwen2 (q/k/v biases, tied
classifier) and Qwen3 (per-head q/k RMSNorm, free head_dim) against transformers.

tests/data/arch/<arch>/ holds a small random checkpoint saved by transformers 5 (config.json)
with the same config in transformers 4's spelling (config_t4.json), and float64 references made
by tests/make_transformers_refs.py. Each is converted from both configs and from an
f32 GGUF file written from the same weights by tests/gguf_write.py (llama.cpp's layout); then scored and generated
greedily on 1x1, 1x2 and 2x1: log-probs within 1e-4 of transformers, greedy ids exact."""
import json
import os
import shutil
import subprocess
import sys

import common as c

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "arch")
TOL = 1e-4
GRIDS = [(1, 1), (1, 2), (2, 1)]

args = c.parse_args()
archs = sorted(d for d in os.listdir(DATA) if os.path.isfile(os.path.join(DATA, d, "refs.json")))
if not archs:
    c.skip("no checkpoints in %s" % DATA)


def sources(arch, src):
    """(label, path to convert) for each source of one architecture"""
    out = []
    for label, cfg in (("t5", "config.json"), ("t4", "config_t4.json")):
        d = os.path.join(args.work, "%s-%s" % (arch, label))
        os.makedirs(d)
        shutil.copy(os.path.join(src, "model.safetensors"), d)
        shutil.copy(os.path.join(src, cfg), os.path.join(d, "config.json"))
        out.append((label, d))
    writer = os.path.join(HERE, "gguf_write.py")
    if os.path.exists(writer):
        g = os.path.join(args.work, "%s.gguf" % arch)
        c.run([sys.executable, writer, src, g, "--type", "f32"])
        out.append(("gguf-f32", g))
    return out


summary = []
for arch in archs:
    src = os.path.join(DATA, arch)
    refs = json.load(open(os.path.join(src, "refs.json")))
    prompts = refs["prompts"]
    score_in = os.path.join(args.work, "%s_score.jsonl" % arch)
    gen_in = os.path.join(args.work, "%s_gen.jsonl" % arch)
    c.write_jsonl(score_in, [{"custom_id": str(i), "prompt_ids": p["prompt_ids"]}
                             for i, p in enumerate(prompts) if len(p["prompt_ids"]) > 1])
    c.write_jsonl(gen_in, [{"custom_id": str(i), "prompt_ids": p["prompt_ids"], "ignore_eos": True,
                            "max_tokens": len(p["greedy_ids"])} for i, p in enumerate(prompts)])
    for label, path in sources(arch, src):
        model = os.path.join(args.work, "%s-%s.h5" % (arch, label))
        c.run([args.mpillama, "convert", path, "-o", model])
        info = c.run([args.mpillama, "info", model]).stdout
        # llama.cpp writes Mistral as general.architecture "llama"
        want_arch = "llama" if label.startswith("gguf") and arch == "mistral" else arch
        if "architecture: %s\n" % want_arch not in info:
            c.fail("%s %s: info does not name the architecture:\n%s" % (arch, label, info))
        worst = 0.0
        # tp 4 > the 2 KV heads: each KV head (and its bias and norm) replicated on two ranks
        grids = GRIDS + [(1, 4)] if label == "t5" and arch in ("qwen2", "qwen3") else GRIDS
        for pp, tp in grids:
            grid = ["--pp", str(pp), "--tp", str(tp)]
            so = os.path.join(args.work, "%s-%s-score-%dx%d.jsonl" % (arch, label, pp, tp))
            go = os.path.join(args.work, "%s-%s-gen-%dx%d.jsonl" % (arch, label, pp, tp))
            # a small prefill chunk: the sliding window is crossed inside and between chunks
            c.mpirun(args, pp * tp, ["score", "--model", model, "--prompts", score_in, "--output", so,
                                     "--prefill-chunk", "5"] + grid)
            c.mpirun(args, pp * tp, ["generate", "--model", model, "--prompts", gen_in, "--output", go,
                                     "--temperature", "0"] + grid)
            scores = {r["custom_id"]: r for r in c.read_jsonl(so)}
            gens = {r["custom_id"]: r for r in c.read_jsonl(go)}
            for i, p in enumerate(prompts):
                where = "%s %s %dx%d prompt %d" % (arch, label, pp, tp, i)
                if len(p["prompt_ids"]) > 1:
                    s = scores[str(i)]
                    if "error" in s or len(s["logprobs"]) != len(p["prompt_logprobs"]):
                        c.fail("%s: score record %s" % (where, json.dumps(s)[:300]))
                    d = max(abs(a - b) for a, b in zip(s["logprobs"], p["prompt_logprobs"]))
                    worst = max(worst, d)
                    if d > TOL:
                        c.fail("%s: max |dlogprob| %.3g > %g" % (where, d, TOL))
                g = gens[str(i)]
                if g.get("completion_ids") != p["greedy_ids"]:
                    c.fail("%s: greedy ids %s, transformers %s (smallest top-2 gap %.3g)" % (
                        where, g.get("completion_ids"), p["greedy_ids"], p["greedy_min_margin"]))
        summary.append("%-8s %-9s max |dlogprob| %.2e, greedy ids equal on %s" % (
            arch, label, worst, " ".join("%dx%d" % g for g in grids)))
        print(summary[-1], flush=True)

# the features matter: without the window (Mistral) or the Llama 3 scaling the same weights
# score measurably differently, so the agreement above is not a coincidence
for arch, drop in (("mistral", {"sliding_window": None}),
                   ("llama", {"rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}})):
    if arch not in archs:
        continue
    src = os.path.join(DATA, arch)
    d = os.path.join(args.work, arch + "-without")
    os.makedirs(d)
    shutil.copy(os.path.join(src, "model.safetensors"), d)
    cfg = json.load(open(os.path.join(src, "config.json")))
    cfg.update(drop)
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
    model = d + ".h5"
    c.run([args.mpillama, "convert", d, "-o", model])
    so = d + "-score.jsonl"
    c.mpirun(args, 1, ["score", "--model", model, "--prompts", os.path.join(args.work, "%s_score.jsonl" % arch),
                       "--output", so])
    prompts = json.load(open(os.path.join(src, "refs.json")))["prompts"]
    got = {r["custom_id"]: r for r in c.read_jsonl(so)}
    d_max = max(abs(a - b) for i, p in enumerate(prompts) if len(p["prompt_ids"]) > 1
                for a, b in zip(got[str(i)]["logprobs"], p["prompt_logprobs"]))
    if d_max < 1e-2:
        c.fail("%s with %s: max |dlogprob| only %.3g: the feature is not exercised" % (arch, drop, d_max))
    summary.append("%-8s without %s: max |dlogprob| %.3g (the feature matters)" % (arch, list(drop)[0], d_max))
    print(summary[-1], flush=True)

print("\n".join(summary))
print("%d passed, 0 failed" % len(summary))
