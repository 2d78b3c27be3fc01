"""The table of a benchmark plan: its rows in the plan's order, mean ± std over seeds, deltas
against the baseline row, the published figures beside ours, and its R-Sum vs GFLOPs plot.

Reads MLflow only. What the plan expects (rows, the config digest of every run, knob values,
reference figures) comes in as a :class:`PlanSpec` of plain values, made by the caller from the
plan file (suite.orchestrate.plans, :func:`plan_spec`); a run counts for a row when it is
FINISHED, tagged with the plan and has one of the row's digests (the latest run of each
digest, so a run done twice counts once). Runs of an older version of the plan (another
digest) are left out.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from reports import tables
from reports.runs import _check_store, _tracking_uri, tidy
from reports.tables import COLUMNS, FORMATS, GFLOPS, RSUM, TEST_MARK, TEST_NOTE
from suite.errors import ReportError

#: Columns of an ablation table (the paper's style: the knobs, then the figures that move).
ABLATION = ("R@1", "R@5", "R@10", "MdR", "MnR", RSUM, GFLOPS, "tokens", "trainable params")
#: Deltas against the baseline row: label -> column.
DELTAS = {"Δ R@1": "R@1", "Δ R-Sum": RSUM}


@dataclass(frozen=True)
class PlanRow:
    """One row as the plan defines it."""

    label: str
    digests: tuple[str, ...]  # one per seed
    dataset: str
    backbone: str
    knobs: dict[str, str] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)  # column label -> figure
    source: str = ""


@dataclass(frozen=True)
class PlanSpec:
    name: str
    description: str
    experiment: str
    kind: str  # "comparison" or "ablation"
    baseline: str | None
    knobs: tuple[str, ...]
    rows: tuple[PlanRow, ...]


def load_plan_runs(spec: PlanSpec, uri: str) -> pd.DataFrame:
    """FINISHED runs of the plan (tidy, as reports.runs) with their ``config_digest``."""
    _check_store(uri)
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    found = MlflowClient(uri).get_experiment_by_name(spec.experiment)
    if found is None:
        raise ReportError(f"plan {spec.name} has no runs yet (no experiment "
                          f"{spec.experiment!r}); run `suite bench {spec.name}` first")
    with _tracking_uri(uri):
        raw = mlflow.search_runs(experiment_ids=[found.experiment_id], output_format="pandas",
                                 filter_string=f"attributes.status = 'FINISHED' and "
                                               f"tags.plan = '{spec.name}'")
    assert isinstance(raw, pd.DataFrame)
    if raw.empty:
        raise ReportError(f"plan {spec.name} has no FINISHED runs in experiment "
                          f"{spec.experiment!r}; run `suite bench {spec.name}` first")
    digests = dict(zip(raw["run_id"], raw["tags.config_digest"], strict=True))
    runs = tidy(raw)
    runs["config_digest"] = runs["run_id"].map(digests)
    return runs


def _show(label: str, value: float) -> str:
    number = next(fmt for name, _, fmt, _ in COLUMNS if name == label)
    return number(value)


def plan_table(spec: PlanSpec, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per plan row, in the plan's order: ``row``, the knob columns, ``n``, per column
    of ``COLUMNS`` its mean and ``"<label> std"``, the deltas against the baseline, and
    ``paper <label>`` for the reference figures given (NaN where not)."""
    labels = [label for label, *_ in COLUMNS]
    records = []
    for row in spec.rows:
        mine = runs[runs["config_digest"].isin(row.digests)]
        latest = mine.sort_values("start_time").groupby("config_digest").tail(1)
        record: dict[str, object] = {"row": row.label, **{k: row.knobs.get(k, "-")
                                                          for k in spec.knobs},
                                     "n": len(latest), "dataset": row.dataset,
                                     "backbone": row.backbone,
                                     "selected_on": "test" if (latest.get("selected_on")
                                                               == "test").any() else "val",
                                     "source": row.source}
        for label, metric, _, _ in COLUMNS:
            values = latest[metric] if metric in latest else pd.Series(dtype=float)
            record[label] = values.mean() if len(values) else float("nan")
            record[f"{label} std"] = values.std() if len(values) > 1 else float("nan")
        for label in labels:
            record[f"paper {label}"] = row.reference.get(label, float("nan"))
        records.append(record)
    table = pd.DataFrame(records)
    for label in labels:
        table[f"{label} std"] = tables.without_rounding_noise(table[f"{label} std"], table[label])
    if spec.baseline is not None:
        base = table[table["row"] == spec.baseline]
        if base.empty:  # a baseline with grid axes: its first point
            base = table[table["row"].str.startswith(f"{spec.baseline} [")].head(1)
        for delta, label in DELTAS.items():
            reference = base[label].iloc[0] if not base.empty else float("nan")
            table[delta] = table[label] - reference
    return table


def display(spec: PlanSpec, table: pd.DataFrame) -> tuple[list[str], list[list[str]], list[str]]:
    """Headers, formatted cells and notes of a plan table."""
    shown = [c for c in COLUMNS if spec.kind != "ablation" or c[0] in ABLATION]
    shown = [c for c in shown
             if c[0] not in tables.OPTIONAL or (table[c[0]].fillna(0) > 0).any()]
    deltas = list(DELTAS) if spec.baseline is not None else []
    papers = [label for label, *_ in COLUMNS if table[f"paper {label}"].notna().any()]
    sources = [s for s in dict.fromkeys(table["source"]) if s]
    knobs = [k.removeprefix("method.") for k in spec.knobs]
    headers = ["row", *knobs, "n", *(c[0] for c in shown), *deltas,
               *(f"paper {p}" for p in papers)] + (["ref."] if sources else [])
    rows = []
    for _, record in table.iterrows():
        label = str(record["row"]) + (TEST_MARK if record["selected_on"] == "test" else "")
        cells = [label, *(str(record[k]) for k in spec.knobs), str(record["n"])]
        cells += [tables.figure_cell(record, name, number, always_std)
                  for name, _, number, always_std in shown]
        for delta in deltas:
            value = record[delta]
            is_base = record["row"] == spec.baseline
            cells.append("baseline" if is_base else "-" if pd.isna(value) else f"{value:+.1f}")
        for name in papers:
            value = record[f"paper {name}"]
            cells.append("-" if pd.isna(value) else _show(name, value))
        if sources:
            cells.append(f"[{sources.index(record['source']) + 1}]" if record["source"] else "")
        rows.append(cells)
    notes = [f"Plan {spec.name}: {spec.description}. Text-to-video retrieval on the test split; "
             f"mean ± std over seeds when n > 1; n counts the finished runs of the plan's "
             f"current settings.",
             tables.NOTES[1]]
    if deltas:
        notes.append(f"Δ: difference of the means from the baseline row ({spec.baseline}).")
    if papers:
        notes.append("paper: the published figure of the row, from the source in ref.")
    notes += [f"[{i}] {source}" for i, source in enumerate(sources, 1)]
    if (table["selected_on"] == "test").any():
        notes.append(TEST_NOTE)
    return headers, rows, notes


def render_plan(spec: PlanSpec, table: pd.DataFrame, fmt: str) -> str:
    """The plan table as ``md``, ``latex``, ``html`` (the project's renderers, reports.tables)
    or ``csv`` (numbers, std and paper figures in their own columns)."""
    if fmt not in FORMATS:
        raise ReportError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    if fmt == "csv":
        return table.to_csv(index=False)
    headers, rows, notes = display(spec, table)
    return {"md": tables.markdown, "latex": tables._latex, "html": tables._html}[fmt](
        headers, rows, notes)


def write_plan_report(spec: PlanSpec, table: pd.DataFrame, fmt: str, folder: Path) -> list[Path]:
    """``<plan>.<ext>`` and the R-Sum vs GFLOPs plot of the plan's rows in ``folder``."""
    from reports.plots import rsum_vs_gflops
    from suite.common.files import write_atomic

    text = render_plan(spec, table, fmt)
    if folder.exists() and not folder.is_dir():
        raise ReportError(f"--out {folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}.{FORMATS[fmt]}"
    write_atomic(path, text)
    points = table.assign(method=table["row"], setting="")
    return [path, *rsum_vs_gflops(points, folder)]


def plan_spec(name: str, dataset: str | None = None,
              overrides: dict[str, object] | None = None) -> PlanSpec:
    """What plan ``name`` expects, run by ``suite bench NAME [--dataset D] [--set ...]``: its
    rows, the digest of every run, the knob values and (on the plan's own dataset) the
    published figures."""
    from suite.orchestrate.plans import expand, experiment_of, knob_value, load_plan

    loaded = load_plan(name)
    runs = expand(loaded, dict(overrides or {}), dataset, check="none")
    groups: dict[str, list] = {}
    for run in runs:
        groups.setdefault(run.row, []).append(run)
    rows = []
    for label, group in groups.items():
        first = group[0]
        reference = loaded.row(first.base_row).reference
        on_paper = reference is not None and dataset is None
        rows.append(PlanRow(
            label, tuple(r.digest for r in group), first.config.dataset, first.config.backbone,
            {k: knob_value(first, k) for k in loaded.knobs},
            reference.figures() if on_paper and reference is not None else {},
            reference.source if on_paper and reference is not None else ""))
    return PlanSpec(loaded.name, loaded.description, experiment_of(loaded, dataset),
                    loaded.kind, loaded.baseline, tuple(loaded.knobs), tuple(rows))
