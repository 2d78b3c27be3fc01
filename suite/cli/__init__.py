"""The ``suite`` command line. Heavy packages are imported inside the commands so that
``suite --help`` answers at once. User errors end with exit code 2 and one line."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer

from suite.errors import UserError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Benchmark and ablation suite for efficient text-video retrieval.")


def user_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """One line and exit 2 for a UserError, the domain errors of the libraries and problems of
    the filesystem or a store (a read-only folder, a damaged database); exit 130 on Ctrl-C."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from methods.registry import DuplicateMethodError, UnknownMethodError
        from tempme.schedule import ScheduleError

        domain = (UserError, UnknownMethodError, DuplicateMethodError, ScheduleError)
        try:
            return command(*args, **kwargs)
        except domain as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except OSError as exc:
            typer.echo(f"error: {describe_os_error(exc)}", err=True)
            raise typer.Exit(2) from None
        except Exception as exc:
            store_problem = describe_store_error(exc)
            if store_problem is None:
                raise
            typer.echo(f"error: {store_problem}", err=True)
            raise typer.Exit(2) from None

    return wrapper


def describe_os_error(exc: OSError) -> str:
    """``[Errno 30] Read-only file system: 'x'`` -> ``cannot write x: read-only file system``."""
    where = exc.filename or ""
    reason = (exc.strerror or str(exc)).lower()
    return f"{where}: {reason}" if where else reason


def describe_store_error(exc: Exception) -> str | None:
    """One line for an MLflow or database failure (a damaged or locked SQLite file, a server
    that does not answer); None for anything else, which stays a traceback (a bug)."""
    names = {c.__module__.split(".")[0] for c in type(exc).__mro__}
    if not names & {"mlflow", "sqlalchemy", "sqlite3", "optuna"}:
        return None
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return f"tracking store: {first[:300]}"


def stop_on_sigterm() -> None:
    """Schedulers (SLURM, Kubernetes, torchrun) stop jobs with SIGTERM: treat it as Ctrl-C, so
    the MLflow run ends KILLED and keeps its checkpoint for ``--resume``."""
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


@app.command()
@user_errors
def run(
    method: Annotated[str | None, typer.Option(help="Method name (`suite list methods`).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset card name.")] = None,
    backbone: Annotated[str | None, typer.Option(help="open_clip model name.")] = None,
    pretrained: Annotated[str | None, typer.Option(
        help="open_clip tag, local checkpoint path, 'synthetic' (tiny CLIP) or 'none'.")] = None,
    trust_torchscript: Annotated[bool, typer.Option(
        "--trust-torchscript", help="Load a local TorchScript --pretrained file (OpenAI's .pt), "
        "which runs the code inside it.")] = False,
    epochs: Annotated[int | None, typer.Option(min=0)] = None,
    batch_size: Annotated[int | None, typer.Option(min=1)] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    frames: Annotated[int | None, typer.Option(min=1)] = None,
    data_root: Annotated[str | None, typer.Option(help="Folder of a real dataset.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    select_on: Annotated[str | None, typer.Option(
        help="val (default: select on validation), last (train on the whole split, keep the "
             "final epoch) or test (the papers' practice; tagged).")] = None,
    preset: Annotated[str | None, typer.Option(
        help="A paper's own practice for every protocol choice (`suite list presets`).")] = None,
    on_bad_video: Annotated[str | None, typer.Option(
        help="fail (default) or skip missing/undecodable videos.")] = None,
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment name.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="key=value, e.g. train.lr=1e-4, method.rank=4, data.num_train=500.")] = None,
    config: Annotated[Path | None, typer.Option(help="Replay a logged config.json.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    resume: Annotated[str | None, typer.Option(
        help="Continue an interrupted run (MLflow run id) from its last epoch.")] = None,
    checkpoint_dir: Annotated[Path, typer.Option(
        help="Where unfinished runs keep their epoch checkpoint.")] = Path("checkpoints"),
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
    tag: Annotated[list[str] | None, typer.Option(
        "--tag", help="key=value tag added to the MLflow run (suite bench tags its runs).")
    ] = None,
) -> None:
    """Fine-tune and evaluate one method on one dataset; log everything to MLflow."""
    from suite.job import config as cfg

    stop_on_sigterm()

    settings = (method, dataset, backbone, pretrained, epochs, batch_size, seed, frames,
                data_root, device, select_on, on_bad_video, experiment, set_, config, preset, tag)
    if resume is not None:
        if any(value is not None for value in settings):
            raise UserError("--resume takes no other settings: the run's config is in its "
                            "checkpoint (only --tracking-uri, --checkpoint-dir and --json)")
        from suite.job.engine import resume_run

        print_result(resume_run(resume, tracking_uri, True, checkpoint_dir), json_out)
        return
    if config is not None:
        resolved = cfg.load_file(config)
        if preset is not None:
            from suite.job.config import apply_preset

            resolved = apply_preset(resolved, preset)
    elif method is None:
        raise UserError("--method is required (or --config FILE); see `suite list methods`")
    else:
        resolved = cfg.base_for(method, dataset or "synthetic", preset)
    flags = {"method": method, "dataset": dataset, "backbone": backbone, "frames": frames,
             "data_root": data_root, "device": device, "select_on": select_on,
             "on_bad_video": on_bad_video,
             "experiment": experiment, "train.epochs": epochs, "train.batch_size": batch_size,
             "train.seed": seed}
    overrides: dict[str, Any] = {k: v for k, v in flags.items() if v is not None}
    if pretrained is not None:
        overrides["pretrained"] = None if pretrained.lower() == "none" else pretrained
    if trust_torchscript:
        overrides["trust_torchscript"] = True
    overrides.update(cfg.parse_sets(set_ or []))
    resolved = cfg.apply_overrides(resolved, overrides)

    from suite.job.engine import run as run_engine

    tags = {}
    for item in tag or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--tag expects key=value, got {item!r}")
        tags[key.strip()] = value.strip()
    print_result(run_engine(resolved, tracking_uri, show_progress=True, tags=tags,
                            checkpoints=checkpoint_dir), json_out)


def print_result(result: Any, json_out: bool) -> None:
    """A finished run's test figures: one line, or JSON with the run id (under torchrun, by
    the main process only)."""
    from suite.job.distributed import is_main_process

    if not is_main_process():
        return
    if json_out:
        typer.echo(json.dumps({"run_id": result.run_id, "test": result.test,
                               "best_epoch": result.best_epoch,
                               "skipped_videos": result.skipped}, indent=2, sort_keys=True))
    else:
        m = result.test
        typer.echo(f"run {result.run_id}: test t2v R@1 {m['t2v_R1']:.1f} R@5 {m['t2v_R5']:.1f} "
                   f"R@10 {m['t2v_R10']:.1f} MdR {m['t2v_MdR']:.1f} R-Sum {m['t2v_rsum']:.1f}")
        for split, count in result.skipped.items():
            typer.echo(f"  {split}: {count} video(s) skipped (--on-bad-video skip)"
                       + ("; each of their captions counts as a miss" if split == "test"
                          else ""))


@app.command()
@user_errors
def sweep(
    method: Annotated[str | None, typer.Option(help="Method name (`suite list methods`).")] = None,
    dataset: Annotated[str, typer.Option(help="Dataset card name.")] = "synthetic",
    trials: Annotated[int | None, typer.Option(min=1, help="Trials to add to the study.")] = None,
    storage: Annotated[str | None, typer.Option(
        help="Optuna storage: a journal file (default optuna.journal here; workers on one "
             "machine) or a database URL (sqlite:///optuna.db, postgresql://...; workers on "
             "several machines).")] = None,
    study: Annotated[str | None, typer.Option(
        help="Study name (default METHOD-DATASET); the same name resumes a sweep, and "
             "sweeps started at once share it.")] = None,
    seed: Annotated[int, typer.Option(
        help="Seed of the TPE sampler; trial N draws from (seed, N), so parallel workers "
             "draw different trials.")] = 0,
    pruner: Annotated[str, typer.Option(
        help="Stop poor trials early on their per-epoch validation R-Sum: none, median or "
             "hyperband.")] = "none",
    experiment: Annotated[str | None, typer.Option(help="MLflow experiment name.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Base setting for every trial, as for `suite run`.")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Optuna search over a method's knobs and learning rate; each trial is a logged run,
    scored by validation text-to-video R-Sum (never test)."""
    from suite.job import config as cfg

    if method is None or trials is None:
        raise UserError("--method and --trials are required; see `suite list methods`")
    from suite.job.distributed import from_environment

    if from_environment().enabled:
        raise UserError("suite sweep runs as one process; start it without torchrun")
    overrides: dict[str, Any] = {} if experiment is None else {"experiment": experiment}
    overrides.update(cfg.parse_sets(set_ or []))
    stop_on_sigterm()

    from suite.orchestrate.sweep import run_sweep

    try:
        summary = run_sweep(method, dataset, trials, overrides, storage, study, seed,
                            tracking_uri, pruner)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if summary.complete_now + summary.pruned_now == 0:
        typer.echo(f"error: all {trials} trials failed (see above); study {summary.study} "
                   f"in {summary.storage}", err=True)
        raise typer.Exit(1)
    if json_out:
        typer.echo(json.dumps(summary.to_dict(), indent=2, sort_keys=True))
    else:
        for line in summary.lines():
            typer.echo(line)


@app.command()
@user_errors
def bench(
    plan: Annotated[str, typer.Argument(
        help="A plan: its name (`plans/NAME.toml`) or the path of a plan file.")],
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List every run, its resolved settings and estimated cost; run "
        "nothing.")] = False,
    jobs: Annotated[int, typer.Option(
        min=1, help="Runs at a time: one per GPU (CUDA_VISIBLE_DEVICES), or CPU processes "
        "sharing the cores.")] = 1,
    threads: Annotated[int | None, typer.Option(
        min=1, help="CPU threads per run (default: cores // --jobs).")] = None,
    launcher: Annotated[str, typer.Option(help="local (default) or slurm (submitit).")] = "local",
    partition: Annotated[str | None, typer.Option(help="SLURM partition.")] = None,
    account: Annotated[str | None, typer.Option(help="SLURM account.")] = None,
    gpus_per_job: Annotated[int, typer.Option(
        min=0, help="GPUs per SLURM job; more than 1 runs torchrun inside the job.")] = 1,
    time_limit: Annotated[int, typer.Option(
        "--time", min=1, help="SLURM time limit per job, minutes.")] = 1440,
    cpus_per_job: Annotated[int, typer.Option(min=1, help="CPUs per SLURM job.")] = 8,
    submitit_cluster: Annotated[str, typer.Option(
        help="submitit executor for --launcher slurm: slurm, or local (the jobs run on this "
             "machine through submitit's local executor; for testing).")] = "slurm",
    dataset: Annotated[str | None, typer.Option(
        help="Run every row on this dataset card with its own defaults (backbone, training "
             "settings; the plan's dataset, backbone and preset dropped), e.g. synthetic.")
    ] = None,
    data_root: Annotated[str | None, typer.Option(help="Folder of the real dataset.")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu or cuda.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="key=value for every run, as for `suite run`.")] = None,
    row: Annotated[list[str] | None, typer.Option(
        "--row", help="Only this row (its label; repeatable).")] = None,
    no_timing: Annotated[bool, typer.Option(
        "--no-timing", help="Dry run: multiply-adds only, no timed training step.")] = False,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    checkpoint_dir: Annotated[Path, typer.Option(
        help="Where unfinished runs keep their epoch checkpoint.")] = Path("checkpoints"),
    json_out: Annotated[bool, typer.Option("--json", help="Dry run as JSON.")] = False,
) -> None:
    """Run a benchmark plan: every row and seed a `suite run`; finished runs are skipped,
    interrupted ones resumed, failed ones tried again once."""
    from suite.job import config as cfg

    stop_on_sigterm()
    from suite.job.distributed import from_environment

    if from_environment().enabled:
        raise UserError("suite bench starts its runs itself; start it without torchrun "
                        "(--launcher slurm --gpus-per-job N runs torchrun inside each job)")
    if launcher not in ("local", "slurm"):
        raise UserError(f"unknown --launcher {launcher!r}; valid: local, slurm")
    if submitit_cluster not in ("slurm", "local"):
        raise UserError(f"unknown --submitit-cluster {submitit_cluster!r}; valid: slurm, local")
    from suite.job.tracking import tracking_uri as resolve_uri
    from suite.orchestrate.bench import BenchOptions, Interrupted, default_workdir, summary_lines
    from suite.orchestrate.bench import bench as run_bench
    from suite.orchestrate.plans import expand, load_plan

    loaded = load_plan(plan)
    overrides: dict[str, Any] = {k: v for k, v in {"data_root": data_root,
                                                   "device": device}.items() if v is not None}
    overrides.update(cfg.parse_sets(set_ or []))
    runs = expand(loaded, overrides, dataset, check="config" if dry_run else "full")
    if row:
        labels = {r.base_row for r in runs} | {r.row for r in runs}
        unknown = sorted(set(row) - labels)
        if unknown:
            raise UserError(f"--row {unknown[0]!r} is not a row of plan {loaded.name}; rows: "
                            f"{', '.join(r.label for r in loaded.rows)}")
        runs = [r for r in runs if r.base_row in row or r.row in row]
    options = BenchOptions(
        uri=resolve_uri(tracking_uri), checkpoints=checkpoint_dir,
        workdir=default_workdir(loaded), jobs=jobs, threads=threads,
        launcher="slurm" if launcher == "slurm" else "local",
        slurm={"partition": partition, "account": account, "gpus": gpus_per_job,
               "time": time_limit, "cpus": cpus_per_job, "cluster": submitit_cluster})
    if dry_run:
        _bench_dry_run(loaded, runs, options, not no_timing, json_out)
        return
    try:
        outcomes = run_bench(loaded, runs, options)
    except Interrupted as stopped:
        for line in summary_lines(stopped.outcomes):
            typer.echo(line, err=True)
        raise
    for line in summary_lines(outcomes):
        typer.echo(line)
    if any(o.status in ("failed", "busy") for o in outcomes):
        raise typer.Exit(1)


def _bench_dry_run(plan: Any, runs: list[Any], options: Any, timing: bool,
                   json_out: bool) -> None:
    """What ``suite bench --dry-run`` prints: nothing is written (a store that does not exist
    yet is not created: every run is then new)."""
    from suite.common.progress import console
    from suite.orchestrate.bench import Action, dry_run_json, dry_run_lines, estimate, plan_actions

    store = options.uri.removeprefix("sqlite:///")
    if options.uri.startswith("sqlite:///") and not Path(store).is_file():
        actions = [Action("new") for _ in runs]
    else:
        actions = plan_actions(runs, options)
    with console.status("estimating costs") as status:
        estimates = estimate(runs, timing, on_model=lambda text: status.update(
            f"estimating costs: {text}"))
    if json_out:
        typer.echo(dry_run_json(runs, actions, estimates))
    else:
        for line in dry_run_lines(plan, runs, actions, estimates):
            typer.echo(line)


@app.command()
@user_errors
def report(
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "tvr-suite",
    format_: Annotated[str, typer.Option("--format", help="md, latex, csv or html.")] = "md",
    out: Annotated[Path | None, typer.Option(
        help="Write report.<ext> and R-Sum vs GFLOPs plots (PNG) here; else print the table.")
    ] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    plan: Annotated[str | None, typer.Option(
        help="A benchmark plan's table instead (its rows in order, deltas against its "
             "baseline, the published figures beside ours); --experiment is the plan's.")
    ] = None,
    dataset: Annotated[str | None, typer.Option(
        help="With --plan: the runs of `suite bench --dataset D`.")] = None,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="With --plan: the --set given to `suite bench`.")] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print the table's rows as JSON (means and stds as numbers).")] = False,
) -> None:
    """Compare finished runs: one row per method and setting, mean ± std over seeds."""
    formats = ("md", "latex", "csv", "html")
    if format_ not in formats:
        raise UserError(f"unknown --format {format_!r}; valid: {', '.join(formats)}")
    if plan is not None:
        _plan_report(plan, dataset, set_ or [], format_, out, tracking_uri, json_out)
        return
    if dataset is not None or set_:
        raise UserError("--dataset and --set go with --plan")
    from reports.errors import ReportError

    from reports.files import write_report
    from reports.runs import load_runs
    from reports.tables import comparison_table, render
    from suite.job.tracking import tracking_uri as resolve_uri

    if out is not None:
        from suite.common.preflight import writable_folder

        writable_folder(out, "--out")
    try:
        table = comparison_table(load_runs(experiment, resolve_uri(tracking_uri)))
        if json_out:
            typer.echo(table.to_json(orient="records", indent=2))
        elif out is None:
            typer.echo(render(table, format_), nl=False)
        else:
            for path in write_report(table, format_, out):
                typer.echo(str(path))
    except ReportError as exc:
        raise UserError(str(exc)) from None


def _plan_report(name: str, dataset: str | None, sets: list[str], fmt: str, out: Path | None,
                 tracking_uri: str | None, json_out: bool = False) -> None:
    """``suite report --plan``: the plan's expected runs (digests, knob values, references)
    resolved here, the table made from MLflow by reports.plan."""
    from reports.errors import ReportError

    from reports.plan import (
        PlanRow,
        PlanSpec,
        load_plan_runs,
        plan_table,
        render_plan,
        write_plan_report,
    )
    from suite.job import config as cfg
    from suite.job.tracking import tracking_uri as resolve_uri
    from suite.orchestrate.plans import expand, experiment_of, knob_value, load_plan

    loaded = load_plan(name)
    runs = expand(loaded, cfg.parse_sets(sets), dataset, check="none")
    rows: dict[str, list[Any]] = {}
    for run in runs:
        rows.setdefault(run.row, []).append(run)
    spec_rows = []
    for label, group in rows.items():
        first = group[0]
        reference = loaded.row(first.base_row).reference
        on_paper = reference is not None and dataset is None
        spec_rows.append(PlanRow(
            label, tuple(r.digest for r in group), first.config.dataset, first.config.backbone,
            {k: knob_value(first, k) for k in loaded.knobs},
            reference.figures() if on_paper and reference is not None else {},
            reference.source if on_paper and reference is not None else ""))
    spec = PlanSpec(loaded.name, loaded.description, experiment_of(loaded, dataset),
                    loaded.kind, loaded.baseline, tuple(loaded.knobs), tuple(spec_rows))
    if out is not None:
        from suite.common.preflight import writable_folder

        writable_folder(out, "--out")
    try:
        table = plan_table(spec, load_plan_runs(spec, resolve_uri(tracking_uri)))
        if json_out:
            typer.echo(table.to_json(orient="records", indent=2))
        elif out is None:
            typer.echo(render_plan(spec, table, fmt), nl=False)
        else:
            for path in write_plan_report(spec, table, fmt, out):
                typer.echo(str(path))
    except ReportError as exc:
        raise UserError(str(exc)) from None


@app.command()
@user_errors
def abandoned(
    experiment: Annotated[str, typer.Option(help="MLflow experiment name.")] = "tvr-suite",
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List only; mark nothing.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Mark RUNNING runs whose process is gone (killed, machine lost) as FAILED with the tag
    abandoned=true; runs with a live owner are listed and left alone."""
    from suite.job.ownership import mark_abandoned, running_runs
    from suite.job.tracking import tracking_uri as resolve_uri

    uri = resolve_uri(tracking_uri)
    runs = running_runs(uri, experiment)
    found = []
    for run in runs:
        owner = run.owner.describe() if run.owner is not None else None
        if run.owner is None:
            state, text = "unknown", "RUNNING with no owner record; cannot tell, left as it is"
        elif not run.abandoned:
            state, text = "alive", f"RUNNING, owner alive ({owner})"
        elif dry_run:
            state, text = "abandoned", f"abandoned, owner gone ({owner})"
        else:
            mark_abandoned(uri, run.run_id)
            state, text = "marked", (f"abandoned, owner gone ({owner}); marked FAILED (suite "
                                     f"run --resume {run.run_id} continues it from its "
                                     f"checkpoint)")
        found.append({"run_id": run.run_id, "name": run.name, "owner": owner, "state": state,
                      "line": f"run {run.run_id} ({run.name}): {text}"})
    if json_out:
        typer.echo(json.dumps([{k: v for k, v in f.items() if k != "line"} for f in found],
                              indent=2))
        return
    if not runs:
        typer.echo(f"no RUNNING runs in experiment {experiment}")
    for item in found:
        typer.echo(item["line"])


@app.command()
@user_errors
def profile(
    method: Annotated[str | None, typer.Option(help="Method; see `suite list methods`.")] = None,
    backbone: Annotated[str, typer.Option(help="open_clip model name.")] = "ViT-B-32",
    frames: Annotated[int, typer.Option(min=1)] = 12,
    words: Annotated[int, typer.Option(min=2)] = 32,
    batch: Annotated[int | None, typer.Option(
        "--batch-size", min=1, help="Inference batch (default 32 on CUDA, 4 on CPU).")] = None,
    train_batch: Annotated[int | None, typer.Option(
        "--train-batch-size", min=1,
        help="Batch of the timed training step (default: --batch-size).")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "auto",
    set_: Annotated[list[str] | None, typer.Option("--set", help="method.NAME=VALUE")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Profile every method.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Print a Markdown table.")] = False,
    counts_only: Annotated[bool, typer.Option(
        "--counts-only", help="Multiply-adds, tokens and parameters only: no timed runs.")] = False,
    precision: Annotated[str, typer.Option(
        help="Inference precision: auto (fp32 on CPU, fp16 on CUDA), fp32, bf16, fp16.")] = "auto",
    compile_: Annotated[bool, typer.Option(
        "--compile", help="Time inference through torch.compile of the video tower.")] = False,
) -> None:
    """GFLOPs (multiply-adds), tokens, parameters, memory, throughput and its share of this
    machine's measured matmul peak; random weights."""
    from suite.cost.device import resolve_device, resolve_precision
    from suite.cost.profiling import default_batch, profile_method
    from suite.job.config import parse_sets

    if method is None and not all_:
        raise UserError("--method M or --all is required; see `suite list methods`")
    if method is not None and all_:
        raise UserError("give either --method or --all, not both")
    options = {}
    for key, value in parse_sets(set_ or []).items():
        if not key.startswith("method."):
            raise UserError(f"profile takes only method.NAME settings, got {key!r}")
        options[key.removeprefix("method.")] = value
    from methods.registry import discover

    names = discover() if all_ or method is None else [method]
    torch_device = resolve_device(device)
    resolve_precision(precision, torch_device)  # a bad one is a user error before any work
    batch = batch or default_batch(torch_device)
    rows = []
    for name in names:
        _check_method_config(name, backbone, frames, options if not all_ else {})
    if not counts_only:  # the shares of peak against a measurement taken now (suite.cost.peak)
        from suite.cost import cpu
        from suite.cost.peak import machine_peaks

        cpu.configure_process()  # before torch's thread pool starts
        machine_peaks(torch_device, refresh=True)
    for name in names:
        rows.append(profile_method(name, backbone, frames, words, torch_device, batch,
                                   train_batch or batch, options if not all_ else {},
                                   counts_only=counts_only, precision=precision,
                                   compile_video=compile_))
    if json_out:
        typer.echo(json.dumps(rows if all_ else rows[0], indent=2))
    elif markdown:
        from reports.cost import cost_markdown

        typer.echo(cost_markdown(rows))
    else:
        from reports.cost import cost_table
        from suite.common.progress import stdout

        stdout.print(cost_table(rows))


def _check_method_config(name: str, backbone: str, frames: int, options: dict) -> None:
    from methods.registry import get
    from suite.models.backbone import check_backbone_name

    check_backbone_name(backbone)  # registers the embedded configs methods read
    try:
        get(name).make_config(backbone, frames, options)
    except (ValueError, TypeError) as exc:
        raise UserError(str(exc).splitlines()[0]) from None


@app.command("list")
@user_errors
def list_(what: Annotated[str, typer.Argument(
        help="methods, datasets, backbones, presets or plans")],
        json_out: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List the registered methods, dataset cards, backbones, reference presets or benchmark
    plans."""
    if json_out:
        typer.echo(json.dumps(listing(what), indent=2))
    elif what == "presets":
        from suite.job.presets import PRESETS, describe

        for preset in PRESETS.values():
            for line in describe(preset):
                typer.echo(line)
    elif what == "methods":
        from methods.registry import all_methods

        for m in all_methods():
            typer.echo(f"{m.name:14s} {m.description}")
    elif what == "datasets":
        from suite.data.cards import available, load_card

        for name in available():
            card = load_card(name)
            typer.echo(f"{name:14s} {card.description}")
    elif what == "plans":
        for entry in listing("plans"):
            typer.echo(f"{entry['name']:28s} {entry['description']} ({entry['runs']} runs)")
    elif what == "backbones":
        import open_clip

        from suite.models.embedded import embedded_names, register_embedded_configs

        register_embedded_configs()
        for name in embedded_names():
            typer.echo(f"{name:24s} embedded (pretrained: synthetic)")
        for name, tag in open_clip.list_pretrained():
            typer.echo(f"{name:24s} {tag}")
    else:
        raise UserError(f"cannot list {what!r}; valid: methods, datasets, backbones, presets, "
                    f"plans")


def listing(what: str) -> list[dict[str, Any]]:
    """What `suite list WHAT --json` prints."""
    if what == "presets":
        from suite.job.presets import PRESETS

        return [{"name": p.name, "description": p.description, "source": p.source,
                 "settings": {**p.settings, **p.video_settings}} for p in PRESETS.values()]
    if what == "methods":
        from methods.registry import all_methods

        return [{"name": m.name, "description": m.description, "reference": m.reference}
                for m in all_methods()]
    if what == "datasets":
        from suite.data.cards import available, load_card

        return [{"name": n, "description": load_card(n).description} for n in available()]
    if what == "plans":
        from suite.orchestrate.plans import available as plans
        from suite.orchestrate.plans import expand, load_plan

        loaded = [load_plan(name) for name in plans()]
        return [{"name": p.name, "description": p.description, "experiment": p.experiment,
                 "runs": len(expand(p, check="none"))} for p in loaded]
    if what == "backbones":
        import open_clip

        from suite.models.embedded import embedded_names, register_embedded_configs

        register_embedded_configs()
        return ([{"name": n, "pretrained": "synthetic"} for n in embedded_names()]
                + [{"name": n, "pretrained": t} for n, t in open_clip.list_pretrained()])
    raise UserError(f"cannot list {what!r}; valid: methods, datasets, backbones, presets, "
                    f"plans")


@app.command()
@user_errors
def prepare(
    dataset: Annotated[str, typer.Option(help="Dataset card name (msrvtt, msvd, lsmdc, ...).")],
    data_root: Annotated[str, typer.Option(help="Folder with the dataset's annotation files.")],
    cache: Annotated[bool, typer.Option(
        "--cache", help="Also write the sampled frames to the frame cache runs read.")] = False,
    frames: Annotated[int | None, typer.Option(min=1, help="Frames per video (card's).")] = None,
    backbone: Annotated[str | None, typer.Option(
        help="Backbone whose input size the cached frames get (card's).")] = None,
    workers: Annotated[int, typer.Option(min=0, help="Decoding processes (0: in this one).")] = 0,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="data.NAME=VALUE, as for `suite run` (e.g. data.videos=DIR).")] = None,
    allow_problems: Annotated[bool, typer.Option(
        "--allow-problems", help="Exit with code 0 even when videos are missing or unreadable "
        "or counts differ from the card (default: code 1).")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check a dataset's files against its card (counts, missing and unreadable videos) and
    optionally cache sampled frames; an interrupted prepare resumes."""
    from suite.data.prepare import prepare as run_prepare
    from suite.job import config as cfg

    options = {}
    for key, value in cfg.parse_sets(set_ or []).items():
        section, _, name = key.partition(".")
        if section != "data" or not name:
            raise UserError(f"prepare takes only --set data.NAME=VALUE, got {key!r}")
        options[name] = value
    report = run_prepare(dataset, data_root, options, frames=frames, backbone=backbone,
                         cache=cache, workers=workers, show_progress=not json_out)
    if json_out:
        typer.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        for line in report.lines():
            typer.echo(line)
    if report.problems and not allow_problems:
        raise typer.Exit(1)


@app.command()
@user_errors
def merges(
    method: Annotated[str | None, typer.Option(
        help="A merging method (tempme, tempme-full, tome), untrained.")] = None,
    run_id: Annotated[str | None, typer.Option(
        "--run", help="MLflow run id: its config and trained weights.")] = None,
    dataset: Annotated[str, typer.Option(help="Dataset card (with --method).")] = "synthetic",
    split: Annotated[str, typer.Option(help="Split the video comes from.")] = "test",
    video: Annotated[int, typer.Option(help="Index of the video in the split.")] = 0,
    out: Annotated[Path, typer.Option(help="PNG to write.")] = Path("merges.png"),
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="key=value, as for `suite run` (with --method).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(help="MLflow tracking URI.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print a JSON summary.")] = False,
) -> None:
    """Draw which patches of which frames merged into the same token (one video)."""
    import tempfile

    from suite.job import config as cfg
    from suite.job.merges import run_artifacts, visualise
    from suite.job.tracking import tracking_uri as resolve_uri

    if (method is None) == (run_id is None):
        raise UserError("give either --method M or --run RUN_ID")
    with tempfile.TemporaryDirectory(prefix="suite-merges-") as downloads:
        weights = None
        if run_id is not None:
            config_file, weights = run_artifacts(run_id, resolve_uri(tracking_uri),
                                                 Path(downloads))
            resolved = cfg.load_file(config_file)
        else:
            assert method is not None
            resolved = cfg.apply_overrides(cfg.base_for(method, dataset),
                                           cfg.parse_sets(set_ or []))
        result = visualise(resolved, weights, video, split, out)
    if json_out:
        typer.echo(json.dumps({"out": str(out), "output_sequences": result.output_sequences,
                               "output_tokens": result.output_tokens,
                               "patch_groups": result.patch_groups}, indent=2))
    else:
        typer.echo(f"{out}: {result.output_sequences} sequence(s), {result.output_tokens} "
                   f"tokens; patches merged into {result.patch_groups} tokens")


def main() -> None:
    app(prog_name="suite")

