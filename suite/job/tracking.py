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
from suite.errors import UserError

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
    exception, KILLED on Ctrl-C, as an ``EndRun`` says when one is raised."""
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
        mlflow.set_tags(stop.tags)
        mlflow.end_run(status=stop.status)
        raise
    except KeyboardInterrupt:
        mlflow.end_run(status="KILLED")
        raise
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


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
