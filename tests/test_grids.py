"""Every valid pp x tp grid at world sizes 1, 2, 3, 4, 6, 8 gives the 1x1 answers: teacher-forced
log-probs within 1e-4 and identical greedy ids, on stories260K (when ../shared has it) and on
synthetic llama2.c checkpoints written by make_llama2c_model.py: one KV head (replicated when
tp > 1), a layer count no pp divides, an untied classifier with 6 heads (tp 3 and 6), and a larger
model whose timings are printed; plus a few runs that schedule differently (small --batch,
--prefill-chunk, --micro-batches). Each rank must read exactly its planned bytes (--verbose) and,
on more than one rank, less than the whole model. The 1x1 runs are also checked against a float64
numpy reference of the forward pass (log-probs, greedy argmax; the smallest greedy margin is
reported: a near tie would make the grid comparison flaky). Impossible grids must fail fast (no
hang) and list the valid ones. Rows of the table are printed as they pass."""
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np

import common as c

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import make_llama2c_model as mk  # noqa: E402

WORLDS = [1, 2, 3, 4, 6, 8]
TOL = 1e-4          # |logprob(grid) - logprob(1x1)|
REF_TOL = 1e-4      # |logprob(1x1) - numpy float64 reference|
NEAR_TIE = 1e-3     # greedy margins below this are reported: such a model would make the test flaky
MAX_TOKENS = 40
RUN_TIMEOUT = 180   # seconds for one mpirun (the slowest takes a few seconds)
BAD_TIMEOUT = 30    # an impossible grid must be refused within this

# name, make_llama2c_model arguments, why it is here
SYNTHETIC = [
    ("kv1", dict(dim=64, hidden=172, layers=4, heads=8, kv_heads=1, vocab=512, seq_len=128, seed=7),
     "one KV head: replicated across tp"),
    ("uneven7", dict(dim=64, hidden=170, layers=7, heads=8, kv_heads=2, vocab=381, seq_len=128, seed=8),
     "7 layers (no pp > 1 divides them), FFN and vocab split unevenly"),
    ("untied6h", dict(dim=96, hidden=250, layers=4, heads=6, kv_heads=6, vocab=331, seq_len=128, seed=4,
                      untied=True), "untied classifier, 6 heads (tp 3, 6)"),
    ("big", dict(dim=256, hidden=688, layers=8, heads=8, kv_heads=4, vocab=2048, seq_len=128, seed=2),
     "larger: timings"),
]
PROMPT_LENGTHS = [1, 7, 18, 30]

args = c.parse_args()
t_begin = time.time()
n_checks = 0


def launch(n, sub, timeout, env=None):
    """mpirun of `mpillama sub...` on n ranks (env: variables added), its ranks ended on timeout
    (SIGTERM to mpirun). Returns (exit code or None on timeout, stdout, stderr, seconds)."""
    cmd = [args.mpiexec, "-n", str(n), "--oversubscribe", args.mpillama] + sub
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(c.mpi_env(), **(env or {})),
                         start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
        return p.returncode, out, err, time.time() - t0
    except subprocess.TimeoutExpired:
        # mpirun puts each rank in a process group of its own: SIGTERM lets it kill them all
        p.terminate()
        try:
            out, err = p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, err = p.communicate()
        return None, out, err, time.time() - t0


def must_run(n, sub, what, env=None):
    rc, out, err, dt = launch(n, sub, RUN_TIMEOUT, env)
    cmd = "%s -n %d --oversubscribe %s %s" % (args.mpiexec, n, args.mpillama, " ".join(sub))
    if rc is None:
        c.fail("%s: hung (no exit within %d s)\ncommand: %s\nstderr: %s" % (what, RUN_TIMEOUT, cmd, err[-3000:]))
    if rc != 0:
        c.fail("%s: exit %d\ncommand: %s\nstdout: %s\nstderr: %s" % (what, rc, cmd, out[-2000:], err[-3000:]))
    return err, dt


def weight_bytes_of(h5):
    """bytes of the weight tensors listed by `mpillama info` (tokenizer datasets excluded)"""
    out = c.run([args.mpillama, "info", h5, "--tensors"]).stdout
    total = 0
    for m in re.finditer(r"^\s+(\S+)\s+f32\s+\[[^\]]*\]\s+(\d+) bytes$", out, re.M):
        if not m.group(1).startswith(("tokenizer/", "source/")):
            total += int(m.group(2))
    if not total:
        c.fail("could not read tensor sizes from `mpillama info %s`:\n%s" % (h5, out[-2000:]))
    return total


VERBOSE_RE = re.compile(r"^mpillama: rank (\d+) stage (\d+) tp (\d+): layers (\d+)-(\d+),.*bytes read (\d+) \(plan (\d+)\)$",
                        re.M)


def check_bytes(err, model, pp, tp, whole, n_layers):
    """the --verbose lines: every rank reads its plan, and none the whole model on a grid > 1x1"""
    rows = [tuple(int(g) for g in m.groups()) for m in VERBOSE_RE.finditer(err)]
    n = pp * tp
    if sorted(r[0] for r in rows) != list(range(n)):
        c.fail("%s %dx%d: --verbose listed ranks %s, expected 0..%d\nstderr: %s" %
               (model, pp, tp, [r[0] for r in rows], n - 1, err[-3000:]))
    layers = set()
    for rank, stage, tpr, l0, l1, read, plan in rows:
        if read != plan:
            c.fail("%s %dx%d: rank %d read %d bytes, its plan is %d" % (model, pp, tp, rank, read, plan))
        if n > 1 and read >= whole:
            c.fail("%s %dx%d: rank %d read %d bytes, the whole model is %d" % (model, pp, tp, rank, read, whole))
        if n == 1 and read != whole:
            c.fail("%s 1x1: rank 0 read %d bytes, `mpillama info` lists %d bytes of weights" % (model, read, whole))
        if stage != rank // tp or tpr != rank % tp:
            c.fail("%s %dx%d: rank %d reported as stage %d tp %d" % (model, pp, tp, rank, stage, tpr))
        layers.update(range(l0, l1 + 1))
    if layers != set(range(n_layers)):
        c.fail("%s %dx%d: the ranks hold layers %s, not 0..%d" % (model, pp, tp, sorted(layers), n_layers - 1))
    return max(r[5] for r in rows)


def first_diff(a, b):
    return next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def check_reference(name, binpath, prompts, score, gen):
    """1x1 against the numpy float64 forward: log-probs, greedy ids; returns (max |d|, min margin)"""
    w = mk.read_checkpoint(binpath)
    worst, margin = 0.0, float("inf")
    for p in prompts:
        cid, ids = p["custom_id"], p["prompt_ids"]
        comp = gen[cid]["completion_ids"]
        full = ids + comp
        z = mk.forward(w, full[:-1] if comp else full)
        lp = mk.log_softmax(z)
        want = [lp[i, full[i + 1]] for i in range(len(ids) - 1)]
        d = max([abs(a - b) for a, b in zip(score[cid]["logprobs"], want)] or [0.0])
        worst = max(worst, d)
        if d > REF_TOL:
            c.fail("%s 1x1 prompt %s: log-probs differ from the numpy reference by %.3g > %g" % (name, cid, d, REF_TOL))
        for k, tok in enumerate(comp):
            row = z[len(ids) - 1 + k]
            top2 = np.sort(row)[-2:]
            m = top2[1] - top2[0]
            if int(np.argmax(row)) != tok:
                c.fail("%s 1x1 prompt %s: greedy token %d is %d, the numpy reference's argmax is %d (margin %.3g)" %
                       (name, cid, k, tok, int(np.argmax(row)), m))
            margin = min(margin, m)
        if len(comp) < MAX_TOKENS and gen[cid]["finish_reason"] != "stop":
            c.fail("%s 1x1 prompt %s: %d tokens, finish_reason %r" % (name, cid, len(comp), gen[cid]["finish_reason"]))
    if margin < NEAR_TIE:
        print("WARNING: %s: a greedy step has an argmax margin of only %.2g: a near tie, grids may differ there "
              "(pick another --seed)" % (name, margin))
    return worst, margin


# ---------------------------------------------------------------- models
models = []  # dicts: name, h5, bin (synthetic only), config, prompts file, prompts
stories = os.path.join(args.shared, "models/stories260K.bin") if args.shared else ""
tok512 = os.path.join(args.shared, "models/tok512.bin") if args.shared else ""
if stories and os.path.exists(stories) and os.path.exists(tok512):
    h5 = os.path.join(args.work, "stories260K.h5")
    c.run([args.mpillama, "convert", stories, "-o", h5, "--tokenizer", tok512])
    cfg = mk.read_checkpoint(stories)["config"]
    models.append(dict(name="stories260K", h5=h5, bin=stories, cfg=cfg, why="shared, tokenizer stored"))
else:
    print("SKIP (part): model stories260K: ../shared/models/stories260K.bin or tok512.bin is absent "
          "(a user's clone has no shared data); the synthetic models still run")
for name, spec, why in SYNTHETIC:
    binpath = os.path.join(args.work, name + ".bin")
    h5 = os.path.join(args.work, name + ".h5")
    gen_cmd = [sys.executable, os.path.join(HERE, "make_llama2c_model.py"), binpath]
    for k, v in spec.items():
        if k == "untied":
            gen_cmd += ["--untied"] if v else []
        else:
            gen_cmd += ["--" + k.replace("_", "-"), str(v)]
    c.run(gen_cmd)
    c.run([args.mpillama, "convert", binpath, "-o", h5])
    models.append(dict(name=name, h5=h5, bin=binpath, cfg=mk.read_checkpoint(binpath)["config"], why=why))

for m in models:
    V = m["cfg"]["vocab"]
    rng = np.random.default_rng([12345, V])  # each model's prompts depend on it alone
    m["prompts"] = [{"custom_id": "p%d_len%d" % (i, n), "prompt_ids": [1] + [int(t) for t in rng.integers(0, V, n - 1)]}
                    for i, n in enumerate(PROMPT_LENGTHS)]
    m["prompts_file"] = os.path.join(args.work, m["name"] + "_prompts.jsonl")
    c.write_jsonl(m["prompts_file"], m["prompts"])
    m["whole"] = weight_bytes_of(m["h5"])

# ---------------------------------------------------------------- grids
# besides every grid with the default scheduling, a few runs that schedule differently (fewer
# slots than prompts, so that some wait; prompts prefilled in small chunks; micro-batch counts
# other than pp): the same answers are expected
VARIANTS = {
    "kv1": [(2, 4, ["--batch", "1", "--prefill-chunk", "3"])],
    "uneven7": [(3, 2, ["--batch", "3", "--prefill-chunk", "5", "--micro-batches", "3"])],
    "untied6h": [(1, 3, ["--batch", "2", "--prefill-chunk", "4", "--micro-batches", "2"]),
                 (3, 1, ["--batch", "2", "--prefill-chunk", "6", "--micro-batches", "1"])],
    "big": [(4, 1, ["--batch", "2", "--prefill-chunk", "7", "--micro-batches", "2"])],
}
SHORT = {"--batch": "b", "--prefill-chunk": "c", "--micro-batches": "m"}
HEADER = "%-11s %-11s %5s %14s %13s %8s %8s %11s" % ("model", "grid", "ranks", "max|dlogprob|", "max rank/all",
                                                   "score s", "gen s", "decode t/s")
ROW = "%-11s %-11s %5d %14.2e %13.3f %8.2f %8.2f %11.1f"
table = []  # (model, grid, ranks, max |dlogprob| vs 1x1, max rank bytes / whole, score s, generate s, decode tok/s)
for m in models:
    name, cfg = m["name"], m["cfg"]
    base_score = base_gen = None
    grids = [(pp, tp, []) for n in WORLDS for pp, tp in c.valid_grids(cfg["heads"], cfg["kv_heads"], cfg["layers"], n)]
    grids += VARIANTS.get(name, [])
    assert grids[0] == (1, 1, [])
    for pp, tp, extra in grids:
        if not table:
            print(HEADER)
        n = pp * tp
        label = "%dx%d" % (pp, tp) + "".join(SHORT[extra[i]] + extra[i + 1] for i in range(0, len(extra), 2))
        tag = "%s %s" % (name, label)
        opts = ["--pp", str(pp), "--tp", str(tp)] + extra
        so = os.path.join(args.work, "%s_score_%s.jsonl" % (name, label))
        go = os.path.join(args.work, "%s_gen_%s.jsonl" % (name, label))
        score_cmd = ["score", "--model", m["h5"], "--prompts", m["prompts_file"], "--output", so] + opts
        gen_cmd = ["generate", "--model", m["h5"], "--prompts", m["prompts_file"], "--output", go, "--temperature", "0",
                   "--max-tokens", str(MAX_TOKENS)] + opts
        err_s, dt_s = must_run(n, score_cmd + ["--verbose"], tag + " score")
        err_g, dt_g = must_run(n, gen_cmd + ["--verbose"], tag + " generate")
        biggest = check_bytes(err_s, name, pp, tp, m["whole"], cfg["layers"])
        check_bytes(err_g, name, pp, tp, m["whole"], cfg["layers"])
        score = {r["custom_id"]: r for r in c.read_jsonl(so)}
        gen = {r["custom_id"]: r for r in c.read_jsonl(go)}
        for p in m["prompts"]:
            cid = p["custom_id"]
            if cid not in score or "logprobs" not in score[cid]:
                c.fail("%s score: no log-probs for prompt %s: %s" % (tag, cid, score.get(cid)))
            if cid not in gen or "completion_ids" not in gen[cid]:
                c.fail("%s generate: no completion for prompt %s: %s" % (tag, cid, gen.get(cid)))
            if score[cid]["token_ids"] != p["prompt_ids"]:
                c.fail("%s prompt %s: score echoed token_ids %s" % (tag, cid, score[cid]["token_ids"]))
            if len(score[cid]["logprobs"]) != len(p["prompt_ids"]) - 1:
                c.fail("%s prompt %s: %d log-probs for %d tokens" % (tag, cid, len(score[cid]["logprobs"]),
                                                                      len(p["prompt_ids"])))
        if (pp, tp, extra) == (1, 1, []):
            base_score, base_gen = score, gen
            if m["bin"]:
                d, margin = check_reference(name, m["bin"], m["prompts"], score, gen)
                m["ref"] = (d, margin)
                n_checks += len(m["prompts"])
            m["completion_lens"] = [len(gen[p["custom_id"]]["completion_ids"]) for p in m["prompts"]]
        worst = 0.0
        for p in m["prompts"]:
            cid = p["custom_id"]
            a, b = score[cid]["logprobs"], base_score[cid]["logprobs"]
            d = max([abs(x - y) for x, y in zip(a, b)] or [0.0])
            if d > TOL:
                k = max(range(len(a)), key=lambda i: abs(a[i] - b[i]))
                c.fail("%s prompt %s (%d tokens): log-prob of token %d is %.6f, 1x1 gives %.6f (|d| %.3g > %g)\n"
                       "command: %s -n %d --oversubscribe %s %s"
                       % (tag, cid, len(p["prompt_ids"]), k + 1, a[k], b[k], d, TOL, args.mpiexec, n, args.mpillama,
                          " ".join(score_cmd)))
            worst = max(worst, d)
            g, g1 = gen[cid]["completion_ids"], base_gen[cid]["completion_ids"]
            if g != g1:
                k = first_diff(g, g1)
                c.fail("%s prompt %s (%d tokens): greedy ids differ from 1x1 at index %d:\n  %s: %s\n  1x1: %s\n"
                       "command: %s -n %d --oversubscribe %s %s"
                       % (tag, cid, len(p["prompt_ids"]), k, label, g, g1, args.mpiexec, n, args.mpillama,
                          " ".join(gen_cmd)))
            n_checks += 2
        dec = re.search(r"decode ([0-9.]+) tok/s", err_g)
        table.append((name, label, n, worst, biggest / m["whole"], dt_s, dt_g,
                      float(dec.group(1)) if dec else float("nan")))
        print(ROW % table[-1], flush=True)

# ---------------------------------------------------------------- the tp all-reduce
# one node's tp ranks sum through shared memory (dist.c); MPILLAMA_SHM_ALLREDUCE=0 takes
# MPI_Allreduce instead: at tp 2 both compute a + b, so the log-probs must agree to the bit
m = next(m for m in models if m["name"] == "big")
so_mpi = os.path.join(args.work, "big_score_1x2_mpi.jsonl")
must_run(2, ["score", "--model", m["h5"], "--prompts", m["prompts_file"], "--output", so_mpi, "--pp", "1", "--tp", "2"],
         "big 1x2 score with MPILLAMA_SHM_ALLREDUCE=0", {"MPILLAMA_SHM_ALLREDUCE": "0"})
shm = {r["custom_id"]: r["logprobs"] for r in c.read_jsonl(os.path.join(args.work, "big_score_1x2.jsonl"))}
mpi = {r["custom_id"]: r["logprobs"] for r in c.read_jsonl(so_mpi)}
if shm != mpi:
    cid = next(k for k in shm if shm[k] != mpi.get(k))
    c.fail("big 1x2: log-probs through the shared-memory all-reduce differ from MPI_Allreduce's (prompt %s):\n"
           "  shared memory: %s\n  MPI: %s" % (cid, shm[cid], mpi.get(cid)))
print("big 1x2: the shared-memory all-reduce and MPI_Allreduce give the same log-probs, bit for bit (%d prompts)"
      % len(shm))
n_checks += 1

# ---------------------------------------------------------------- impossible grids
def valid_list(cfg, n):
    v = c.valid_grids(cfg["heads"], cfg["kv_heads"], cfg["layers"], n)
    return ", ".join("--pp %d --tp %d" % g for g in v) if v else "none"


bymodel = {m["name"]: m for m in models}
bad_cases = [("kv1", 3, 1, 3), ("kv1", 3, 2, 2), ("uneven7", 8, 8, 1), ("kv1", 6, 1, 6), ("untied6h", 4, 1, 4)]
bad_rows = []
for name, n, pp, tp in bad_cases:
    m = bymodel[name]
    sub = ["generate", "--model", m["h5"], "--prompts", m["prompts_file"], "--output",
           os.path.join(args.work, "bad.jsonl"), "--temperature", "0", "--max-tokens", "4", "--pp", str(pp), "--tp", str(tp)]
    if c.valid_grids(m["cfg"]["heads"], m["cfg"]["kv_heads"], m["cfg"]["layers"], n).count((pp, tp)):
        c.fail("test bug: %s --pp %d --tp %d on %d ranks is valid" % (name, pp, tp, n))
    rc, out, err, dt = launch(n, sub, BAD_TIMEOUT)
    what = "%s --pp %d --tp %d on %d ranks" % (name, pp, tp, n)
    cmd = "%s -n %d --oversubscribe %s %s" % (args.mpiexec, n, args.mpillama, " ".join(sub))
    if rc is None:
        c.fail("%s: hung (no exit within %d s) instead of refusing the grid\ncommand: %s" % (what, BAD_TIMEOUT, cmd))
    if rc == 0:
        c.fail("%s: exit 0, expected a refusal\ncommand: %s" % (what, cmd))
    want = "valid grids for this model on %d ranks: %s" % (n, valid_list(m["cfg"], n))
    if "impossible grid" not in err or want not in err:
        c.fail("%s: exit %d, but stderr lacks 'impossible grid' or '%s'\ncommand: %s\nstderr: %s" %
               (what, rc, want, cmd, err[-2000:]))
    if err.count("impossible grid") != 1:
        c.fail("%s: 'impossible grid' printed %d times (expected once, by rank 0)\nstderr: %s" %
               (what, err.count("impossible grid"), err[-2000:]))
    bad_rows.append((what, rc, dt, valid_list(m["cfg"], n)))
    n_checks += 1

# ---------------------------------------------------------------- report
print("(grid: PPxTP, then bN cN mN for --batch, --prefill-chunk, --micro-batches when not the default; max rank/all:\n"
      " the largest rank's weight bytes over the whole model's; times: the whole mpirun, oversubscribed)")
print("models:")
for m in models:
    cfg = m["cfg"]
    extra = ""
    if "ref" in m:
        extra = "; 1x1 vs numpy float64: max |dlogprob| %.2g, min greedy margin %.3g" % m["ref"]
    print("  %-11s dim %d hidden %d layers %d heads %d kv %d vocab %d %s: %s; completions %s tokens%s" %
          (m["name"], cfg["dim"], cfg["hidden"], cfg["layers"], cfg["heads"], cfg["kv_heads"], cfg["vocab"],
           "untied" if cfg["untied"] else "tied", m["why"], m["completion_lens"], extra))
print("impossible grids refused:")
for what, rc, dt, valid in bad_rows:
    print("  %-36s exit %d in %.1f s; valid: %s" % (what, rc, dt, valid))
print("greedy ids and log-probs match 1x1 on all %d runs; wall time %.0f s" % (len(table), time.time() - t_begin))
print("%d passed, 0 failed" % n_checks)
