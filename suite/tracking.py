"""MLflow tracking: where runs go, and a run that ends FAILED on errors and KILLED on Ctrl-C.

The default store is a SQLite database in the working directory (``mlflow.db``), unless
``MLFLOW_TRACKING_URI`` or ``--tracking-uri`` says otherwise.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

DEFAULT_URI = "sqlite:///mlflow.db"


def tracking_uri(explicit: str | None = None) -> str:
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _writes() -> bool:
    """Under torchrun the main process (rank 0) alone writes to MLflow."""
    from suite.distributed import is_main_process

    return is_main_process()


def _quiet() -> None:
    for name in ("alembic", "mlflow", "urllib3"):
        logging.getLogger(name).setLevel(logging.WARNING)


@contextmanager
def mlflow_run(uri: str, experiment: str, run_name: str, tags: dict[str, str],
               run_id: str | None = None) -> Iterator[Any]:
    """Start an MLflow run (or reopen ``run_id``, to resume it); it ends FINISHED, FAILED on an
    exception, KILLED on Ctrl-C."""
    import mlflow

    _quiet()
    mlflow.set_tracking_uri(uri)
    if mlflow.get_experiment_by_name(experiment) is None:
        artifacts = _artifact_root(uri)
        mlflow.create_experiment(experiment, artifact_location=artifacts)
    mlflow.set_experiment(experiment)
    if run_id is None:
        run = mlflow.start_run(run_name=run_name, tags=tags)
    else:
        run = mlflow.start_run(run_id=run_id, tags=tags)
    try:
        yield run
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
        return MlflowClient(uri).get_run(run_id).info.status
    except MlflowException:
        return None


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

    mlflow.log_params({k: ("None" if v is None else str(v))[:6000] for k, v in params.items()})


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

    mlflow.set_tags({k: str(v) for k, v in tags.items()})
