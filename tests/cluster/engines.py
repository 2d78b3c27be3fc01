"""Real daemons for the cluster tests: munge, MariaDB + slurmdbd, Slurm, PostgreSQL, MLflow.

Each engine's ``start()`` returns an object that knows its processes, ports and environment;
its ``stop()`` ends exactly the processes it started (by recorded pid: the stop signal, then
SIGKILL after a timeout) and removes its folder. Every daemon runs in its own session, so a
Ctrl-C in the terminal reaches pytest only, whose finalizers stop them in order; an ``atexit``
hook stops whatever is still running if teardown itself was interrupted. Everything lives under
one temp root and listens on 127.0.0.1 only, on free ports.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

PACKAGES = ("slurm-wlm", "munge", "mariadb-server", "slurmdbd")
BINARIES = ("munged", "munge", "unmunge", "mariadbd", "mariadb-install-db", "mariadb",
            "slurmdbd", "slurmctld", "slurmd", "sacctmgr", "scontrol", "sbatch", "srun", "sacct",
            "sinfo")
START_TIMEOUT = 90.0  # seconds, for each daemon to answer
STOP_TIMEOUT = 15.0  # seconds, between the stop signal and SIGKILL


class EngineError(RuntimeError):
    """A daemon could not start; the message ends with the tail of its log."""


def make_root() -> Path:
    """The temp root of one session's daemons (readable by the users they run as)."""
    root = Path(tempfile.mkdtemp(prefix="suite-cluster-"))
    root.chmod(0o755)
    return root


def ensure_packages() -> None:
    """Install the Debian packages of Slurm, munge and MariaDB when a binary is missing."""
    missing = [b for b in BINARIES if shutil.which(b) is None]
    if missing:
        apt_install(PACKAGES, why=f"missing {' '.join(missing)}")


def apt_install(packages: tuple[str, ...], why: str) -> None:
    """`apt-get update` and `apt-get install` (root only; service scripts are not run)."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise EngineError(f"{why}; install {' '.join(packages)} as root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"],
                 ["apt-get", "install", "-y", "-q", "--no-install-recommends", *packages]):
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
        if done.returncode:
            raise EngineError(f"{' '.join(argv)} failed:\n{done.stdout[-2000:]}{done.stderr}")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:port."""
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def host_is_loopback() -> bool:
    """Whether this host's name resolves to 127.x: then slurmd, slurmdbd and srun can bind
    there (CommunicationParameters=NoInAddrAny binds to that address, not to 127.0.0.1)."""
    try:
        return socket.gethostbyname(socket.gethostname()).startswith("127.")
    except OSError:
        return False


def chown(path: Path, user: str) -> None:
    shutil.chown(path, user, user)


def tail(path: Path, lines: int = 25) -> str:
    """The last lines of a log file ('' if there is none)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@dataclass
class Daemon:
    """One process we started, in its own session (its pid is also its process group)."""

    name: str
    proc: subprocess.Popen[bytes]
    log: Path
    stop_signal: int = signal.SIGTERM

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop signal, SIGKILL after `timeout`; then SIGKILL whatever is left in its group."""
        if self.proc.poll() is None:
            self.proc.send_signal(self.stop_signal)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
        deadline = time.monotonic() + timeout
        while group_members(self.pid) and time.monotonic() < deadline:
            with contextlib.suppress(ProcessLookupError):  # e.g. mlflow's server workers
                os.killpg(self.pid, signal.SIGKILL)
            time.sleep(0.05)


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of a process group."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(stat.parent.name))
    return members


def spawn(name: str, argv: list[str], log: Path, *, user: str | None = None,
          env: dict[str, str] | None = None, stop_signal: int = signal.SIGTERM) -> Daemon:
    """Start a foreground daemon in a new session, its output appended to `log`."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env=env, cwd=log.parent,
            user=user, group=user, extra_groups=[] if user else None,
        )
    return Daemon(name, proc, log, stop_signal)


def run(argv: list[str], *, user: str | None = None, env: dict[str, str] | None = None,
        input: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run a short command; raise EngineError with its output if it fails."""
    done = subprocess.run(argv, input=input, capture_output=True, text=True, env=env,
                          timeout=timeout, user=user, group=user,
                          extra_groups=[] if user else None, cwd="/")
    if done.returncode:
        raise EngineError(f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
    return done


def succeeds(argv: list[str], env: dict[str, str] | None = None, input: str | None = None
             ) -> Callable[[], bool]:
    """A readiness check: the command exits 0."""
    def check() -> bool:
        return subprocess.run(argv, input=input, capture_output=True, text=True, env=env,
                              timeout=15).returncode == 0
    return check


_RUNNING: list[Engine] = []


@atexit.register
def _stop_leftovers() -> None:
    for engine in reversed(list(_RUNNING)):
        engine.stop()


@dataclass(eq=False)
class Engine:
    """Daemons sharing one folder; stop() ends them in reverse order and removes the folder."""

    dir: Path
    daemons: list[Daemon] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        _RUNNING.append(self)

    def spawn(self, name: str, argv: list[str], **kwargs: Any) -> Daemon:
        daemon = spawn(name, argv, self.dir / f"{name}.log", **kwargs)
        self.daemons.append(daemon)
        return daemon

    def wait_until(self, check: Callable[[], bool], what: str,
                   timeout: float = START_TIMEOUT) -> None:
        """Poll `check` until it holds; fail early if one of our daemons has exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [d for d in self.daemons if d.proc.poll() is not None]
            if dead:
                raise EngineError(f"{dead[0].name} exited {dead[0].proc.returncode} "
                                  f"before {what}:\n{self.logs()}")
            try:
                if check():
                    return
            except (OSError, subprocess.SubprocessError):
                pass
            time.sleep(0.25)
        raise EngineError(f"no {what} after {timeout:.0f} s:\n{self.logs()}")

    def logs(self) -> str:
        """The tails of this engine's logs."""
        return "\n".join(f"--- {log.name}\n{tail(log)}" for log in sorted(self.dir.glob("*.log")))

    def stop(self) -> None:
        for daemon in reversed(self.daemons):
            daemon.stop()
        self.daemons.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self in _RUNNING:
            _RUNNING.remove(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        """Used only while starting: stop what started if anything failed (Ctrl-C included)."""
        if kind is not None:
            self.stop()


def _need_root(what: str) -> None:
    if os.geteuid() != 0:
        raise EngineError(f"{what} needs root (it runs daemons as other users)")


@dataclass(eq=False)
class Munge(Engine):
    """munged on a private key and socket, run as the `munge` user."""

    socket: Path = Path()

    @classmethod
    def start(cls, root: Path) -> Munge:
        _need_root("munge")
        with cls(root / "munge") as engine:
            engine.dir.chmod(0o755)  # munged wants its socket folder searchable by all
            chown(engine.dir, "munge")
            key = engine.dir / "munge.key"
            key.write_bytes(secrets.token_bytes(1024))
            key.chmod(0o400)
            chown(key, "munge")
            engine.socket = engine.dir / "munge.socket"
            engine.spawn("munged", [  # in the foreground it logs to stderr only
                "munged", "--foreground", f"--socket={engine.socket}", f"--key-file={key}",
                f"--pid-file={engine.dir / 'munged.pid'}",
                f"--seed-file={engine.dir / 'munged.seed'}"], user="munge")
            cred = ["munge", "-n", f"--socket={engine.socket}"]
            engine.wait_until(succeeds(cred), "munge credential")
            token = run(cred).stdout
            run(["unmunge", f"--socket={engine.socket}"], input=token)
            return engine


@dataclass(eq=False)
class Accounting(Engine):
    """MariaDB in a temp datadir and slurmdbd on it (submitit reads job states with sacct)."""

    conf_dir: Path = Path()
    dbd_port: int = 0
    mysql_port: int = 0

    @classmethod
    def start(cls, root: Path, munge: Munge) -> Accounting:
        """Both daemons; slurmdbd.conf goes to `root`, where Slurm will write slurm.conf."""
        _need_root("slurmdbd")
        with cls(root / "accounting", conf_dir=root) as engine:
            engine._start_mariadb()
            password = secrets.token_hex(12)
            sql = ("CREATE DATABASE slurm_acct_db; "
                   f"CREATE USER 'slurm'@'127.0.0.1' IDENTIFIED BY '{password}'; "
                   "GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';")
            run(engine._mariadb_client() + ["-e", sql])
            engine.dbd_port = free_port()
            conf = root / "slurmdbd.conf"
            conf.touch(mode=0o600)  # it holds a password: slurmdbd wants it private
            conf.write_text("\n".join([
                "AuthType=auth/munge", f"AuthInfo=socket={munge.socket}",
                "DbdHost=localhost", "DbdAddr=127.0.0.1", f"DbdPort={engine.dbd_port}",
                *(["CommunicationParameters=NoInAddrAny"] if host_is_loopback() else []),
                "SlurmUser=root",
                f"PidFile={engine.dir / 'slurmdbd.pid'}",
                "StorageType=accounting_storage/mysql", "StorageHost=127.0.0.1",
                f"StoragePort={engine.mysql_port}", "StorageLoc=slurm_acct_db",
                "StorageUser=slurm", f"StoragePass={password}", ""]))
            # slurmdbd reads slurmdbd.conf from the folder of $SLURM_CONF
            env = {**os.environ, "SLURM_CONF": str(root / "slurm.conf")}
            engine.spawn("slurmdbd", ["slurmdbd", "-D"], env=env)
            engine.wait_until(lambda: port_open(engine.dbd_port), "slurmdbd on its port")
            return engine

    def _start_mariadb(self) -> None:
        mysql_dir = self.dir / "mariadb"
        mysql_dir.mkdir()
        chown(mysql_dir, "mysql")
        run(["mariadb-install-db", "--no-defaults", "--user=mysql",
             f"--datadir={mysql_dir / 'data'}", "--auth-root-authentication-method=socket",
             "--skip-test-db"], timeout=120)
        self.mysql_port = free_port()
        self.spawn("mariadbd", [
            "mariadbd", "--no-defaults", "--user=mysql", f"--datadir={mysql_dir / 'data'}",
            f"--socket={mysql_dir / 'mysqld.sock'}", f"--port={self.mysql_port}",
            "--bind-address=127.0.0.1", "--skip-name-resolve",
            f"--pid-file={mysql_dir / 'mysqld.pid'}", "--innodb-buffer-pool-size=32M"])
        self.wait_until(succeeds(self._mariadb_client() + ["-e", "SELECT 1"]), "MariaDB answer")

    def _mariadb_client(self) -> list[str]:
        return ["mariadb", "--no-defaults", f"--socket={self.dir / 'mariadb' / 'mysqld.sock'}",
                "-u", "root"]

    def stop(self) -> None:
        super().stop()
        (self.conf_dir / "slurmdbd.conf").unlink(missing_ok=True)


def slurm_conf(dir: Path, munge: Munge, accounting: Accounting, partition: str,
               ports: tuple[int, int]) -> str:
    """A one-node slurm.conf for this host, with accounting through slurmdbd."""
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    meminfo = Path("/proc/meminfo").read_text().splitlines()
    mem_kib = int(next(line.split()[1] for line in meminfo if line.startswith("MemTotal:")))
    real_mem = max(mem_kib // 1024 - max(512, mem_kib // 1024 // 10), 256)
    return f"""\
ClusterName=suite
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
CommunicationParameters=NoCtldInAddrAny{',NoInAddrAny' if host_is_loopback() else ''}
AuthType=auth/munge
AuthInfo=socket={munge.socket},cred_expire=10
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={dir / 'state'}
SlurmdSpoolDir={dir / 'spool'}
SlurmctldPidFile={dir / 'slurmctld.pid'}
SlurmdPidFile={dir / 'slurmd.pid'}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=2,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
ReturnToService=2
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort={accounting.dbd_port}
AccountingStoragePass={munge.socket}
JobCompType=jobcomp/none
MinJobAge=10
KillWait=5
JobRequeue=1
MailProg=/bin/true
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={real_mem} State=UNKNOWN
PartitionName={partition} Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""


@dataclass(eq=False)
class Slurm(Engine):
    """slurmctld and slurmd for one node; clients find them through `env` (SLURM_CONF)."""

    partition: str = "debug"
    conf: Path = Path()

    @property
    def env(self) -> dict[str, str]:
        return {"SLURM_CONF": str(self.conf)}

    @classmethod
    def start(cls, root: Path, munge: Munge, accounting: Accounting) -> Slurm:
        _need_root("Slurm")
        with cls(root / "slurm") as engine:
            engine.conf = accounting.conf_dir / "slurm.conf"
            engine.conf.write_text(slurm_conf(engine.dir, munge, accounting, engine.partition,
                                              (free_port(), free_port())))
            env = {**os.environ, **engine.env}
            run(["sacctmgr", "-i", "add", "cluster", "suite"], env=env)
            engine.spawn("slurmctld", ["slurmctld", "-D"], env=env)
            engine.wait_until(succeeds(["scontrol", "ping"], env), "slurmctld answer")
            engine.spawn("slurmd", ["slurmd", "-D"], env=env)
            idle = ["sh", "-c", "sinfo -h -o %t | grep -qx idle"]
            engine.wait_until(succeeds(idle, env), "idle node in sinfo")
            return engine

    def stop(self) -> None:
        super().stop()
        self.conf.unlink(missing_ok=True)


def postgres_bin() -> Path:
    """The folder of initdb and postgres: Debian's newest, else the PATH's, else installed."""
    def find() -> str | None:
        debian = sorted(Path("/usr/lib/postgresql").glob("[0-9]*/bin/initdb"),
                        key=lambda path: int(path.parts[-3]))
        return str(debian[-1]) if debian else shutil.which("initdb")

    found = find()
    if found is None:
        apt_install(("postgresql",), why="PostgreSQL's initdb not found")
        found = find()
    if found is None:
        raise EngineError("PostgreSQL's initdb not found after installing postgresql")
    return Path(found).parent


@dataclass(eq=False)
class Postgres(Engine):
    """A throwaway PostgreSQL on 127.0.0.1 (TCP only), trust auth, superuser `suite`."""

    port: int = 0
    user: str = "suite"

    @classmethod
    def start(cls, root: Path) -> Postgres:
        as_user = "postgres" if os.geteuid() == 0 else None  # initdb refuses root
        with cls(root / "postgres") as engine:
            data = engine.dir / "data"
            if as_user:
                chown(engine.dir, as_user)
            bin_dir = postgres_bin()
            run([str(bin_dir / "initdb"), "-D", str(data), "-U", engine.user, "--auth=trust",
                 "-E", "UTF8", "--locale=C"], user=as_user, timeout=120)
            engine.port = free_port()
            engine.spawn("postgres", [
                str(bin_dir / "postgres"), "-D", str(data), "-p", str(engine.port),
                "-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories=",
                "-c", "fsync=off", "-c", "synchronous_commit=off",
                "-c", "full_page_writes=off"], user=as_user, stop_signal=signal.SIGINT)
            engine.wait_until(engine._accepts, "PostgreSQL connection")
            return engine

    def url(self, db: str = "postgres", driver: str = "") -> str:
        """`postgresql://` (libpq, psycopg) or e.g. driver='psycopg' for SQLAlchemy."""
        scheme = f"postgresql+{driver}" if driver else "postgresql"
        return f"{scheme}://{self.user}@127.0.0.1:{self.port}/{db}"

    def execute(self, sql: str) -> None:
        """Run one statement outside a transaction (CREATE/DROP DATABASE)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)

    def create_database(self, name: str) -> str:
        self.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def _accepts(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url(), connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True


@dataclass(eq=False)
class MlflowServer(Engine):
    """`mlflow server` on 127.0.0.1 with a PostgreSQL store, proxying artifacts to a folder."""

    port: int = 0
    artifacts: Path = Path()

    @property
    def tracking_uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @classmethod
    def start(cls, root: Path, postgres: Postgres) -> MlflowServer:
        with cls(root / "mlflow") as engine:
            db = f"mlflow_{secrets.token_hex(4)}"
            postgres.create_database(db)
            engine.port = free_port()
            engine.artifacts = engine.dir / "artifacts"
            env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
            # no job runner: it forks eight huey consumers and a queue folder in /dev/shm
            env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
            engine.spawn("mlflow", [
                sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
                "--port", str(engine.port), "--workers", "1",
                "--backend-store-uri", postgres.url(db, driver="psycopg"),
                "--serve-artifacts", "--artifacts-destination", str(engine.artifacts)], env=env)
            engine.wait_until(engine._healthy, "mlflow /health", timeout=180)
            return engine

    def _healthy(self) -> bool:
        with urllib.request.urlopen(f"{self.tracking_uri}/health", timeout=2) as response:
            return response.status == 200
