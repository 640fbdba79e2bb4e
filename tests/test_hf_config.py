"""config.json dialects: every field that changes the math is applied or refused by name.

Walks the fields of the transformers 4 and 5 configs in tests/data/arch (none may be unknown to
the converter), checks that both spellings of RoPE give the same stored config, then edits one
field at a time: each edit is either refused with one line naming the field, or applied (and
seen in `info`), or, for fields without effect, accepted."""
import json
import os
import shutil

import common as c

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data", "arch")
args = c.parse_args()
if not os.path.isdir(DATA):
    c.skip("no checkpoints in %s" % DATA)
passed = 0


def convert(arch, cfg, name):
    """writes cfg as the config of arch's weights, converts; returns (CompletedProcess, info or None)"""
    d = os.path.join(args.work, name)
    os.makedirs(d)
    os.symlink(os.path.join(DATA, arch, "model.safetensors"), os.path.join(d, "model.safetensors"))
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    out = os.path.join(args.work, name + ".h5")
    r = c.run([args.mpillama, "convert", d, "-o", out], check=False)
    info = c.run([args.mpillama, "info", out, "--config"]).stdout if r.returncode == 0 else None
    return r, info


def load(arch, t4=False):
    return json.load(open(os.path.join(DATA, arch, "config_t4.json" if t4 else "config.json")))


# 1. every field of the committed configs is known; both spellings give the same config
for arch in sorted(os.listdir(DATA)):
    infos = []
    for t4 in (False, True):
        r, info = convert(arch, load(arch, t4), "%s-%s" % (arch, "t4" if t4 else "t5"))
        if r.returncode != 0 or "unknown" in r.stderr:
            c.fail("%s %s config: %s" % (arch, "t4" if t4 else "t5", r.stderr.strip()))
        infos.append(info.split("datasets:")[0].split("\n", 1)[1])  # without the "model:" line
    if infos[0] != infos[1]:
        c.fail("%s: the transformers 4 and 5 configs give different configs:\n%s\n%s" % (arch, infos[0], infos[1]))
    print("%s: every field known; t4 and t5 spellings give the same config" % arch)
    passed += 1


def edit(arch, changes, t4=False):
    cfg = load(arch, t4)
    for k, v in changes.items():
        if v is DELETE:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    return cfg


DELETE = object()
n_case = 0


def refused(arch, changes, field, t4=False):
    """the edit must fail with one line that names field"""
    global passed, n_case
    n_case += 1
    r, _ = convert(arch, edit(arch, changes, t4), "refuse%d" % n_case)
    lines = r.stderr.strip().splitlines()
    if r.returncode == 0 or r.returncode >= 128 or len(lines) != 1 or field not in lines[0]:
        c.fail("%s %s: expected one line naming '%s', got exit %d: %r" % (arch, changes, field, r.returncode, r.stderr))
    print("refused %-62s %s" % (json.dumps(changes, default=lambda o: "<deleted>")[:62], lines[0].split(": ", 1)[-1][:100]))
    passed += 1


def applied(arch, changes, want, t4=False, warn=None):
    """the edit must convert and info must show every line of want"""
    global passed, n_case
    n_case += 1
    r, info = convert(arch, edit(arch, changes, t4), "apply%d" % n_case)
    if r.returncode != 0:
        c.fail("%s %s: conversion failed: %s" % (arch, changes, r.stderr.strip()))
    for w in want:
        if w not in info:
            c.fail("%s %s: info lacks %r:\n%s" % (arch, changes, w, info))
    if warn and warn not in r.stderr:
        c.fail("%s %s: expected a warning with %r, got %r" % (arch, changes, warn, r.stderr))
    print("applied %-62s %s" % (json.dumps(changes, default=lambda o: "<deleted>")[:62], "; ".join(want) or warn))
    passed += 1


# 2. RoPE in both spellings
applied("llama", {}, ["rope_theta: 500000", "rope_scaling: llama3 (factor 8, low_freq_factor 1, high_freq_factor 4, original_max_pos 32)"])
applied("llama", {}, ["rope_theta: 500000", "rope_scaling: llama3 (factor 8"], t4=True)
applied("llama", {"rope_parameters": {"rope_type": "default", "rope_theta": 1234.0}}, ["rope_theta: 1234", "rope_scaling: none"])
applied("llama", {"rope_scaling": {"type": "llama3", "factor": 2.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 64}}, ["rope_scaling: llama3 (factor 2"], t4=True)
applied("llama", {"rope_parameters": DELETE, "rope_theta": 777.0}, ["rope_theta: 777", "rope_scaling: none"])
refused("llama", {"rope_parameters": {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0}}, "rope_parameters.rope_type")
refused("llama", {"rope_scaling": {"rope_type": "dynamic", "factor": 2.0}}, "rope_scaling.rope_type", t4=True)
refused("llama", {"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling.type", t4=True)
refused("llama", {"rope_theta": 10000.0}, "rope_theta")  # disagrees with rope_parameters.rope_theta
refused("llama", {"rope_scaling": {"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                   "original_max_position_embeddings": 32}}, "rope_scaling")
refused("llama", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "partial_rotary_factor": 0.5}},
        "rope_parameters.partial_rotary_factor")
refused("llama", {"rope_parameters": {"rope_type": "default", "rope_theta": 1e4, "mscale": 2.0}}, "rope_parameters.mscale")
refused("llama", {"rope_parameters": {"full_attention": {"rope_type": "default", "rope_theta": 1e4}}},
        "rope_parameters.full_attention")
refused("llama", {"rope_parameters": {"rope_type": "llama3", "rope_theta": 1e4, "factor": 8.0}}, "rope_parameters.low_freq_factor")
# 3. attention layout
applied("mistral", {}, ["sliding_window: 6"])
applied("mistral", {"sliding_window": None}, ["sliding_window: none"])
applied("mistral", {}, ["sliding_window: 6"], t4=True)
refused("mistral", {"sliding_window": 0}, "sliding_window")
refused("mistral", {"layer_types": ["full_attention", "full_attention"]}, "layer_types")
refused("llama", {"sliding_window": 16}, "sliding_window")
refused("llama", {"layer_types": ["full_attention", "sliding_attention"]}, "layer_types")
refused("qwen2", {"layer_types": ["full_attention", "chunked_attention"]}, "layer_types")
refused("qwen2", {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 1}, "sliding-window attention on 1 of 2 layers", t4=True)
applied("qwen2", {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 0}, ["sliding_window: 8"], t4=True)
applied("qwen2", {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 2}, ["sliding_window: none"], t4=True)
applied("qwen2", {"use_sliding_window": True, "sliding_window": 8, "max_window_layers": 0,
                  "layer_types": ["sliding_attention", "sliding_attention"]}, ["sliding_window: 8"])
refused("qwen2", {"layer_types": ["sliding_attention", "sliding_attention"], "sliding_window": 8}, "layer_types")
applied("qwen2", {}, ["attention: q/k/v biases", "tied_classifier: yes"])
applied("qwen3", {}, ["attention: no biases, per-head q/k RMSNorm", "head_size: 32"])
applied("llama", {}, ["head_size: 24", "attention: no biases"])
refused("llama", {"attention_bias": True}, "attention_bias")
refused("qwen3", {"attention_bias": True}, "attention_bias")
refused("llama", {"mlp_bias": True}, "mlp_bias")
refused("llama", {"hidden_act": "gelu"}, "hidden_act")
refused("llama", {"model_type": "gemma"}, "model_type")
# 4. the classifier
applied("llama", {"tie_word_embeddings": True}, ["tied_classifier: yes"])  # as transformers: lm_head.weight unused
refused("qwen2", {"tie_word_embeddings": False}, "lm_head.weight")  # no classifier to read
# 5. fields refused unless neutral, fields without effect, unknown fields
refused("llama", {"quantization_config": {"quant_method": "gptq", "bits": 4}}, "quantization_config")
refused("llama", {"partial_rotary_factor": 0.5}, "partial_rotary_factor")
refused("llama", {"final_logit_softcapping": 30.0}, "final_logit_softcapping")
refused("llama", {"num_local_experts": 8}, "num_local_experts")
applied("llama", {"final_logit_softcapping": None, "pretraining_tp": 2, "dtype": "bfloat16", "use_cache": False}, [])
applied("llama", {"some_new_field": 3}, [], warn="'some_new_field'")
refused("llama", {"dtype": 16}, "dtype")
print("%d passed, 0 failed" % passed)
