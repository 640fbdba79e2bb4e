"""Shared helpers for mpillama's end-to-end tests (run by ctest with Debian's /usr/bin/python3).

Every test script takes: --mpillama BIN --mpiexec MPIEXEC --shared DIR --work DIR
and exits 0 (pass), 1 (fail) or 77 (skipped, with the reason printed)."""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys

SKIP = 77


def parse_args(extra=None):
    p = argparse.ArgumentParser()
    p.add_argument("--mpillama", required=True)
    p.add_argument("--mpiexec", default="mpirun")
    p.add_argument("--shared", default="")
    p.add_argument("--work", required=True)
    if extra:
        extra(p)
    a = p.parse_args()
    if os.path.exists(a.work):
        shutil.rmtree(a.work)
    os.makedirs(a.work)
    return a


HERE = os.path.dirname(os.path.abspath(__file__))
passed = 0


def ok(what):
    """counts and prints one passed check (the script ends with done())"""
    global passed
    passed += 1
    print("PASS " + what)


def done():
    print("%d passed, 0 failed" % passed)


def make_llama2c(path, dim, hidden, layers, heads, kv_heads, vocab=512, seq_len=256, *extra):
    """a random, well-behaved llama2.c checkpoint at path (tests/make_llama2c_model.py)"""
    run(["/usr/bin/python3", os.path.join(HERE, "make_llama2c_model.py"), path, "--dim", str(dim), "--hidden",
         str(hidden), "--layers", str(layers), "--heads", str(heads), "--kv-heads", str(kv_heads), "--vocab", str(vocab),
         "--seq-len", str(seq_len)] + list(extra))


def small_model(mpillama, work, seq_len):
    """a 4-layer random llama2.c model (dim 64, 8/4 heads, vocab 512) converted to work/m.h5"""
    binp, model = os.path.join(work, "m.bin"), os.path.join(work, "m.h5")
    make_llama2c(binp, 64, 172, 4, 8, 4, 512, seq_len)
    run([mpillama, "convert", binp, "-o", model])
    return model


def finish_or_kill(proc, timeout, what):
    """proc's stderr once it exits; a job still running after timeout s is killed and fails the test"""
    try:
        return proc.communicate(timeout=timeout)[1]
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        fail("%s: the job did not end within %d s" % (what, timeout))


def skip(reason):
    print("SKIP: " + reason)
    sys.exit(SKIP)


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def need_shared(args, *rel):
    for r in rel:
        p = os.path.join(args.shared, r)
        if not args.shared or not os.path.exists(p):
            skip("../shared/%s is absent (a user's clone has no shared data)" % r)


def mpi_env():
    env = dict(os.environ)
    # CI runs as root on 2 cores: Open MPI refuses root and more ranks than cores without these
    env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
    env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    env["OMPI_MCA_rmaps_base_oversubscribe"] = "1"
    env["OMPI_MCA_btl_vader_single_copy_mechanism"] = "none"
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


def run(cmd, timeout=300, check=True):
    """runs cmd (list), returns CompletedProcess with text output"""
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=mpi_env())
    if check and r.returncode != 0:
        fail("command failed (exit %d): %s\nstdout: %s\nstderr: %s" % (r.returncode, " ".join(cmd), r.stdout[-3000:], r.stderr[-3000:]))
    return r


def mpirun(args, n, sub, timeout=300, check=True):
    """runs `mpillama sub...` on n ranks through mpiexec"""
    cmd = [args.mpiexec, "-n", str(n), "--oversubscribe", args.mpillama] + sub
    return run(cmd, timeout=timeout, check=check)


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(l) for l in f if l.strip()]


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def valid_grids(n_heads, n_kv_heads, n_layers, world):
    """the grid rules of src/plan.c, restated for the tests"""
    out = []
    for tp in range(1, world + 1):
        if world % tp:
            continue
        pp = world // tp
        if pp > n_layers or n_heads % tp:
            continue
        if (n_kv_heads % tp) if n_kv_heads >= tp else (tp % n_kv_heads):
            continue
        out.append((pp, tp))
    return out
