"""The FINISHED runs of a plan in MLflow, and where its runs are when none match: in the
experiment of another ``--dataset``, or made with other ``--set`` settings than those given.

A run counts for a row when it is FINISHED, tagged with the plan and has one of the row's
digests; runs with another digest were made under other settings (another ``--set``, or an
older version of the plan) and are named, not shown.
"""

from __future__ import annotations

import json
import logging
from collections import Counter

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from reports.plan_spec import PlanSpec
from reports.runs import _check_store, _tracking_uri, tidy
from suite.errors import ReportError


def load_plan_runs(spec: PlanSpec, uri: str) -> pd.DataFrame:
    """FINISHED runs of the plan (tidy, as reports.runs) with their ``config_digest``; none is
    an error that names the other ``--dataset`` options under which the plan has runs."""
    _check_store(uri)
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(spec.experiment)
    raw = _finished(uri, found.experiment_id, spec.name) if found is not None else None
    if raw is None or raw.empty:
        what = (f"no experiment {spec.experiment!r}" if found is None else
                f"no FINISHED runs in experiment {spec.experiment!r}")
        others = elsewhere(client, uri, spec)
        hint = (f"; it has FINISHED runs elsewhere, {'; '.join(others)}" if others else
                f"; run `suite bench {' '.join([spec.name, spec.moved]).strip()}` first")
        raise ReportError(f"plan {spec.name} has {what}{hint}")
    digests = dict(zip(raw["run_id"], raw["tags.config_digest"], strict=True))
    runs = tidy(raw)
    runs["config_digest"] = runs["run_id"].map(digests)
    return runs


def _finished(uri: str, experiment_id: str, plan: str) -> pd.DataFrame:
    with _tracking_uri(uri):
        raw = mlflow.search_runs(experiment_ids=[experiment_id], output_format="pandas",
                                 filter_string=f"attributes.status = 'FINISHED' and "
                                               f"tags.plan = '{plan}'")
    assert isinstance(raw, pd.DataFrame)
    return raw


def elsewhere(client: MlflowClient, uri: str, spec: PlanSpec) -> list[str]:
    """``n in experiment E: `suite report --plan P --dataset D` `` for every other experiment of
    the plan (its own, and one per ``--dataset``) that holds FINISHED runs of it."""
    base = spec.base_experiment or spec.experiment
    found = []
    for experiment in client.search_experiments(filter_string=f"name LIKE '{base}%'"):
        name = experiment.name
        if name == spec.experiment or not (name == base or name.startswith(f"{base}-")):
            continue
        count = len(_finished(uri, experiment.experiment_id, spec.name))
        if count:
            dataset = None if name == base else name.removeprefix(f"{base}-")
            found.append(f"{count} in experiment {name!r}: `{spec.command(dataset=dataset)}`")
    return found


def other_settings(spec: PlanSpec, runs: pd.DataFrame) -> list[tuple[str, int]]:
    """(how to report them, run count) of the plan's runs that match no row, most runs first:
    the ``suite report`` command whose ``--set`` options turn the nearest row's settings into
    the run's, or, where no ``--set`` can (a setting of the plan itself changed), what differs."""
    known = {d for row in spec.rows for d in row.digests}
    others = runs[~runs["config_digest"].isin(known)] if "config_digest" in runs else runs[:0]
    counts: Counter[str] = Counter()
    for params in others.get("params", pd.Series(dtype=object)):
        logged = json.loads(params)
        nearest = min((_difference(row.settings, logged) for row in spec.rows), key=len)
        counts[_how(spec, nearest)] += 1
    return counts.most_common()


def _difference(expected: dict[str, str], logged: dict[str, str]) -> dict[str, str | None]:
    """Setting -> the run's value (None: the run did not set it) where the two differ."""
    return {key: logged.get(key) for key in sorted(set(expected) | set(logged))
            if expected.get(key) != logged.get(key)}


def _how(spec: PlanSpec, difference: dict[str, str | None]) -> str:
    overrides = dict(spec.overrides)
    for key, value in difference.items():
        if value is not None:
            overrides[key] = value
        elif key in overrides:
            del overrides[key]
        else:
            changed = ", ".join(f"{k}={v}" for k, v in difference.items())
            return f"an older version of the plan ({changed})"
    return f"`{spec.command(overrides)}`"


def unmatched_error(spec: PlanSpec, settings: list[tuple[str, int]]) -> ReportError:
    """The error of a plan report whose rows match none of the plan's runs."""
    total = sum(count for _, count in settings)
    listed = "; ".join(f"{how} ({count} run{'s' * (count > 1)})" for how, count in settings[:3])
    given = f" with {spec.moved}" if spec.moved else ""
    return ReportError(f"plan {spec.name}{given}: none of its {total} FINISHED runs in "
                       f"experiment {spec.experiment!r} has the settings of a row; they were "
                       f"made with other --set options (as `suite bench` got them): {listed}")
