"""MLflow tracking: where runs go, and a run that ends FAILED on errors and KILLED on Ctrl-C.

The default store is a SQLite database in the working directory (``mlflow.db``), unless
``MLFLOW_TRACKING_URI`` or ``--tracking-uri`` says otherwise.

Several processes may share a store (``suite run`` twice, sweep workers). The first use of a
local store creates its tables (MLflow's migrations, which are not safe to run twice at once),
so it happens under a file lock beside the database (``mlflow.db.lock``); creating an
experiment is retried when another process created it first (all a server or remote database
gets: no lock spans machines). Every experiment the suite opens is tagged a model-training
experiment (``EXPERIMENT_KIND``), which MLflow 3's UI reads to open it on its runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from suite.common.locks import held, sqlite_lock_path
from suite.errors import DiskFull, MachineFault, SuiteError, UserError

DEFAULT_URI = "sqlite:///mlflow.db"
# MLflow 3 sorts experiments into GenAI apps and model training by this tag; the suite trains.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def tracking_uri(explicit: str | None = None) -> str:
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _writes() -> bool:
    """Under torchrun the main process (rank 0) alone writes to MLflow."""
    from suite.job.distributed import is_main_process

    return is_main_process()


def _quiet() -> None:
    """No migration chatter, and no tqdm bars of MLflow's artifact downloads in the suite's
    output (``MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR=true`` brings them back)."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    for name in ("alembic", "mlflow", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # MLflow logs each failed database write with its traceback, then raises it: the error
    # reaches the CLI, which prints it once, in one line.
    logging.getLogger("mlflow.store.db.utils").setLevel(logging.CRITICAL)


class EndRun(Exception):
    """Raised inside a run to end it early on purpose (a pruned sweep trial): the MLflow run
    gets ``tags`` and ends with ``status`` (KILLED: stopped before its end) instead of
    FAILED."""

    def __init__(self, message: str, tags: dict[str, str], status: str = "KILLED") -> None:
        super().__init__(message)
        self.tags, self.status = tags, status


@contextmanager
def mlflow_run(uri: str, experiment: str, run_name: str, tags: dict[str, str],
               run_id: str | None = None) -> Iterator[Any]:
    """Start an MLflow run (or reopen ``run_id``, to resume it); it ends FINISHED, FAILED on an
    exception, KILLED on Ctrl-C, as an ``EndRun`` says when one is raised.

    When the run cannot be ended on an exception (the store failed too: a full disk, a store
    gone), the exception raised is still the first one, marked (``left_running``): the run
    stays RUNNING, and the next command that opens the store ends it, its owner being gone
    (suite.job.ownership)."""
    import mlflow

    _quiet()
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_id=open_experiment(uri, experiment))
    if run_id is None:
        run = mlflow.start_run(run_name=run_name, tags=_texts(tags))
    else:
        run = mlflow.start_run(run_id=run_id, tags=_texts(tags))
    try:
        yield run
    except EndRun as stop:
        _end_or_mark(stop, run.info.run_id, stop.status, stop.tags)
        raise
    except KeyboardInterrupt as stop:
        _end_or_mark(stop, run.info.run_id, "KILLED")
        raise
    except BaseException as error:
        _end_or_mark(error, run.info.run_id, "FAILED")
        raise
    else:
        try:
            mlflow.end_run(status="FINISHED")
        except Exception as failure:  # the store failed at the last write: the run stays
            setattr(failure, LEFT_RUNNING, run.info.run_id)
            raise


LEFT_RUNNING = "suite_left_running"  # attribute of an exception whose run could not be ended


def _end_or_mark(error: BaseException, run_id: str, status: str,
                 tags: dict[str, str] | None = None) -> None:
    """End the active run with ``status`` (and ``tags``) while ``error`` propagates; when the
    store fails meanwhile, leave the run RUNNING and mark ``error`` (``left_running``) with a
    note, so that the first error is the one reported, once."""
    import mlflow

    try:
        if tags:
            mlflow.set_tags(tags)
    except Exception:  # noqa: BLE001 - the store failed as well; its end matters more
        pass
    try:  # MLflow forgets the active run before it writes its end: no run stays active here
        mlflow.end_run(status=status)
    except Exception as failure:  # noqa: BLE001 - the store failed as well: the run stays
        from suite.common.faults import cause

        setattr(error, LEFT_RUNNING, run_id)
        error.add_note(f"MLflow run {run_id} could not be ended {status} ({cause(failure)}); "
                       f"it stays RUNNING until a command that opens the store ends it")


def left_running(error: BaseException) -> str | None:
    """The id of the run ``error`` left RUNNING (its end could not be written), else None."""
    return getattr(error, LEFT_RUNNING, None)


def machine_fault(error: BaseException, uri: str, run_id: str | None, resumable: bool
                  ) -> MachineFault | None:
    """``error`` as the one line (exit 1) a run ends in when the machine failed under it: a
    full disk anywhere, or the store failing once the run is open (``run_id``); None for
    anything else. The line names what failed and what to do next: ``suite run --resume``
    when the run keeps a checkpoint (``resumable``), else run it again; and says so when the
    run could not be ended (``left_running``)."""
    from suite.common import faults

    if isinstance(error, SuiteError | EndRun):  # raised on purpose (a pruned trial is also
        return None  # an Optuna error): its message says it already
    store = faults.is_store_error(error)
    then = f"`suite run --resume {run_id}`" if run_id and resumable else "run it again"
    if left_running(error):
        then += " (its end could not be written: the next command that opens the store ends it)"
    if faults.is_disk_full(error):
        where = faults.written_path(error) or (store_file(uri) if store else "a file")
        return DiskFull(f"disk full writing {where}: free space and {then}")
    if store and run_id is not None:
        return MachineFault(f"tracking store {uri} failed mid-run ({faults.cause(error)}): "
                            f"check it and {then}")
    return None


def store_file(uri: str) -> str:
    """The database file of a SQLite store; any other store as its URI."""
    return uri.removeprefix("sqlite:///") if uri.startswith("sqlite:///") else uri


def run_status(uri: str, run_id: str) -> str | None:
    """FINISHED, FAILED, KILLED or RUNNING; None when the store has no such run."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    _quiet()
    try:
        with first_use(uri):
            return MlflowClient(uri).get_run(run_id).info.status
    except MlflowException:
        return None


def experiment_of_run(uri: str, run_id: str) -> str:
    """The name of the experiment that holds run ``run_id`` of the store at ``uri``."""
    store = client(uri)
    return str(store.get_experiment(store.get_run(run_id).info.experiment_id).name)


def store_lock_path(uri: str) -> Path | None:
    """The lock file serialising the first use of a local store: beside a SQLite database or
    a file store's folder; None for servers and remote databases."""
    parsed = urlparse(uri)
    if parsed.scheme == "sqlite":
        return sqlite_lock_path(uri)
    if parsed.scheme == "file" or (parsed.scheme == "" and uri):
        folder = Path(parsed.path if parsed.scheme else uri)
        return folder.parent / (folder.name + ".lock")
    return None


def first_use(uri: str) -> AbstractContextManager[Any]:
    """Hold the store's lock (see store_lock_path) while the caller touches the store: the
    process that comes first creates the tables, the others wait and find them made."""
    path = store_lock_path(uri)
    return nullcontext() if path is None else held(path, f"MLflow store {uri}")


def client(uri: str) -> Any:
    """An ``MlflowClient`` of the store at ``uri`` (its tables created on first use)."""
    from mlflow.tracking import MlflowClient

    _quiet()
    with first_use(uri):
        return MlflowClient(uri)


def open_experiment(uri: str, name: str) -> str:
    """The id of experiment ``name``, created if missing, tagged a training experiment
    (``EXPERIMENT_KIND``, unless it already has a kind); safe when several processes (or
    machines) create it at once: whoever loses the race reads the winner's."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    _quiet()
    with first_use(uri):
        client = MlflowClient(uri)  # opening the store migrates a new database
        for _ in range(5):
            found = client.get_experiment_by_name(name)
            if found is not None:
                if EXPERIMENT_KIND[0] not in found.tags:  # made before the tag, or elsewhere
                    client.set_experiment_tag(found.experiment_id, *EXPERIMENT_KIND)
                return str(found.experiment_id)
            try:
                return str(client.create_experiment(name, artifact_location=_artifact_root(uri),
                                                    tags=dict([EXPERIMENT_KIND])))
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                    raise
    raise UserError(f"experiment {name!r} in {uri} keeps vanishing after creation")


def _artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store sit beside the database file, not in the working directory."""
    if uri.startswith("sqlite:///"):
        db = Path(uri.removeprefix("sqlite:///"))
        return (db.resolve().parent / "mlartifacts").as_uri()
    return None


def log_params(params: dict[str, Any]) -> None:
    if not _writes():
        return
    import mlflow

    mlflow.log_params({k: v[:6000] for k, v in _texts(params).items()})


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    if not _writes():
        return
    import mlflow

    mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)


def log_artifact(path: Path, folder: str | None = None) -> None:
    if not _writes():
        return
    import mlflow

    from suite.common.faults import writing

    active = mlflow.active_run()  # where the copy goes, named if the disk fills up
    root = active.info.artifact_uri.removeprefix("file://") if active else ""
    target = "/".join(p for p in (root, folder, path.name) if p)
    with writing(target):
        mlflow.log_artifact(str(path), artifact_path=folder)


def set_tags(tags: dict[str, Any]) -> None:
    if not _writes():
        return
    import mlflow

    mlflow.set_tags(_texts(tags))


def _texts(values: dict[str, Any]) -> dict[str, str]:
    """Params and tags as MLflow stores them: text, unset (None) values left out rather than
    written as the string ``None``."""
    return {k: str(v) for k, v in values.items() if v is not None}
