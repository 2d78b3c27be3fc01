"""Finished runs of an MLflow experiment as a tidy pandas DataFrame."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from suite.errors import ReportError

#: Identity columns of the tidy frame; every other column is an MLflow metric by its own name.
ID_COLUMNS = ["method", "dataset", "backbone", "selected_on", "preset", "seed", "run_id",
              "start_time", "experiment_id"]
#: Tag of the trials of a ``suite sweep``: hyper-parameter search, not repeats over seeds.
SWEEP_TAG = "sweep"
#: Identity column -> MLflow tag, and the param that says the same for runs without the tag.
_TAGS = {"method": "method", "dataset": "dataset", "backbone": "backbone",
         "selected_on": "select_on", "preset": "preset"}


def not_setting() -> set[str]:
    """Params that do not change what a run computes (suite.job.config.NOT_COMPUTING) or are
    the seed: runs that differ only in these are repeats of one setting. Every other param is
    part of the run's setting. (Imported when asked: importing reports stays light.)"""
    from suite.job.config import NOT_COMPUTING

    return {"train.seed", *NOT_COMPUTING}


def load_runs(experiment: str, uri: str, sweeps: bool = False) -> pd.DataFrame:
    """FINISHED runs of ``experiment`` in the store at ``uri``, oldest first; the trials of
    sweeps (tag ``sweep``) only when ``sweeps`` is true.

    Columns: ``ID_COLUMNS``, ``params`` (the run's setting: its params outside
    ``not_setting()``, as sorted JSON), then one per metric (``test/t2v_R1``, ...).
    """
    _check_store(uri)
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    if found is None or found.lifecycle_stage != "active":
        names = sorted(e.name for e in client.search_experiments())
        raise ReportError(f"unknown experiment {experiment!r}; valid: "
                          f"{', '.join(names) or '(none)'}")
    with _tracking_uri(uri):
        raw = mlflow.search_runs(experiment_ids=[found.experiment_id],
                                 filter_string="attributes.status = 'FINISHED'",
                                 output_format="pandas")
    assert isinstance(raw, pd.DataFrame)
    if not sweeps and not raw.empty and f"tags.{SWEEP_TAG}" in raw:
        trial = raw[f"tags.{SWEEP_TAG}"].notna()
        if trial.all():
            raise ReportError(f"experiment {experiment!r} has only sweep trials "
                              f"({int(trial.sum())}), no FINISHED runs to compare")
        raw = raw[~trial]
    if raw.empty:
        raise ReportError(f"experiment {experiment!r} has no FINISHED runs")
    return tidy(raw)


def tidy(raw: pd.DataFrame) -> pd.DataFrame:
    """``mlflow.search_runs`` output -> identity columns and metric columns."""
    out = pd.DataFrame(index=raw.index)
    for column, param in _TAGS.items():
        tag = raw.get(f"tags.{column}", pd.Series(None, index=raw.index, dtype=object))
        fallback = raw.get(f"params.{param}", pd.Series(None, index=raw.index, dtype=object))
        out[column] = tag.fillna(fallback).fillna("-").astype(str)
    out["preset"] = out["preset"].replace({"None": "-", "": "-"})  # a run without a preset
    seed = raw.get("params.train.seed", pd.Series(None, index=raw.index, dtype=object))
    out["seed"] = pd.to_numeric(seed, errors="coerce").astype("Int64")
    out["run_id"] = raw["run_id"]
    out["start_time"] = raw["start_time"]
    out["experiment_id"] = raw["experiment_id"].astype(str)
    ignored = not_setting()
    params = [c for c in raw.columns
              if c.startswith("params.") and c.removeprefix("params.") not in ignored]
    out["params"] = [json.dumps({c.removeprefix("params."): row[c] for c in params
                                 if isinstance(row[c], str)}, sort_keys=True)
                     for _, row in raw.iterrows()]
    metrics = {c.removeprefix("metrics."): raw[c] for c in raw.columns
               if c.startswith("metrics.")}
    out = pd.concat([out, pd.DataFrame(metrics, index=raw.index)], axis=1)
    return out.sort_values(["start_time", "run_id"]).reset_index(drop=True)


def _check_store(uri: str) -> None:
    """A SQLite store that does not exist is an error, not a new empty database."""
    if uri.startswith("sqlite:///"):
        path = Path(uri.removeprefix("sqlite:///"))
        if not path.is_file():
            raise ReportError(f"no MLflow store at {path}; run `suite run` first or pass "
                              f"--tracking-uri")


@contextmanager
def _tracking_uri(uri: str) -> Iterator[None]:
    """``mlflow.search_runs`` reads the global tracking URI: set it, then put it back."""
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
