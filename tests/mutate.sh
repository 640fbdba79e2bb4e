#!/usr/bin/env bash
# tests/mutate.sh [NAME_REGEX]: the mutation check (not in CI; run it before resolving an issue that
# touches the sampler, the stop rules, the norms, RoPE or the job driver).
#
# Copies the working tree to a scratch directory, builds it, checks that the relevant tests pass,
# then plants each known bug below one at a time (a regex replacement in whichever src/ file holds
# the pattern), rebuilds, runs the tests named for it and prints which of them caught it. Exits 1
# when a mutation survived (no test failed) or could not be planted (the pattern is gone from src/:
# update the table). NAME_REGEX picks mutations by name. Uses ../shared like the suite
# (MPILLAMA_SHARED_DIR overrides); needs what tests/run.sh needs.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHARED=${MPILLAMA_SHARED_DIR:-$(cd "$ROOT/.." && pwd)/shared}
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/mpillama-mutate.XXXXXX")
trap 'rm -rf "$SCRATCH"' EXIT
(cd "$ROOT" && git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$SCRATCH")
echo "mutate: building a scratch copy in $SCRATCH"
cmake -S "$SCRATCH" -B "$SCRATCH/build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DMPILLAMA_SHARED_DIR="$SHARED" >/dev/null
cmake --build "$SCRATCH/build" -j"$(nproc)" >/dev/null
if [ "$(id -u)" -eq 0 ]; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
export OMPI_MCA_rmaps_base_oversubscribe=1
rc=0
/usr/bin/python3 - "$SCRATCH" "${1:-.}" <<'EOF' || rc=$?
import glob
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

scratch, pick = sys.argv[1], re.compile(sys.argv[2])
build = os.path.join(scratch, "build")

# name, regex (must match exactly `count` times, all in one file under src/), replacement, tests
MUTATIONS = [
    # the whole-row sampler (sampler_filter, sampler_penalize): the reference the shard steps must match
    ("top_k filter off", r"(?s)(int sampler_filter\(.*?)if \(p->top_k > 0 && p->top_k < keep\)", r"\1if (0)",
     "test_sampler"),
    ("top_k keeps one too many", r"keep = k;(\n    \}\n    qsort)", r"keep = k + 1 < keep ? k + 1 : keep;\1",
     "test_sampler"),
    ("top_p filter off", r"(?s)(int sampler_filter\(.*?)if \(p->top_p > 0\.0f && p->top_p < 1\.0f\)", r"\1if (0)",
     "test_sampler"),
    ("min_p filter off", r"if \(p->min_p > 0\.0f\) \{", "if (0) {", "test_sampler"),
    ("temperature ignored", r"logits\[i\] /= p->temperature;", ";", "test_sampler"),
    ("repetition penalty off",
     r"(?s)(void sampler_penalize\(.*?)if \(p->repetition_penalty != 1\.0f && p->repetition_penalty > 0\.0f\)",
     r"\1if (0)", "test_sampler"),
    ("frequency/presence penalties off",
     r"(?s)(void sampler_penalize\(.*?)if \(p->frequency_penalty != 0\.0f \|\| p->presence_penalty != 0\.0f\)",
     r"\1if (0)", "test_sampler"),
    ("presence penalty on every repeat",
     r"(?s)(void sampler_penalize\(.*?)if \(!\(seen\[t\] & 2\)\) logits\[t\] -= p->presence_penalty;",
     r"\1logits[t] -= p->presence_penalty;", "test_sampler"),
    # the sampler each replica's last stage runs (vocab-parallel shard steps, vsample.c)
    ("shard repetition penalty off",
     r"(?s)(void sampler_penalize_shard\(.*?)if \(p->repetition_penalty != 1\.0f && p->repetition_penalty > 0\.0f\)",
     r"\1if (0)", "test_vsample"),
    ("shard min_p off", r"if \(p->min_p > 0\.0f && !\(prob >= floor\)\) continue;", ";", "test_vsample"),
    ("NaN and +inf logits not detected", r"bad \|= !\(logits\[i\] < INFINITY\);", ";", "test_sampler"),
    ("a non-finite row drawn from anyway", r"draw\[r\] = (!sampler_is_greedy\(&rows\[r\]->sp\)) && isfinite\(v->val\[r\]\);",
     r"draw[r] = \1;", "test_numerics"),
    ("softmax sum not chained through the tp ranks", r"dist_tp_chain_recv\(d, v->sum, nw\);", ";", "test_replicas"),
    # the stop rules (check_stop_strings and the sampled token's checks in the scheduler)
    ("stop strings ignored", r"if \(hit\) \{", "if (0) {", "test_stop"),
    ("stop string left in the text", r"(\w+)->textlen = \(size_t\)\(hit - \w+->text\);", r"\1->textlen = \1->textlen;",
     "test_stop"),
    ("stop_token_ids and end-of-turn ids ignored", r"is_stop = (\S+)stop_ids\[j\] == next;", "is_stop = 0;", "test_stop"),
    ("chat end-of-turn ids not added to the stop ids", r"for \(int j = 0; j < n_chat_stop; j\+\+\) [^;]*;", ";",
     "test_stop"),
    ("EOS ignored", r"!\S+ignore_eos && config_is_eos\([^)]*\)", "0", "test_stop"),
    ("ignore_eos ignored", r"!\S+ignore_eos && (config_is_eos\([^)]*\))", r"\1", "test_stop"),
    ("no length stop at a full context", r"\|\| (\w+)->n >= \w+->m->seq_len\)", ")", "test_stop"),
    # numerics
    ("RMSNorm epsilon 1e-5 -> 1e-6", r"sqrtf\(ss / d \+ eps\)", "sqrtf(ss / d + eps * 0.1f)", "test_reference"),
    ("RoPE llama3 smoothing weights swapped", r"\(1\.0f - smooth\) \* f / factor \+ smooth \* f",
     "smooth * f / factor + (1.0f - smooth) * f", "test_kernels|test_rope_scaling"),
    ("RoPE llama3 low frequencies not divided", r"(\n\s*)f = f / factor;", r"\1f = f;", "test_kernels|test_rope_scaling"),
    # the job driver
    ("SIGTERM grace ignored", r"int expired = stopping && util_now\(\) >= deadline;", "int expired = stopping;",
     "test_batch"),
    ("SIGTERM exit code 1 instead of 75", r"return interrupted \? 75 : 0;", "return interrupted ? 1 : 0;", "test_batch"),
]


def sources():
    return sorted(glob.glob(os.path.join(scratch, "src", "**", "*.[ch]"), recursive=True))


def ctest(regex):
    """runs the tests matching regex; (names that failed, names that ran)"""
    junit = os.path.join(build, "mutate-junit.xml")
    if os.path.exists(junit):
        os.remove(junit)
    r = subprocess.run(["ctest", "-R", "^(%s)$" % regex, "--timeout", "900", "--output-junit", junit], cwd=build,
                       capture_output=True, text=True)
    cases = list(ET.parse(junit).getroot().iter("testcase")) if os.path.exists(junit) else []
    if not cases:
        print("mutate: ctest -R '^(%s)$' ran nothing (exit %d):\n%s%s" % (regex, r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
    return [t.get("name") for t in cases if t.get("status") == "fail"], [t.get("name") for t in cases]


def rebuild():
    r = subprocess.run(["cmake", "--build", build, "-j%d" % (os.cpu_count() or 2)], capture_output=True, text=True)
    return r.returncode == 0


todo = [m for m in MUTATIONS if pick.search(m[0])]
union = "|".join(sorted({t for m in todo for t in m[3].split("|")}))
failed, ran = ctest(union)
if failed or not ran:
    print("mutate: the unmutated tree fails %s (ran %s): fix that first" % (failed, ran))
    sys.exit(2)
print("mutate: unmutated, %s pass\n" % ", ".join(ran))
rows, bad = [], 0
for name, rx, rep, tests in todo:
    t0 = time.time()
    hits = [(p, len(re.findall(rx, open(p).read()))) for p in sources()]
    hits = [(p, n) for p, n in hits if n]
    if len(hits) != 1 or hits[0][1] != 1:
        rows.append((name, "NOT PLANTED: pattern found %s" % ([(os.path.relpath(p, scratch), n) for p, n in hits] or "nowhere"), ""))
        bad += 1
        continue
    path = hits[0][0]
    orig = open(path).read()
    with open(path, "w") as f:
        f.write(re.sub(rx, rep, orig))
    try:
        if not rebuild():
            verdict = "caught by the compiler"
        else:
            failed, ran = ctest(tests)
            verdict = ("caught by " + ", ".join(failed)) if failed else "SURVIVED (%s passed)" % ", ".join(ran)
    finally:
        with open(path, "w") as f:
            f.write(orig)
    if verdict.startswith("SURVIVED"):
        bad += 1
    rows.append((name, verdict, "%s, %.0f s" % (os.path.relpath(path, scratch), time.time() - t0)))
    print("%-46s %s  (%s)" % rows[-1], flush=True)
rebuild()
print("\n| mutation | result | file, time |\n|---|---|---|")
for r in rows:
    print("| %s | %s | %s |" % r)
print("\nmutate: %d of %d mutations caught%s" % (len(rows) - bad, len(rows), "" if not bad else "; %d not" % bad))
sys.exit(1 if bad else 0)
EOF
exit $rc
