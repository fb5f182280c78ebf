"""A real single-node SLURM cluster (slurmctld + slurmd + munge) for tests, started once per session.

Needs root and the Debian packages slurmctld, slurmd, slurm-client and munge (installed with apt-get
when missing); the `slurm_cluster` fixture skips, saying why, when that is impossible. Every session
gets a fresh directory under /tmp holding its own munge key and socket, controller state, logs, and
its own free ports, so it never meets another cluster on this machine (e.g. one started by
../shared/tools/slurm-local.sh). No accounting: use squeue, not sacct. Job ids restart at 1.
Test modules use it with `pytest_plugins = ["slurm_cluster"]` (pyflakes-clean) or
`from slurm_cluster import slurm_cluster  # noqa: F401`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
START_TIMEOUT_S = 60
# A requeued job waits cred_expire + 1 s before it may start again (120 + 1 by default); 10 keeps the
# requeue tests short while leaving a loaded machine time to launch a job before its credential expires.
CRED_EXPIRE_S = 10


@dataclass(frozen=True)
class SlurmCluster:
    dir: Path
    env: dict[str, str]  # what SLURM clients need (SLURM_CONF), to add to os.environ

    @property
    def log_dir(self) -> Path:
        return self.dir / "log"

    def run(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """A SLURM client command against this cluster."""
        return subprocess.run(args, env={**os.environ, **self.env}, capture_output=True, text=True, timeout=timeout)

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the daemons' logs, for failure messages."""
        parts = []
        for log in sorted([*self.log_dir.glob("*.log"), self.dir / "munge" / "munged.log"]):
            if log.exists():
                parts.append(f"--- {log.name}\n" + "\n".join(log.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(parts)


def _install() -> None:
    """apt-get install the SLURM packages when a daemon is missing; skip when that is not possible."""
    if all(shutil.which(tool) for tool in ("slurmctld", "slurmd", "sbatch", "munged", "mungekey")):
        return
    if shutil.which("apt-get") is None:
        pytest.skip(f"SLURM is not installed and apt-get is unavailable to install {' '.join(PACKAGES)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in (
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=120", *PACKAGES],
    ):
        try:
            done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
        except subprocess.TimeoutExpired:
            pytest.skip(f"'{' '.join(command)}' took over 600 s (no network?)")
        if done.returncode != 0:
            pytest.skip(f"'{' '.join(command)}' failed (no network?): {done.stderr.strip()[-500:]}")


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _config(root: Path, node: str, ctld_port: int, slurmd_port: int) -> str:
    return f"""\
ClusterName=cnnjaxtest
SlurmctldHost=localhost
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={root}/munge/munge.sock,cred_expire={CRED_EXPIRE_S}
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=600
SchedulerParameters=batch_sched_delay=0,sched_interval=1
{node} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""


def _output(command: list[str], env: dict[str, str] | None = None) -> str:
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"'{' '.join(command)}' failed: {(done.stderr or done.stdout).strip()[-500:]}")
    return done.stdout


def start(cluster: SlurmCluster) -> None:
    """Start munged, slurmctld and slurmd with everything under `cluster.dir`; return once the node is idle."""
    root, munge = cluster.dir, cluster.dir / "munge"
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(parents=True)
    root.chmod(0o755)  # munged runs as user munge and must reach its socket directory
    _output(["mungekey", "-c", "-k", str(munge / "munge.key")])
    for path in (munge, munge / "munge.key"):
        shutil.chown(path, "munge", "munge")
    (munge / "munge.key").chmod(0o400)
    _output(
        [
            "runuser",
            "-u",
            "munge",
            "--",
            "munged",
            f"--socket={munge}/munge.sock",
            f"--key-file={munge}/munge.key",
            f"--log-file={munge}/munged.log",
            f"--pid-file={munge}/munged.pid",
            f"--seed-file={munge}/munged.seed",
        ]
    )
    # the node line from the hardware slurmd sees, named localhost (slurmd -N localhost below)
    hardware = _output(["slurmd", "-C"]).splitlines()[0].split(" ", 1)[1]
    Path(cluster.env["SLURM_CONF"]).write_text(_config(root, f"NodeName=localhost {hardware}", *_free_ports(2)))
    env = {**os.environ, **cluster.env}
    _output(["slurmctld"], env)  # both daemonize and write their pid files
    _output(["slurmd", "-N", "localhost"], env)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if cluster.run("sinfo", "-h", "-o", "%T").stdout.strip() == "idle":
            return
        time.sleep(0.25)
    raise RuntimeError(f"the node did not become idle within {START_TIMEOUT_S} s")


def stop(cluster: SlurmCluster) -> None:
    """Cancel every job, stop the daemons (SIGTERM, SIGKILL after 10 s) and delete the cluster's directory."""
    pids = {name: _pid(cluster.dir / name) for name in ("slurmd.pid", "slurmctld.pid", "munge/munged.pid")}
    if _alive(pids["slurmctld.pid"]):
        try:
            cluster.run("scancel", "--partition=debug")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline and cluster.run("squeue", "-h", "-t", "R,CG").stdout.strip():
                time.sleep(0.2)
        except subprocess.TimeoutExpired:
            pass
    alive = [pid for pid in pids.values() if _alive(pid)]
    _kill(alive, signal.SIGTERM)
    deadline = time.monotonic() + 10
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [pid for pid in alive if _alive(pid)]
    _kill(alive, signal.SIGKILL)
    shutil.rmtree(cluster.dir, ignore_errors=True)


def _kill(pids: list[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)


def _pid(pid_file: Path) -> int | None:
    text = pid_file.read_text().strip() if pid_file.exists() else ""
    return int(text) if text.isdigit() else None


def _alive(pid: int | None) -> bool:
    """Whether `pid` runs (a zombie counts as gone: the daemons' parent may never reap them)."""
    try:
        return pid is not None and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):
        return False


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A running single-node SLURM cluster; the node is `localhost`, its partition `debug`."""
    if os.geteuid() != 0:
        pytest.skip("a local SLURM cluster needs root (munged, slurmd)")
    _install()
    root = Path(tempfile.mkdtemp(prefix="cnn-jax-slurm-"))
    cluster = SlurmCluster(root, {"SLURM_CONF": str(root / "slurm.conf")})
    try:
        start(cluster)
    except Exception as error:  # noqa: BLE001 - any failure to start means: no cluster, skip
        reason = f"the local SLURM cluster did not come up: {error}\n{cluster.log_tail()}"
        stop(cluster)
        pytest.skip(reason)
    try:
        yield cluster
    finally:
        stop(cluster)
