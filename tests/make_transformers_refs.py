"""Small random checkpoints of each supported architecture, made and scored by transformers.

Run where PyTorch and transformers are installed (not on the build machine; the device machine
has them):  python3 tests/make_transformers_refs.py --out tests/data/arch

For each architecture it writes DIR/<arch>/:
  model.safetensors   float32 weights (save_pretrained)
  config.json         the config as this transformers (>= 5) writes it: rope_parameters, dtype
  config_t4.json      the same config in transformers 4's spelling: rope_theta, rope_scaling,
                      torch_dtype (no rope_parameters, no layer_types)
  refs.json           float64 reference: per prompt the ids, teacher-forced log-probs (natural
                      log of token i+1 given 0..i) and greedy_ids (argmax, eos ignored), with the
                      smallest top-1/top-2 logit gap seen while decoding (greedy_min_margin)
The weights are drawn from a seeded generator with a wider spread than transformers' init
(std 0.02 gives near-flat logits, whose argmax a rounding difference could flip)."""
import argparse
import json
import os
import random
import sys

import torch
import transformers

ARCHS = {
    # Llama with an explicit head_dim (heads x head_dim != hidden) and Llama 3 rope scaling
    "llama": dict(cls="LlamaForCausalLM", cfg="LlamaConfig", kw=dict(
        head_dim=24, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 32})),
    # Mistral: sliding window shorter than the prompts
    "mistral": dict(cls="MistralForCausalLM", cfg="MistralConfig", kw=dict(
        sliding_window=6, rms_norm_eps=1e-5, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    # Qwen2: q/k/v biases, tied classifier
    "qwen2": dict(cls="Qwen2ForCausalLM", cfg="Qwen2Config", kw=dict(
        rms_norm_eps=1e-6, tie_word_embeddings=True, use_sliding_window=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
    # Qwen3: per-head q/k RMSNorm, head_dim free (4 x 32 != 64)
    "qwen3": dict(cls="Qwen3ForCausalLM", cfg="Qwen3Config", kw=dict(
        head_dim=32, rms_norm_eps=1e-6, tie_word_embeddings=False, use_sliding_window=False,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})),
}
COMMON = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
              hidden_act="silu", bos_token_id=1, eos_token_id=2)
PROMPT_LENS = [1, 7, 12, 33]
GREEDY_TOKENS = 24


def t4_config(cfg):
    """the config.json that transformers 4 writes for the same model"""
    c = dict(cfg)
    rp = c.pop("rope_parameters", None) or {}
    c["rope_theta"] = rp.get("rope_theta", 10000.0)
    if rp.get("rope_type", "default") != "default":
        rs = {k: v for k, v in rp.items() if k != "rope_theta"}
        c["rope_scaling"] = rs
    else:
        c["rope_scaling"] = None
    if "dtype" in c:
        c["torch_dtype"] = c.pop("dtype")
    c.pop("layer_types", None)
    c["transformers_version"] = "4.46.0"
    return c


def randomize(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5))


def make(arch, spec, out, seed):
    d = os.path.join(out, arch)
    os.makedirs(d, exist_ok=True)
    kw = dict(COMMON)
    kw.update(spec["kw"])
    cfg = getattr(transformers, spec["cfg"])(**kw)
    torch.manual_seed(seed)
    model = getattr(transformers, spec["cls"])(cfg).float()
    randomize(model, seed)
    if cfg.tie_word_embeddings:
        model.tie_weights()
    model.save_pretrained(d, safe_serialization=True)
    with open(os.path.join(d, "config.json")) as f:
        written = json.load(f)
    with open(os.path.join(d, "config_t4.json"), "w") as f:
        json.dump(t4_config(written), f, indent=2, sort_keys=True)

    m64 = getattr(transformers, spec["cls"]).from_pretrained(d, attn_implementation="eager",
                                                             dtype=torch.float64).eval()
    rng = random.Random(seed)
    prompts = []
    with torch.no_grad():
        for n in PROMPT_LENS:
            ids = [1] + [rng.randrange(3, COMMON["vocab_size"]) for _ in range(n - 1)]
            logits = m64(torch.tensor([ids])).logits[0]
            lp = torch.log_softmax(logits, dim=-1)
            prompt_lp = [float(lp[i, ids[i + 1]]) for i in range(len(ids) - 1)]
            seq = list(ids)
            greedy, margin = [], float("inf")
            for _ in range(GREEDY_TOKENS):
                last = m64(torch.tensor([seq])).logits[0, -1]
                top = torch.topk(last, 2)
                margin = min(margin, float(top.values[0] - top.values[1]))
                tok = int(top.indices[0])
                greedy.append(tok)
                seq.append(tok)
            glp = torch.log_softmax(m64(torch.tensor([seq])).logits[0], dim=-1)
            greedy_lp = [float(glp[len(ids) - 1 + i, greedy[i]]) for i in range(len(greedy))]
            prompts.append(dict(prompt_ids=ids, prompt_logprobs=prompt_lp, greedy_ids=greedy,
                                greedy_logprobs=greedy_lp, greedy_min_margin=margin))
    refs = dict(architecture=spec["cls"], transformers=transformers.__version__,
                torch=torch.__version__, dtype="float64", attn_implementation="eager",
                seed=seed, prompts=prompts)
    with open(os.path.join(d, "refs.json"), "w") as f:
        json.dump(refs, f)
    print("%s: %s, min greedy margin %.3g" % (arch, spec["cls"],
                                              min(p["greedy_min_margin"] for p in prompts)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=1234)
    a = p.parse_args()
    print("transformers %s, torch %s" % (transformers.__version__, torch.__version__))
    failed = 0
    for i, (arch, spec) in enumerate(ARCHS.items()):
        try:
            make(arch, spec, a.out, a.seed + i)
        except Exception:  # report every architecture, not only the first failure
            import traceback
            traceback.print_exc()
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
