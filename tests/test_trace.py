"""Traces as docs/TRACE.md describes them (issue 13 point 7): every (span name, category) that
trace.json holds is a row of TRACE.md's table and summary.json's categories are its time
categories; --trace-level summary writes no trace.json, steps only steps and waits (a smaller
file), kernels everything; a rank's category seconds never add up to more than its wall time;
pipeline_bubble only with pp > 1; a rank with p2p seconds has p2p bytes (pp 1, tp 2: the
micro-batch message to the tp peer)."""
import json
import os
import re

import common as c

args = c.parse_args()
W = args.work
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ok = c.ok


model = c.small_model(args.mpillama, W, 128)
prompts = os.path.join(W, "p.jsonl")
c.write_jsonl(prompts, [{"custom_id": str(i), "prompt_ids": [1] + [(7 * i + 3 * k) % 500 + 3 for k in range(5 + i)],
                         "max_tokens": 12} for i in range(10)])


def traced(name, cmd, extra):
    d = os.path.join(W, name)
    c.mpirun(args, 2, [cmd, "--model", model, "--prompts", prompts, "--output", d + ".jsonl", "--trace", d,
                       "--batch", "4"] + extra)
    with open(os.path.join(d, "summary.json")) as f:
        s = json.load(f)
    t = os.path.join(d, "trace.json")
    events = None
    if os.path.exists(t):
        with open(t) as f:
            events = [e for e in json.load(f)["traceEvents"] if e.get("ph") == "X"]
    return s, events, (os.path.getsize(t) if events is not None else 0)


# TRACE.md's span table: | `name`, `name` | `cat` | level | what |
with open(os.path.join(ROOT, "docs", "TRACE.md")) as f:
    doc = f.read()
documented = set()
for row in re.findall(r"^\| (`[^|]+`) \| `(\w+)` \| (\w+) \|", doc, re.M):
    for name in re.findall(r"`(\w+)`", row[0]):
        documented.add((name, row[1], row[2]))
doc_cats = {cat for _, cat, _ in documented}
if not documented:
    c.fail("could not read the span table of docs/TRACE.md")

runs = {"pp2_kernels": traced("pp2_kernels", "generate", ["--pp", "2", "--trace-level", "kernels"]),
        "pp2_steps": traced("pp2_steps", "generate", ["--pp", "2"]),
        "tp2_steps": traced("tp2_steps", "generate", ["--tp", "2"]),
        "score_tp2_kernels": traced("score_tp2_kernels", "score", ["--tp", "2", "--trace-level", "kernels"]),
        "dp2_summary": traced("dp2_summary", "generate", ["--dp", "2", "--trace-level", "summary"])}

# ---- what is written is what TRACE.md says
seen = set()
for name, (s, events, _) in runs.items():
    for e in events or []:
        seen.add((e["name"], e["cat"]))
    cats = set(s["categories"])
    if cats != doc_cats - {"step", "flight"}:
        c.fail("%s: summary.json categories %s, TRACE.md's time categories %s" % (name, sorted(cats),
                                                                              sorted(doc_cats - {"step", "flight"})))
undocumented = seen - {(n, cat) for n, cat, _ in documented}
if undocumented:
    c.fail("trace.json spans that docs/TRACE.md does not list: %s" % sorted(undocumented))
ok("every span written (%d kinds) is a row of TRACE.md; summary.json's categories are its time categories %s"
   % (len(seen), sorted(doc_cats - {"step", "flight"})))

# ---- levels
s, ev, size_k = runs["pp2_kernels"]
_, ev_s, size_s = runs["pp2_steps"]
if runs["dp2_summary"][1] is not None or os.path.exists(os.path.join(W, "dp2_summary", "trace.json")):
    c.fail("--trace-level summary wrote a trace.json")
if {e["cat"] for e in ev_s} != {"step", "wait"}:
    c.fail("--trace-level steps (the default) holds %s, expected steps and waits only" % sorted({e["cat"] for e in ev_s}))
if not {"compute", "p2p", "sampling", "io"} <= {e["cat"] for e in ev}:
    c.fail("--trace-level kernels lacks kernels, sends, sampling or io: %s" % sorted({e["cat"] for e in ev}))
steps_doc = {(n, cat) for n, cat, lv in documented if lv == "steps"}
if {(e["name"], e["cat"]) for e in ev_s} - steps_doc:
    c.fail("steps-level spans not marked 'steps' in TRACE.md: %s" % ({(e["name"], e["cat"]) for e in ev_s} - steps_doc))
if not size_s * 3 < size_k:
    c.fail("the default trace (%d bytes) is not much smaller than the kernels trace (%d bytes)" % (size_s, size_k))
ok("levels: summary writes no trace.json, steps %d bytes (steps and waits), kernels %d bytes (everything)"
   % (size_s, size_k))

# ---- category seconds within each rank's wall time; the bubble only for a pipeline
for name, (s, _, _) in runs.items():
    for r in s["per_rank"]:
        total = sum(r["seconds"].values())
        if not r["wall_s"] > 0 or total > r["wall_s"] + 1e-6:
            c.fail("%s rank %d: categories add up to %.6f s, more than its wall time %.6f s: %s"
                   % (name, r["rank"], total, r["wall_s"], r["seconds"]))
    if (s["grid"]["pp"] > 1) != ("pipeline_bubble" in s):
        c.fail("%s: pp %d, pipeline_bubble %s" % (name, s["grid"]["pp"], s.get("pipeline_bubble")))
ok("every rank's category seconds stay within its wall time; pipeline_bubble only with pp 2 (%.2f)"
   % runs["pp2_kernels"][0]["pipeline_bubble"])

# ---- p2p seconds come with p2p bytes
for name, (s, _, _) in runs.items():
    for r in s["per_rank"]:
        if r["seconds"]["p2p"] > 0 and r["bytes"]["p2p"] <= 0:
            c.fail("%s rank %d: %.6f s of p2p and no p2p bytes" % (name, r["rank"], r["seconds"]["p2p"]))
r0 = runs["tp2_steps"][0]["per_rank"][0]
if r0["bytes"]["p2p"] <= 0:
    c.fail("tp 2: rank 0 sends each micro-batch message to its tp peer, yet counts no p2p bytes")
ok("p2p seconds come with p2p bytes (pp 1 tp 2 rank 0: %.4f s, %d bytes)" % (r0["seconds"]["p2p"], r0["bytes"]["p2p"]))
r = c.mpirun(args, 1, ["generate", "--model", model, "--prompts", prompts, "--output", os.path.join(W, "x.jsonl"),
                      "--trace-level", "kernels"], check=False)
r2 = c.mpirun(args, 1, ["generate", "--model", model, "--prompts", prompts, "--output", os.path.join(W, "x.jsonl"),
                       "--trace", os.path.join(W, "x"), "--trace-level", "all"], check=False)
if r.returncode != 2 or "--trace DIR" not in r.stderr or r2.returncode != 2 or "summary, steps or kernels" not in r2.stderr:
    c.fail("--trace-level without --trace / with a bad level: exit %d / %d, %s %s" % (r.returncode, r2.returncode,
                                                                                    r.stderr[-300:], r2.stderr[-300:]))
ok("--trace-level without --trace, or with an unknown level, is a usage error (exit 2)")
c.done()
