"""Sampling at numerical extremes and non-finite logits, end to end (issue 10, docs/FAILURES.md).

A small untied llama2.c model (make_llama2c_model.py) runs on 1x1, 1x2, 2x1, dp 2 and 2x2:
- clean: extreme sampling fields (temperature 1e-30 and 100, top_p 1e-6, min_p 1, penalties at
  their limits) all give completions of valid tokens; temperature 1e-30, top_p 1e-6 and min_p 1
  give the greedy completion;
- with NaN in one token's embedding row (token X): a request whose prompt holds X gets an error
  record "non-finite logits ... at completion token 0"; one whose clean completion generates X at
  completion token k gets one at token k + 1 (the NaN logits come with the next step); every
  other request's record is the clean run's on the same grid; the job exits 3 (some requests failed);
  with --output-format openai the same requests land in OUT.errors.jsonl;
- score on the NaN model writes null (never a bare nan) exactly from X's position on."""
import collections
import json
import os
import struct
import sys

import common as c

HERE = os.path.dirname(os.path.abspath(__file__))
args = c.parse_args()
W = args.work
V, MAX = 48, 16
clean_bin, nan_bin = os.path.join(W, "clean.bin"), os.path.join(W, "nan.bin")
c.run([sys.executable, os.path.join(HERE, "make_llama2c_model.py"), clean_bin, "--dim", "64", "--hidden", "172",
       "--layers", "4", "--heads", "4", "--kv-heads", "2", "--vocab", str(V), "--seq-len", "128", "--seed", "11",
       "--untied"])
clean = os.path.join(W, "clean.h5")
c.run([args.mpillama, "convert", clean_bin, "-o", clean])

VARIANTS = {  # name: sampling fields
    "greedy": {"temperature": 0},
    "t0.9": {"temperature": 0.9},
    "t1e-30": {"temperature": 1e-30},
    "t100": {"temperature": 100, "top_k": 0, "top_p": 1},
    "top_p_tiny": {"temperature": 1, "top_k": 0, "top_p": 1e-6},
    "min_p_1": {"temperature": 1, "top_k": 0, "min_p": 1},
    "penalties_max": {"temperature": 0.8, "repetition_penalty": 100, "frequency_penalty": 2, "presence_penalty": 2},
    "penalties_min": {"temperature": 0.8, "repetition_penalty": 1e-3, "frequency_penalty": -2,
                      "presence_penalty": -2},
    "logprobs": {"temperature": 0.9, "logprobs": 3},
}
GREEDY_LIKE = ("t1e-30", "top_p_tiny", "min_p_1")
BASE = [[1, 17, 30, 9, 44, 21], [1, 3, 3, 3], [1, 40, 12, 33, 8, 27, 19, 45, 10], [1, 25]]


def requests(prompts):
    out = []
    for i, ids in enumerate(prompts):
        for name, fields in VARIANTS.items():
            out.append(dict({"custom_id": "p%d_%s" % (i, name), "prompt_ids": ids, "max_tokens": MAX,
                             "ignore_eos": True}, **fields))
    return out


def generate(model, prompts_file, tag, n, grid, code=0):
    """records by custom_id; the exit code must be code (3: some requests have error records)"""
    outp = os.path.join(W, tag + ".jsonl")
    r = c.mpirun(args, n, ["generate", "--model", model, "--prompts", prompts_file, "--output", outp, "--seed", "3",
                           "--batch", "4", "--overwrite"] + grid, check=False)
    if r.returncode != code:
        c.fail("%s: exit %d, expected %d\n%s" % (tag, r.returncode, code, r.stderr[-3000:]))
    return strict_records(outp, tag)


def no_constant(name):
    raise ValueError("bare %s" % name)


def strict_records(path, tag):
    """records by custom_id; a bare nan, NaN or Infinity (not JSON) fails"""
    recs = {}
    for line in open(path):
        try:
            x = json.loads(line, parse_constant=no_constant)
        except ValueError as e:
            c.fail("%s: a record that is not JSON (%s): %s" % (tag, e, line[:300]))
        recs[x["custom_id"]] = x
    return recs


# ---- the clean model: every extreme gives a completion of valid tokens; the greedy-like ones the greedy one
probe_prompts = requests(BASE)
probe_file = os.path.join(W, "probe.jsonl")
c.write_jsonl(probe_file, probe_prompts)
probe = generate(clean, probe_file, "probe", 1, [])
for p in probe_prompts:
    r = probe[p["custom_id"]]
    ids = r.get("completion_ids")
    if "error" in r or len(ids) != MAX or not all(0 <= t < V for t in ids):
        c.fail("clean model, %s: not %d valid tokens: %s" % (p["custom_id"], MAX, r))
for i in range(len(BASE)):
    g = probe["p%d_greedy" % i]["completion_ids"]
    for name in GREEDY_LIKE:
        if probe["p%d_%s" % (i, name)]["completion_ids"] != g:
            c.fail("clean model, prompt %d: %s gave %s, greedy %s" % (i, name, probe["p%d_%s" % (i, name)]["completion_ids"], g))
print("PASS extremes: %d requests (%s) give %d valid tokens; %s equal greedy"
      % (len(probe_prompts), ", ".join(VARIANTS), MAX, ", ".join(GREEDY_LIKE)))

# ---- token X: generated mid-completion somewhere (not first, not last), in no base prompt
counts = collections.Counter(t for r in probe.values() for t in r["completion_ids"][1:MAX - 2]
                             if t > 2 and all(t not in b for b in BASE))
if not counts:
    c.fail("no token to poison: every generated token is in a prompt")
X = counts.most_common(1)[0][0]
raw = bytearray(open(clean_bin, "rb").read())
dim = struct.unpack("i", raw[0:4])[0]
off = 28 + X * dim * 4  # token X's embedding row (the classifier is untied: its logit stays finite)
raw[off:off + 4 * dim] = struct.pack("%df" % dim, *([float("nan")] * dim))
open(nan_bin, "wb").write(raw)
nan_h5 = os.path.join(W, "nan.h5")
r = c.run([args.mpillama, "convert", nan_bin, "-o", nan_h5], check=False)
if r.returncode != 0:
    c.fail("convert of a checkpoint with NaN weights failed: %s" % r.stderr[-500:])
all_prompts = requests(BASE + [[1, X, 20, 31], [1, 22, 14, X]])
# n = 2 completions of one request: a failed choice makes the request one error record
all_prompts.append({"custom_id": "n2", "prompt_ids": [1, 22, X, 9], "n": 2, "max_tokens": 4, "temperature": 0.9})
prompts_file = os.path.join(W, "prompts.jsonl")
c.write_jsonl(prompts_file, all_prompts)


def expected_error_at(p, clean_rec):
    """the completion token at which the NaN model's logits are NaN, or None"""
    if X in p["prompt_ids"]:
        return 0
    comp = clean_rec["completion_ids"]
    if X in comp and comp.index(X) + 1 < len(comp):
        return comp.index(X) + 1
    return None


GRIDS = [(1, []), (2, ["--tp", "2"]), (2, ["--pp", "2"]), (2, ["--dp", "2"]), (4, ["--pp", "2", "--tp", "2"])]
for n, grid in GRIDS:
    tag = "%d%s" % (n, "".join(grid).replace("--", "_"))
    cl = generate(clean, prompts_file, "clean" + tag, n, grid)
    if n == 1:
        clean_1x1 = cl
    nn = generate(nan_h5, prompts_file, "nan" + tag, n, grid, code=3)
    errors = {0: 0, "mid": 0}
    for p in all_prompts:
        cid = p["custom_id"]
        want, got = cl[cid], nn.get(cid)
        at = expected_error_at(p, want)
        if at is None:
            if got is None or "error" in got or got["completion_ids"] != want["completion_ids"] or \
                    got["finish_reason"] != want["finish_reason"]:
                c.fail("%s %s: the NaN model's record %s differs from the clean one %s" % (tag, cid, got, want))
            continue
        need = "non-finite logits (NaN or inf) at completion token %d" % at
        if got is None or got.get("error") != need or "line" not in got:
            c.fail("%s %s (X = %d): expected the error record '%s', got %s" % (tag, cid, X, need, got))
        errors[0 if at == 0 else "mid"] += 1
    if errors[0] == 0 or errors["mid"] == 0:
        c.fail("%s: poisoned token %d gave %d error records at token 0 and %d later: both kinds needed"
               % (tag, X, errors[0], errors["mid"]))
    print("PASS %s: NaN embedding of token %d: %d error records at completion token 0, %d later; the other %d "
          "records equal the clean run's" % (tag, X, errors[0], errors["mid"],
                                            len(all_prompts) - errors[0] - errors["mid"]))

# ---- --output-format openai: the same requests fail, into OUT.errors.jsonl
oa = os.path.join(W, "nan_openai.jsonl")
r = c.mpirun(args, 1, ["generate", "--model", nan_h5, "--prompts", prompts_file, "--output", oa, "--seed", "3",
                       "--batch", "4", "--output-format", "openai"], check=False)
if r.returncode != 3:
    c.fail("openai format: exit %d, expected 3\n%s" % (r.returncode, r.stderr[-2000:]))
oa_err = strict_records(os.path.join(W, "nan_openai.errors.jsonl"), "openai errors")
want_err = {p["custom_id"] for p in all_prompts if expected_error_at(p, clean_1x1[p["custom_id"]]) is not None}
bad = [k for k, v in oa_err.items() if "non-finite logits" not in json.dumps(v) or v["response"]["status_code"] != 500
       or v["response"]["body"]["error"]["type"] != "server_error"]
if set(oa_err) != want_err or bad:
    c.fail("openai format: error lines for %s (expected %s), without the cause: %s"
           % (sorted(oa_err), sorted(want_err), bad))
print("PASS openai format: the %d failed requests are in the error file, naming non-finite logits (status 500, "
      "server_error)" % len(oa_err))

# ---- score: null log-probs exactly from X's position on, never a bare nan
score_prompts = [{"custom_id": "s%d" % i, "prompt_ids": ids} for i, ids in enumerate(BASE + [[1, 20, X, 31, 4, 9]])]
score_file = os.path.join(W, "score.jsonl")
c.write_jsonl(score_file, score_prompts)
for n, grid in [(1, []), (2, ["--tp", "2"])]:
    outp = os.path.join(W, "score%d.jsonl" % n)
    r = c.mpirun(args, n, ["score", "--model", nan_h5, "--prompts", score_file, "--output", outp] + grid, check=False)
    if r.returncode != 0:
        c.fail("score on %d ranks: exit %d\n%s" % (n, r.returncode, r.stderr[-2000:]))
    recs = strict_records(outp, "score on %d ranks" % n)
    for p in score_prompts:
        ids, lp = p["prompt_ids"], recs[p["custom_id"]]["logprobs"]
        j = ids.index(X) if X in ids else len(ids)
        want_null = [i >= j for i in range(len(ids) - 1)]
        if [v is None for v in lp] != want_null or not all(isinstance(v, float) for v in lp if v is not None):
            c.fail("score %d ranks %s: log-probs %s, expected null from position %d on" % (n, p["custom_id"], lp, j))
    print("PASS score on %d rank(s): null log-probs exactly from the NaN token's position on" % n)
