"""``suite sweep``: an Optuna study whose trials are suite runs."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from suite.cli.common import (
    Experiment,
    JsonOut,
    Sets,
    TrackingUri,
    echo_json,
    guarded,
    stop_on_sigterm,
)
from suite.errors import UserError

SUMMARY = "Search a method's knobs and learning rate with Optuna, scored on validation R-Sum."
EXAMPLES = """Examples:

\b
  suite sweep --method lora --trials 10
  suite sweep --method tempme --trials 20 --pruner median --set train.epochs=2
  suite sweep --method tome --trials 8 --storage postgresql://host/db --study tome-msrvtt
"""


@guarded
def sweep(
    method: Annotated[str | None, typer.Option(
        help="Method name (`suite list methods`).")] = None,
    dataset: Annotated[str, typer.Option(help="Dataset card (`suite list datasets`).")
                       ] = "synthetic",
    trials: Annotated[int | None, typer.Option(
        min=1, help="Trials to add to the study (required).")] = None,
    storage: Annotated[str | None, typer.Option(
        help="Optuna storage: a journal file (default: optuna.journal here; workers on one "
             "machine) or a database URL (sqlite:///optuna.db, postgresql://...; workers on "
             "several machines).")] = None,
    study: Annotated[str | None, typer.Option(
        help="Study name (default: METHOD-DATASET); the same name resumes a sweep, and "
             "sweeps started at once share it.")] = None,
    seed: Annotated[int, typer.Option(
        help="Seed of the TPE sampler; trial N draws from (seed, N), so parallel workers "
             "draw different trials.")] = 0,
    pruner: Annotated[str, typer.Option(
        help="Stop poor trials early on their per-epoch validation R-Sum: none, median or "
             "hyperband.")] = "none",
    experiment: Experiment = None,
    set_: Sets = None,
    tracking_uri: TrackingUri = None,
    json_out: JsonOut = False,
) -> None:
    """Search a method's knobs and learning rate with Optuna, scored on validation R-Sum.

    Each trial is a logged run scored by validation text-to-video R-Sum (never test); --set
    values are the base of every trial.
    """
    from suite.job import config as cfg
    from suite.job.distributed import from_environment
    from suite.orchestrate.sweep import run_sweep

    if method is None or trials is None:
        raise UserError("--method and --trials are required; see `suite list methods`")
    if from_environment().enabled:
        raise UserError("suite sweep runs as one process; start it without torchrun")
    overrides: dict[str, Any] = {} if experiment is None else {"experiment": experiment}
    overrides.update(cfg.parse_sets(set_ or []))
    stop_on_sigterm()
    summary = run_sweep(method, dataset, trials, overrides, storage, study, seed,
                        tracking_uri, pruner)
    if summary.complete_now + summary.pruned_now == 0:
        typer.echo(f"error: all {trials} trials failed (see above); study {summary.study} "
                   f"in {summary.storage}", err=True)
        raise typer.Exit(1)
    if json_out:
        echo_json(summary.to_dict())
    else:
        for line in summary.lines():
            typer.echo(line)
