"""Bad input must fail cleanly: a non-zero exit (never a crash or a hang) and one clear stderr line
that names the culprit (the file, the field, the flag). Bad prompt lines are the exception: they
get error records in the output while the good prompts complete and the job exits 0."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import common  # noqa: E402

TIMEOUT = 60
# what a crash looks like from the OS or from mpirun (MPI_ABORT's banner is a clean exit, not a crash)
CRASH = re.compile(r"Segmentation fault|core dumped|\bAborted\b|exited on signal|signal \d+ \(|"
                   r"Assertion .* failed|double free|stack smashing|corrupted size|free\(\): invalid|"
                   r"AddressSanitizer")
# one well-formed message: die()'s "[rank R] file:line: ..." or error()'s "mpillama: error: ..."
MESSAGE = re.compile(r"^(\[rank \d+\] [^\s:]+:\d+: |mpillama: (error: )?)(.*)$")

results = []  # (name, ok)


class CaseFailed(Exception):
    pass


def out(msg):
    print(msg, flush=True)


def run_mpi(args, n, sub):
    """mpillama sub... on n ranks; a hang (TIMEOUT) is a failure, not an exception for the caller"""
    try:
        return common.mpirun(args, n, sub, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise CaseFailed("hung: no exit within %d s: mpirun -n %d mpillama %s" % (TIMEOUT, n, " ".join(sub)))


def no_crash(r):
    if r.returncode < 0 or r.returncode >= 128:
        raise CaseFailed("crashed: exit code %d\nstderr:\n%s" % (r.returncode, r.stderr[-3000:]))
    m = CRASH.search(r.stderr + r.stdout)
    if m:
        raise CaseFailed("crashed ('%s' in the output)\nstderr:\n%s" % (m.group(0), r.stderr[-3000:]))


def error_line(r, *needles, ci=False):
    """the first well-formed single-line message in stderr that holds every needle (str or compiled
    regex); fails when only a garbled line (two ranks' messages interleaved) or none holds them"""
    def holds(s):
        for nd in needles:
            if hasattr(nd, "search"):
                if not nd.search(s):
                    return False
            elif (nd.lower() not in s.lower()) if ci else (nd not in s):
                return False
        return True

    garbled = None
    for line in r.stderr.splitlines():
        if not holds(line):
            continue
        m = MESSAGE.match(line)
        if m and not re.search(r"\[rank \d+\] |mpillama: ", m.group(3)):
            return line
        garbled = garbled or line
    shown = ", ".join(repr(getattr(n, "pattern", n)) for n in needles)
    if garbled:
        raise CaseFailed("the message naming %s is not one clean line (ranks' output interleaved?): %r\nstderr:\n%s"
                         % (shown, garbled, r.stderr[-3000:]))
    raise CaseFailed("no stderr line names %s\nstderr:\n%s" % (shown, r.stderr[-3000:]))


def expect_error(r, *needles, code=None, ci=False):
    """non-zero exit (or exactly `code`), no crash, and a clean line holding the needles"""
    no_crash(r)
    if code is not None and r.returncode != code:
        raise CaseFailed("exit code %d, expected %d\nstderr:\n%s" % (r.returncode, code, r.stderr[-3000:]))
    if r.returncode == 0:
        raise CaseFailed("exit code 0 on bad input\nstdout:\n%s\nstderr:\n%s" % (r.stdout[-2000:], r.stderr[-3000:]))
    return error_line(r, *needles, ci=ci)


def expect_clean(r, *needles):
    """expect_error, and the clean start-up failure of docs/DRIVER.md: exit 1, no MPI_ABORT banner,
    exactly one line from mpillama"""
    line = expect_error(r, *needles, code=1)
    if "MPI_ABORT" in r.stderr:
        raise CaseFailed("an MPI_ABORT banner for a problem found before the job started\nstderr:\n%s" % r.stderr[-3000:])
    ours = [x for x in r.stderr.splitlines() if MESSAGE.match(x)]
    if len(ours) != 1:
        raise CaseFailed("%d lines from mpillama, expected one: %s" % (len(ours), ours))
    return line


def case(name, fn):
    try:
        rc, line = fn()
        out("PASS %-44s exit %-3s | %s" % (name, rc, line))
        results.append((name, True))
    except CaseFailed as e:
        out("FAIL %-44s %s" % (name, e))
        results.append((name, False))


def skip_case(name, why):
    out("SKIP (part): %s: %s" % (name, why))


def main():
    args = common.parse_args()
    W = args.work
    bin_dir = os.path.dirname(os.path.abspath(args.mpillama))
    set_attr = os.path.join(bin_dir, "tests", "h5_set_attr")
    shared_bin = os.path.join(args.shared, "models", "stories260K.bin") if args.shared else ""
    have_model = bool(shared_bin) and os.path.exists(shared_bin)

    prompts = os.path.join(W, "prompts.jsonl")
    common.write_jsonl(prompts, [{"custom_id": "a", "prompt_ids": [1, 403, 407, 261]}])
    outp = os.path.join(W, "out.jsonl")
    gen = ["generate", "--max-tokens", "4", "--temperature", "0"]

    # ---------------------------------------------------------- no model needed
    def missing_model(n):
        def f():
            path = os.path.join(W, "nonexistent", "model.h5")
            r = run_mpi(args, n, gen + ["--model", path, "--prompts", prompts, "--output", outp])
            return r.returncode, expect_error(r, path)
        return f
    case("missing model file (1 rank)", missing_model(1))
    case("missing model file (2 ranks)", missing_model(2))

    def unreadable_model():
        # root reads every file whatever its mode: as root, the run drops to nobody (setpriv), from
        # a copy of the binary in a folder of /tmp that nobody can reach whatever the work folder
        d = tempfile.mkdtemp(prefix="mpillama-perm-")
        os.chmod(d, 0o777)
        exe = os.path.join(d, "mpillama")
        shutil.copy(args.mpillama, exe)
        os.chmod(exe, 0o755)
        path, p, o = os.path.join(d, "model.h5"), os.path.join(d, "p.jsonl"), os.path.join(d, "out.jsonl")
        with open(path, "wb") as fh:
            fh.write(b"\x89HDF\r\n\x1a\n" + bytes(4096))
        os.chmod(path, 0)
        common.write_jsonl(p, [{"custom_id": "a", "prompt_ids": [1, 2]}])
        os.chmod(p, 0o644)
        cmd = [exe] + gen + ["--model", path, "--prompts", p, "--output", o]
        if os.geteuid() == 0:
            cmd = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"] + cmd
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT)
            if os.path.exists(o):
                raise CaseFailed("an output was created for an unreadable model")
            return r.returncode, expect_error(r, path, re.compile(r"Permission denied"), code=1)
        finally:
            shutil.rmtree(d, ignore_errors=True)
    if os.geteuid() != 0 or subprocess.run(["which", "setpriv"], capture_output=True).returncode == 0:
        case("model file unreadable (permissions)", unreadable_model)
    else:
        skip_case("model file unreadable (permissions)", "running as root without setpriv (util-linux) to drop to nobody")

    def not_hdf5(n):
        def f():
            path = os.path.join(W, "notes.txt")
            with open(path, "w") as fh:
                fh.write("this is a text file, not a model\n" * 20)
            r = run_mpi(args, n, gen + ["--model", path, "--prompts", prompts, "--output", outp])
            return r.returncode, expect_error(r, path, re.compile(r"not an? HDF5", re.I))
        return f
    case("not an HDF5 file (1 rank)", not_hdf5(1))
    case("not an HDF5 file (2 ranks)", not_hdf5(2))

    def unknown_flag_generate(n):
        def f():
            r = run_mpi(args, n, ["generate", "--bogus-flag", "--model", "x.h5", "--prompts", prompts, "--output", outp])
            return r.returncode, expect_error(r, "--bogus-flag", code=2)
        return f
    case("unknown flag: generate (1 rank)", unknown_flag_generate(1))
    case("unknown flag: generate (2 ranks)", unknown_flag_generate(2))

    def unknown_flag_convert():
        r = run_mpi(args, 2, ["convert", "--bogus", "x.bin", "-o", os.path.join(W, "x.h5")])
        return r.returncode, expect_error(r, "--bogus", code=2)
    case("unknown flag: convert (2 ranks)", unknown_flag_convert)

    # ---------------------------------------------------------- model cases
    model_cases = ["wrong format version", "corrupt config", "tensor shape not the config's", "truncated HDF5 model", "missing prompts file", "truncated llama2.c checkpoint",
                   "tokenizer size != vocab", "impossible grid", "malformed prompt lines", "prompt longer than context",
                   "output directory missing", "full disk (/dev/full)"]
    if not have_model:
        for c in model_cases:
            skip_case(c, "needs %s, which is absent" % (shared_bin or "--shared DIR/models/stories260K.bin"))
        return finish()

    model = os.path.join(W, "stories260K.h5")
    r = run_mpi(args, 1, ["convert", shared_bin, "-o", model])
    if r.returncode != 0 or not os.path.exists(model):
        out("FAIL setup: convert %s (exit %d)\nstderr:\n%s" % (shared_bin, r.returncode, r.stderr[-3000:]))
        for c in model_cases:
            results.append((c, False))
        return finish()

    def patched(name, attr, value):
        """a copy of the converted model with one root attribute overwritten"""
        if not os.path.exists(set_attr):
            raise CaseFailed("the test tool %s is not built" % set_attr)
        path = os.path.join(W, name)
        with open(model, "rb") as src, open(path, "wb") as dst:
            dst.write(src.read())
        p = subprocess.run([set_attr, path, attr, str(value)], capture_output=True, text=True, timeout=TIMEOUT)
        if p.returncode != 0:
            raise CaseFailed("h5_set_attr %s %s %s failed: %s" % (path, attr, value, p.stderr.strip()))
        return path

    def wrong_version(n):
        def f():
            path = patched("version99.h5", "format_version", 99)
            r = run_mpi(args, n, gen + ["--model", path, "--prompts", prompts, "--output", outp])
            return r.returncode, expect_error(r, path, re.compile(r"\b99\b"))
        return f
    case("wrong format version (1 rank)", wrong_version(1))
    case("wrong format version (2 ranks)", wrong_version(2))

    def corrupt(n, attr, value):
        def f():
            path = patched("%s_%s.h5" % (attr, value), attr, value)
            r = run_mpi(args, n, gen + ["--model", path, "--prompts", prompts, "--output", outp])
            return r.returncode, expect_error(r, "'%s'" % attr)
        return f
    case("corrupt config: n_heads 0 (1 rank)", corrupt(1, "n_heads", 0))
    case("corrupt config: n_heads 0 (2 ranks)", corrupt(2, "n_heads", 0))
    case("corrupt config: dim -1 (2 ranks)", corrupt(2, "dim", -1))

    # found by the whole-file check on rank 0 before the job starts (src/modelcheck.c): one line, every
    # rank exit 1, no MPI_ABORT banner
    def file_check(n, name, attr, value, *needles):
        def f():
            path = patched(name, attr, value)
            r = run_mpi(args, n, gen + ["--model", path, "--prompts", prompts, "--output", outp])
            return r.returncode, expect_clean(r, path, *needles)
        return f
    case("wrong format version: clean exit (2 ranks)", file_check(2, "v99.h5", "format_version", 99, "version 99"))
    case("corrupt config: clean exit (2 ranks)", file_check(2, "nh0.h5", "n_heads", 0, "'n_heads'"))
    case("tensor shape not the config's (2 ranks)",
         file_check(2, "hidden160.h5", "hidden_dim", 160, "'layers/0/w1' is [172, 64], the config says [160, 64]"))
    case("stored layers not n_layers (2 ranks)", file_check(2, "layers4.h5", "n_layers", 4, "stores 5 layers"))
    case("vocab_size not the tensors' (4 ranks)", file_check(4, "vocab500.h5", "vocab_size", 500,
                                                                   "'tok_embeddings' is [512, 64]"))

    def half_copy(src, name):
        """the first half of src written to W/name: (its path, its size)"""
        path = os.path.join(W, name)
        with open(src, "rb") as fh:
            data = fh.read()
        with open(path, "wb") as fh:
            fh.write(data[:len(data) // 2])
        return path, len(data) // 2

    def truncated_h5(n):
        def f():
            path, size = half_copy(model, "half.h5")
            r = run_mpi(args, n, gen + ["--model", path, "--prompts", prompts, "--output", outp])
            return r.returncode, expect_clean(r, path, "is truncated", "%d bytes" % size)
        return f
    case("truncated HDF5 model (1 rank)", truncated_h5(1))
    case("truncated HDF5 model (2 ranks)", truncated_h5(2))

    def corrupt_info():
        path = patched("n_heads_0.h5", "n_heads", 0)
        r = run_mpi(args, 1, ["info", path])
        return r.returncode, expect_error(r, "'n_heads'")
    case("corrupt config: n_heads 0 (info)", corrupt_info)

    def missing_prompts(n):
        def f():
            path = os.path.join(W, "no_such_prompts.jsonl")
            r = run_mpi(args, n, gen + ["--model", model, "--prompts", path, "--output", outp])
            return r.returncode, expect_error(r, path)
        return f
    case("missing prompts file (1 rank)", missing_prompts(1))
    case("missing prompts file (2 ranks)", missing_prompts(2))

    def truncated(n):
        def f():
            path, _ = half_copy(shared_bin, "half.bin")
            dst = os.path.join(W, "half_%d.h5" % n)
            r = run_mpi(args, n, ["convert", path, "-o", dst])
            line = expect_error(r, path)
            if os.path.exists(dst):
                raise CaseFailed("a failed convert left %s behind" % dst)
            return r.returncode, line
        return f
    case("truncated llama2.c checkpoint (1 rank)", truncated(1))
    case("truncated llama2.c checkpoint (2 ranks)", truncated(2))

    def tok_mismatch():
        tok = os.path.join(args.shared, "tokenizers", "llama2", "tokenizer.bin")
        if not os.path.exists(tok):
            raise CaseFailed("%s is absent" % tok)
        dst = os.path.join(W, "tokmismatch.h5")
        r = run_mpi(args, 1, ["convert", shared_bin, "--tokenizer", tok, "-o", dst])
        line = expect_error(r, tok)
        if os.path.exists(dst):
            raise CaseFailed("a failed convert left %s behind" % dst)
        return r.returncode, line
    case("tokenizer size != vocab (32000 vs 512)", tok_mismatch)

    def impossible_grid():
        r = run_mpi(args, 3, gen + ["--model", model, "--prompts", prompts, "--output", outp, "--pp", "1", "--tp", "3"])
        valid = common.valid_grids(8, 4, 5, 3)  # stories260K: 8 heads, 4 kv heads, 5 layers
        needles = ["impossible grid"] + ["--pp %d --tp %d" % g for g in valid]
        return r.returncode, expect_error(r, *needles)
    case("impossible grid --pp 1 --tp 3 (3 ranks)", impossible_grid)

    def good_records(recs, ids):
        for cid in ids:
            got = [x for x in recs if x.get("custom_id") == cid]
            if len(got) != 1 or "error" in got[0] or not isinstance(got[0].get("completion_ids"), list) \
                    or not got[0]["completion_ids"]:
                raise CaseFailed("prompt %s did not complete: %s" % (cid, got))

    def malformed_lines(n):
        def f():
            path = os.path.join(W, "malformed_%d.jsonl" % n)
            with open(path, "w") as fh:
                fh.write(json.dumps({"custom_id": "good1", "prompt_ids": [1, 403, 407]}) + "\n")
                fh.write('{"custom_id": "broken", "prompt_ids": [1, 2\n')
                fh.write(json.dumps({"custom_id": "strid", "prompt_ids": [1, "two", 3]}) + "\n")
                fh.write(json.dumps({"custom_id": "good2", "prompt_ids": [1, 261]}) + "\n")
            o = os.path.join(W, "malformed_%d.out.jsonl" % n)
            r = run_mpi(args, n, gen + ["--model", model, "--prompts", path, "--output", o])
            no_crash(r)
            if r.returncode != 3:
                raise CaseFailed("exit %d, expected 3 (the job finished; some requests have error records)\nstderr:\n%s"
                                 % (r.returncode, r.stderr[-3000:]))
            try:
                recs = common.read_jsonl(o)
            except (OSError, ValueError) as e:
                raise CaseFailed("cannot read the output %s: %s" % (o, e))
            errs = {x.get("line"): x for x in recs if "error" in x}
            for ln in (2, 3):
                if ln not in errs or not isinstance(errs[ln].get("error"), str) or not errs[ln]["error"]:
                    raise CaseFailed("no error record with \"line\": %d; records: %s" % (ln, recs))
            if len(errs) != 2:
                raise CaseFailed("expected 2 error records, got %d: %s" % (len(errs), recs))
            good_records(recs, ["good1", "good2"])
            return r.returncode, "line 2: %s | line 3: %s" % (errs[2]["error"], errs[3]["error"])
        return f
    case("malformed prompt lines (1 rank)", malformed_lines(1))
    case("malformed prompt lines (2 ranks)", malformed_lines(2))

    def too_long(n):
        def f():
            path = os.path.join(W, "long_%d.jsonl" % n)
            common.write_jsonl(path, [{"custom_id": "long", "prompt_ids": [1] + [(7 * i) % 500 + 3 for i in range(39)]},
                                      {"custom_id": "short", "prompt_ids": [1, 403, 407]}])
            o = os.path.join(W, "long_%d.out.jsonl" % n)
            r = run_mpi(args, n, gen + ["--max-seq-len", "32", "--model", model, "--prompts", path, "--output", o])
            no_crash(r)
            if r.returncode != 3:
                raise CaseFailed("exit %d, expected 3 (an error record)\nstderr:\n%s" % (r.returncode, r.stderr[-3000:]))
            try:
                recs = common.read_jsonl(o)
            except (OSError, ValueError) as e:
                raise CaseFailed("cannot read the output %s: %s" % (o, e))
            bad = [x for x in recs if x.get("custom_id") == "long"]
            if len(bad) != 1 or not re.search(r"\b40\b", str(bad[0].get("error", ""))) or bad[0].get("line") != 1:
                raise CaseFailed("expected one error record for line 1 naming the length 40, got %s" % bad)
            good_records(recs, ["short"])
            return r.returncode, bad[0]["error"]
        return f
    case("prompt longer than context (1 rank)", too_long(1))
    case("prompt longer than context (2 ranks)", too_long(2))

    def no_out_dir(n):
        def f():
            o = os.path.join(W, "no_such_dir", "out.jsonl")
            r = run_mpi(args, n, gen + ["--model", model, "--prompts", prompts, "--output", o])
            return r.returncode, expect_error(r, o)
        return f
    case("output directory missing (1 rank)", no_out_dir(1))
    case("output directory missing (2 ranks)", no_out_dir(2))

    if os.path.exists("/dev/full"):
        def full_disk(n):
            def f():
                r = run_mpi(args, n, gen + ["--model", model, "--prompts", prompts, "--output", "/dev/full"])
                return r.returncode, expect_error(r, "/dev/full")
            return f
        case("full disk: --output /dev/full (1 rank)", full_disk(1))
        case("full disk: --output /dev/full (2 ranks)", full_disk(2))
    else:
        skip_case("full disk (/dev/full)", "/dev/full does not exist here")
    return finish()


def finish():
    passed = sum(1 for _, ok in results if ok)
    failed = len(results) - passed
    out("%d passed, %d failed" % (passed, failed))
    for name, ok in results:
        if not ok:
            out("  failed: " + name)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
