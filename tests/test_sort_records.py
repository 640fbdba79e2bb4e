"""jobs/sort_records.py puts a real run's records (written in completion order) back in the prompt
file's order: custom_ids from the file, line numbers for lines without one, a torn last line
skipped, records of other prompt files last."""
import os
import subprocess
import sys

import common

args = common.parse_args()
common.need_shared(args, "models/stories260K.bin")
w = args.work
root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
model = os.path.join(w, "m.h5")
common.run([args.mpillama, "convert", os.path.join(args.shared, "models/stories260K.bin"),
            "--tokenizer", os.path.join(args.shared, "models/tok512.bin"), "-o", model])
# long prompts first and short ones last, so that completion order differs from input order
prompts = [{"custom_id": "long-%d" % i, "prompt": "Once upon a time " * 20, "max_tokens": 40, "temperature": 0}
           for i in range(3)]
prompts += [{"prompt": "Lily", "max_tokens": 2, "temperature": 0} for _ in range(3)]  # ids: their line numbers
common.write_jsonl(os.path.join(w, "p.jsonl"), prompts)
out = os.path.join(w, "out.jsonl")
common.mpirun(args, 1, ["generate", "--model", model, "--prompts", os.path.join(w, "p.jsonl"), "--output", out,
                        "--batch", "6"])
got = [r["custom_id"] for r in common.read_jsonl(out)]
want = ["long-0", "long-1", "long-2", "4", "5", "6"]
if sorted(got) != sorted(want):
    common.fail("records %s, expected the ids %s" % (got, want))
if got == want:
    print("note: this run happened to finish in input order")
with open(out, "a") as f:
    f.write('{"custom_id": "stray"}\n{"custom_id": "tor')  # a record of another file, then a torn line
r = subprocess.run([sys.executable, os.path.join(root, "jobs", "sort_records.py"), os.path.join(w, "p.jsonl"), out],
                   capture_output=True, text=True)
if r.returncode != 0:
    common.fail("sort_records.py exited %d: %s" % (r.returncode, r.stderr))
ids = [__import__("json").loads(l)["custom_id"] for l in r.stdout.splitlines()]
if ids != want + ["stray"]:
    common.fail("sorted ids %s, expected %s" % (ids, want + ["stray"]))
if "torn" not in r.stderr and "not a whole JSON record" not in r.stderr:
    common.fail("the torn line was not reported: %r" % r.stderr)
print("PASS: records back in prompt order:", ids)
