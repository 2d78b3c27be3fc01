"""The table of a benchmark plan: its rows in the plan's order, mean ± std over seeds, deltas
against the baseline row, the published figures beside ours, and its R-Sum vs GFLOPs plot.

Reads MLflow only. What the plan expects comes in as a :class:`PlanSpec` of plain values
(reports.plan_spec); a run counts for a row when it is FINISHED, tagged with the plan and has
one of the row's digests (the latest run of each digest, so a run done twice counts once).
Runs of other settings (another ``--set``, an older version of the plan) are left out and
named: in a note when some rows have runs, in the error when none has.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from reports import tables
from reports.about import About, about_runs
from reports.columns import COLUMNS, GFLOPS, RSUM, TEST_MARK, Shown, best_cells, number_of
from reports.document import Report
from reports.plan_runs import load_plan_runs, other_settings, unmatched_error
from reports.plan_spec import PlanRow, PlanSpec, plan_spec
from reports.uncertainty import load_ranks, significance, with_intervals

__all__ = ["PlanRow", "PlanSpec", "plan_report", "plan_table", "render_plan", "shown_plan"]

#: Columns of an ablation table (the paper's style: the knobs, then the figures that move).
ABLATION = ("R@1", "R@5", "R@10", "MdR", "MnR", RSUM, GFLOPS, "tokens", "trainable params")
#: Deltas against the baseline row: label -> column.
DELTAS = {"Δ R@1": "R@1", "Δ R-Sum": RSUM}


def plan_report(name: str, dataset: str | None, overrides: dict[str, Any], uri: str) -> Report:
    """The report of plan ``name`` as ``suite bench NAME [--dataset D] [--set ...]`` ran it;
    a plan none of whose runs has the settings of its rows is an error naming theirs."""
    spec = plan_spec(name, dataset, overrides)
    runs = load_plan_runs(spec, uri)
    table = plan_table(spec, runs)
    others = other_settings(spec, runs)
    if not table["n"].any():
        raise unmatched_error(spec, others)
    shown_ids = {r for ids in table["runs"] for r in str(ids).split()}
    table = with_intervals(table, load_ranks(uri, sorted(shown_ids)), _baseline(spec, table))
    about = about_runs(f"plan {spec.name}", runs[runs["run_id"].isin(shown_ids)], uri)
    return Report(spec.name, table, shown_plan(spec, table, about, others), about,
                  _points(table))


def render_plan(spec: PlanSpec, table: pd.DataFrame, fmt: str) -> str:
    """The plan table as ``md``, ``latex``, ``html`` or ``csv`` (numbers, std and paper
    figures in their own columns), its facts read from the table."""
    about = about_runs(f"plan {spec.name}", table[table["n"] > 0])
    return Report(spec.name, table, shown_plan(spec, table, about), about,
                  _points(table)).render(fmt)


def plan_table(spec: PlanSpec, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per plan row, in the plan's order: ``row``, the knob columns, ``n``, per column
    of ``COLUMNS`` its mean and ``"<label> std"``, the deltas against the baseline,
    ``paper <label>`` for the reference figures given (NaN where not), and ``runs``, the run
    ids shown (dataset, backbone and preset: the runs', else the plan's)."""
    labels = [label for label, *_ in COLUMNS]
    records = []
    for row in spec.rows:
        mine = runs[runs["config_digest"].isin(row.digests)]
        latest = mine.sort_values("start_time").groupby("config_digest").tail(1)
        record: dict[str, object] = {"row": row.label, **{k: row.knobs.get(k, "-")
                                                          for k in spec.knobs},
                                     "n": len(latest),
                                     "dataset": _first(latest, "dataset", row.dataset),
                                     "backbone": _first(latest, "backbone", row.backbone),
                                     "preset": _first(latest, "preset", "-"),
                                     "selected_on": "test" if (latest.get("selected_on")
                                                               == "test").any() else "val",
                                     "source": row.source}
        for label, metric, _, _ in COLUMNS:
            values = latest[metric] if metric in latest else pd.Series(dtype=float)
            record[label] = values.mean() if len(values) else float("nan")
            record[f"{label} std"] = values.std() if len(values) > 1 else float("nan")
        for label in labels:
            record[f"paper {label}"] = row.reference.get(label, float("nan"))
        record["runs"] = " ".join(map(str, latest["run_id"])) if "run_id" in latest else ""
        records.append(record)
    table = pd.DataFrame(records)
    for label in labels:
        table[f"{label} std"] = tables.without_rounding_noise(table[f"{label} std"], table[label])
    base = _baseline(spec, table)
    if base is not None:
        for delta, label in DELTAS.items():
            table[delta] = table[label] - table.loc[base, label]
    return table


def _first(runs: pd.DataFrame, column: str, default: str) -> str:
    return str(runs[column].iloc[0]) if column in runs and len(runs) else default


def _baseline(spec: PlanSpec, table: pd.DataFrame) -> int | None:
    """The baseline row's position: the row of that label, else (a baseline with grid axes)
    its first point; None without a baseline (or none found)."""
    if spec.baseline is None:
        return None
    rows = table.index[table["row"] == spec.baseline]
    if not len(rows):
        rows = table.index[table["row"].str.startswith(f"{spec.baseline} [")]
    return int(rows[0]) if len(rows) else None


def shown_plan(spec: PlanSpec, table: pd.DataFrame, about: About | None = None,
               others: list[tuple[str, int]] | None = None) -> Shown:
    """Headers, formatted cells and notes of a plan table; the first note says what the rows
    compare, from the runs shown (``about``) rather than the plan's description alone."""
    columns = [c for c in COLUMNS if spec.kind != "ablation" or c[0] in ABLATION]
    shown = tables.shown_columns(table, columns)
    labels = [c[0] for c in shown]
    base = _baseline(spec, table) if spec.baseline is not None else None
    deltas = list(DELTAS) if spec.baseline is not None else []
    papers = [label for label, *_ in COLUMNS if table[f"paper {label}"].notna().any()]
    sources = [s for s in dict.fromkeys(table["source"]) if s]
    knobs = [k.removeprefix("method.") for k in spec.knobs]
    headers = ["row", *knobs, "n", *labels, *deltas,
               *(f"paper {p}" for p in papers)] + (["ref."] if sources else [])
    rows = []
    for i, record in table.iterrows():
        label = str(record["row"]) + (TEST_MARK if record["selected_on"] == "test" else "")
        cells = [label, *(str(record[k]) for k in spec.knobs), str(record["n"])]
        cells += [tables.cell(record, name, number, always_std)
                  for name, _, number, always_std in shown]
        for delta in deltas:
            value = record[delta]
            cells.append("baseline" if i == base else "-" if pd.isna(value) else
                         f"{value:+.1f}{significance(record, DELTAS[delta])}")
        for name in papers:
            value = record[f"paper {name}"]
            cells.append("-" if pd.isna(value) else number_of(name)(value))
        if sources:
            cells.append(f"[{sources.index(record['source']) + 1}]" if record["source"] else "")
        rows.append(cells)
    notes = [_what(spec, about or about_runs(f"plan {spec.name}", table)),
             *tables.figure_notes(table, labels)]
    notes[1] += " n counts the finished runs of the plan's current settings, one per seed."
    if deltas:
        notes.append(f"Δ: difference of the means from the baseline row ({spec.baseline}).")
    if papers:
        notes.append("paper: the published figure of the row, from the source in ref.")
    notes += [f"[{i}] {source}" for i, source in enumerate(sources, 1)]
    hidden = [f"{how} ({count} run{'s' * (count > 1)})" for how, count in (others or [])]
    if hidden:
        notes.append(f"Not shown: runs of the plan made with other settings; "
                     f"{'; '.join(hidden)}.")
    best = {(i, headers.index(label))
            for i, label in best_cells(table, labels, ["dataset", "backbone"])}
    return Shown(headers, rows, notes, headers.index("n"), best, base,
                 [str(r).split() for r in table["runs"]] if "runs" in table else [])


def _what(spec: PlanSpec, about: About) -> str:
    """The first note: the plan's description where its runs are on the plan's own setting;
    moved (``--dataset``, ``--set``), what they are on, the description quoted as the plan's."""
    on = "; ".join(f"{dataset} with {backbone}" for dataset, backbone in about.setups) or "-"
    if not spec.moved:
        return f"Plan {spec.name} ({spec.kind}): {spec.description}; here on {on}."
    left_out = "; its published figures are left out" if "--dataset" in spec.moved else ""
    return (f"Plan {spec.name} ({spec.kind}) run with {spec.moved}: its rows on {on}. The plan "
            f"is written for {spec.home or 'its own setting'} (“{spec.description}”){left_out}.")


def _points(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(label=table["row"].astype(str))
