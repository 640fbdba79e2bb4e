"""Stop rules end to end on stories260K, greedy: finish_reason "stop" at an end-of-sequence token,
at a stop_token_ids token and at a stop string (per request and --stop; one inside a token, one
spanning two tokens), with the string cut from the text and the ids and text exactly those of an
unstopped run up to that point; ignore_eos runs past the EOS token; "length" at max_tokens and
when the context is full; a chat request stops at its template's end-of-turn token even with
ignore_eos (on a copy of stories260K whose classifier rows for tokens 1 and 2 are swapped, so
that it ends its stories with 2 = </s>, llama2's end of turn)."""
import json
import os
import subprocess
import sys

import common as c

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_hf_model as hf  # noqa: E402  (the llama2.c reader and writer)

args = c.parse_args()
c.need_shared(args, "models/stories260K.bin", "models/tok512.bin")
W = args.work
SRC = os.path.join(args.shared, "models/stories260K.bin")
TOK = os.path.join(args.shared, "models/tok512.bin")
model = os.path.join(W, "m.h5")
c.run([args.mpillama, "convert", SRC, "-o", model, "--tokenizer", TOK])
EOS_IDS = (1, 2)  # llama2.c models stop on BOS as well as EOS
SEQ_LEN = 512
checks = 0


def gen(name, rows, extra=(), m=model):
    """one greedy generate run on a fresh output; records by custom_id"""
    pin, out = os.path.join(W, name + ".jsonl"), os.path.join(W, name + "_out.jsonl")
    c.write_jsonl(pin, rows)
    c.mpirun(args, 1, ["generate", "--model", m, "--prompts", pin, "--output", out, "--temperature", "0"] + list(extra))
    recs = {r["custom_id"]: r for r in c.read_jsonl(out)}
    for r in rows:
        if r["custom_id"] not in recs or "error" in recs[r["custom_id"]]:
            c.fail("%s: no record for %s: %s" % (name, r["custom_id"], recs.get(r["custom_id"])))
    return recs


def expect(what, rec, reason, ids, text=None):
    global checks
    bad = []
    if rec["finish_reason"] != reason:
        bad.append("finish_reason %r, want %r" % (rec["finish_reason"], reason))
    if rec["completion_ids"] != ids:
        bad.append("completion_ids (%d) %s,\n   want (%d) %s" % (len(rec["completion_ids"]), rec["completion_ids"][-8:],
                                                                  len(ids), ids[-8:]))
    if rec["completion_tokens"] != len(rec["completion_ids"]):
        bad.append("completion_tokens %d for %d ids" % (rec["completion_tokens"], len(rec["completion_ids"])))
    if text is not None and rec["completion"] != text:
        bad.append("completion %r,\n   want %r" % (rec["completion"][-80:], text[-80:]))
    if bad:
        c.fail("%s: %s" % (what, "; ".join(bad)))
    checks += 1
    print("ok  %-58s %s after %d tokens" % (what, reason, len(ids)))


# ---- references: unstopped greedy runs, and the text after each of the first 60 tokens
STORY, EOS_PROMPT, FULL_PROMPT = "Once upon a time", "The sun was hot. The bird", "The cat sat on the mat. Then"
N = 60
rows = [{"custom_id": "ref", "prompt": STORY, "max_tokens": N},
        {"custom_id": "eos", "prompt": EOS_PROMPT},
        {"custom_id": "full", "prompt": FULL_PROMPT}]
rows += [{"custom_id": "ref%d" % m, "prompt": STORY, "max_tokens": m} for m in range(1, N + 1)]
base = gen("base", rows)
ref = base["ref"]
R, full = ref["completion_ids"], ref["completion"]
expect("max_tokens %d" % N, ref, "length", R)
T = [""] + [base["ref%d" % m]["completion"] for m in range(1, N + 1)]  # T[m]: the text of the first m tokens
for m in range(1, N + 1):
    if base["ref%d" % m]["completion_ids"] != R[:m] or not full.startswith(T[m]) or len(T[m]) < len(T[m - 1]):
        c.fail("max_tokens %d: not a prefix of the %d-token run (ids %s, text %r)" %
               (m, N, base["ref%d" % m]["completion_ids"], T[m]))
print("ok  max_tokens 1..%d: ids and text are prefixes of the %d-token run" % (N, N))

# EOS: the run ends at an end-of-sequence token, which is not part of the completion
eos = base["eos"]
E = eos["completion_ids"]
if eos["finish_reason"] != "stop" or eos["prompt_tokens"] + len(E) >= SEQ_LEN or any(t in EOS_IDS for t in E):
    c.fail("%r: expected a stop at EOS before the context fills: %s tokens, %s" %
           (EOS_PROMPT, len(E), eos["finish_reason"]))
print("ok  EOS: %r stops after %d tokens (finish_reason stop)" % (EOS_PROMPT, len(E)))
checks += 1

# a full context: "length" with prompt + completion = the context
fl = base["full"]
if fl["finish_reason"] != "length" or fl["prompt_tokens"] + fl["completion_tokens"] != SEQ_LEN:
    c.fail("%r without max_tokens: %s with %d + %d tokens, expected length at the %d-token context" %
           (FULL_PROMPT, fl["finish_reason"], fl["prompt_tokens"], fl["completion_tokens"], SEQ_LEN))
print("ok  full context: length at %d + %d = %d tokens" % (fl["prompt_tokens"], fl["completion_tokens"], SEQ_LEN))
checks += 1

# ---- the stops: ids and strings picked from the reference so that they are sure to occur
# a stop token: the first occurrence of R[j], j >= 5
j_id = next(j for j in range(5, N) if R[j] not in R[:j])
# a stop string inside one token: token j's whole piece (>= 3 chars), first found where it starts
def piece(j):
    return T[j + 1][len(T[j]):]


j_in = next(j for j in range(3, N - 1) if len(piece(j).strip()) >= 3 and full.find(piece(j)) == len(T[j]))
s_in = piece(j_in)
# a stop string spanning tokens j-1 and j: 2 characters of each, first found there
j_sp = next(j for j in range(3, N - 1) if len(piece(j - 1)) >= 2 and len(piece(j)) >= 2 and
            full.find(full[len(T[j]) - 2:len(T[j]) + 2]) == len(T[j]) - 2)
s_sp = full[len(T[j_sp]) - 2:len(T[j_sp]) + 2]
print("    stop token %d (index %d); stop strings %r (token %d) and %r (tokens %d-%d)" %
      (R[j_id], j_id, s_in, j_in, s_sp, j_sp - 1, j_sp))

rows = [{"custom_id": "sid", "prompt": STORY, "max_tokens": N, "stop_token_ids": [R[j_id]]},
        {"custom_id": "sid_many", "prompt": STORY, "max_tokens": N,
         "stop_token_ids": [t for t in range(3, 512) if t not in R][:6] + [R[j_id]]},
        {"custom_id": "str_in", "prompt": STORY, "max_tokens": N, "stop": [s_in]},
        {"custom_id": "str_span", "prompt": STORY, "max_tokens": N, "stop": ["no such text", s_sp]},
        {"custom_id": "str_absent", "prompt": STORY, "max_tokens": N, "stop": ["no such text"]},
        {"custom_id": "ign", "prompt": EOS_PROMPT, "max_tokens": len(E) + 10, "ignore_eos": True}]
st = gen("stops", rows)
expect("stop_token_ids [%d]" % R[j_id], st["sid"], "stop", R[:j_id], T[j_id])
expect("stop_token_ids, the one that occurs last in the list", st["sid_many"], "stop", R[:j_id], T[j_id])
# the token that completes the string is generated (in the ids); the text ends before the string
expect("stop %r inside token %d" % (s_in, j_in), st["str_in"], "stop", R[:j_in + 1], T[j_in])
expect("stop %r spanning tokens %d-%d" % (s_sp, j_sp - 1, j_sp), st["str_span"], "stop", R[:j_sp + 1],
       full[:len(T[j_sp]) - 2])
expect("a stop string that never occurs", st["str_absent"], "length", R, full)
ign = st["ign"]
expect("ignore_eos: past the EOS, up to max_tokens", ign, "length", ign["completion_ids"])
if ign["completion_ids"][:len(E)] != E or ign["completion_ids"][len(E)] not in EOS_IDS:
    c.fail("ignore_eos: expected the EOS run's %d ids, then an EOS id, then more; got %s at index %d" %
           (len(E), ign["completion_ids"][len(E) - 2:len(E) + 2], len(E)))
print("ok  ignore_eos: the EOS id %d at index %d is kept and generation goes on" % (ign["completion_ids"][len(E)], len(E)))

# the command line's --stop applies to requests without their own
cl = gen("cli_stop", [{"custom_id": "a", "prompt": STORY, "max_tokens": N},
                      {"custom_id": "b", "prompt": STORY, "max_tokens": N, "stop": ["no such text"]}], ["--stop", s_sp])
expect("--stop %r" % s_sp, cl["a"], "stop", R[:j_sp + 1], full[:len(T[j_sp]) - 2])
expect("a request's own stop replaces --stop", cl["b"], "length", R, full)

# ---- chat: the template's end-of-turn token ends the request even with ignore_eos
cfg, w = hf.read_llama2c(SRC)
wcls = w["emb"].copy()
wcls[[1, 2]] = wcls[[2, 1]]  # the classifier says </s> (2) where the model says <s> (1)
w["wcls"] = wcls
swapped_bin, swapped = os.path.join(W, "swapped.bin"), os.path.join(W, "swapped.h5")
hf.write_llama2c(swapped_bin, cfg, w)
c.run([args.mpillama, "convert", swapped_bin, "-o", swapped, "--tokenizer", TOK])
msgs = [{"role": "user", "content": "Lily"}]
p = subprocess.run([args.mpillama, "tokenize", "--model", swapped, "--chat-template", "llama2"],
                   input=json.dumps({"messages": msgs}) + "\n", capture_output=True, text=True, env=c.mpi_env())
if p.returncode != 0:
    c.fail("tokenize --chat-template llama2: exit %d: %s" % (p.returncode, p.stderr))
chat_ids = json.loads(p.stdout)["ids"]
ch = gen("chat", [{"custom_id": "chat", "messages": msgs, "max_tokens": 400, "ignore_eos": True},
                  {"custom_id": "ids", "prompt_ids": chat_ids, "max_tokens": 400, "ignore_eos": True}],
         ["--chat-template", "llama2"], m=swapped)
P = ch["ids"]["completion_ids"]
if 2 not in P:
    c.fail("the swapped model never generated token 2 after the llama2 chat prompt in 400 tokens")
k = P.index(2)
if ch["chat"]["prompt_tokens"] != len(chat_ids):
    c.fail("chat request: %d prompt tokens, tokenize gave %d" % (ch["chat"]["prompt_tokens"], len(chat_ids)))
expect("chat (llama2, ignore_eos): stops at </s>", ch["chat"], "stop", P[:k])
print("%d passed, 0 failed" % checks)
