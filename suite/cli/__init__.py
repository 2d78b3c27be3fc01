"""The ``suite`` command line: one Typer app, one module per command (or two related ones).

Each command parses its options and calls the function of the layer below that does the work;
``suite.cli.common`` turns errors into exit codes in one place. Heavy packages (torch,
open_clip, mlflow, optuna) are imported inside the commands, so ``--help`` answers at once.
"""

from __future__ import annotations

import typer

from suite.cli import bench, data, examine, listing, report, run, sweep
from suite.cli.common import SuiteGroup

app = typer.Typer(
    cls=SuiteGroup, add_completion=False, no_args_is_help=True, rich_markup_mode=None,
    pretty_exceptions_enable=False,
    help="Benchmark and ablation suite for efficient text-video retrieval: TempMe and its "
         "baselines on open_clip backbones, under one protocol. Without --dataset, commands "
         "use the embedded default (generated videos, a tiny CLIP).",
    epilog="Docs: README.md and docs/ (usage, datasets, methods, protocol, cost, plans and "
           "reports, architecture).")

COMMANDS = (
    ("run", run.run, run.SUMMARY, run.EXAMPLES),
    ("sweep", sweep.sweep, sweep.SUMMARY, sweep.EXAMPLES),
    ("bench", bench.bench, bench.SUMMARY, bench.EXAMPLES),
    ("report", report.report, report.REPORT_SUMMARY, report.REPORT_EXAMPLES),
    ("abandoned", report.abandoned, report.ABANDONED_SUMMARY, report.ABANDONED_EXAMPLES),
    ("profile", examine.profile, examine.PROFILE_SUMMARY, examine.PROFILE_EXAMPLES),
    ("list", listing.list_, listing.SUMMARY, listing.EXAMPLES),
    ("prepare", data.prepare, data.SUMMARY, data.EXAMPLES),
    ("merges", examine.merges, examine.MERGES_SUMMARY, examine.MERGES_EXAMPLES),
)
for name, function, summary, examples in COMMANDS:
    app.command(name, short_help=summary, epilog=examples)(function)


def main() -> None:
    app(prog_name="suite")
