#!/usr/bin/python3
"""A throw-away Slurm cluster on this machine, for tests and for trying the slurm/ templates.

Runs as root, without systemd: its own munged, slurmctld and one slurmd per node, with a
slurm.conf generated in WORK/etc and logs in WORK/log. What holds Unix sockets (munge, state,
spool, TmpFS) lives in a short directory /tmp/mplsXXXXXX made here (socket paths are limited to
108 bytes; WORK may be deep), removed by stop(). No accounting daemon.

  one node   (netns=False): every daemon in this machine's network namespace, on 127.0.0.1.
  N nodes    (netns=True):  network namespaces made here: "ctl" (slurmctld, the client commands
             and a bridge) and one per node, each joined to the bridge by a veth pair, with
             addresses in 10.213.0.0/24 that exist only inside these namespaces. Each daemon runs
             in its own UTS namespace with its own hostname (Open MPI keys its shared-memory and
             session files by hostname). Entered with nsenter --net (ip netns exec would remount
             /sys, which breaks slurmd).

Every process started here carries MPILLAMA_MINICLUSTER=WORK in its environment, and so do the
job steps (sbatch passes the environment on): stop() ends exactly those processes, then deletes
the namespaces. State for `down` is kept in WORK/cluster.json.

Command line (as root):
  minicluster.py up WORK [--nodes N] [--netns] [--cpus C]   start; prints the SLURM_CONF to use
  minicluster.py run WORK -- CMD...                         run a client command (sbatch, squeue...)
  minicluster.py down WORK                                  stop everything started by `up`
"""
import glob
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

DAEMONS = ("munged", "slurmctld", "slurmd", "sbatch", "srun", "scontrol", "squeue", "sinfo", "scancel")
SUBNET = "10.213.0"          # /24, only inside namespaces made here
CTL_ADDR = SUBNET + ".254"   # the bridge in the ctl namespace
MARK = "MPILLAMA_MINICLUSTER"


class Error(Exception):
    pass


# the daemons live in sbin, which a user's PATH may lack
for _d in ("/usr/sbin", "/sbin"):
    if _d not in os.environ.get("PATH", "").split(":"):
        os.environ["PATH"] = os.environ.get("PATH", "/usr/bin:/bin") + ":" + _d


def missing_tools(netns=False):
    need = list(DAEMONS) + (["ip", "nsenter", "unshare"] if netns else [])
    out = [t for t in need if not shutil.which(t)]
    # Debian's mpi/pmix plugin dlopens pmix2/lib/libpmix.so, which comes with libpmix-dev
    if glob.glob("/usr/lib/*/slurm-wlm/mpi_pmix*.so") and not glob.glob("/usr/lib/*/pmix2/lib/libpmix.so"):
        out.append("libpmix.so (libpmix-dev)")
    return out


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sh(cmd, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise Error("%s: exit %d: %s" % (" ".join(cmd), r.returncode, (r.stderr or r.stdout).strip()))
    return r


class Cluster:
    def __init__(self, work, nodes=1, netns=False, cpus=8, log=print):
        self.work = os.path.abspath(work)
        self.n_nodes = nodes
        self.netns = netns
        self.cpus = cpus
        self.log = log
        self.conf = os.path.join(self.work, "etc", "slurm.conf")
        self.run_dir = None      # made by start()
        self.procs = []          # (name, Popen)
        self.namespaces = []     # names made by ip netns add
        tag = "mpl%d" % os.getpid()
        self.ns_ctl = tag + "ctl"
        # in this machine's namespace the node is this host, by its name (else mpirun in the
        # allocation takes the node for another host and starts an orted there through srun)
        self.node_names = (["mpln%d" % (i + 1) for i in range(nodes)] if netns
                           else [socket.gethostname().split(".")[0]])
        self.ns_nodes = [tag + "n%d" % (i + 1) for i in range(nodes)]
        self.ctl_host = "mplctl" if netns else socket.gethostname().split(".")[0]

    # ------------------------------------------------------------------ environment
    def env(self, extra=None):
        e = dict(os.environ)
        e[MARK] = self.work
        e["SLURM_CONF"] = self.conf
        for k in list(e):  # a Slurm job around us must not leak into this cluster
            if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "SALLOC_")) and k != "SLURM_CONF":
                del e[k]
        if extra:
            e.update(extra)
        return e

    def _in_ns(self, ns, argv, hostname=None):
        """argv run inside network namespace ns (and a UTS namespace with hostname, if given)"""
        if not ns:
            return argv
        pre = ["nsenter", "--net=/var/run/netns/" + ns, "--"]
        if hostname:
            return pre + ["unshare", "--uts", "--", "/bin/sh", "-c", 'hostname "$0" && exec "$@"', hostname] + argv
        return pre + argv

    def client(self, argv, env=None, timeout=60, check=True, cwd=None):
        """a client command (sbatch, scontrol, ...) where it can reach slurmctld"""
        cmd = self._in_ns(self.ns_ctl if self.netns else None, argv)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env(env),
                           cwd=cwd or self.work)
        if check and r.returncode != 0:
            raise Error("%s: exit %d\n%s%s" % (" ".join(argv), r.returncode, r.stdout, r.stderr))
        return r

    # ------------------------------------------------------------------ set-up
    def _dirs(self):
        for d in ("etc", "log"):
            os.makedirs(os.path.join(self.work, d), exist_ok=True)
        self.run_dir = tempfile.mkdtemp(prefix="mpls", dir="/tmp")
        os.chmod(self.run_dir, 0o755)
        self._save()
        for d in ["munge-key", "munge", "state", "spool", "run", "tmp"] + \
                 ["spool/" + n for n in self.node_names] + ["tmp/" + n for n in self.node_names]:
            os.makedirs(os.path.join(self.run_dir, d), exist_ok=True)
        os.chmod(os.path.join(self.run_dir, "munge-key"), 0o700)
        os.chmod(os.path.join(self.run_dir, "munge"), 0o755)

    def _write_conf(self):
        w, r = self.work, self.run_dir
        if self.netns:
            ctl = "%s(%s)" % (self.ctl_host, CTL_ADDR)
            addrs = ["%s.%d" % (SUBNET, i + 1) for i in range(self.n_nodes)]
            ctl_port, d_port = 6817, 6818   # each daemon has a namespace of its own
        else:
            ctl = "%s(127.0.0.1)" % self.ctl_host
            addrs = ["127.0.0.1"] * self.n_nodes
            ctl_port, d_port = _free_port(), _free_port()
            if self.n_nodes > 1:
                raise Error("more than one node needs netns=True")
        nodes = "\n".join("NodeName=%s NodeAddr=%s CPUs=%d RealMemory=2000 State=UNKNOWN" % (n, a, self.cpus)
                          for n, a in zip(self.node_names, addrs))
        conf = """# generated by tests/slurm/minicluster.py
ClusterName=mpillama-test
SlurmctldHost={ctl}
SlurmctldPort={ctl_port}
SlurmdPort={d_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket={r}/munge/munge.socket,cred_expire=10
CredType=cred/munge
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool/%n
TmpFS={r}/tmp/%n
SlurmctldPidFile={r}/run/slurmctld.pid
SlurmdPidFile={r}/run/slurmd-%n.pid
SlurmctldLogFile={w}/log/slurmctld.log
SlurmdLogFile={w}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
SchedulerType=sched/builtin
SchedulerParameters=batch_sched_delay=0,sched_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
DependencyParameters=kill_invalid_depend
EnforcePartLimits=ALL
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SlurmdParameters=config_overrides
ReturnToService=2
KillWait=5
InactiveLimit=0
MinJobAge=600
MaxArraySize=1000
{nodes}
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
""".format(ctl=ctl, ctl_port=ctl_port, d_port=d_port, w=w, r=r, nodes=nodes)
        with open(self.conf, "w") as f:
            f.write(conf)

    def _start(self, name, argv, ns=None, hostname=None):
        logf = open(os.path.join(self.work, "log", name + ".out"), "w")
        p = subprocess.Popen(self._in_ns(ns, argv, hostname), stdout=logf, stderr=subprocess.STDOUT,
                             env=self.env(), stdin=subprocess.DEVNULL, start_new_session=True)
        self.procs.append((name, p))
        self._save()
        return p

    def _netns(self):
        ip = ["ip"]
        _sh(ip + ["netns", "add", self.ns_ctl])
        self.namespaces.append(self.ns_ctl)
        self._save()
        c = ip + ["-n", self.ns_ctl]
        _sh(c + ["link", "set", "lo", "up"])
        _sh(c + ["link", "add", "mplbr0", "type", "bridge"])
        _sh(c + ["addr", "add", CTL_ADDR + "/24", "dev", "mplbr0"])
        _sh(c + ["link", "set", "mplbr0", "up"])
        for i, ns in enumerate(self.ns_nodes):
            _sh(ip + ["netns", "add", ns])
            self.namespaces.append(ns)
            self._save()
            n = ip + ["-n", ns]
            _sh(n + ["link", "set", "lo", "up"])
            # both ends made inside namespaces: nothing appears in this machine's namespace
            _sh(n + ["link", "add", "eth0", "type", "veth", "peer", "name", "mplv%d" % (i + 1), "netns", self.ns_ctl])
            _sh(n + ["addr", "add", "%s.%d/24" % (SUBNET, i + 1), "dev", "eth0"])
            _sh(n + ["link", "set", "eth0", "up"])
            _sh(c + ["link", "set", "mplv%d" % (i + 1), "master", "mplbr0"])
            _sh(c + ["link", "set", "mplv%d" % (i + 1), "up"])

    def _save(self):
        with open(os.path.join(self.work, "cluster.json"), "w") as f:
            json.dump({"pids": [[n, p.pid] for n, p in self.procs], "namespaces": self.namespaces,
                       "run_dir": self.run_dir}, f)

    def start(self, timeout=60):
        t0 = time.time()
        self._dirs()
        self._write_conf()
        key = os.path.join(self.run_dir, "munge-key", "munge.key")
        _sh(["mungekey", "-c", "-f", "-k", key]) if shutil.which("mungekey") else open(key, "wb").write(os.urandom(128))
        os.chmod(key, 0o600)
        sock = os.path.join(self.run_dir, "munge", "munge.socket")
        self._start("munged", ["munged", "-F", "-f", "-S", sock, "--key-file=" + key,
                               "--pid-file=" + os.path.join(self.run_dir, "run", "munged.pid"),
                               "--seed-file=" + os.path.join(self.run_dir, "run", "munged.seed"),
                               "--log-file=" + os.path.join(self.work, "log", "munged.log")])
        self._wait(lambda: os.path.exists(sock), 10, "munged's socket")
        if self.netns:
            self._netns()
        self._start("slurmctld", ["slurmctld", "-D", "-i", "-f", self.conf],
                    self.ns_ctl if self.netns else None, self.ctl_host if self.netns else None)
        self._wait(lambda: self.client(["scontrol", "ping"], check=False, timeout=10).stdout.count("UP") > 0,
                   timeout, "slurmctld to answer")
        for i, n in enumerate(self.node_names):
            ns = self.ns_nodes[i] if self.netns else None
            self._start("slurmd-" + n, ["slurmd", "-D", "-N", n, "-f", self.conf], ns, n if self.netns else None)
        self._wait(self._nodes_idle, timeout, "the nodes to be idle")
        self.log("minicluster: %d node(s)%s up in %.1f s (SLURM_CONF=%s)" % (
            self.n_nodes, " in network namespaces" if self.netns else "", time.time() - t0, self.conf))

    def _nodes_idle(self):
        r = self.client(["sinfo", "-h", "-N", "-o", "%N %t"], check=False, timeout=10)
        states = dict(l.split() for l in r.stdout.splitlines() if l.strip())
        return len(states) == self.n_nodes and all(s == "idle" for s in states.values())

    def _wait(self, cond, timeout, what):
        end = time.time() + timeout
        while time.time() < end:
            for name, p in self.procs:
                if p.poll() is not None:
                    raise Error("%s exited (%d) while waiting for %s:\n%s" % (name, p.returncode, what, self.logs(name)))
            if cond():
                return
            time.sleep(0.2)
        raise Error("timed out after %d s waiting for %s\n%s" % (timeout, what, self.logs()))

    def logs(self, only=None, tail=3000):
        out = []
        d = os.path.join(self.work, "log")
        for f in sorted(os.listdir(d)) if os.path.isdir(d) else []:
            if only and not f.startswith(only):
                continue
            with open(os.path.join(d, f), errors="replace") as fh:
                s = fh.read()
            if s.strip():
                out.append("--- %s (last %d chars)\n%s" % (f, tail, s[-tail:]))
        return "\n".join(out)

    # ------------------------------------------------------------------ jobs
    def sbatch(self, script, args=(), opts=(), env=None, cwd=None):
        r = self.client(["sbatch", "--parsable"] + list(opts) + [script] + list(args), env=env, cwd=cwd)
        return r.stdout.strip().split(";")[0]

    def jobs(self, jobid):
        """{JobId: {field: value}} from scontrol show job -o (every task of an array)"""
        r = self.client(["scontrol", "show", "job", "-o", str(jobid)], check=False)
        out = {}
        for line in r.stdout.splitlines():
            f = {}
            key = None
            for tok in line.split(" "):
                if "=" in tok and not tok.startswith("="):
                    key, v = tok.split("=", 1)
                    f[key] = v
                elif key:  # a value with spaces (Command=, Reason=...)
                    f[key] += " " + tok
            if "JobId" in f:
                out[f["JobId"]] = f
        return out

    def wait(self, jobid, timeout=300, count=None):
        """waits until every task of jobid has ended; returns jobs(jobid)"""
        final = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "PREEMPTED")
        end = time.time() + timeout
        while True:
            j = self.jobs(jobid)
            # an array not yet split shows one record with JobState PENDING
            if j and all(v.get("JobState") in final for v in j.values()) and (count is None or len(j) >= count):
                return j
            if time.time() > end:
                raise Error("job %s not finished after %d s: %s\n%s" % (jobid, timeout, {k: v.get("JobState") for k, v in j.items()}, self.logs()))
            for name, p in self.procs:
                if p.poll() is not None:
                    raise Error("%s exited (%d) while job %s ran\n%s" % (name, p.returncode, jobid, self.logs(name)))
            time.sleep(0.3)

    # ------------------------------------------------------------------ tear-down
    def stop(self):
        stop(self.work, self.procs, self.namespaces, self.log, self.run_dir)


def _marked_pids(work):
    """processes whose environment says they belong to the cluster in work"""
    want = ("%s=%s" % (MARK, work)).encode()
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/environ" % d, "rb") as f:
                if want in f.read().split(b"\0"):
                    out.append(int(d))
        except OSError:
            pass
    return out


def stop(work, procs=None, namespaces=None, log=print, run_dir=None):
    work = os.path.abspath(work)
    state = os.path.join(work, "cluster.json")
    pids = [p.pid for _, p in procs] if procs is not None else []
    if procs is None and os.path.exists(state):
        with open(state) as f:
            s = json.load(f)
        pids = [pid for _, pid in s["pids"]]
        namespaces = s["namespaces"]
        run_dir = s.get("run_dir")
    # daemons first (slurmd ends its steps' stepds), then anything left that carries the mark
    for pid in reversed(pids):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    end = time.time() + 10
    for _, p in procs or []:
        try:
            p.wait(max(0.1, end - time.time()))
        except subprocess.TimeoutExpired:
            pass
    for rnd in range(3):
        left = _marked_pids(work) + [pid for pid in pids if os.path.exists("/proc/%d" % pid)]
        for ns in namespaces or []:
            r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
            left += [int(x) for x in r.stdout.split()]
        left = sorted(set(left) - {os.getpid()})
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL if rnd else signal.SIGTERM)
            except ProcessLookupError:
                pass
        time.sleep(1)
    for _, p in procs or []:
        if p.poll() is None:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
    for ns in reversed(namespaces or []):
        r = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True)
        if r.returncode != 0:
            log("minicluster: ip netns del %s: %s" % (ns, r.stderr.strip()))
    if run_dir and os.path.basename(run_dir).startswith("mpls"):
        shutil.rmtree(run_dir, ignore_errors=True)
    if os.path.exists(state):
        os.remove(state)


def main(argv):
    import argparse
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["up", "down", "run"])
    p.add_argument("work")
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--netns", action="store_true")
    p.add_argument("--cpus", type=int, default=8)
    cmd = argv[argv.index("--") + 1:] if "--" in argv else []
    a = p.parse_args(argv[:argv.index("--")] if "--" in argv else argv)
    if a.action == "down":
        stop(a.work)
        return 0
    if a.action == "run":
        with open(os.path.join(a.work, "cluster.json")) as f:
            ns = json.load(f)["namespaces"]
        env = dict(os.environ, SLURM_CONF=os.path.join(os.path.abspath(a.work), "etc", "slurm.conf"))
        env[MARK] = os.path.abspath(a.work)
        if ns:
            cmd = ["nsenter", "--net=/var/run/netns/" + ns[0], "--"] + cmd
        return subprocess.call(cmd, env=env)
    c = Cluster(a.work, a.nodes, a.netns or a.nodes > 1, a.cpus)
    os.makedirs(c.work, exist_ok=True)
    try:
        c.start()
    except Exception:
        c.stop()
        raise
    # the daemons were started in their own sessions: they outlive this command
    print("export SLURM_CONF=%s" % c.conf)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
