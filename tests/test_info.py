"""`info` and `score` records as a user reads them (issue 13 point 6): info is compact by default
(architecture, parameters, weight type and GiB, tokenizer, chat template), lists every tensor in
natural layer order only with --tensors, every config field only with --config, and --plan alone
prints the plan; score records carry each token's text, the sum of the log-probs and the
perplexity, consistent with the log-probs."""
import math
import os
import re

import common as c

args = c.parse_args()
W = args.work
ok = c.ok


# 12 layers, so that layer 10 exists and must come after layer 2
binp = os.path.join(W, "m.bin")
c.make_llama2c(binp, 32, 64, 12, 4, 2, 512, 64)
tok = os.path.join(args.shared, "models/tok512.bin") if args.shared else ""
has_tok = bool(tok) and os.path.exists(tok)
model = os.path.join(W, "m.h5")
c.run([args.mpillama, "convert", binp, "-o", model] + (["--tokenizer", tok] if has_tok else []))

# ---- compact by default
out = c.run([args.mpillama, "info", model]).stdout
lines = out.splitlines()
want = [r"^model: .*m\.h5$", r"^architecture: llama$", r"^shape: 12 layers, dim 32, hidden 64, 4 heads \(2 KV",
        r"^parameters: [\d.]+ K \((\d+)\)$", r"^weights: f32, [\d.]+ MiB \((\d+) bytes\)$", r"^tokenizer: ",
        r"^chat template: none"]
for w in want:
    if not any(re.search(w, ln) for ln in lines):
        c.fail("info: no line matching %r in:\n%s" % (w, out))
if len(lines) > 10 or "datasets:" in out or "layers/0/wq" in out or "rope_theta" in out:
    c.fail("info without options should be compact (no tensors, no config fields), got %d lines:\n%s" % (len(lines), out))
params = int(next(re.search(want[3], ln) for ln in lines if re.search(want[3], ln)).group(1))
# dim 32, hidden 64, 12 layers, vocab 512, llama2.c shared classifier: the embedding, per layer 2
# norms + wq, wk, wv, wo + w1, w2, w3, the final norm
kv = 32 // 4 * 2
expect = 512 * 32 + 12 * (2 * 32 + 32 * 32 * 2 + 2 * 32 * kv + 3 * 32 * 64) + 32
if params != expect:
    c.fail("info: %d parameters, expected %d" % (params, expect))
wbytes = int(next(re.search(want[4], ln) for ln in lines if re.search(want[4], ln)).group(1))
if wbytes != 4 * expect:
    c.fail("info: %d weight bytes, expected 4 x %d" % (wbytes, expect))
ok("info is compact (%d lines): %s" % (len(lines), " | ".join(lines[1:])))

# ---- --tensors: natural layer order; --config: the config fields
out = c.run([args.mpillama, "info", model, "--tensors"]).stdout
names = [ln.split()[0] for ln in out.splitlines() if ln.startswith("  ")]
layers = [int(n.split("/")[1]) for n in names if n.startswith("layers/")]
if not layers or layers != sorted(layers) or layers[-1] != 11:
    c.fail("info --tensors: layers not in natural order: %s" % layers)
if names.index("layers/2/wq") > names.index("layers/10/wq"):
    c.fail("info --tensors: layers/10 listed before layers/2")
ok("info --tensors lists %d tensors, layers 0..11 in natural order (layers/2 before layers/10)" % len(names))
out = c.run([args.mpillama, "info", model, "--config"]).stdout
if "rope_theta:" not in out or "n_kv_heads: 2" not in out or "datasets:" in out:
    c.fail("info --config: expected the config fields and no tensors:\n%s" % out)
ok("info --config prints the config fields, no tensors")

# ---- --plan alone: the plan, not the model description
out = c.run([args.mpillama, "info", model, "--plan", "--pp", "2", "--tp", "2"]).stdout
rows = [ln.split() for ln in out.splitlines()]
if "datasets:" in out or "architecture:" in out or not any(r[:1] == ["rank"] for r in rows) \
        or sum(1 for r in rows if r and r[0] in "0123" and len(r) == 10) != 4:
    c.fail("info --plan alone: expected the plan's 4 ranks only:\n%s" % out)
ok("info --plan --pp 2 --tp 2 alone prints the plan (%d lines)" % len(rows))
# --batch is per micro-batch: pp 2 keeps up to 3 micro-batches of --batch in flight (KV slots; the
# plan does not know the prompts, that fill 2 or 3), unless --micro-batches says otherwise. A
# rank's KV bytes: K and V x f32 x its 6 layers x slots x 64 positions x its 1 KV head of head size 8
for extra, slots in (([], 12), (["--micro-batches", "1"], 4), (["--micro-batches", "2"], 8)):
    out = c.run([args.mpillama, "info", model, "--plan", "--pp", "2", "--tp", "2", "--batch", "4",
                 "--max-seq-len", "64"] + extra).stdout
    kvb = [int(r[9]) for r in (ln.split() for ln in out.splitlines()) if len(r) == 10 and r[0] in "0123"]
    if "for %d slots (--batch 4 x" % slots not in out or kvb != [2 * 4 * 6 * slots * 64 * 1 * 8] * 4:
        c.fail("info --plan --pp 2 --batch 4 %s: expected %d KV slots per replica:\n%s" % (extra, slots, out))
ok("info --plan --pp 2 --batch 4: 12 KV slots (3 micro-batches of 4), 4 with --micro-batches 1, 8 with 2")
r = c.run([args.mpillama, "generate", "--tensors"], check=False)
if r.returncode != 2 or "option of 'mpillama info'" not in r.stderr:
    c.fail("generate --tensors: expected a usage error naming info, got exit %d: %s" % (r.returncode, r.stderr))

# ---- score records: token texts, sum of log-probs, perplexity
prompts = os.path.join(W, "p.jsonl")
c.write_jsonl(prompts, [{"custom_id": "a", "prompt_ids": [1, 300, 301, 302, 303, 400]},
                        {"custom_id": "one", "prompt_ids": [1]}])
sout = os.path.join(W, "s.jsonl")
c.mpirun(args, 2, ["score", "--model", model, "--prompts", prompts, "--output", sout])
recs = {x["custom_id"]: x for x in c.read_jsonl(sout)}
a = recs["a"]
lp = a["logprobs"]
if len(lp) != 5 or abs(a["sum_logprob"] - sum(lp)) > 1e-4 or \
        abs(a["perplexity"] - math.exp(-sum(lp) / len(lp))) > 1e-4 * a["perplexity"]:
    c.fail("score record: sum_logprob and perplexity do not follow from the log-probs: %s" % a)
if recs["one"]["sum_logprob"] != 0 or recs["one"]["perplexity"] is not None:
    c.fail("a one-token score record: sum 0 and perplexity null expected, got %s" % recs["one"])
if has_tok:
    if len(a.get("tokens", [])) != 6 or not all(isinstance(t, str) for t in a["tokens"]) or a["tokens"][0] != "<s>":
        c.fail("score record: expected 6 token texts, the first '<s>', got %s" % a.get("tokens"))
    ok("score record: tokens %s, sum_logprob %.4f = the sum, perplexity %.3f = exp(-mean)"
       % (a["tokens"], a["sum_logprob"], a["perplexity"]))
else:
    ok("score record: sum_logprob %.4f = the sum, perplexity %.3f = exp(-mean) (no ../shared tokenizer: token texts "
       "not checked)" % (a["sum_logprob"], a["perplexity"]))
c.done()
