"""A real single-node Slurm cluster for tests: munged + slurmctld + slurmd started by hand, no systemd.

    with SlurmCluster.start() as cluster:        # installs slurm-wlm + munge with apt-get when missing
        job = cluster.sbatch(["--wrap", "hostname"])
        assert cluster.wait([job])[job] == "COMPLETED"

Everything lives in one temporary directory (config, munge key and socket, state, spool, logs), the daemons
listen on free ports and talk through their own munge socket, so the cluster neither needs nor disturbs a
system-wide Slurm or munge. Client commands find it through `SLURM_CONF` (see `env`). `stop()` ends exactly the
processes it started. Without accounting there is no `sacct`: finished jobs stay visible to `scontrol show job`
for `MinJobAge` seconds, which the config sets high.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DAEMONS = ("munged", "slurmctld", "slurmd")
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL",
                "DEADLINE", "PREEMPTED"}
NEVER = "DependencyNeverSatisfied"  # the Reason of a pending job whose dependency failed


class SlurmUnavailable(Exception):
    """Slurm cannot be installed or started here (no apt-get, not root): the tests skip with this reason."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _which(name: str) -> str | None:
    return shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)),
                                      None)


def ensure_installed() -> None:
    """apt-get install slurm-wlm + munge when a daemon is missing (CI starts from a bare machine)."""
    if all(_which(d) for d in (*DAEMONS, "sbatch", "scontrol")):
        return
    if os.geteuid() != 0:
        raise SlurmUnavailable("slurm-wlm/munge are not installed and installing them needs root")
    if not shutil.which("apt-get"):
        raise SlurmUnavailable("slurm-wlm/munge are not installed and there is no apt-get to install them")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "slurm-wlm", "munge"]):
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise SlurmUnavailable(f"`{' '.join(cmd)}` failed: {r.stderr.strip()[-500:]}")
    missing = [d for d in (*DAEMONS, "sbatch") if not _which(d)]
    if missing:
        raise SlurmUnavailable(f"installed slurm-wlm and munge but {missing} are still missing")


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 4000


class SlurmCluster:
    def __init__(self, root: Path):
        self.root = root
        self.conf = root / "slurm.conf"
        self.node = socket.gethostname().split(".")[0]
        self.procs: dict[str, subprocess.Popen] = {}

    @property
    def env(self) -> dict[str, str]:
        """Environment for client commands (sbatch, squeue, scontrol) and for `character slurm submit`."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    # ---- lifecycle -------------------------------------------------------------------------------------
    @classmethod
    def start(cls, root: str | Path | None = None, cpus: int | None = None) -> SlurmCluster:
        ensure_installed()
        if os.geteuid() != 0:
            raise SlurmUnavailable("starting slurmd needs root (it launches jobs as their users)")
        cluster = cls(Path(root) if root else Path(tempfile.mkdtemp(prefix="character-slurm-")))
        try:
            cluster._write_config(cpus or os.cpu_count() or 1)
            cluster._start_daemons()
            cluster._wait_idle()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def _write_config(self, cpus: int) -> None:
        r = self.root
        for d in ("state", "spool", "log", "munge"):
            (r / d).mkdir(parents=True, exist_ok=True)
        os.chmod(r, 0o755)
        os.chmod(r / "munge", 0o755)  # munged refuses a socket dir others can write to, wants x for all
        key = r / "munge" / "munge.key"
        key.write_bytes(os.urandom(1024))
        os.chmod(key, 0o600)
        self.munge_socket = r / "munge" / "munge.socket"
        mem = max(1000, int(_mem_mb() * 0.8))
        self.conf.write_text(f"""\
# written by tests/pipeline/slurm_cluster.py: one node, daemons started by hand
ClusterName=character-test
SlurmctldHost={self.node}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job may start again only after this many seconds (default 120)
AuthInfo=socket={self.munge_socket},cred_expire=10
StateSaveLocation={r / 'state'}
SlurmdSpoolDir={r / 'spool'}
SlurmctldPidFile={r / 'slurmctld.pid'}
SlurmdPidFile={r / 'slurmd.pid'}
SlurmctldLogFile={r / 'log' / 'slurmctld.log'}
SlurmdLogFile={r / 'log' / 'slurmd.log'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
# finished jobs stay visible to `scontrol show job` (there is no accounting database for sacct)
MinJobAge=3600
KillWait=5
SchedulerParameters=bf_interval=2
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName={self.node} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={mem} State=UNKNOWN
PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP
""")

    def _spawn(self, name: str, cmd: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.stdout", "w")
        # own session: a Ctrl-C in pytest does not reach the daemons before teardown stops them in order
        self.procs[name] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                            start_new_session=True)

    def _start_daemons(self) -> None:
        r = self.root
        self._spawn("munged", [_which("munged"), "-F", "--force", f"--socket={self.munge_socket}",
                               f"--key-file={r / 'munge' / 'munge.key'}", f"--pid-file={r / 'munge' / 'munged.pid'}",
                               f"--log-file={r / 'log' / 'munged.log'}", f"--seed-file={r / 'munge' / 'seed'}"])
        self._wait_for(lambda: self.munge_socket.exists(), "munged", 20)
        self._spawn("slurmctld", [_which("slurmctld"), "-D", "-i", "-f", str(self.conf)])
        self._wait_for(lambda: self._ok(["scontrol", "ping"], "UP"), "slurmctld", 30)
        self._spawn("slurmd", [_which("slurmd"), "-D", "-f", str(self.conf), "-N", self.node])

    def _ok(self, cmd: list[str], expect: str) -> bool:
        r = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=30)
        return r.returncode == 0 and expect in r.stdout

    def _wait_for(self, cond, what: str, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError(f"{name} exited with {p.returncode}; see {self.root / 'log'}:\n{self.logs()}")
            if cond():
                return
            time.sleep(0.3)
        raise RuntimeError(f"{what} not ready after {timeout:.0f} s; logs:\n{self.logs()}")

    def _wait_idle(self) -> None:
        self._wait_for(lambda: self._ok(["sinfo", "-h", "-N", "-o", "%t"], "idle"), "slurmd (node idle)", 60)

    def stop(self) -> None:
        """Stop the daemons this object started (slurmd, slurmctld, munged: the reverse order)."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            # cancel what is still queued or running so that slurmd leaves no job steps behind
            subprocess.run(["scancel", "--full", "--user", "root"], env=self.env, capture_output=True, timeout=30)
        for name in ("slurmd", "slurmctld", "munged"):
            p = self.procs.get(name)
            if p is None or p.poll() is not None:
                continue
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        self._kill_leftover_jobs()

    def _kill_leftover_jobs(self) -> None:
        # slurmstepd processes are children of slurmd's session but outlive it; end only those of our config
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                cmdline = (proc / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if cmdline and cmdline[0].endswith(b"slurmstepd"):
                try:
                    env = (proc / "environ").read_bytes()
                except OSError:
                    continue
                if f"SLURM_CONF={self.conf}".encode() in env:
                    os.kill(int(proc.name), signal.SIGKILL)

    def logs(self, tail: int = 30) -> str:
        out = []
        for f in sorted((self.root / "log").glob("*")):
            lines = f.read_text(errors="replace").splitlines()[-tail:]
            out.append(f"--- {f.name}\n" + "\n".join(lines))
        return "\n".join(out)

    # ---- client helpers --------------------------------------------------------------------------------
    def run(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=60)
        if check and r.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}): {r.stderr.strip()}")
        return r

    def sbatch(self, args: list[str]) -> str:
        return self.run("sbatch", "--parsable", *args).stdout.strip().split(";")[0]

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        """`scontrol show job` records for a job id (an array gives one per task), as key -> value."""
        r = self.run("scontrol", "-o", "show", "job", job_id, check=False)
        if r.returncode != 0:
            return []
        records = []
        for line in r.stdout.splitlines():
            rec = {}
            for tok in line.split():
                k, _, v = tok.partition("=")
                rec[k] = v
            records.append(rec)
        return records

    def states(self, job_id: str) -> dict[str, str]:
        """'<jobid>' or '<arrayjob>_<task>' -> state for every task of a job; a task pending on a dependency reads
        'PENDING (Dependency)', or 'PENDING (DependencyNeverSatisfied)' when that dependency failed."""
        out = {}
        for rec in self.jobs(job_id):
            key = rec.get("JobId", job_id)
            if rec.get("ArrayTaskId"):
                key = f"{rec['ArrayJobId']}_{rec['ArrayTaskId']}"
            state = rec.get("JobState", "UNKNOWN")
            if state == "PENDING" and rec.get("Reason") in ("Dependency", NEVER):
                state = f"PENDING ({rec['Reason']})"
            out[key] = state
        return out

    def wait(self, job_ids: list[str], timeout: float = 300, never_after: float | None = None) -> dict[str, str]:
        """Wait until every task of these jobs reached a final state; returns task -> state. With `never_after`,
        also return once for that many seconds every other task has been pending on a dependency and one of them
        on a dependency that can never be met: they would wait forever, and a test sees it at once."""
        deadline = time.time() + timeout
        stuck_since: float | None = None
        while True:
            states: dict[str, str] = {}
            for j in job_ids:
                states.update(self.states(j))
            waiting = {k for k, s in states.items() if s not in FINAL_STATES}
            if states and not waiting and not any("[" in k for k in states):
                return states
            stuck = (never_after is not None and f"PENDING ({NEVER})" in states.values()
                     and all(states[k].startswith("PENDING (Dependency") for k in waiting))
            stuck_since = (stuck_since or time.time()) if stuck else None
            if stuck and time.time() - stuck_since >= never_after:
                return states
            if time.time() > deadline:
                raise TimeoutError(f"jobs not finished after {timeout:.0f} s: {states}\n{self.logs()}")
            time.sleep(1)
