"""Two (or more) hosts for the benchmarks: the network-namespace nodes of the Slurm test cluster
(tests/slurm/minicluster.py: munged, slurmctld and a slurmd per namespace, all on this machine),
with Open MPI kept to TCP over the namespaces' bridge so that ranks on different hosts talk as
over a network. Needs root and Slurm; start() raises Error (what was started already stopped)
where they are missing.

    import slurm_hosts                       # with jobs/lib on sys.path
    hosts = slurm_hosts.start(work, env)     # env: the benchmark's environment for its runs
    subprocess.run(hosts.srun(nodes=2) + [binary, ...], env=hosts.env)
    hosts.stop()
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "slurm"))
import minicluster as mc  # noqa: E402

Error = mc.Error


class Hosts:
    def __init__(self, cluster, env):
        self.cluster = cluster
        # Open MPI between the hosts: TCP on the namespaces' subnet (shared memory within one)
        self.env = cluster.env(dict(env, OMPI_MCA_btl="self,tcp,vader",
                                    OMPI_MCA_btl_tcp_if_include=mc.SUBNET + ".0/24",
                                    OMPI_MCA_oob_tcp_if_include=mc.SUBNET + ".0/24"))

    def srun(self, nodes, tasks_per_node=1):
        """the launch prefix of a job step on `nodes` hosts (block placement: ranks 0.. on the first)"""
        return self.cluster._in_ns(self.cluster.ns_ctl, ["srun", "--mpi=pmix", "-N%d" % nodes,
                                                         "--ntasks-per-node=%d" % tasks_per_node, "--cpu-bind=cores"])

    def stop(self):
        self.cluster.stop()


def start(work, env, nodes=2, cpus=2, log=print):
    """the cluster started in work (its configuration and logs); a Hosts, or Error"""
    cl = mc.Cluster(work, nodes=nodes, netns=True, cpus=cpus, log=log)
    try:
        cl.start()
    except BaseException:
        cl.stop()
        raise
    return Hosts(cl, env)
