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
  suite sweep --method tempme --trials 20 --objective r_sum --objective gflops \
      --budget "gflops<=0.08"
  suite sweep --method lora --trials 16 --workers 4 --launcher slurm --partition gpu \
      --storage postgresql://host/db
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
    objective: Annotated[list[str] | None, typer.Option(
        help="NAME[:max|min], repeatable: r_sum (val/t2v_rsum, max; the default), r1, r5, "
             "r10, gflops (cost/video_gmacs, min), text_gflops, params, videos_per_second, "
             "seconds_per_step, or any logged metric with a direction. Several: a "
             "multi-objective study and its Pareto front.")] = None,
    sampler: Annotated[str | None, typer.Option(
        help="Several objectives: nsga2 (default) or tpe (multi-objective TPE); one "
             "objective: TPE.")] = None,
    budget: Annotated[str | None, typer.Option(
        help="gflops<=X (or text_gflops<=X): each trial's multiply-adds are counted before "
             "training; a trial over the budget fails without training.")] = None,
    experiment: Experiment = None,
    set_: Sets = None,
    tracking_uri: TrackingUri = None,
    json_out: JsonOut = False,
    workers: Annotated[int, typer.Option(
        min=1, help="Workers sharing the study until it has --trials more trials: processes "
                    "here, or SLURM jobs with --launcher slurm (a database --storage for "
                    "jobs on several machines).")] = 1,
    launcher: Annotated[str, typer.Option(
        help="Where --workers run: local or slurm (through submitit).")] = "local",
    partition: Annotated[str | None, typer.Option(
        help="SLURM partition of the worker jobs (default: the cluster's).")] = None,
    time_limit: Annotated[int, typer.Option(
        "--time", min=1, help="SLURM time limit per worker job, minutes.")] = 1440,
    gpus_per_job: Annotated[int, typer.Option(
        min=0, help="GPUs per SLURM worker job.")] = 1,
    cpus_per_job: Annotated[int, typer.Option(min=1, help="CPUs per SLURM worker job.")] = 8,
    submitit_cluster: Annotated[str, typer.Option(
        help="submitit executor: slurm, or local (jobs as local processes; for testing).")
    ] = "slurm",
    goal: Annotated[int | None, typer.Option(
        hidden=True, help="(a worker of --workers) run until the study counts this many "
                          "trials.")] = None,
) -> None:
    """Search a method's knobs and learning rate with Optuna, scored on validation R-Sum.

    Each trial is a logged run scored by validation text-to-video R-Sum (never test); --set
    values are the base of every trial.
    """
    from suite.job import config as cfg
    from suite.job.distributed import from_environment
    from suite.orchestrate.sweep import DEFAULT_OBJECTIVES, Budget, Objective, run_sweep

    if method is None or trials is None:
        raise UserError("--method and --trials are required; see `suite list methods`")
    if from_environment().enabled:
        raise UserError("suite sweep runs as one process; start it without torchrun")
    if launcher not in ("local", "slurm"):
        raise UserError(f"unknown --launcher {launcher!r}; valid: local, slurm")
    overrides: dict[str, Any] = {} if experiment is None else {"experiment": experiment}
    overrides.update(cfg.parse_sets(set_ or []))
    objectives = tuple(map(Objective.parse, objective)) if objective else DEFAULT_OBJECTIVES
    limit = None if budget is None else Budget.parse(budget)
    study_options = [*(a for o in objective or [] for a in ("--objective", o)),
                     *(["--sampler", sampler] if sampler else []),
                     *(["--budget", budget] if budget else [])]
    stop_on_sigterm()
    if workers > 1 or launcher == "slurm":
        from suite.orchestrate.bench import slurm_settings_of
        from suite.orchestrate.sweep import run_workers

        slurm = slurm_settings_of({"partition": partition, "time": time_limit,
                                   "gpus_per_job": gpus_per_job, "cpus_per_job": cpus_per_job,
                                   "cluster": submitit_cluster})
        summary = run_workers(method, dataset, trials, overrides, set_ or [], workers,
                              launcher, slurm, storage, study, seed, tracking_uri, pruner,
                              objectives, sampler, limit, study_options)
    else:
        summary = run_sweep(method, dataset, trials, overrides, storage, study, seed,
                            tracking_uri, pruner, goal, objectives, sampler, limit)
    if summary.complete_now + summary.pruned_now == 0:
        typer.echo(f"error: all {trials} trials failed (see above); study {summary.study} "
                   f"in {summary.storage}", err=True)
        raise typer.Exit(1)
    if json_out:
        echo_json(summary.to_dict())
    else:
        for line in summary.lines():
            typer.echo(line)
