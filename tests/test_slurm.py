"""The slurm/ templates on a real Slurm started here (tests/slurm/minicluster.py): munged, slurmctld
and slurmd as root, without systemd or accounting.

--part one (a node in this machine's network namespace, on 127.0.0.1):
  the demo through slurm/one-node.sbatch (mpirun in the allocation) and through srun --mpi=pmix,
  both equal to the same run without Slurm; a long job stopped the way Slurm stops one before its
  time limit (TERM to the batch shell), requeued and resumed: one record per prompt, equal to an
  uninterrupted run; a strong- and a weak-scaling array over three grids.
--part two (two slurmd "hosts" in network namespaces, each with its own hostname):
  slurm/multi-node.sbatch with srun -N2 --mpi=pmix on grids across both nodes (--pp 2 --tp 1,
  --pp 2 --tp 2 by mpirun in the allocation), equal to a 1-rank run of the same greedy prompts;
  slurm/submit-sweep.sh: one array per node count.
--part all: both (the default).

Needs root; installs the Debian packages it lacks (slurmctld slurmd slurm-client munge libpmix-dev
iproute2, without recommends) when apt-get can; skips (77) when it cannot, or when the network
namespaces cannot be made. (libpmix-dev: Slurm's mpi/pmix plugin dlopens its libpmix.so.)"""
import os
import shutil
import signal
import subprocess
import sys
import time

import common as c

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SLURM_DIR = os.path.join(ROOT, "slurm")
sys.path.insert(0, os.path.join(HERE, "slurm"))
import minicluster as mc  # noqa: E402

PACKAGES = ["slurmctld", "slurmd", "slurm-client", "munge", "libpmix-dev", "iproute2"]
T0 = time.time()


def log(msg):
    print("[%5.1f s] %s" % (time.time() - T0, msg), flush=True)


def args_extra(p):
    p.add_argument("--part", choices=["all", "one", "two"], default="all")


# a run that was killed (ctest's timeout) may have left its daemons and namespaces: stop them
# before parse_args empties the work directory
if "--work" in sys.argv[:-1]:
    for old in ("cluster1", "cluster2"):
        state = os.path.join(os.path.abspath(sys.argv[sys.argv.index("--work") + 1]), old)
        if os.path.exists(os.path.join(state, "cluster.json")):
            mc.stop(state)
# SIGTERM (ctest's timeout) ends the test through the finally clauses that stop the cluster
signal.signal(signal.SIGTERM, lambda *_: sys.exit("FAIL: terminated"))
args = c.parse_args(args_extra)
work = os.path.abspath(args.work)


# ------------------------------------------------------------------ the templates, statically
def check_templates():
    blocks = {}
    for name in ("one-node.sbatch", "multi-node.sbatch", "strong-scaling.sbatch", "weak-scaling.sbatch", "replicas.sbatch"):
        path = os.path.join(SLURM_DIR, name)
        text = open(path).read()
        a, b = text.find("# ---- common: begin"), text.find("# ---- common: end")
        if a < 0 or b < 0:
            c.fail("%s has no common block" % name)
        blocks[name] = text[a:b]
        for must in ("#SBATCH --signal=B:TERM@120", "#SBATCH --requeue", "--resume", "MPILLAMA_TRACE", "SLURM_JOB_ID"):
            if must not in text:
                c.fail("%s lacks %r" % (name, must))
        for bad in ("cmake", "build/", "/work/"):
            if bad in text.replace("mpillama-job", ""):
                c.fail("%s mentions %r: the templates neither compile nor hard-code paths" % (name, bad))
    for path in [os.path.join(SLURM_DIR, f) for f in blocks] + [os.path.join(SLURM_DIR, "submit-sweep.sh")]:
        r = subprocess.run(["bash", "-n", path], capture_output=True, text=True)
        if r.returncode:
            c.fail("bash -n %s: %s" % (path, r.stderr))
    first = blocks["one-node.sbatch"]
    for name, b in blocks.items():
        if b != first:
            c.fail("the common block of slurm/%s differs from one-node.sbatch's" % name)
    if shutil.which("shellcheck"):
        r = subprocess.run(["shellcheck", "-S", "warning"] + [os.path.join(SLURM_DIR, f) for f in blocks] +
                           [os.path.join(SLURM_DIR, "submit-sweep.sh")], capture_output=True, text=True)
        if r.returncode:
            c.fail("shellcheck:\n" + r.stdout)
    # outside Slurm, a template refuses to run; the sweeps list their grids
    r = subprocess.run(["bash", os.path.join(SLURM_DIR, "one-node.sbatch")], capture_output=True, text=True,
                       env={k: v for k, v in os.environ.items() if not k.startswith("SLURM_")})
    if r.returncode != 2 or "submit this script with sbatch" not in r.stderr:
        c.fail("one-node.sbatch outside Slurm: exit %d, %r" % (r.returncode, r.stderr))
    r = subprocess.run(["bash", os.path.join(SLURM_DIR, "strong-scaling.sbatch"), "--list"], capture_output=True,
                       text=True, env=dict(os.environ, SWEEP_GRIDS="1:1:1 2:2:1"))
    if r.stdout.split("\n")[:2] != ["0 1 1 1", "1 2 2 1"]:
        c.fail("strong-scaling.sbatch --list with SWEEP_GRIDS printed %r" % r.stdout)
    log("templates: common blocks equal, bash -n%s clean" % (" and shellcheck" if shutil.which("shellcheck") else ""))


check_templates()

# ------------------------------------------------------------------ can this machine run Slurm?
if os.geteuid() != 0:
    c.skip("needs root: it starts munged, slurmctld and slurmd (and network namespaces)")
need_netns = args.part in ("all", "two")
missing = mc.missing_tools(need_netns)
if missing:
    if not shutil.which("apt-get"):
        c.skip("missing %s and no apt-get to install %s" % (" ".join(missing), " ".join(PACKAGES)))
    log("installing %s (missing: %s)" % (" ".join(PACKAGES), " ".join(missing)))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + PACKAGES, capture_output=True, text=True, env=env)
    if r.returncode:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env)
        r = subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + PACKAGES, capture_output=True, text=True, env=env)
    missing = mc.missing_tools(need_netns)
    if missing:
        c.skip("could not install %s (still missing %s): %s" % (" ".join(PACKAGES), " ".join(missing), r.stderr[-500:]))
    log("installed")


# ------------------------------------------------------------------ model and prompts
def make_model():
    model = os.path.join(work, "model.h5")
    shared_bin = os.path.join(args.shared, "models", "stories260K.bin")
    if args.shared and os.path.exists(shared_bin):
        c.run([args.mpillama, "convert", shared_bin, "--tokenizer", os.path.join(args.shared, "models", "tok512.bin"),
               "-o", model])
        return model, os.path.join(ROOT, "data", "demo_prompts.jsonl"), "stories260K"
    raw = os.path.join(work, "random.bin")
    c.run(["/usr/bin/python3", os.path.join(HERE, "make_llama2c_model.py"), raw, "--dim", "64", "--hidden", "172",
           "--layers", "5", "--heads", "8", "--kv-heads", "4", "--vocab", "512", "--seq-len", "256", "--seed", "1"])
    c.run([args.mpillama, "convert", raw, "-o", model])
    return model, os.path.join(ROOT, "data", "demo_prompt_ids.jsonl"), "a random model (../shared has no stories260K)"


MODEL, DEMO_PROMPTS, MODEL_NAME = make_model()
# greedy prompts by ids: they fit both models (vocab 512)
GREEDY = os.path.join(work, "greedy.jsonl")
c.write_jsonl(GREEDY, [{"custom_id": "g%d" % i, "prompt_ids": [1] + [(37 * i + 11 * k) % 500 + 3 for k in range(i % 7)]}
                       for i in range(6)])
LONG = os.path.join(work, "long.jsonl")
c.write_jsonl(LONG, [{"custom_id": "L%03d" % i, "prompt_ids": [1, (13 * i) % 500 + 3, (7 * i) % 500 + 3]} for i in range(60)])
log("model: %s; prompts: %s" % (MODEL_NAME, DEMO_PROMPTS))


def records(path):
    if not os.path.exists(path):
        c.fail("no output %s" % path)
    return c.read_jsonl(path)


def by_id(path, strip_prefix=False):
    """custom_id -> (completion_ids, finish_reason); fails on duplicates and error records"""
    out = {}
    for r in records(path):
        cid = r["custom_id"]
        if "error" in r or r.get("finish_reason") in ("error", "interrupted"):
            c.fail("%s: record %s is %s" % (path, cid, r.get("error") or r.get("finish_reason")))
        if strip_prefix:
            cid = cid.split("-", 1)[1]
        if cid in out and not strip_prefix:
            c.fail("%s: custom_id %s twice" % (path, cid))
        if cid in out and out[cid] != (r["completion_ids"], r["finish_reason"]):
            c.fail("%s: the copies of %s differ" % (path, cid))
        out[cid] = (r["completion_ids"], r["finish_reason"])
    return out


def same(what, got, want):
    if got != want:
        diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
        c.fail("%s: %d of %d records differ (%s)" % (what, len(diff), len(want), ", ".join(diff[:5])))


def direct(n, prompts, extra, name):
    """the same run without Slurm (mpiexec -n N)"""
    out = os.path.join(work, "direct-%s.jsonl" % name)
    c.mpirun(args, n, ["generate", "--model", MODEL, "--prompts", prompts, "--output", out] + extra)
    return by_id(out)


def job_env(out_root, prompts, extra=None):
    e = c.mpi_env()
    e.update({"MPILLAMA_BIN": os.path.abspath(args.mpillama), "MODEL": MODEL, "PROMPTS": prompts, "OUT_ROOT": out_root})
    e.update(extra or {})
    return e


def finished(cl, jobid, what, count=None, timeout=180, restarts=None):
    jobs = cl.wait(jobid, timeout=timeout, count=count)
    for jid, j in sorted(jobs.items()):
        if j.get("JobState") != "COMPLETED" or j.get("ExitCode") != "0:0":
            outs = "\n".join(open(os.path.join(d, f)).read()[-3000:] for d in (work,) for f in sorted(os.listdir(d))
                             if f.endswith(".out") and ("-%s" % jid.split("_")[0]) in f)
            c.fail("%s: job %s ended %s, exit %s\n%s\n%s" % (what, jid, j.get("JobState"), j.get("ExitCode"), outs,
                                                              cl.logs("slurmd", 2000)))
        if restarts is not None and j.get("Restarts") != str(restarts):
            c.fail("%s: job %s restarted %s times, expected %d" % (what, jid, j.get("Restarts"), restarts))
    return jobs


# ------------------------------------------------------------------ part one: one node
def part_one():
    t = time.time()
    cl = mc.Cluster(os.path.join(work, "cluster1"), nodes=1, netns=False, cpus=8, log=log)
    try:
        cl.start()
        runs = os.path.join(work, "runs1")
        one = os.path.join(SLURM_DIR, "one-node.sbatch")
        local = {"OMPI_MCA_btl": "self,vader", "OMPI_MCA_oob_tcp_if_include": "lo"}  # nothing leaves this machine

        # 1. the demo (as jobs/demo.sh runs it) by mpirun in the allocation, and by srun --mpi=pmix
        demo_args = ["--max-tokens", "120", "--seed", "7"]
        ts = time.time()
        j_mpirun = cl.sbatch(one, demo_args, ["--ntasks=2"], env=job_env(runs, DEMO_PROMPTS, local), cwd=work)
        j_srun = cl.sbatch(one, demo_args, ["--ntasks=2"], env=job_env(runs, DEMO_PROMPTS, dict(local, MPILLAMA_LAUNCHER="srun")), cwd=work)
        finished(cl, j_mpirun, "demo (mpirun)")
        finished(cl, j_srun, "demo (srun --mpi=pmix)")
        n_prompts = len([l for l in open(DEMO_PROMPTS) if l.strip()])
        want = direct(2, DEMO_PROMPTS, demo_args, "demo")
        for jid, how in ((j_mpirun, "mpirun"), (j_srun, "srun --mpi=pmix")):
            got = by_id(os.path.join(runs, jid, "completions.jsonl"))
            if len(got) != n_prompts:
                c.fail("demo by %s: %d records for %d prompts" % (how, len(got), n_prompts))
            same("demo by %s (job %s) against mpiexec -n 2" % (how, jid), got, want)
            if "run 0: the step exited 0" not in open(os.path.join(runs, jid, "job.log")).read():
                c.fail("demo by %s: job.log says %r" % (how, open(os.path.join(runs, jid, "job.log")).read()))
        log("one node: the demo by mpirun and by srun --mpi=pmix: %d records each, equal to mpiexec -n 2 (%.1f s)"
            % (n_prompts, time.time() - ts))

        # 2. stopped as before a time limit (TERM to the batch shell only, as --signal=B:TERM does), requeued, resumed
        ts = time.time()
        # 60 x 300 tokens past EOS: seconds of work after the first record, so TERM lands mid-run
        # (with 150 tokens that may stop at EOS, the job could end 0.45 s after its first record)
        long_args = ["--max-tokens", "300", "--ignore-eos", "--seed", "3", "--batch", "4", "--grace", "0"]
        j_ref = cl.sbatch(one, long_args, ["--ntasks=2"], env=job_env(runs, LONG, dict(local, MPILLAMA_LAUNCHER="srun")), cwd=work)
        j_long = cl.sbatch(one, long_args, ["--ntasks=2"], env=job_env(runs, LONG, local), cwd=work)
        out = os.path.join(runs, j_long, "completions.jsonl")
        end = time.time() + 60
        while not (os.path.exists(out) and os.path.getsize(out) > 0):
            if time.time() > end or cl.jobs(j_long)[j_long]["JobState"] not in ("PENDING", "RUNNING"):
                c.fail("the long job wrote no record in 60 s: %s" % cl.jobs(j_long))
            time.sleep(0.1)
        cl.client(["scancel", "--batch", "--signal=TERM", j_long])
        first = len(records(out))
        finished(cl, j_long, "the stopped and requeued job", restarts=1, timeout=240)
        finished(cl, j_ref, "the uninterrupted job")
        got, want = by_id(out), by_id(os.path.join(runs, j_ref, "completions.jsonl"))
        if len(want) != 60 or len(got) != 60:
            c.fail("long job: %d records (requeued), %d (uninterrupted), for 60 prompts" % (len(got), len(want)))
        same("requeued and resumed (job %s) against uninterrupted (job %s)" % (j_long, j_ref), got, want)
        jl = open(os.path.join(runs, j_long, "job.log")).read()
        for must in ("run 0: the step exited 75", "requeued", "run 1 on", "run 1: the step exited 0"):
            if must not in jl:
                c.fail("the requeued job's job.log lacks %r:\n%s" % (must, jl))
        log("one node: TERM -> step stopped (exit 75, %d records kept) -> requeued -> resumed: 60 records, "
            "equal to an uninterrupted run (%.1f s)" % (first, time.time() - ts))

        # 3. strong- and weak-scaling arrays over three grids
        ts = time.time()
        grids = {"SWEEP_GRIDS": "1:1:1 1:1:2 1:2:1"}
        g_args = ["--temperature", "0", "--max-tokens", "40"]
        opts = ["--array=0-2", "-N1", "--ntasks-per-node=2"]
        j_strong = cl.sbatch(os.path.join(SLURM_DIR, "strong-scaling.sbatch"), g_args, opts,
                             env=job_env(runs, GREEDY, dict(local, **grids)), cwd=work)
        j_weak = cl.sbatch(os.path.join(SLURM_DIR, "weak-scaling.sbatch"), g_args, opts,
                           env=job_env(runs, GREEDY, dict(local, WEAK_COPIES_PER_RANK="2", **grids)), cwd=work)
        finished(cl, j_strong, "strong-scaling array", count=3)
        finished(cl, j_weak, "weak-scaling array", count=3)
        want = direct(1, GREEDY, g_args, "greedy")
        for kind, jid in (("strong", j_strong), ("weak", j_weak)):
            d = os.path.join(runs, jid)
            tsv = [l.split("\t") for l in open(os.path.join(d, "sweep.tsv")).read().splitlines()]
            if sorted(r[1] for r in tsv) != ["0", "1", "2"] or any(r[7] != "0" for r in tsv):
                c.fail("%s sweep.tsv: %s" % (kind, tsv))
            for i, (nodes, pp, tp) in enumerate([(1, 1, 1), (1, 1, 2), (1, 2, 1)]):
                path = os.path.join(d, "%02d-n%d-pp%d-tp%d" % (i, nodes, pp, tp), "completions.jsonl")
                n = len(records(path))
                expect = len(want) * (pp * tp * 2 if kind == "weak" else 1)
                if n != expect:
                    c.fail("%s grid %dx%d: %d records, expected %d" % (kind, pp, tp, n, expect))
                same("%s grid pp %d tp %d" % (kind, pp, tp), by_id(path, strip_prefix=kind == "weak"), want)
        log("one node: strong and weak arrays over pp x tp 1x1, 1x2, 2x1: equal greedy records, weak with 2 copies "
            "a rank (%.1f s)" % (time.time() - ts))
    except mc.Error as e:
        c.fail(str(e))
    finally:
        cl.stop()
    log("part one passed in %.1f s" % (time.time() - t))


# ------------------------------------------------------------------ part two: two nodes in namespaces
def part_two():
    t = time.time()
    cl = mc.Cluster(os.path.join(work, "cluster2"), nodes=2, netns=True, cpus=8, log=log)
    try:
        try:
            cl.start()
        except mc.Error as e:
            if "netns" in str(e) or "nsenter" in str(e) or "unshare" in str(e):
                c.skip("cannot make network namespaces here: %s" % str(e).splitlines()[0])
            raise
        runs = os.path.join(work, "runs2")
        tcp = {"OMPI_MCA_btl": "self,tcp,vader", "OMPI_MCA_btl_tcp_if_include": mc.SUBNET + ".0/24",
               "OMPI_MCA_oob_tcp_if_include": mc.SUBNET + ".0/24"}
        multi = os.path.join(SLURM_DIR, "multi-node.sbatch")
        g_args = ["--temperature", "0", "--max-tokens", "60"]
        want = direct(1, GREEDY, g_args, "greedy-2")
        ts = time.time()
        j1 = cl.sbatch(multi, ["--pp", "2", "--tp", "1"] + g_args, ["-N2", "--ntasks-per-node=1"],
                       env=job_env(runs, GREEDY, tcp), cwd=work)
        j2 = cl.sbatch(multi, ["--pp", "2", "--tp", "2"] + g_args, ["-N2", "--ntasks-per-node=2"],
                       env=job_env(runs, GREEDY, dict(tcp, MPILLAMA_LAUNCHER="mpirun")), cwd=work)
        for jid, what in ((j1, "srun -N2 --mpi=pmix, --pp 2 --tp 1"), (j2, "mpirun in the allocation, --pp 2 --tp 2")):
            jobs = finished(cl, jid, what)
            if jobs[jid].get("NodeList") != "mpln[1-2]":
                c.fail("%s: job %s ran on %s" % (what, jid, jobs[jid].get("NodeList")))
            log_text = open(os.path.join(work, "mpillama-%s.out" % jid)).read()
            same("%s (job %s) against 1 rank" % (what, jid), by_id(os.path.join(runs, jid, "completions.jsonl")), want)
            if "on 2 node(s)" not in log_text:
                c.fail("%s: mpillama did not see 2 nodes:\n%s" % (what, log_text))
        log("two nodes: srun -N2 --mpi=pmix (pp 2 tp 1) and mpirun (pp 2 tp 2) across the namespaces: "
            "%d greedy records equal to 1 rank (%.1f s)" % (len(want), time.time() - ts))

        # replicas.sbatch: dp 2 across the two hosts (one replica on each), the same records
        ts = time.time()
        j3 = cl.sbatch(os.path.join(SLURM_DIR, "replicas.sbatch"), g_args, ["-N2", "--ntasks-per-node=1"],
                       env=job_env(runs, GREEDY, dict(tcp, REPLICA_PP="1", REPLICA_TP="1")), cwd=work)
        finished(cl, j3, "replicas.sbatch -N2, dp 2")
        log_text = open(os.path.join(work, "mpillama-%s.out" % j3)).read()
        if "layout --dp 2 --pp 1 --tp 1" not in log_text or "on 2 node(s)" not in log_text:
            c.fail("replicas.sbatch: not 2 replicas on 2 nodes:\n%s" % log_text)
        same("replicas.sbatch dp 2 (job %s) against 1 rank" % j3, by_id(os.path.join(runs, j3, "completions.jsonl")), want)
        log("two nodes: replicas.sbatch, dp 2 (a replica on each host): %d greedy records equal to 1 rank (%.1f s)"
            % (len(want), time.time() - ts))

        # submit-sweep.sh: one array per node count
        ts = time.time()
        env = job_env(runs, GREEDY, dict(tcp, SWEEP_GRIDS="1:1:2 2:2:1", SWEEP_ID="sweep-test"))
        r = cl.client([os.path.join(SLURM_DIR, "submit-sweep.sh"), os.path.join(SLURM_DIR, "strong-scaling.sbatch"),
                       "--"] + g_args, env=env, cwd=work)
        ids = r.stdout.split()
        if len(ids) != 2:
            c.fail("submit-sweep.sh printed %r, expected 2 job ids" % r.stdout)
        for jid in ids:
            finished(cl, jid, "submit-sweep.sh array %s" % jid, count=1)
        nodes = {jid: cl.jobs(jid) for jid in ids}
        for i, (n, pp, tp) in enumerate([(1, 1, 2), (2, 2, 1)]):
            path = os.path.join(runs, "sweep-test", "%02d-n%d-pp%d-tp%d" % (i, n, pp, tp), "completions.jsonl")
            same("submit-sweep.sh grid %d (%d nodes)" % (i, n), by_id(path), want)
        if sorted(j["NumNodes"] for js in nodes.values() for j in js.values()) != ["1", "2"]:
            c.fail("submit-sweep.sh: the arrays asked for %s nodes, expected 1 and 2" %
                   [j["NumNodes"] for js in nodes.values() for j in js.values()])
        log("two nodes: submit-sweep.sh: a 1-node and a 2-node array, equal records (%.1f s)" % (time.time() - ts))
    except mc.Error as e:
        c.fail(str(e))
    finally:
        cl.stop()
    log("part two passed in %.1f s" % (time.time() - t))


if args.part in ("all", "one"):
    part_one()
if args.part in ("all", "two"):
    part_two()
log("passed")
