"""``suite report`` (tables and plots from finished runs) and ``suite abandoned`` (runs whose
process is gone)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from suite.cli.common import JsonOut, Sets, TrackingUri, echo_json, guarded
from suite.errors import UserError

REPORT_SUMMARY = "Compare finished runs in a table: one row per method and setting, over seeds."
REPORT_EXAMPLES = """Examples:

\b
  suite report                                   # the tvr-suite experiment, Markdown
  suite report --plan synthetic-all --out report # a plan's table, plot and files
  suite report --plan tempme-ablation-schedule --dataset synthetic --format latex
  suite report --format html --out report        # one page: table, plots, what and when
  suite report --pareto tempme-synthetic --out report  # a sweep's Pareto front and its plot
"""
ABANDONED_SUMMARY = "End RUNNING runs whose process is gone: marked FAILED, resumable."
ABANDONED_EXAMPLES = """Examples:

\b
  suite abandoned --dry-run
  suite abandoned --experiment tvr-suite
"""
FORMATS = ("md", "latex", "csv", "html")


@guarded
def report(
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "tvr-suite",
    format_: Annotated[str, typer.Option(
        "--format", help="md, latex, csv or html.")] = "md",
    out: Annotated[Path | None, typer.Option(
        help="Write report.<ext> (or <plan>.<ext>) into this folder, with R-Sum vs GFLOPs "
             "plots (PNG) beside it; html is one page with its plots inside (default: print "
             "the report).")] = None,
    tracking_uri: TrackingUri = None,
    plan: Annotated[str | None, typer.Option(
        help="A benchmark plan's table instead (its rows in order, deltas against its "
             "baseline, the published figures beside ours); --experiment is the plan's.")
    ] = None,
    dataset: Annotated[str | None, typer.Option(
        help="With --plan: the runs of `suite bench --dataset D`.")] = None,
    set_: Sets = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print the table's rows as JSON (means and stds as numbers).")] = False,
    pareto: Annotated[str | None, typer.Option(
        help="A multi-objective sweep's Pareto front instead: a table (md, csv, latex) and, "
             "with --out, a plot of R-Sum vs GFLOPs (PNG, SVG) with the other runs and the "
             "paper's points.")] = None,
    storage: Annotated[str | None, typer.Option(
        help="With --pareto: the study's Optuna storage (default: optuna.journal).")] = None,
) -> None:
    """Compare finished runs in a table: one row per method and setting, over seeds.

    Cells are mean ± std over seeds; with --plan the rows are the plan's, in its order (--set
    and --dataset as given to `suite bench`).
    """
    from suite.job.tracking import tracking_uri as resolve_uri

    if format_ not in FORMATS:
        raise UserError(f"unknown --format {format_!r}; valid: {', '.join(FORMATS)}")
    if plan is None and (dataset is not None or set_):
        raise UserError("--dataset and --set go with --plan")
    if out is not None:
        from suite.common.preflight import writable_folder

        writable_folder(out, "--out")
    uri = resolve_uri(tracking_uri)
    if pareto is not None:
        from reports.pareto import pareto_report

        made = pareto_report(pareto, storage, uri)
    elif plan is not None:
        from reports.plan import plan_report
        from suite.job.config import parse_sets

        made = plan_report(plan, dataset, parse_sets(set_ or []), uri)
    else:
        from reports.tables import comparison_report

        made = comparison_report(experiment, uri)
    if json_out:
        typer.echo(made.table.to_json(orient="records", indent=2))
    elif out is None:
        typer.echo(made.render(format_), nl=False)
    else:
        for path in made.write(format_, out):
            typer.echo(str(path))


@guarded
def abandoned(
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "tvr-suite",
    tracking_uri: TrackingUri = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List only; mark nothing.")] = False,
    json_out: JsonOut = False,
) -> None:
    """End RUNNING runs whose process is gone: marked FAILED, resumable.

    A run whose owner (process, host) is gone is marked FAILED with the tag abandoned=true and
    keeps its checkpoint for `suite run --resume`; runs with a live owner are left alone.
    """
    from suite.job.ownership import end_abandoned
    from suite.job.tracking import tracking_uri as resolve_uri

    found = end_abandoned(resolve_uri(tracking_uri), experiment, dry_run)
    if json_out:
        echo_json([{k: v for k, v in f.items() if k != "line"} for f in found])
        return
    if not found:
        typer.echo(f"no RUNNING runs in experiment {experiment}")
    for item in found:
        typer.echo(item["line"])
