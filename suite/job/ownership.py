"""Who trains a run: a lock while it trains, a heartbeat in its MLflow tags, and the judgement
that a RUNNING run's owner is gone (the run is abandoned).

- Lock: ``<checkpoint dir>/<run id>/owner.lock``, an ``flock`` (filelock) held by the process
  that trains the run, new or resumed. The kernel releases it when that process dies, kill -9
  included. ``suite run --resume`` takes it before it reads the checkpoint, so a run is never
  trained by two processes at once.
- Heartbeat: the MLflow tags ``owner`` (``pid@host``), ``owner_pid``, ``owner_host``,
  ``owner_started`` (the process's start time, so that a reused pid is not taken for the owner)
  and ``heartbeat``, both ISO-8601 times in UTC (``at``), the heartbeat refreshed every
  ``HEARTBEAT_SECONDS`` by a daemon thread.
- Gone: on the owner's host, its process no longer exists; seen from another host (no process
  table to look at), no heartbeat for ``STALE_SECONDS``.

A RUNNING run whose owner is gone is taken over by ``suite run --resume`` (tag
``taken_over_from``) or marked by ``suite abandoned`` (status FAILED, tag ``abandoned=true``);
every run, bench or sweep ends such runs of its experiment (status FAILED, tag
``abandoned=true``) before it opens its own (``end_orphans``), so a run whose end could not be
written (a full disk, a store gone) is ended by the next command, which says so. A run being
resumed carries its resumer (``resumed_by``) until its heartbeat names it: not another's to end.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from suite.errors import UserError

HEARTBEAT_SECONDS = 30.0
STALE_SECONDS = 300.0  # ten missed heartbeats
LOCK_NAME = "owner.lock"
RESUMER_TAG = "resumed_by"  # Owner.token() of the process resuming a run (take_over)

_held: dict[Path, Any] = {}  # lock file -> FileLock this process holds (claims nest)


def at(seconds: float) -> str:
    """Unix time as ISO-8601 in UTC, to the millisecond: ``2025-05-01T09:30:12.345+00:00``."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def seconds_of(text: str) -> float:
    """Unix time of an ``at`` time; a number of seconds (records written before) as it is."""
    try:
        return float(text)
    except ValueError:
        return datetime.fromisoformat(text).timestamp()


def lock_path(folder: Path, run_id: str) -> Path:
    return folder / run_id / LOCK_NAME


@dataclass(frozen=True)
class Owner:
    """The process that trains (or trained) a run, as its tags record it."""

    pid: int
    host: str
    started: float  # process start time (Unix), against pid reuse
    heartbeat: float  # last heartbeat (Unix)

    @classmethod
    def of_this_process(cls) -> Owner:
        import psutil

        pid = os.getpid()
        return cls(pid, socket.gethostname(), psutil.Process(pid).create_time(), time.time())

    @classmethod
    def from_tags(cls, tags: dict[str, str]) -> Owner | None:
        """None when the run has no (or a garbled) owner record."""
        try:
            return cls(int(tags["owner_pid"]), tags["owner_host"],
                       seconds_of(tags["owner_started"]), seconds_of(tags["heartbeat"]))
        except (KeyError, ValueError):
            return None

    def tags(self) -> dict[str, str]:
        return {"owner": f"{self.pid}@{self.host}", "owner_pid": str(self.pid),
                "owner_host": self.host, "owner_started": at(self.started),
                "heartbeat": at(self.heartbeat)}

    def token(self) -> str:
        """``pid@host@started@heartbeat``: the owner in one tag (``RESUMER_TAG``)."""
        return f"{self.pid}@{self.host}@{self.started:.3f}@{self.heartbeat:.3f}"

    @classmethod
    def from_token(cls, text: str) -> Owner | None:
        """The owner a ``token`` names; None for an empty or garbled one."""
        try:
            pid, host, started, heartbeat = text.rsplit("@", 3)
            return cls(int(pid), host, float(started), float(heartbeat))
        except ValueError:
            return None

    def gone(self, now: float | None = None) -> bool:
        """True when the owner is known to be gone (see the module docstring)."""
        if self.host == socket.gethostname():
            return not process_alive(self.pid, self.started)
        return (time.time() if now is None else now) - self.heartbeat > STALE_SECONDS

    def describe(self, now: float | None = None) -> str:
        ago = (time.time() if now is None else now) - self.heartbeat
        return f"pid {self.pid} on {self.host}, last heartbeat {ago:.0f} s ago"


def process_alive(pid: int, started: float) -> bool:
    """Whether process ``pid`` exists and is the one that started at ``started``. A zombie (a
    process killed outright that its parent has not reaped yet, e.g. a sweep worker whose
    parent waits on another worker first) is gone: it runs nothing any more."""
    import psutil

    try:
        process = psutil.Process(pid)
        return (abs(process.create_time() - started) < 1.0
                and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:  # it exists, under another user
        return True


def _run(uri: str, run_id: str) -> Any:
    from mlflow.tracking import MlflowClient

    from suite.job import tracking

    with tracking.first_use(uri):
        return MlflowClient(uri).get_run(run_id)


@contextmanager
def claim(folder: Path, run_id: str, uri: str, create: bool = False) -> Iterator[None]:
    """Hold the run's lock for the block; refuse (one line) when another process holds it.

    ``create`` makes the run's checkpoint folder (a new run); without it a run that has no
    folder (so no checkpoint) is not locked: there is nothing to resume. Claims nest within a
    process; under torchrun only the main process claims.
    """
    from filelock import FileLock, Timeout

    from suite.job.distributed import is_main_process

    path = lock_path(folder, run_id).absolute()
    if path in _held or not is_main_process() or not (create or path.parent.is_dir()):
        yield
        return
    lock = FileLock(str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=0)
    except Timeout:
        owner = Owner.from_tags(_run(uri, run_id).data.tags)
        who = owner.describe() if owner else "another process"
        raise UserError(f"run {run_id} is being trained by {who}; wait for it to end or stop "
                        f"that process first") from None
    except OSError as exc:
        raise UserError(f"cannot lock run {run_id} ({path}): {exc.strerror or exc}") from None
    _held[path] = lock
    try:
        yield
    finally:
        del _held[path]
        lock.release()
        _remove_if_only_the_lock(path)


def _remove_if_only_the_lock(path: Path) -> None:
    """A run that wrote no checkpoint leaves no folder (a finished run's is already gone)."""
    try:
        if [p.name for p in path.parent.iterdir()] == [LOCK_NAME]:
            path.unlink()
            path.parent.rmdir()
    except OSError:  # removed meanwhile, or another process claimed it: leave it
        pass


class _Heartbeat(threading.Thread):
    """Refreshes the ``heartbeat`` tag until stopped; a failed write waits for the next beat
    (a heartbeat must never stop the run)."""

    def __init__(self, client: Any, run_id: str, interval: float) -> None:
        super().__init__(name=f"heartbeat-{run_id}", daemon=True)
        self.client, self.run_id, self.interval = client, run_id, interval
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.interval):
            try:
                self.client.set_tag(self.run_id, "heartbeat", at(time.time()))
            except Exception:  # noqa: BLE001 - a busy store: the next beat tries again
                continue


@contextmanager
def heartbeat(uri: str, run_id: str, interval: float = HEARTBEAT_SECONDS) -> Iterator[None]:
    """Record this process as the run's owner and keep its heartbeat fresh for the block."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for key, value in Owner.of_this_process().tags().items():
        client.set_tag(run_id, key, value)
    beat = _Heartbeat(client, run_id, interval)
    beat.start()
    try:
        yield
    finally:
        beat.stopped.set()
        beat.join(timeout=10)


@contextmanager
def owned(uri: str, run_id: str, folder: Path | None) -> Iterator[None]:
    """The main process's ownership of a run it trains: the lock (when the run keeps
    checkpoints under ``folder``) and the heartbeat."""
    with ExitStack() as stack:
        if folder is not None:
            stack.enter_context(claim(folder, run_id, uri, create=True))
        stack.enter_context(heartbeat(uri, run_id))
        yield


def take_over(uri: str, run_id: str) -> None:
    """Before a resume (the run's lock held): a RUNNING run whose owner lives is refused; one
    whose owner is gone is announced and tagged ``taken_over_from``. An ``abandoned`` mark
    goes, since the run trains again."""
    from mlflow.tracking import MlflowClient

    from suite.common.progress import console
    from suite.job.distributed import is_main_process

    if not is_main_process():
        return
    run = _run(uri, run_id)
    client = MlflowClient(uri)
    if run.info.status == "RUNNING":
        owner = Owner.from_tags(run.data.tags)
        if owner is not None and not owner.gone():
            raise UserError(f"run {run_id} is RUNNING and its owner is alive ({owner.describe()})"
                            f"; wait for it to end or stop that process first")
        who = owner.describe() if owner else "a process that left no owner record"
        console.print(f"run {run_id} was left RUNNING by {who}, which is gone: taking it over")
        client.set_tag(run_id, "taken_over_from", owner.tags()["owner"] if owner else "unknown")
    # Until its heartbeat names this process, the run is not another command's to end.
    client.set_tag(run_id, RESUMER_TAG, Owner.of_this_process().token())
    if "abandoned" in run.data.tags:
        client.delete_tag(run_id, "abandoned")


@dataclass
class Running:
    """A RUNNING run as ``suite abandoned`` sees it."""

    run_id: str
    name: str
    owner: Owner | None  # None: no owner record (a run older than these tags)

    @property
    def abandoned(self) -> bool:
        return self.owner is not None and self.owner.gone()


def running_runs(uri: str, experiment: str) -> list[Running]:
    """The RUNNING runs of ``experiment`` with their owners."""
    from mlflow.tracking import MlflowClient

    from suite.job import tracking

    with tracking.first_use(uri):
        client = MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
    if found is None:
        raise UserError(f"no experiment {experiment!r} in {uri}")
    runs = client.search_runs([found.experiment_id], "attributes.status = 'RUNNING'")
    return [Running(r.info.run_id, r.info.run_name or "", Owner.from_tags(r.data.tags))
            for r in runs]


def mark_abandoned(uri: str, run_id: str) -> None:
    """End the run FAILED with the tag ``abandoned=true``; ``--resume`` can still continue it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    client.set_tag(run_id, "abandoned", "true")
    client.set_terminated(run_id, status="FAILED")


def end_abandoned(uri: str, experiment: str, dry_run: bool = False) -> list[dict[str, Any]]:
    """``suite abandoned``: each RUNNING run of ``experiment`` judged by its owner record, and
    those whose owner is gone marked FAILED (``abandoned=true``) unless ``dry_run``. One dict
    per run: ``run_id``, ``name``, ``owner``, ``state`` (unknown, alive, abandoned, marked) and
    the ``line`` to print."""
    found = []
    for run in running_runs(uri, experiment):
        owner = run.owner.describe() if run.owner is not None else None
        if run.owner is None:
            state, text = "unknown", "RUNNING with no owner record; cannot tell, left as it is"
        elif not run.abandoned:
            state, text = "alive", f"RUNNING, owner alive ({owner})"
        elif dry_run:
            state, text = "abandoned", f"abandoned, owner gone ({owner})"
        else:
            mark_abandoned(uri, run.run_id)
            state, text = "marked", (f"abandoned, owner gone ({owner}); marked FAILED (suite "
                                     f"run --resume {run.run_id} continues it from its "
                                     f"checkpoint)")
        found.append({"run_id": run.run_id, "name": run.name, "owner": owner, "state": state,
                      "line": f"run {run.run_id} ({run.name}): {text}"})
    return found


def abandoned_owner(tags: dict[str, str]) -> Owner | None:
    """The gone owner of a RUNNING run with ``tags``; None when the run has no owner record,
    its owner lives, or a live process resumes it (``RESUMER_TAG``, set by ``take_over``)."""
    owner = Owner.from_tags(tags)
    if owner is None or not owner.gone():
        return None
    resumer = Owner.from_token(tags.get(RESUMER_TAG, ""))
    if resumer is not None and not resumer.gone():
        return None
    return owner


def end_orphans(uri: str, experiment: str, keep: str | None = None) -> list[str]:
    """End the RUNNING runs of ``experiment`` whose owner is gone (killed, or unable to write
    the run's end: a full disk, a store gone), FAILED with ``abandoned=true`` as ``suite
    abandoned`` does, each said in one line; ``keep`` (a run this process resumes, judged by
    ``take_over``) is left alone. Returns the ids of the runs ended."""
    from mlflow.tracking import MlflowClient

    from suite.common.progress import console
    from suite.job import tracking

    tracking._quiet()
    with tracking.first_use(uri):
        client = MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
    if found is None:
        return []
    ended = []
    for run in client.search_runs([found.experiment_id], "attributes.status = 'RUNNING'",
                                  max_results=1000):
        run_id = run.info.run_id
        owner = abandoned_owner(run.data.tags)
        if owner is None or run_id == keep:
            continue
        mark_abandoned(uri, run_id)
        ended.append(run_id)
        console.print(f"run {run_id} ({run.info.run_name or 'unnamed'}) was left RUNNING by "
                      f"{owner.describe()}, which is gone: ended FAILED, abandoned (`suite run "
                      f"--resume {run_id}` continues it if it kept a checkpoint)",
                      markup=False, highlight=False, soft_wrap=True)
    return ended


def end_left_running(uri: str, run_id: str, status: str, tags: dict[str, str]) -> bool:
    """End run ``run_id`` with ``status`` and ``tags`` if it is still RUNNING (its owner being
    known to be gone: a sweep's killed worker); False when it had ended, or is not in the store
    at ``uri``."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from suite.job import tracking

    tracking._quiet()
    with tracking.first_use(uri):
        client = MlflowClient(uri)
        try:
            if client.get_run(run_id).info.status != "RUNNING":
                return False
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return False
            raise
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    client.set_terminated(run_id, status=status)
    return True
