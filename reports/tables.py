"""The comparison table: one row per (dataset, backbone, method, setting, selected_on), over
seeds; its cells for reading, and the report that holds both."""

from __future__ import annotations

import math

import pandas as pd

from reports.about import about_runs
from reports.columns import (
    COLUMNS,
    COST_NOTE,
    GFLOPS_NOTE,
    KEYS,
    NO_PRESET,
    OPTIONAL,
    RETRIEVAL_NOTE,
    SKIPPED,
    TEST_MARK,
    TEST_NOTE,
    UNITS_NOTE,
    Format,
    Shown,
    best_cells,
    figure_cell,
)
from reports.document import Report
from reports.settings import setting_labels, with_defaults
from reports.uncertainty import interval, load_ranks, with_intervals
from reports.uncertainty import notes as uncertainty_notes


def comparison_report(experiment: str, uri: str) -> Report:
    """The comparison of the FINISHED runs of ``experiment`` (sweep trials left out)."""
    from reports.runs import load_runs

    runs = load_runs(experiment, uri)
    table = with_intervals(comparison_table(runs), load_ranks(uri, runs["run_id"]))
    return Report("report", table, shown_table(table),
                  about_runs(f"experiment {experiment}", runs, uri), _points(table))


def render(table: pd.DataFrame, fmt: str) -> str:
    """A comparison table as ``md``, ``latex``, ``csv`` (numbers, std in their own columns) or
    ``html`` (the page, its facts read from the table)."""
    about = about_runs("comparison", table)
    return Report("report", table, shown_table(table), about, _points(table)).render(fmt)


def comparison_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Aggregate tidy runs (``reports.runs.load_runs``): the keys, ``n``, then per column of
    ``COLUMNS`` its mean under the label and its std under ``"<label> std"`` (NaN when n = 1),
    and ``runs``, the MLflow run ids of the row.

    Only repeats of one setting are averaged: runs of a method that differ in any other setting
    than the seed (``params``) get rows of their own, told apart by a ``setting`` column
    (``train.lr=0.0001``: the settings that differ between those rows; a setting a run left at
    its default by that default's value, reports.settings).
    Rows are sorted by dataset, backbone, method, then validation-selected before test-selected.
    """
    frame = runs.copy()
    if "params" not in frame:
        frame["params"] = "{}"
    if "preset" not in frame:
        frame["preset"] = "-"
    if "run_id" not in frame:
        frame["run_id"] = ""
    for _, metric, _, _ in COLUMNS:
        if metric not in frame:
            frame[metric] = math.nan
    grouped = with_defaults(frame).groupby([*KEYS, "params"], sort=False)
    table = grouped.size().rename("n").to_frame()
    for label, metric, _, _ in COLUMNS:
        table[label] = grouped[metric].mean()
        table[f"{label} std"] = without_rounding_noise(grouped[metric].std(), table[label])
    table["runs"] = grouped["run_id"].agg(lambda ids: " ".join(map(str, ids)))
    table = table.reset_index()
    settings = setting_labels(table)
    table = table.drop(columns="params")
    if settings.str.len().any():
        table.insert(KEYS.index("method") + 1, "setting", settings)
    order = table["selected_on"].map({"val": 0, "test": 1}).fillna(2)
    sort = ["dataset", "backbone", "method", "_order", *(["setting"] if "setting" in table else [])]
    return (table.assign(_order=order).sort_values(sort, kind="stable")
            .drop(columns="_order").reset_index(drop=True))


def without_rounding_noise(std: pd.Series, mean: pd.Series) -> pd.Series:
    """The spread with float summation noise zeroed (identical multiply-add counts summed in
    another order differ by 1e-17), so that equal figures show no ± (NaN stays NaN)."""
    return std.mask(std <= 1e-9 * mean.abs(), 0.0)


def shown_columns(table: pd.DataFrame, columns: list[tuple] | None = None) -> list[tuple]:
    """The figure columns a table shows: the optional ones only where a row has a figure."""
    return [c for c in (columns or COLUMNS)
            if c[0] not in OPTIONAL or (table[c[0]].fillna(0) > 0).any()]


def cell(record: pd.Series, label: str, number: Format, always_std: bool) -> str:
    """A figure cell: ``mean ± std`` (``figure_cell``), then its ``[low, high]`` interval
    where the row has one (reports.uncertainty)."""
    return figure_cell(record, label, number, always_std) + interval(record, label, number)


def figure_notes(table: pd.DataFrame, labels: list[str]) -> list[str]:
    """The notes that explain the figure columns ``labels``: units, conventions, marks."""
    notes = [RETRIEVAL_NOTE, UNITS_NOTE, GFLOPS_NOTE]
    if {"videos/s", "train peak MiB"} & set(labels):
        notes.append(COST_NOTE)
    if SKIPPED in labels:
        notes.append(f"{SKIPPED}: videos left out by --on-bad-video skip; each of their "
                     f"captions counts as a miss in the figures.")
    if (table["selected_on"] == "test").any():
        notes.append(TEST_NOTE)
    return notes + uncertainty_notes(table)


def shown_table(table: pd.DataFrame) -> Shown:
    """Headers, formatted cells (``mean ± std``, ``-`` for a missing figure, † on methods
    selected on test), notes, and the best figure of each column per dataset and backbone."""
    setting = ["setting"] if "setting" in table else []
    if "preset" in table and not table["preset"].isin(NO_PRESET).all():
        setting.append("preset")
    shown = shown_columns(table)
    labels = [label for label, *_ in shown]
    headers = ["dataset", "backbone", "method", *setting, "n", *labels]
    rows = []
    for _, row in table.iterrows():
        method = row["method"] + (TEST_MARK if row["selected_on"] == "test" else "")
        cells = [row["dataset"], row["backbone"], method, *(str(row[c]) for c in setting),
                 str(row["n"])]
        cells += [cell(row, label, number, always_std)
                  for label, _, number, always_std in shown]
        rows.append(cells)
    best = {(i, headers.index(label))
            for i, label in best_cells(table, labels, ["dataset", "backbone"])}
    runs = [str(r).split() for r in table["runs"]] if "runs" in table else []
    return Shown(headers, rows, figure_notes(table, labels), headers.index("n"), best,
                 runs=runs)


def _points(table: pd.DataFrame) -> pd.DataFrame:
    """The plots' points: one per row, labelled by its method (and setting)."""
    label = table["method"].astype(str)
    if "setting" in table:
        label = label + table["setting"].map(lambda s: f" ({s})" if s else "")
    return table.assign(label=label)
