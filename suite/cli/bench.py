"""``suite bench PLAN``: every run of a benchmark plan, here or on SLURM."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from suite.cli.common import (
    CheckpointDir,
    DataRoot,
    Device,
    Sets,
    TrackingUri,
    guarded,
    stop_on_sigterm,
)

SUMMARY = "Run a benchmark plan: every row and seed one run, skipping what is already done."
EXAMPLES = """Examples:

\b
  suite bench synthetic-all --dry-run          # every run, its settings and estimated cost
  suite bench synthetic-all --jobs 2
  suite bench tempme-ablation-schedule --dataset synthetic --row "ClipMe at layer 6"
  suite bench tempme-msrvtt-b32 --launcher slurm --partition gpu --gpus-per-job 1
"""


@guarded
def bench(
    plan: Annotated[str, typer.Argument(
        help="A plan: its name (`suite list plans`) or the path of a plan file.")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List every run, its resolved settings and estimated cost; run "
        "nothing.")] = False,
    jobs: Annotated[int, typer.Option(
        min=1, help="Runs at a time: one per GPU (CUDA_VISIBLE_DEVICES), or CPU processes "
        "sharing the cores.")] = 1,
    threads: Annotated[int | None, typer.Option(
        min=1, help="CPU threads per run (default: cores // --jobs).")] = None,
    launcher: Annotated[str, typer.Option(help="local or slurm (through submitit).")] = "local",
    partition: Annotated[str | None, typer.Option(
        help="SLURM partition (default: the plan's [slurm] table, else the cluster's).")] = None,
    account: Annotated[str | None, typer.Option(
        help="SLURM account (default: the plan's, else yours).")] = None,
    qos: Annotated[str | None, typer.Option(
        help="SLURM quality of service (default: the plan's, else none).")] = None,
    gpus_per_job: Annotated[int | None, typer.Option(
        min=0, help="GPUs per SLURM job; more than 1 runs torchrun inside the job (default: "
                    "the plan's, else 1).")] = None,
    time_limit: Annotated[int | None, typer.Option(
        "--time", min=1, help="SLURM time limit per job, minutes (default: the plan's, else "
                              "1440).")] = None,
    cpus_per_job: Annotated[int | None, typer.Option(
        min=1, help="CPUs per SLURM job (default: the plan's, else 8).")] = None,
    mem_gb: Annotated[float | None, typer.Option(
        min=0, help="Memory per SLURM job, GB (default: the plan's, else the cluster's).")
    ] = None,
    constraint: Annotated[str | None, typer.Option(
        help="SLURM node constraint, e.g. a100 (default: the plan's, else none).")] = None,
    sbatch: Annotated[list[str] | None, typer.Option(
        "--sbatch", metavar="--KEY=VALUE", help="Extra #SBATCH line, repeatable, e.g. "
        "--sbatch=--mail-type=END (added to the plan's).")] = None,
    setup: Annotated[list[str] | None, typer.Option(
        "--setup", metavar="COMMAND", help="Shell command run in each job before the run, "
        "repeatable, e.g. 'module load cuda' (added to the plan's).")] = None,
    submitit_cluster: Annotated[str | None, typer.Option(
        help="submitit executor for --launcher slurm: slurm, or local (the jobs run on this "
             "machine through submitit's local executor; for testing) (default: slurm).")
    ] = None,
    dataset: Annotated[str | None, typer.Option(
        help="Run every row on this dataset card with its own defaults (backbone, training "
             "settings; the plan's dataset, backbone and preset dropped), e.g. synthetic.")
    ] = None,
    data_root: DataRoot = None,
    device: Device = None,
    set_: Sets = None,
    row: Annotated[list[str] | None, typer.Option(
        "--row", help="Only this row (its label), repeatable (default: every row).")] = None,
    no_timing: Annotated[bool, typer.Option(
        "--no-timing", help="Dry run: multiply-adds only, no timed training step.")] = False,
    tracking_uri: TrackingUri = None,
    checkpoint_dir: CheckpointDir = Path("checkpoints"),
    json_out: Annotated[bool, typer.Option("--json", help="Dry run as JSON.")] = False,
    max_runs: Annotated[int | None, typer.Option(
        min=1, help="Refuse a plan of more runs than this, counted before they are made "
                    "(default: the plan's max_runs, else 10000).")] = None,
) -> None:
    """Run a benchmark plan: every row and seed one run, skipping what is already done.

    Finished runs are skipped, interrupted ones resumed from their checkpoint, failed ones
    tried once more; the same command run again picks up where it stopped.
    """
    from suite.job import config as cfg
    from suite.job.tracking import tracking_uri as resolve_uri
    from suite.orchestrate import bench as orchestrate
    from suite.orchestrate.plans import expand, load_plan

    stop_on_sigterm()
    orchestrate.check_launcher(launcher, submitit_cluster or "slurm")
    loaded = load_plan(plan)
    overrides = {k: v for k, v in {"data_root": data_root, "device": device}.items()
                 if v is not None}
    overrides.update(cfg.parse_sets(set_ or []))
    runs = expand(loaded, overrides, dataset, check="config" if dry_run else "full",
                  max_runs=max_runs)
    runs = orchestrate.select_rows(loaded, runs, row or [])
    options = orchestrate.BenchOptions(
        uri=resolve_uri(tracking_uri), checkpoints=checkpoint_dir,
        workdir=orchestrate.default_workdir(loaded), jobs=jobs, threads=threads,
        launcher="slurm" if launcher == "slurm" else "local",
        slurm=orchestrate.slurm_settings(loaded, {
            "partition": partition, "account": account, "qos": qos,
            "gpus_per_job": gpus_per_job, "time": time_limit, "cpus_per_job": cpus_per_job,
            "mem_gb": mem_gb, "constraint": constraint, "cluster": submitit_cluster,
            "sbatch": (*loaded.slurm.sbatch, *(sbatch or [])),
            "setup": (*loaded.slurm.setup, *(setup or []))}))
    if dry_run:
        show_dry_run(loaded, runs, options, not no_timing, json_out)
        return
    try:
        outcomes = orchestrate.bench(loaded, runs, options)
    except orchestrate.Interrupted as stopped:
        for line in orchestrate.summary_lines(stopped.outcomes):
            typer.echo(line, err=True)
        raise
    for line in orchestrate.summary_lines(outcomes):
        typer.echo(line)
    if any(o.status in ("failed", "busy") for o in outcomes):
        raise typer.Exit(1)


def show_dry_run(plan: object, runs: list, options: Any, timing: bool,
                 json_out: bool) -> None:
    """Print what ``--dry-run`` found, with a status line while the costs are estimated."""
    from suite.common.progress import console
    from suite.orchestrate.estimate import dry_run, dry_run_json, dry_run_lines

    with console.status("estimating costs") as status:
        actions, estimates = dry_run(runs, options, timing, on_model=lambda text: status.update(
            f"estimating costs: {text}"))
    if json_out:
        typer.echo(dry_run_json(runs, actions, estimates))
        return
    for line in dry_run_lines(plan, runs, actions, estimates):
        typer.echo(line)
    if options.launcher == "slurm":
        todo = sum(a.kind in ("new", "resume") for a in actions)
        typer.echo(f"would submit {todo} SLURM job(s) ({options.slurm.cluster} executor), "
                   f"each with:")
        for line in options.slurm.describe():
            typer.echo(f"  {line}")
