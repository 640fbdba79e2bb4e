"""OpenAI batch files in and out, end to end on stories260K: the request lines of OpenAI's Batch API
guide (and /v1/completions lines, vLLM's sampling extras, bad lines) run beside native lines;
--output-format openai writes OpenAI batch output lines and the error file, and every line is
read back through a parser of the format's fields (each key, its type, the usage sums). The body's
fields are applied: each OpenAI request gives the same completion as the native request with the
same fields. --resume keeps the finished lines, runs the missing ones again and rewrites the
error file; --resume with the other format is refused."""
import json
import os
import signal
import subprocess
import time

import common as c

args = c.parse_args()
c.need_shared(args, "models/stories260K.bin", "models/tok512.bin")
W = args.work
model = os.path.join(W, "m.h5")
c.run([args.mpillama, "convert", os.path.join(args.shared, "models/stories260K.bin"), "-o", model, "--tokenizer",
       os.path.join(args.shared, "models/tok512.bin")])
checks = 0


def ok(what):
    global checks
    checks += 1
    print("ok  " + what)


# ---------------------------------------------------------------- a parser of the format's fields

class Bad(Exception):
    pass


def need(cond, where, msg):
    if not cond:
        raise Bad("%s: %s" % (where, msg))


def keys(obj, where, required, optional=()):
    need(isinstance(obj, dict), where, "not an object: %r" % (obj,))
    missing = set(required) - set(obj)
    extra = set(obj) - set(required) - set(optional)
    need(not missing and not extra, where, "keys: missing %s, unexpected %s" % (sorted(missing), sorted(extra)))


def is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_logprob_entry(e, where, top):
    keys(e, where, ["token", "logprob", "bytes"] + (["top_logprobs"] if top else []))
    need(isinstance(e["token"], str) and is_num(e["logprob"]) and e["logprob"] <= 1e-6, where, "token / logprob: %r" % e)
    need(e["bytes"] is None or (isinstance(e["bytes"], list) and all(is_int(b) and 0 <= b < 256 for b in e["bytes"])),
         where, "bytes: %r" % (e["bytes"],))
    if e["bytes"] is not None:
        need(bytes(e["bytes"]).decode("utf-8", "replace") == e["token"] or "\ufffd" in e["token"], where,
             "bytes %r do not spell token %r" % (e["bytes"], e["token"]))


def parse_choice(ch, where, chat):
    keys(ch, where, ["index", "logprobs", "finish_reason"] + (["message"] if chat else ["text"]))
    need(is_int(ch["index"]) and ch["index"] >= 0, where, "index %r" % ch["index"])
    need(ch["finish_reason"] in ("stop", "length"), where, "finish_reason %r" % ch["finish_reason"])
    if chat:
        keys(ch["message"], where + ".message", ["role", "content"], ["refusal"])
        need(ch["message"]["role"] == "assistant" and isinstance(ch["message"]["content"], str), where,
             "message %r" % ch["message"])
    else:
        need(isinstance(ch["text"], str), where, "text %r" % ch["text"])
    lp = ch["logprobs"]
    if lp is None:
        return
    if chat:
        keys(lp, where + ".logprobs", ["content"], ["refusal"])
        need(isinstance(lp["content"], list), where, "logprobs.content")
        for k, e in enumerate(lp["content"]):
            parse_logprob_entry(e, "%s.logprobs.content[%d]" % (where, k), True)
            for t in e["top_logprobs"]:
                parse_logprob_entry(t, "%s.logprobs.content[%d].top_logprobs" % (where, k), False)
    else:
        keys(lp, where + ".logprobs", ["tokens", "token_logprobs", "top_logprobs", "text_offset"])
        n = len(lp["tokens"])
        need(all(isinstance(t, str) for t in lp["tokens"]), where, "tokens")
        need(len(lp["token_logprobs"]) == n and all(is_num(v) for v in lp["token_logprobs"]), where, "token_logprobs")
        need(len(lp["text_offset"]) == n and all(is_int(v) for v in lp["text_offset"]), where, "text_offset")
        need(lp["top_logprobs"] is None or (len(lp["top_logprobs"]) == n and all(
            isinstance(d, dict) and all(isinstance(k, str) and is_num(v) for k, v in d.items())
            for d in lp["top_logprobs"])), where, "top_logprobs")


def parse_output_line(line, where):
    """one line of an OpenAI batch output file (a finished request): returns the record"""
    r = json.loads(line)
    keys(r, where, ["id", "custom_id", "response", "error"])
    need(isinstance(r["id"], str) and r["id"].startswith("batch_req_"), where, "id %r" % r["id"])
    need(isinstance(r["custom_id"], str) and r["error"] is None, where, "custom_id / error")
    resp = r["response"]
    keys(resp, where + ".response", ["status_code", "request_id", "body"])
    need(resp["status_code"] == 200 and isinstance(resp["request_id"], str), where, "status_code / request_id")
    b = resp["body"]
    keys(b, where + ".body", ["id", "object", "created", "model", "choices", "usage"], ["system_fingerprint"])
    need(b["object"] in ("chat.completion", "text_completion"), where, "object %r" % b["object"])
    chat = b["object"] == "chat.completion"
    need(isinstance(b["id"], str) and b["id"].startswith("chatcmpl-" if chat else "cmpl-"), where, "body.id %r" % b["id"])
    need(is_int(b["created"]) and b["created"] > 1.5e9 and isinstance(b["model"], str), where, "created / model")
    need(isinstance(b["choices"], list) and b["choices"], where, "choices")
    for k, ch in enumerate(b["choices"]):
        parse_choice(ch, "%s.choices[%d]" % (where, k), chat)
    need(sorted(ch["index"] for ch in b["choices"]) == list(range(len(b["choices"]))), where, "choice indices")
    u = b["usage"]
    keys(u, where + ".usage", ["prompt_tokens", "completion_tokens", "total_tokens"])
    need(all(is_int(v) and v >= 0 for v in u.values()), where, "usage types %r" % u)
    need(u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"], where, "usage sum %r" % u)
    return r


def parse_error_line(line, where):
    """one line of an OpenAI batch error file: returns the record"""
    r = json.loads(line)
    keys(r, where, ["id", "custom_id", "response", "error"])
    need(isinstance(r["id"], str) and isinstance(r["custom_id"], str), where, "id / custom_id")
    if r["response"] is None:
        keys(r["error"], where + ".error", ["code", "message"])
        need(all(isinstance(v, str) for v in r["error"].values()), where, "error fields")
    else:
        need(r["error"] is None, where, "error with a response")
        keys(r["response"], where + ".response", ["status_code", "request_id", "body"])
        need(r["response"]["status_code"] in (400, 500), where, "status_code %r" % r["response"]["status_code"])
        keys(r["response"]["body"], where, ["error"])
        e = r["response"]["body"]["error"]
        keys(e, where + ".body.error", ["message", "type", "param", "code"])
        need(isinstance(e["message"], str) and isinstance(e["type"], str), where, "error body")
    return r


# the output line of OpenAI's Batch API guide: the parser reads the real format
GUIDE_OUT = ('{"id": "batch_req_123", "custom_id": "request-2", "response": {"status_code": 200, "request_id": '
             '"req_123", "body": {"id": "chatcmpl-123", "object": "chat.completion", "created": 1711652795, "model": '
             '"gpt-3.5-turbo-0125", "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."}, '
             '"logprobs": null, "finish_reason": "stop"}], "usage": {"prompt_tokens": 22, "completion_tokens": 2, '
             '"total_tokens": 24}, "system_fingerprint": "fp_123"}}, "error": null}')
parse_output_line(GUIDE_OUT, "the guide's output line")
for broken, why in ((GUIDE_OUT.replace('"total_tokens": 24', '"total_tokens": 25'), "usage sum"),
                    (GUIDE_OUT.replace('"error": null', '"error": null, "x": 1'), "an unexpected key"),
                    (GUIDE_OUT.replace('"finish_reason": "stop"', '"finish_reason": "interrupted"'), "finish_reason"),
                    (GUIDE_OUT.replace('"created": 1711652795', '"created": "1711652795"'), "created as a string")):
    try:
        parse_output_line(broken, "broken")
        c.fail("the parser accepted a line with a wrong %s" % why)
    except Bad:
        pass
ok("the parser reads the guide's output line and refuses 4 broken copies of it")

# ---------------------------------------------------------------- the job


def oa(cid, url, body):
    return {"custom_id": cid, "method": "POST", "url": url, "body": body}


CHAT, COMP = "/v1/chat/completions", "/v1/completions"
# the two request lines of OpenAI's Batch API guide, as given
guide = [oa("request-1", CHAT, {"model": "gpt-3.5-turbo-0125", "messages": [
             {"role": "system", "content": "You are a helpful assistant."},
             {"role": "user", "content": "Hello world!"}], "max_tokens": 1000}),
         oa("request-2", CHAT, {"model": "gpt-3.5-turbo-0125", "messages": [
             {"role": "system", "content": "You are an unhelpful assistant."},
             {"role": "user", "content": "Hello world!"}], "max_tokens": 1000})]
extras = {"temperature": 0.7, "top_p": 0.95, "top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1,
          "frequency_penalty": 0.2, "presence_penalty": 0.1, "seed": 1234, "ignore_eos": True}
msgs = [{"role": "user", "content": "Tell me a story about a cat."}]
# n completions: hot sampling, so that the choices differ
NSAMP = {"prompt": "Once upon a time", "max_tokens": 20, "seed": 7, "temperature": 1.5, "top_k": 0, "top_p": 1}
rows = guide + [
    oa("comp-greedy", COMP, {"model": "stories260K", "prompt": "Once upon a time", "max_tokens": 40,
                             "temperature": 0, "stop": ["."]}),
    {"custom_id": "native-greedy", "prompt": "Once upon a time", "max_tokens": 40, "temperature": 0, "stop": ["."]},
    oa("chat-extras", CHAT, dict(extras, messages=msgs, max_completion_tokens=25)),
    dict(extras, custom_id="native-extras", messages=msgs, max_tokens=25),
    oa("comp-ids", COMP, {"prompt": [1, 403, 407, 261, 378], "max_tokens": 12, "temperature": 0}),
    {"custom_id": "native-ids", "prompt_ids": [1, 403, 407, 261, 378], "max_tokens": 12, "temperature": 0},
    dict(NSAMP, custom_id="n3", n=3),
    dict(NSAMP, custom_id="n3-0"),
    oa("oa-n2", COMP, dict(NSAMP, n=2, top_k=-1)),
    {"custom_id": "lp-greedy", "prompt": "Once upon a time", "max_tokens": 24, "temperature": 0, "logprobs": 5},
    {"custom_id": "lp-hot", "prompt": "Once upon a time", "max_tokens": 24, "temperature": 1.2, "seed": 3,
     "repetition_penalty": 1.3, "logprobs": 0},
    oa("lp-chat", CHAT, {"messages": msgs, "max_tokens": 16, "seed": 9, "logprobs": True, "top_logprobs": 2}),
    {"custom_id": "lp-chat-native", "messages": msgs, "max_tokens": 16, "seed": 9, "logprobs": 2},
    oa("lp-comp", COMP, {"prompt": "Once upon a time", "max_tokens": 24, "temperature": 0, "logprobs": 5}),
    oa("bad-method", COMP, {"prompt": "x"}) | {"method": "GET"},
    oa("bad-url", "/v1/embeddings", {"input": "x"}),
    oa("bad-field", CHAT, {"messages": msgs, "tools": []}),
    oa("bad-chat", CHAT, {"prompt": "x"}),
]
BAD = {"bad-method": "'method' GET", "bad-url": "'url' /v1/embeddings", "bad-field": "'body.tools'",
       "bad-chat": "needs 'messages'"}
pin = os.path.join(W, "batch.jsonl")
c.write_jsonl(pin, rows)
common = ["--model", model, "--prompts", pin, "--chat-template", "llama2", "--max-seq-len", "256"]

out_native = os.path.join(W, "native.jsonl")
r = c.mpirun(args, 1, ["generate", "--output", out_native] + common, check=False)
if r.returncode != 3:  # finished, with error records for the bad lines
    c.fail("native run of the batch file: exit %d, expected 3\n%s" % (r.returncode, r.stderr[-1500:]))
native = {r["custom_id"]: r for r in c.read_jsonl(out_native)}
out = os.path.join(W, "out.jsonl")
errs = os.path.join(W, "out.errors.jsonl")
r = c.mpirun(args, 1, ["generate", "--output", out, "--output-format", "openai"] + common, check=False)
last = [x for x in r.stderr.splitlines() if x.startswith("mpillama:")][-1:]
if r.returncode != 3 or not last or "(errors in '%s')" % errs not in last[0]:
    c.fail("openai run of the batch file: exit %d (expected 3) and a last line naming the error file:\n%s"
           % (r.returncode, r.stderr[-1500:]))


def read_openai():
    try:
        return read_openai_files()
    except Bad as e:
        c.fail(str(e))


def read_openai_files():
    with open(out) as f:
        got = [parse_output_line(l, "out.jsonl line %d" % (k + 1)) for k, l in enumerate(f) if l.strip()]
    with open(errs) as f:
        bad = [parse_error_line(l, "out.errors.jsonl line %d" % (k + 1)) for k, l in enumerate(f) if l.strip()]
    return {r["custom_id"]: r for r in got}, {r["custom_id"]: r for r in bad}, len(got), len(bad)


got, bad, n_got, n_bad = read_openai()
if n_got != len(got) or n_bad != len(bad) or set(got) & set(bad) or set(got) | set(bad) != {r["custom_id"] for r in rows}:
    c.fail("every request needs one line in one file: output %s, errors %s" % (sorted(got), sorted(bad)))
if set(bad) != set(BAD):
    c.fail("error file holds %s, want %s" % (sorted(bad), sorted(BAD)))
for cid, needle in BAD.items():
    msg = bad[cid]["response"]["body"]["error"]["message"]
    if needle not in msg:
        c.fail("%s: error message %r does not name %r" % (cid, msg, needle))
    if "error" not in native[cid] or needle not in native[cid]["error"]:
        c.fail("%s: native error record %r" % (cid, native[cid]))
ok("%d output lines and %d error lines parsed; each request in one file, errors naming the field" % (n_got, n_bad))


def body(cid):
    return got[cid]["response"]["body"]


def content(cid):
    ch = body(cid)["choices"][0]
    return ch["message"]["content"] if "message" in ch else ch["text"]


for cid in ("request-1", "request-2"):
    b = body(cid)
    if b["object"] != "chat.completion" or b["model"] != "gpt-3.5-turbo-0125" or not content(cid):
        c.fail("%s: %r" % (cid, b))
    if b["usage"]["prompt_tokens"] != native[cid]["prompt_tokens"] or content(cid) != native[cid]["completion"]:
        c.fail("%s: openai and native records differ" % cid)
ok("the guide's two chat requests: chat.completion, model echoed, text and usage as the native records")

for o_id, n_id, obj in (("comp-greedy", "native-greedy", "text_completion"), ("chat-extras", "native-extras",
                        "chat.completion"), ("comp-ids", "native-ids", "text_completion")):
    b, n = body(o_id), native[n_id]
    ch = b["choices"][0]
    if b["object"] != obj or content(o_id) != n["completion"] or ch["finish_reason"] != n["finish_reason"] or \
            b["usage"]["completion_tokens"] != n["completion_tokens"] or b["usage"]["prompt_tokens"] != n["prompt_tokens"]:
        c.fail("%s against %s: %r\n  native %r" % (o_id, n_id, b, n))
    if native[o_id]["completion"] != n["completion"] or native[o_id]["seed"] != n["seed"] and o_id == "chat-extras":
        c.fail("%s: the native record of the OpenAI line differs from %s" % (o_id, n_id))
if body("chat-extras")["usage"]["completion_tokens"] != 25 or body("comp-greedy")["choices"][0]["finish_reason"] != "stop" \
        or "." in content("comp-greedy") or native["chat-extras"]["seed"] != 1234:
    c.fail("max_completion_tokens / ignore_eos / stop / seed not applied: %r %r" % (body("chat-extras"), body("comp-greedy")))
ok("the body's fields are applied: each OpenAI request gives the native request's completion")

# ---------------------------------------------------------------- n completions
n3 = native["n3"]
if set(n3) != {"custom_id", "prompt_tokens", "n", "choices", "completion_tokens", "seed", "timing"} or n3["n"] != 3 or \
        [ch["index"] for ch in n3["choices"]] != [0, 1, 2] or n3["seed"] != 7:
    c.fail("n = 3 record: %r" % n3)
chs = n3["choices"]
for ch in chs:
    if set(ch) != {"index", "completion", "completion_ids", "completion_tokens", "finish_reason", "seed"} or \
            ch["completion_tokens"] != len(ch["completion_ids"]):
        c.fail("n = 3 choice: %r" % ch)
if n3["completion_tokens"] != sum(ch["completion_tokens"] for ch in chs) or chs[0]["seed"] != 7 or \
        len({ch["seed"] for ch in chs}) != 3 or len({ch["completion"] for ch in chs}) < 2:
    c.fail("n = 3: token sum, seeds or distinct choices: %r" % n3)
one = native["n3-0"]
if (chs[0]["completion_ids"], chs[0]["seed"]) != (one["completion_ids"], one["seed"]):
    c.fail("choice 0 of n = 3 differs from the n = 1 request with the same seed")
oa_n2 = body("oa-n2")
if [ch["text"] for ch in oa_n2["choices"]] != [ch["completion"] for ch in chs[:2]] or \
        oa_n2["usage"]["completion_tokens"] != sum(ch["completion_tokens"] for ch in chs[:2]):
    c.fail("OpenAI n = 2 against the native n = 3's first two choices: %r" % oa_n2)
# each choice is the n = 1 request with the choice's seed: the streams derive reproducibly
pin1 = os.path.join(W, "seeds.jsonl")
c.write_jsonl(pin1, [dict(NSAMP, custom_id="s%d" % k, seed=ch["seed"]) for k, ch in enumerate(chs)])
out1 = os.path.join(W, "seeds_out.jsonl")
c.mpirun(args, 1, ["generate", "--model", model, "--prompts", pin1, "--output", out1, "--max-seq-len", "256"])
by_seed = {r["custom_id"]: r for r in c.read_jsonl(out1)}
for k, ch in enumerate(chs):
    if by_seed["s%d" % k]["completion_ids"] != ch["completion_ids"]:
        c.fail("choice %d differs from an n = 1 request with its seed %d" % (k, ch["seed"]))
ok("n = 3: one record, choices 0..2 with their own seeds (choice 0 = the request's), each the n = 1 request with its "
   "seed; OpenAI n = 2 gives the same first two")

# the choices share the prompt's prefill: the siblings take choice 0's KV rows and compute only the
# last prompt token (their first token is sampled with their own seed); records as unshared
pin4 = os.path.join(W, "n4.jsonl")
c.write_jsonl(pin4, [dict(NSAMP, custom_id="n4", n=4)])
n4 = {}
for batch in ("16", "2", "1", "dp2"):
    o4, tr = os.path.join(W, "n4_%s.jsonl" % batch), os.path.join(W, "trace_%s" % batch)
    # dp 2, 4 slots a replica: the hub sends the 4 choices to one replica together (past the 2 it asks for)
    c.mpirun(args, 2 if batch == "dp2" else 1, ["generate", "--model", model, "--prompts", pin4, "--output", o4,
             "--max-seq-len", "256", "--trace", tr] + (["--dp", "2", "--batch", "4"] if batch == "dp2" else
                                                       ["--batch", batch]))
    n4[batch] = c.read_jsonl(o4)[0]
    with open(os.path.join(tr, "summary.json")) as f:
        n4[batch]["prompt_computed"] = json.load(f)["tokens"]["prompt"]
prompt_n = n3["prompt_tokens"]
if n4["16"]["prompt_computed"] != prompt_n + 3 or n4["1"]["prompt_computed"] != 4 * prompt_n or \
        n4["dp2"]["prompt_computed"] != prompt_n + 3:
    c.fail("prompt tokens computed for n = 4: %d with 4 slots (want %d: shared), %d with 1 slot (want %d), %d on dp 2 "
           "(want %d)" % (n4["16"]["prompt_computed"], prompt_n + 3, n4["1"]["prompt_computed"], 4 * prompt_n,
                          n4["dp2"]["prompt_computed"], prompt_n + 3))
for batch in ("16", "2", "1", "dp2"):
    if n4[batch]["choices"][:3] != chs or n4[batch]["choices"] != n4["16"]["choices"]:
        c.fail("n = 4 with --batch %s: choices differ from n = 3's / --batch 16's" % batch)
ok("n = 4 computes the prompt once (%d prompt tokens for a %d-token prompt; 1 slot: %d) and gives the same choices "
   "with 16, 2 and 1 slots and on dp 2" % (n4["16"]["prompt_computed"], prompt_n, n4["1"]["prompt_computed"]))

# ---------------------------------------------------------------- logprobs
# exact: each completion token's log-prob is score's teacher-forced one (the model's distribution,
# before penalties and temperature), whether the token was greedy or sampled
sc_in = os.path.join(W, "score_in.jsonl")
c.write_jsonl(sc_in, [{"custom_id": cid, "prompt_ids": [1, 403, 407, 261, 378] + native[cid]["completion_ids"]}
                      for cid in ("lp-greedy", "lp-hot")])
sc_out = os.path.join(W, "score_out.jsonl")
c.mpirun(args, 1, ["score", "--model", model, "--prompts", sc_in, "--output", sc_out])
scored = {r["custom_id"]: r for r in c.read_jsonl(sc_out)}
worst = 0.0
for cid, k in (("lp-greedy", 5), ("lp-hot", 0)):
    r = native[cid]
    n = r["completion_tokens"]
    want = scored[cid]["logprobs"][-n:]
    if len(r["logprobs"]) != n or n == 0:
        c.fail("%s: %d log-probs for %d tokens" % (cid, len(r["logprobs"]), n))
    worst = max([worst] + [abs(a - b) for a, b in zip(r["logprobs"], want)])
    if ("top_logprobs" in r) != (k > 0):
        c.fail("%s: top_logprobs %s with logprobs %d" % (cid, "present" if k == 0 else "absent", k))
    for i, top in enumerate(r.get("top_logprobs", [])):
        lps = [t["logprob"] for t in top]
        if len(top) != k or lps != sorted(lps, reverse=True) or sum(2.718281828 ** v for v in lps) > 1 + 1e-5:
            c.fail("%s token %d: top alternatives %r" % (cid, i, top))
        if top[0]["id"] != r["completion_ids"][i] or abs(top[0]["logprob"] - r["logprobs"][i]) > 1e-6:
            c.fail("%s token %d: greedy token %d is not the top alternative %r" % (cid, i, r["completion_ids"][i], top[0]))
if worst > 1e-4:
    c.fail("completion log-probs differ from score's by %.2g" % worst)
ok("logprobs: greedy and sampled (penalised) completions' log-probs = score's within %.1e; top 5 sorted, the greedy "
   "token first" % worst)

ch = body("lp-chat")["choices"][0]
nat = native["lp-chat-native"]
content_lp = ch["logprobs"]["content"]
if "".join(e["token"] for e in content_lp) != ch["message"]["content"] or \
        len(content_lp) != nat["completion_tokens"] or any(len(e["top_logprobs"]) != 2 for e in content_lp) or \
        max(abs(e["logprob"] - v) for e, v in zip(content_lp, nat["logprobs"])) > 1e-6 or \
        [[t["logprob"] for t in e["top_logprobs"]] for e in content_lp] != \
        [[t["logprob"] for t in tt] for tt in nat["top_logprobs"]]:
    c.fail("chat logprobs against the native request: %r\n  %r" % (ch["logprobs"], nat))
cl = body("lp-comp")["choices"][0]["logprobs"]
g = native["lp-greedy"]
if "".join(cl["tokens"]) != body("lp-comp")["choices"][0]["text"] or cl["token_logprobs"] != g["logprobs"] or \
        cl["text_offset"] != [sum(len(t) for t in cl["tokens"][:i]) for i in range(len(cl["tokens"]))] or \
        [sorted(d.values(), reverse=True) for d in cl["top_logprobs"]] != \
        [[t["logprob"] for t in tt] for tt in g["top_logprobs"]]:
    c.fail("completions logprobs against the native request: %r" % cl)
ok("OpenAI logprobs: chat content tokens spell the message, completions tokens the text; values as native records")

# ---------------------------------------------------------------- --resume with both files
lines = open(out).read().splitlines(True)
dropped = [json.loads(l)["custom_id"] for l in lines[:2]]
with open(out, "w") as f:
    f.writelines(lines[2:])
    f.write(lines[0][:40])  # a torn line
r = c.mpirun(args, 1, ["generate", "--output", out, "--output-format", "native", "--resume"] + common, check=False)
if r.returncode != 1 or "--output-format" not in r.stderr:
    c.fail("--resume with the other format: exit %d, %s" % (r.returncode, r.stderr[-500:]))
r = c.mpirun(args, 1, ["generate", "--output", out, "--output-format", "openai", "--resume"] + common, check=False)
if r.returncode != 3:
    c.fail("--resume of the openai run: exit %d, expected 3 (the bad lines fail again)\n%s" % (r.returncode, r.stderr[-1500:]))
got2, bad2, n_got2, n_bad2 = read_openai()
if n_got2 != n_got or n_bad2 != n_bad or set(got2) != set(got) or set(bad2) != set(bad):
    c.fail("after --resume: %d output lines (%d), %d error lines (%d)" % (n_got2, n_got, n_bad2, n_bad))
for cid in got:
    a, b = got[cid]["response"]["body"], got2[cid]["response"]["body"]
    if a["choices"] != b["choices"] or a["usage"] != b["usage"] or got[cid]["id"] != got2[cid]["id"]:
        c.fail("%s differs after --resume (%s)" % (cid, "run again" if cid in dropped else "kept"))
ok("--resume: the 2 dropped requests and a torn line run again, identical; the error file rewritten, not appended")

# ---------------------------------------------------------------- a stop signal amid n completions
# SIGUSR1 to mpiexec (passed on to the rank) with --grace 0: exit 75; a request of n with a choice
# cut short is one interrupted record (native) or an error line (openai); --resume then gives the
# uninterrupted run's records in both formats
# (lengths differ, so that some request is in flight whenever a record is written)
sig_rows = [{"custom_id": "s%d" % i, "prompt": "Once upon a time", "n": 4, "seed": 100 + i,
             "max_tokens": 60 + (37 * i) % 100, "ignore_eos": True, "temperature": 1.0, "logprobs": 1} for i in range(24)]
sig_rows[3] = oa("s3", COMP, {"prompt": "The cat", "n": 3, "max_tokens": 150, "ignore_eos": True})
sig_in = os.path.join(W, "sig.jsonl")
c.write_jsonl(sig_in, sig_rows)
SIG = ["generate", "--model", model, "--prompts", sig_in, "--max-seq-len", "256", "--batch", "8"]


def no_timing(path):
    recs = {}
    for r in c.read_jsonl(path):
        r.pop("timing", None)
        if "response" in r and r["response"]:
            r["response"]["body"].pop("created")
        recs[r["custom_id"]] = r
    return recs


for fmt in ("native", "openai"):
    ref_p = os.path.join(W, "sig_ref_%s.jsonl" % fmt)
    c.mpirun(args, 1, SIG + ["--output", ref_p, "--output-format", fmt])
    sig_ref = no_timing(ref_p)
    cut = os.path.join(W, "sig_%s.jsonl" % fmt)
    cmd = [args.mpiexec, "-n", "1", "--oversubscribe", args.mpillama] + SIG + ["--output", cut, "--output-format", fmt,
                                                                             "--grace", "0"]
    proc = subprocess.Popen(cmd, env=c.mpi_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    t0 = time.time()
    while time.time() - t0 < 120 and proc.poll() is None and \
            not (os.path.exists(cut) and open(cut, "rb").read().count(b"\n") >= 1):
        time.sleep(0.005)
    if proc.poll() is not None:
        c.fail("%s: the run ended before the signal" % fmt)
    os.kill(proc.pid, signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    part = c.read_jsonl(cut)
    errs_p = os.path.join(W, "sig_%s.errors.jsonl" % fmt)
    cut_short = [r for r in part if r.get("finish_reason") == "interrupted"] if fmt == "native" else \
        [r for r in c.read_jsonl(errs_p) if r["error"] and r["error"]["code"] == "interrupted"]
    whole = [r for r in part if r.get("finish_reason") != "interrupted"]
    # (a signal between two requests may leave none in flight: no interrupted record then)
    if proc.returncode != 75 or len(whole) + len(cut_short) >= len(sig_rows):
        c.fail("%s: SIGUSR1 with --grace 0: exit %d, %d whole and %d interrupted records\n%s" %
               (fmt, proc.returncode, len(whole), len(cut_short), err[-1500:]))
    for r in whole:
        rr = dict(r)
        rr.pop("timing", None)
        if "response" in rr:
            rr["response"]["body"].pop("created")
        if rr != sig_ref[r["custom_id"]]:
            c.fail("%s: record %s written before the signal differs from the uninterrupted run's" % (fmt, r["custom_id"]))
    c.mpirun(args, 1, SIG + ["--output", cut, "--output-format", fmt, "--resume"])
    if no_timing(cut) != sig_ref:
        c.fail("%s: after --resume the records differ from the uninterrupted run's" % fmt)
    if fmt == "openai" and c.read_jsonl(errs_p):
        c.fail("openai: the error file still holds lines after --resume")
    ok("%s: SIGUSR1 amid n = 4 requests: exit 75, %d whole records, %d cut short (%s); --resume gives the "
       "uninterrupted records" % (fmt, len(whole), len(cut_short), "interrupted records" if fmt == "native"
                                   else "error lines"))

# ---------------------------------------------------------------- the same records on every grid
grid_rows = [{"custom_id": "g%d" % i, "prompt": p, "n": 2, "logprobs": 3, "temperature": 0.8, "seed": 11 + i,
              "max_tokens": 24} for i, p in enumerate(["Once upon a time", "The cat", "Lily and Ben went to the park"])]
grid_rows.append(oa("g-chat", CHAT, {"messages": msgs, "n": 2, "max_tokens": 16, "logprobs": True, "top_logprobs": 3}))
grid_in = os.path.join(W, "grid.jsonl")
c.write_jsonl(grid_in, grid_rows)


def grid_run(tag, n, flags):
    o = os.path.join(W, "grid_%s.jsonl" % tag)
    c.mpirun(args, n, ["generate", "--model", model, "--prompts", grid_in, "--output", o, "--chat-template", "llama2",
                       "--max-seq-len", "256", "--batch", "4"] + flags)
    recs = {r["custom_id"]: r for r in c.read_jsonl(o)}
    if set(recs) != {r["custom_id"] for r in grid_rows}:
        c.fail("grid %s: records %s" % (tag, sorted(recs)))
    return recs


ref = grid_run("1x1", 1, [])
worst = 0.0
for tag, n, flags in (("1x2", 2, ["--tp", "2"]), ("2x1", 2, ["--pp", "2"]), ("dp2", 2, ["--dp", "2"])):
    got_g = grid_run(tag, n, flags)
    for cid, a in ref.items():
        b = got_g[cid]
        if a["n"] != 2 or len(a["choices"]) != 2 or "error" in a:
            c.fail("grid 1x1 %s: %r" % (cid, a))
        for ca, cb in zip(a["choices"], b["choices"]):
            same = {k: ca[k] for k in ca if k not in ("logprobs", "top_logprobs")}
            if same != {k: cb[k] for k in cb if k not in ("logprobs", "top_logprobs")}:
                c.fail("grid %s %s choice %d differs from 1x1:\n  %r\n  %r" % (tag, cid, ca["index"], ca, cb))
            if len(ca["logprobs"]) != ca["completion_tokens"] or len(ca["top_logprobs"]) != ca["completion_tokens"]:
                c.fail("grid 1x1 %s: logprobs of %d tokens" % (cid, ca["completion_tokens"]))
            d = [abs(x - y) for x, y in zip(ca["logprobs"], cb["logprobs"])]
            for ta, tb in zip(ca["top_logprobs"], cb["top_logprobs"]):
                if len(ta) != 3 or len(tb) != 3:
                    c.fail("grid %s %s: top alternatives %r %r" % (tag, cid, ta, tb))
                for ea, eb in zip(ta, tb):
                    d.append(abs(ea["logprob"] - eb["logprob"]))
                    if ea["id"] != eb["id"] and abs(ea["logprob"] - eb["logprob"]) > 1e-4:
                        c.fail("grid %s %s: alternative %r against 1x1's %r" % (tag, cid, eb, ea))
            worst = max([worst] + d)
if worst > 1e-4:
    c.fail("grid log-probs differ from 1x1's by %.2g (> 1e-4)" % worst)
ok("n = 2 and logprobs = 3 on 1x1, 1x2, 2x1 and dp 2: the same records, log-probs within %.1e" % worst)

r = c.mpirun(args, 1, ["score", "--output", os.path.join(W, "s.jsonl"), "--output-format", "openai"] + common[:4],
             check=False)
r2 = c.mpirun(args, 1, ["generate", "--output", os.path.join(W, "x.jsonl"), "--output-format", "csv"] + common,
              check=False)
if r.returncode != 2 or r2.returncode != 2 or "native or openai" not in r2.stderr:
    c.fail("--output-format with score / a bad value: exit %d / %d %s" % (r.returncode, r2.returncode, r2.stderr[-300:]))
ok("--output-format openai with score and --output-format csv are usage errors (exit 2)")
print("PASS test_openai: %d checks" % checks)
