"""Intervals and significance for a report table: each run's per-query ranks (the artifact
``ranks.npz``, suite.job.evaluation) read from MLflow, pooled over a row's seeds, and the
statistics of reports.stats as columns of the table; the cells' interval and "n.s." marks.

Runs without the artifact (logged before it existed) leave their row without an interval, shown
as before."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reports import stats
from reports.columns import Format

RANKS_ARTIFACT = "ranks.npz"  # suite.job.evaluation.RANKS_ARTIFACT (not imported: no torch here)
ALPHA = 0.05
NOT_SIGNIFICANT = " (n.s.)"
INTERVAL_NOTE = (f"[low, high]: {stats.LEVEL:.0%} interval of the figure, percentile bootstrap "
                 f"over the test queries ({stats.RESAMPLES:,} resamples; with n > 1 each "
                 f"query's hits and rank are first averaged over the seeds, so MdR is the "
                 f"median of the mean rank).")
SIGNIFICANCE_NOTE = (f"{NOT_SIGNIFICANT.strip()}: the difference from the baseline row is not "
                     f"significant at {ALPHA:.0%} (two-sided paired permutation test on the "
                     f"same test queries, {stats.RESAMPLES:,} resamples, per-query figures "
                     f"averaged over seeds); p-values in the CSV and JSON.")


@dataclass(frozen=True)
class QueryRanks:
    """One run's text-to-video ranks and their query ids, in the same order."""

    ids: np.ndarray
    ranks: np.ndarray


def load_ranks(uri: str, run_ids: Iterable[str]) -> dict[str, QueryRanks]:
    """The ranks of each run of ``run_ids`` that logged ``ranks.npz`` (others are left out)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    found = {}
    with tempfile.TemporaryDirectory() as tmp, _no_progress_bar():
        for run_id in dict.fromkeys(run_ids):
            if RANKS_ARTIFACT not in {f.path for f in client.list_artifacts(run_id)}:
                continue
            path = Path(client.download_artifacts(run_id, RANKS_ARTIFACT, tmp))
            with np.load(path) as saved:
                found[run_id] = QueryRanks(saved["t2v_ids"], saved["t2v"])
            path.unlink()
    return found


@contextmanager
def _no_progress_bar() -> Iterator[None]:
    """MLflow draws a progress bar on stderr for every download unless told not to."""
    name = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"
    previous = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


def pooled_row(run_ids: list[str], ranks: dict[str, QueryRanks]
               ) -> tuple[np.ndarray, np.ndarray] | None:
    """(query ids, sorted; pooled figures in that order, reports.stats.pool) of a row's runs;
    None when a run has no ranks or the runs ranked different queries."""
    if not run_ids or any(r not in ranks for r in run_ids):
        return None
    orders = [np.argsort(ranks[r].ids, kind="stable") for r in run_ids]
    ids = ranks[run_ids[0]].ids[orders[0]]
    if any(not np.array_equal(ranks[r].ids[o], ids) for r, o in zip(run_ids, orders, strict=True)):
        return None
    return ids, stats.pool(np.stack([ranks[r].ranks[o] for r, o in zip(run_ids, orders,
                                                                         strict=True)]))


def paired(row: tuple[np.ndarray, np.ndarray], base: tuple[np.ndarray, np.ndarray]
           ) -> tuple[np.ndarray, np.ndarray] | None:
    """The pooled figures of ``row`` and ``base`` on their common queries, in one order."""
    _, mine, theirs = np.intersect1d(row[0], base[0], assume_unique=True, return_indices=True)
    if not len(mine):
        return None
    return row[1][:, mine], base[1][:, theirs]


def with_intervals(table: pd.DataFrame, ranks: dict[str, QueryRanks],
                   base: int | None = None) -> pd.DataFrame:
    """``table`` (a row's run ids in ``runs``) with ``"<label> ci_low"`` and ``"<label>
    ci_high"`` for each label of reports.stats.LABELS and, given the baseline row's position,
    ``"<label> p (vs baseline)"``; NaN where a row has no ranks (the baseline's own p too).
    Unchanged when no row has ranks."""
    rows = [pooled_row(str(r).split(), ranks) for r in table.get("runs", [])]
    if not any(rows):
        return table
    columns: dict[str, list[float]] = {}
    for label in stats.LABELS:
        for suffix in ("ci_low", "ci_high", *(["p (vs baseline)"] if base is not None else [])):
            columns[f"{label} {suffix}"] = [np.nan] * len(table)
    for i, row in enumerate(rows):
        if row is None:
            continue
        for label, (low, high) in stats.bootstrap(row[1]).items():
            columns[f"{label} ci_low"][i], columns[f"{label} ci_high"][i] = low, high
        pair = paired(row, rows[base]) if base is not None and rows[base] and i != base else None
        if pair is not None:
            for label, p in stats.paired_test(*pair).items():
                columns[f"{label} p (vs baseline)"][i] = p
    return table.assign(**columns)


def interval(record: pd.Series, label: str, number: Format) -> str:
    """`` [low, high]`` of a cell, or nothing without an interval."""
    low = record.get(f"{label} ci_low", np.nan)
    if pd.isna(low):
        return ""
    return f" [{number(low)}, {number(record[f'{label} ci_high'])}]"


def significance(record: pd.Series, label: str) -> str:
    """`` (n.s.)`` after a Δ cell whose difference is not significant at 5%, else nothing."""
    p = record.get(f"{label} p (vs baseline)", np.nan)
    return NOT_SIGNIFICANT if not pd.isna(p) and p >= ALPHA else ""


def notes(table: pd.DataFrame) -> list[str]:
    """The notes that explain the interval and the mark, where the table has them."""
    found = [INTERVAL_NOTE] if any(c.endswith(" ci_low") for c in table) else []
    if any(c.endswith(" p (vs baseline)") for c in table):
        found.append(SIGNIFICANCE_NOTE)
    return found
