"""Faults of the machine end in one line and leave no run RUNNING: a full disk (the store, a
checkpoint, an artifact, a report), a store that goes away mid-run, a crash. When the run's end
cannot be written, the next command that opens the store ends it and says so.

The disk-full tests mount small tmpfs folders: they need root, and are skipped without it
(failed instead when $CI is set, as the tests/cluster fixtures do)."""

from __future__ import annotations

import errno
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
import typer
from mlflow.tracking import MlflowClient
from tiny_runs import TINY_DATA

from suite.cli.common import guarded
from suite.common import faults
from suite.common.files import write_atomic
from suite.errors import DiskFull, MachineFault, UserError
from suite.job import ownership, tracking

SUITE = str(Path(sys.executable).parent / "suite")
# Epochs of 8 steps: a few seconds each, time enough to fill a disk after the first.
TRAINING = ["run", "--method", "tempme", "--pretrained", "none", "--batch-size", "4",
            *TINY_DATA, "--set", "data.num_train=32"]
LONG_RUN = [*TRAINING, "--epochs", "3"]
# The cheapest command that opens the store: an evaluation of a frozen model.
EVALUATION = ["run", "--method", "zeroshot", "--pretrained", "none", "--epochs", "0",
              *TINY_DATA]


# -- recognising a fault --------------------------------------------------------------------


def store_error(message: str) -> Exception:
    """SQLite's error as MLflow raises it: wrapped in SQLAlchemy's, wrapped in MLflow's."""
    import sqlalchemy.exc
    from mlflow.exceptions import MlflowException

    try:
        try:
            try:
                raise sqlite3.OperationalError(message)
            except sqlite3.OperationalError as db:
                raise sqlalchemy.exc.OperationalError(
                    "INSERT INTO metrics ...", None, db) from db
        except sqlalchemy.exc.OperationalError as orm:
            raise MlflowException(message=orm) from orm
    except MlflowException as wrapped:
        return wrapped


def test_a_full_disk_is_recognised_through_the_libraries_wrapping():
    for code in (errno.ENOSPC, errno.EDQUOT):
        assert faults.is_disk_full(OSError(code, os.strerror(code)))
    full = store_error("database or disk is full")
    assert faults.is_disk_full(full) and faults.is_store_error(full)
    assert faults.cause(full) == "database or disk is full"
    gone = store_error("attempt to write a readonly database")
    assert not faults.is_disk_full(gone) and faults.is_store_error(gone)
    assert faults.cause(gone) == "attempt to write a readonly database"
    assert not faults.is_disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not faults.is_store_error(ValueError("x"))
    # A copy names its source first and the file it writes second.
    copy = OSError(errno.ENOSPC, "No space left on device", "/tmp/a", None, "/store/a")
    assert faults.written_path(copy) == "/store/a"
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError as inner:
            raise RuntimeError("saving failed") from inner
    except RuntimeError as outer:
        assert faults.is_disk_full(outer) and faults.written_path(outer) is None


def test_a_library_preamble_is_not_the_line_shown():
    noisy = Exception("(raised as a result of Query-invoked autoflush; consider using a "
                      "session.no_autoflush block)\n(sqlite3.OperationalError) disk I/O error")
    assert faults.first_line(noisy) == "(sqlite3.OperationalError) disk I/O error"
    assert faults.first_line(Exception("")) == "Exception"


def exit_of(error: BaseException, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """What a command that raises ``error`` ends with: its exit code and its stderr."""

    def command() -> None:
        raise error

    with pytest.raises(typer.Exit) as stopped:
        guarded(command)()
    return stopped.value.exit_code, capsys.readouterr().err


def test_a_full_disk_anywhere_is_one_line_and_exit_1(capsys):
    code, err = exit_of(OSError(errno.ENOSPC, "No space left on device", "/data/report.md"),
                        capsys)
    assert (code, err) == (1, "error: disk full writing /data/report.md: free space and run "
                              "the command again\n")
    code, err = exit_of(OSError(errno.EDQUOT, "Disk quota exceeded", "/home/x/a.pt"), capsys)
    assert code == 1 and err.startswith("error: disk full writing /home/x/a.pt: ")
    code, err = exit_of(store_error("database or disk is full"), capsys)
    assert (code, err) == (1, "error: disk full writing the tracking store: free space and run "
                              "the command again\n")
    # Other faults keep their codes: a filesystem problem, a store that fails to open.
    code, err = exit_of(OSError(errno.EACCES, "Permission denied", "/x"), capsys)
    assert (code, err) == (2, "error: /x: permission denied\n")
    code, err = exit_of(store_error("attempt to write a readonly database"), capsys)
    assert code == 2 and err == ("error: tracking store: (sqlite3.OperationalError) attempt to "
                                 "write a readonly database\n")
    code, err = exit_of(DiskFull("disk full writing x: free space"), capsys)
    assert (code, err) == (1, "error: disk full writing x: free space\n")


def test_an_atomic_write_names_its_file_when_the_disk_is_full(tmp_path, monkeypatch):
    def full(handle: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    target = tmp_path / "run" / "last.pt"
    with pytest.raises(OSError) as raised:
        write_atomic(target, b"weights")
    assert raised.value.filename == str(target)
    assert list(target.parent.iterdir()) == []  # no temporary file left behind


def test_a_run_fault_names_the_file_and_what_to_do():
    uri = "sqlite:////data/mlflow.db"
    full = store_error("database or disk is full")
    fault = tracking.machine_fault(full, uri, "r1", resumable=True)
    assert isinstance(fault, DiskFull)
    assert str(fault) == ("disk full writing /data/mlflow.db: free space and "
                          "`suite run --resume r1`")
    setattr(full, tracking.LEFT_RUNNING, "r1")
    assert str(tracking.machine_fault(full, uri, "r1", resumable=False)).endswith(
        "free space and run it again (its end could not be written: the next command that "
        "opens the store ends it)")
    gone = store_error("attempt to write a readonly database")
    fault = tracking.machine_fault(gone, uri, "r1", resumable=True)
    assert type(fault) is MachineFault and fault.exit_code == 1
    assert str(fault) == ("tracking store sqlite:////data/mlflow.db failed mid-run (attempt to "
                          "write a readonly database): check it and `suite run --resume r1`")
    assert tracking.machine_fault(gone, uri, None, resumable=False) is None  # before it opened
    assert tracking.machine_fault(UserError("bad"), uri, "r1", resumable=True) is None
    assert tracking.machine_fault(RuntimeError("bug"), uri, "r1", resumable=True) is None
    from suite.orchestrate.sweep import Pruned  # an Optuna error too, but on purpose

    assert tracking.machine_fault(Pruned("pruned", {}), uri, "r1", resumable=True) is None


def test_a_run_whose_end_fails_reports_the_first_error(store, monkeypatch):
    """The store fails as the run ends: the error raised is the run's own, marked, with a note;
    the run stays RUNNING (its end unwritten) and no MLflow run stays active here."""
    import mlflow
    from mlflow.exceptions import MlflowException

    def unwritable(self, run_id, status=None, end_time=None):
        raise MlflowException("attempt to write a readonly database")

    with pytest.raises(RuntimeError) as raised, \
            tracking.mlflow_run(store, "tvr-suite", "r", {}) as active:
        monkeypatch.setattr(MlflowClient, "set_terminated", unwritable)
        raise RuntimeError("a bug in training")
    monkeypatch.undo()
    assert tracking.left_running(raised.value) == active.info.run_id
    assert any("could not be ended FAILED (attempt to write a readonly database)" in note
               for note in raised.value.__notes__)
    assert mlflow.active_run() is None
    assert MlflowClient(store).get_run(active.info.run_id).info.status == "RUNNING"


# -- runs left RUNNING by an owner that is gone ---------------------------------------------


def dead_owner(host: str | None = None) -> ownership.Owner:
    """The owner record of a process that has ended."""
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    started = psutil.Process(finished.pid).create_time()
    finished.wait()
    return ownership.Owner(finished.pid, host or socket.gethostname(), started, time.time())


def test_the_next_run_ends_runs_whose_owner_is_gone(store, capsys):
    client = MlflowClient(store)
    experiment = tracking.open_experiment(store, "tvr-suite")
    dead, me = dead_owner(), ownership.Owner.of_this_process()
    runs = {
        "dead": client.create_run(experiment, tags=dead.tags(), run_name="left"),
        "alive": client.create_run(experiment, tags=me.tags()),
        "resumed": client.create_run(experiment, tags={**dead.tags(),
                                                       ownership.RESUMER_TAG: me.token()}),
        "kept": client.create_run(experiment, tags=dead.tags()),
        "no-record": client.create_run(experiment),
    }
    ids = {name: run.info.run_id for name, run in runs.items()}
    capsys.readouterr()
    ended = ownership.end_orphans(store, "tvr-suite", keep=ids["kept"])
    assert ended == [ids["dead"]]
    status = {name: client.get_run(i).info.status for name, i in ids.items()}
    assert status == {"dead": "FAILED", "alive": "RUNNING", "resumed": "RUNNING",
                      "kept": "RUNNING", "no-record": "RUNNING"}
    assert client.get_run(ids["dead"]).data.tags["abandoned"] == "true"
    [line] = capsys.readouterr().err.strip().splitlines()
    assert line.startswith(f"run {ids['dead']} (left) was left RUNNING by pid {dead.pid} on "
                           f"{socket.gethostname()}, last heartbeat ")
    assert line.endswith(f"which is gone: ended FAILED, abandoned (`suite run --resume "
                         f"{ids['dead']}` continues it if it kept a checkpoint)")
    assert ownership.end_orphans(store, "no-such-experiment") == []


def test_a_taken_over_run_names_its_resumer(store):
    """Between the take-over and its heartbeat, a resumed run is not another command's to end."""
    client = MlflowClient(store)
    run_id = client.create_run(tracking.open_experiment(store, "tvr-suite"),
                               tags=dead_owner().tags()).info.run_id
    ownership.take_over(store, run_id)
    resumer = ownership.Owner.from_token(
        client.get_run(run_id).data.tags[ownership.RESUMER_TAG])
    assert resumer is not None and resumer.pid == os.getpid() and not resumer.gone()
    assert ownership.end_orphans(store, "tvr-suite") == []
    assert client.get_run(run_id).info.status == "RUNNING"


# -- real runs: a crash, a store that goes away, a full disk --------------------------------


STARTED: list[subprocess.Popen[str]] = []  # the commands a test started, stopped after it


@pytest.fixture(autouse=True)
def stop_leftovers() -> Iterator[None]:
    yield
    stop_started()


def stop_started() -> None:
    """Kill (by pid) the commands this module started that still run (a failed test's)."""
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            process.kill()
            process.communicate(timeout=60)


def start(args: list[str], cwd: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen([SUITE, *args], cwd=cwd, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    STARTED.append(process)
    return process


def suite(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([SUITE, *args], cwd=cwd, capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600)


def wait_for_checkpoint(folder: Path, process: subprocess.Popen[str]) -> Path:
    """The first epoch checkpoint under ``folder``, once the run has written it."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        found = list(folder.glob("*/last.pt"))
        if found:
            return found[0]
        assert process.poll() is None, process.communicate()[1][-3000:]
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def assert_one_line_ending(err: str, start: str) -> str:
    """The last line of stderr starts with ``start``; no traceback anywhere; the line."""
    assert "Traceback" not in err, err[-5000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(start), err[-3000:]
    return last


def statuses(uri: str) -> dict[str, str]:
    client = MlflowClient(uri)
    return {r.info.run_id: r.info.status for r in client.search_runs(
        [e.experiment_id for e in client.search_experiments()])}


CRASH = """
import sys
from pathlib import Path
from suite.job import engine

STORE = sys.argv[1]

def crash(self, *args, **kwargs):
    if STORE != "-":
        store = Path(STORE)
        store.rename(store.with_name("store.gone"))  # the store goes away as well
    raise RuntimeError("a bug in training")

engine.Trainer.fit = crash
from suite.cli import main
sys.argv = ["suite", *sys.argv[2:]]
main()
"""


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("store_goes", [False, True], ids=["store-stays", "store-goes"])
def test_a_crash_prints_its_traceback_once(tmp_path, store_goes):
    """A bug keeps its traceback, printed once; when the store fails too as the run ends, the
    traceback is still the bug's, with a note that the run stays RUNNING."""
    store = tmp_path / "store"
    store.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    args = [*TRAINING, "--epochs", "1", "--tracking-uri", uri]
    done = subprocess.run([sys.executable, "-c", CRASH, str(store) if store_goes else "-", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1, done.stderr[-3000:]
    assert done.stderr.count("Traceback (most recent call last)") == 1, done.stderr[-5000:]
    assert "ERROR mlflow" not in done.stderr
    if not store_goes:
        assert done.stderr.strip().splitlines()[-1] == "RuntimeError: a bug in training"
        assert list(statuses(uri).values()) == ["FAILED"]
        return
    assert "RuntimeError: a bug in training" in done.stderr
    assert done.stderr.strip().splitlines()[-1].endswith(
        "it stays RUNNING until a command that opens the store ends it")
    (tmp_path / "store.gone").rename(store)
    assert list(statuses(uri).values()) == ["RUNNING"]  # its end could not be written


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_store_that_goes_away_mid_run(tmp_path):
    """The store's folder goes away after the first epoch (moved, a share unmounted): one line,
    exit 1, the run left RUNNING; the folder comes back, and the next run on the store ends the
    dead run and says so."""
    store, work = tmp_path / "store", tmp_path / "work"
    store.mkdir()
    work.mkdir()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    process = start([*LONG_RUN, "--tracking-uri", uri], work)
    run_id = wait_for_checkpoint(work / "checkpoints", process).parent.name
    store.rename(tmp_path / "store.gone")
    _, err = process.communicate(timeout=600)
    (tmp_path / "store.gone").rename(store)
    assert process.returncode == 1, err[-3000:]
    line = assert_one_line_ending(err, f"error: tracking store {uri} failed mid-run (")
    assert line.endswith(f"check it and `suite run --resume {run_id}` (its end could not be "
                         f"written: the next command that opens the store ends it)")
    assert statuses(uri) == {run_id: "RUNNING"}

    after = suite([*EVALUATION, "--tracking-uri", uri], work)
    assert after.returncode == 0, after.stderr[-3000:]
    assert (f"run {run_id} (tempme-synthetic-s42) was left RUNNING by pid {process.pid} on "
            f"{socket.gethostname()}") in after.stderr
    assert "which is gone: ended FAILED, abandoned" in after.stderr
    assert "RUNNING" not in statuses(uri).values()
    assert MlflowClient(uri).get_run(run_id).data.tags["abandoned"] == "true"


# -- a full disk (tmpfs) --------------------------------------------------------------------


@pytest.fixture
def tmpfs() -> Iterator[Callable[[Path, str], Path]]:
    """``mount(folder, size)``: a tmpfs of ``size`` (``30M``) mounted at ``folder``, unmounted
    after the test (processes the test left running are stopped first)."""
    mounted: list[Path] = []

    def mount(folder: Path, size: str) -> Path:
        why = None
        if os.geteuid() != 0:
            why = "mounting a tmpfs needs root"
        elif shutil.which("mount") is None:
            why = "no mount command"
        else:
            folder.mkdir(parents=True, exist_ok=True)
            done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs",
                                   str(folder)], capture_output=True, text=True)
            if done.returncode != 0:
                why = f"mount -t tmpfs failed: {done.stderr.strip() or done.returncode}"
        if why is not None:
            if os.environ.get("CI"):
                pytest.fail(f"{why} (CI runs the disk-full tests as root)", pytrace=False)
            pytest.skip(why)
        mounted.append(folder)
        return folder

    yield mount
    stop_started()  # a run the test left behind holds files on the mount
    for folder in reversed(mounted):
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(folder: Path) -> Path:
    """Fill the file system of ``folder`` to its last byte; the filler file."""
    filler = folder / "filler"
    with open(filler, "ab", buffering=0) as file:
        for size in (1 << 20, 1 << 12, 1):
            chunk = bytes(size)
            try:
                while True:
                    file.write(chunk)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    return filler


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_full_disk_under_the_store_mid_run(tmp_path, tmpfs):
    """Store, artifacts and checkpoints on a 30 MB tmpfs, filled after the first epoch: one line
    (exit 1) naming the store and the resume; the epoch-1 checkpoint kept; the run's end cannot
    be written, so the next run on the store ends it and says so; the resume then finishes it.
    A report written to the full disk is one line and exit 1 as well."""
    disk = tmpfs(tmp_path / "disk", "30M")
    uri = f"sqlite:///{disk / 'mlflow.db'}"
    process = start([*LONG_RUN, "--tracking-uri", uri], disk)
    saved = wait_for_checkpoint(disk / "checkpoints", process)
    run_id = saved.parent.name
    filler = fill(disk)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 1, err[-3000:]
    line = assert_one_line_ending(err, f"error: disk full writing {disk / 'mlflow.db'}: free "
                                       f"space and `suite run --resume {run_id}`")
    assert line.endswith("(its end could not be written: the next command that opens the "
                         "store ends it)")
    assert saved.is_file()  # the epoch-1 checkpoint is kept
    filler.unlink()
    assert statuses(uri) == {run_id: "RUNNING"}

    after = suite([*EVALUATION, "--tracking-uri", uri], disk)
    assert after.returncode == 0, after.stderr[-3000:]
    assert f"run {run_id} (tempme-synthetic-s42) was left RUNNING by pid {process.pid}" \
        in after.stderr
    assert "RUNNING" not in statuses(uri).values()

    resumed = suite(["run", "--resume", run_id, "--tracking-uri", uri], disk)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming run {run_id} after epoch 1" in resumed.stderr
    assert set(statuses(uri).values()) == {"FINISHED"}

    filler = fill(disk)
    report = suite(["report", "--tracking-uri", uri, "--out", str(disk / "report")], disk)
    assert report.returncode == 1, report.stderr[-3000:]
    assert_one_line_ending(report.stderr, f"error: disk full writing {disk / 'report'}/")
    filler.unlink()


@pytest.mark.slow
@pytest.mark.subprocess
@pytest.mark.parametrize("full", ["checkpoints", "mlartifacts"])
def test_a_full_disk_under_checkpoints_or_artifacts(tmp_path, tmpfs, full):
    """The store stays writable, the checkpoint (after the first epoch) or artifact folder fills
    up: one line (exit 1) naming the file and the resume; the run ends FAILED; the checkpoint of
    the last finished epoch is kept."""
    disk = tmpfs(tmp_path / full, "2M")  # the run's artifacts go beside mlflow.db
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    if full == "mlartifacts":  # filled before the run: its artifacts come at its end
        fill(disk)
        process = start([*TRAINING, "--epochs", "1", "--tracking-uri", uri], tmp_path)
    else:
        process = start([*LONG_RUN, "--tracking-uri", uri], tmp_path)
        wait_for_checkpoint(disk, process)
        fill(disk)
    _, err = process.communicate(timeout=600)
    assert process.returncode == 1, err[-3000:]
    [(run_id, status)] = statuses(uri).items()
    assert status == "FAILED"
    where = f"checkpoints/{run_id}/last.pt" if full == "checkpoints" else f"{disk}/{run_id}/"
    line = assert_one_line_ending(err, f"error: disk full writing {where}")
    assert line.endswith(f": free space and `suite run --resume {run_id}`")
    assert (tmp_path / "checkpoints" / run_id / "last.pt").is_file()
