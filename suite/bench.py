"""``suite bench PLAN``: every run of a plan, skipping what is done, resuming what was cut off.

Each run of a plan (suite.plans) is an ordinary ``suite run``: one MLflow run in the plan's
experiment, tagged ``plan``, ``plan_row`` and ``config_digest`` (a hash of its resolved config,
``suite.plans.DIGEST_IGNORES`` left out). Before anything starts, every run is looked up by its
digest:

- a FINISHED run: done, skipped;
- a RUNNING run whose owner lives (suite.ownership): trained elsewhere now, skipped;
- a run that stopped (Ctrl-C, SIGTERM, an error, a killed process) and left a checkpoint:
  resumed from it (``suite run --resume``; an abandoned RUNNING one is taken over);
- otherwise (nothing yet, or stopped before its first checkpoint): started anew.

A run that fails is tried once more in the same invocation (resumed from its checkpoint when
it has one); a rerun of the command tries failed runs again. Ctrl-C or SIGTERM stops the bench
cleanly: the runs under way end KILLED with their checkpoints, the command exits 130, and the
next invocation resumes them. Runs go one after another in this process (``--jobs 1``), N at a
time as ``suite run`` processes (suite.launchers.LocalPool), or as SLURM jobs through submitit
(suite.launchers.SlurmLauncher).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from suite.plans import Plan, PlannedRun
from suite.progress import console

Kind = Literal["done", "busy", "resume", "new"]


@dataclass(frozen=True)
class Action:
    """What the bench does with a planned run: ``done`` and ``busy`` are skipped, ``resume``
    continues ``run_id`` from its checkpoint, ``new`` starts a run."""

    kind: Kind
    run_id: str | None = None
    detail: str = ""


Status = Literal["already finished", "finished", "resumed", "busy", "failed", "interrupted",
                 "pending"]


@dataclass
class Outcome:
    """How a planned run ended in this invocation."""

    run: PlannedRun
    status: Status
    run_id: str | None = None
    error: str = ""


@dataclass
class BenchOptions:
    """Where runs go and how they are launched."""

    uri: str
    checkpoints: Path
    workdir: Path  # configs, logs and job folders of the bench
    jobs: int = 1
    threads: int | None = None  # per job; None: cores // jobs (one job: unchanged)
    launcher: Literal["local", "slurm"] = "local"
    slurm: dict[str, Any] = field(default_factory=dict)
    show_progress: bool = True


def say(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


# -- what the store already holds ---------------------------------------------------------


def existing_runs(uri: str, experiment: str, plan: str) -> dict[str, list[Any]]:
    """The plan's MLflow runs in ``experiment`` by config digest, newest first."""
    from mlflow.tracking import MlflowClient

    from suite import tracking

    tracking._quiet()  # no migration chatter when the store is new
    with tracking.first_use(uri):
        client = MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    out: dict[str, list[Any]] = {}
    token = None
    while True:
        page = client.search_runs([found.experiment_id], f"tags.plan = '{plan}'",
                                  max_results=1000, page_token=token,
                                  order_by=["attributes.start_time DESC"])
        for run in page:
            digest = run.data.tags.get("config_digest")
            if digest:
                out.setdefault(digest, []).append(run)
        token = page.token
        if not token:
            return out


def decide(runs: list[Any], checkpoints: Path) -> Action:
    """The action for a planned run whose earlier MLflow runs (newest first) are ``runs``."""
    from suite import checkpoint, ownership

    for run in runs:
        if run.info.status == "FINISHED":
            return Action("done", run.info.run_id)
    if not runs:
        return Action("new")
    latest = runs[0]
    run_id = latest.info.run_id
    owner = ownership.Owner.from_tags(latest.data.tags)
    if latest.info.status == "RUNNING" and owner is not None and not owner.gone():
        return Action("busy", run_id, f"trained by {owner.describe()}")
    if checkpoint.checkpoint_path(checkpoints, run_id).is_file():
        return Action("resume", run_id, f"{latest.info.status.lower()}, checkpoint kept")
    return Action("new", None, f"earlier run {run_id} {latest.info.status.lower()} before its "
                               f"first checkpoint")


def plan_actions(runs: list[PlannedRun], options: BenchOptions) -> list[Action]:
    by_digest: dict[str, list[Any]] = {}
    for experiment in sorted({r.config.experiment for r in runs}):
        by_digest.update(existing_runs(options.uri, experiment, runs[0].plan))
    return [decide(by_digest.get(r.digest, []), options.checkpoints) for r in runs]


def mark_left_running(uri: str, runs: list[Any]) -> None:
    """A RUNNING run whose owner is gone and that left no checkpoint is started anew; mark the
    old one abandoned (FAILED, ``abandoned=true``) so that no report waits for it."""
    from suite import ownership

    for run in runs:
        if run.info.status == "RUNNING":
            owner = ownership.Owner.from_tags(run.data.tags)
            if owner is None or owner.gone():
                ownership.mark_abandoned(uri, run.info.run_id)


# -- the bench ------------------------------------------------------------------------------


def bench(plan: Plan, runs: list[PlannedRun], options: BenchOptions) -> list[Outcome]:
    """Bring every run of ``runs`` to FINISHED (see the module docstring)."""
    from suite import preflight

    preflight.tracking_store(options.uri)
    preflight.writable_folder(options.checkpoints, "the checkpoint folder")
    preflight.writable_folder(options.workdir, "the bench folder")
    actions = plan_actions(runs, options)
    outcomes: list[Outcome] = []
    todo: list[tuple[PlannedRun, Action]] = []
    for run, action in zip(runs, actions, strict=True):
        if action.kind == "done":
            outcomes.append(Outcome(run, "already finished", action.run_id))
        elif action.kind == "busy":
            outcomes.append(Outcome(run, "busy", action.run_id, action.detail))
        else:
            todo.append((run, action))
    say(f"plan {plan.name}: {len(runs)} runs, {len(runs) - len(todo)} already finished or "
        f"under way elsewhere, {sum(a.kind == 'resume' for _, a in todo)} to resume, "
        f"{sum(a.kind == 'new' for _, a in todo)} to start")
    if not todo:
        return outcomes
    if options.launcher == "slurm":
        from suite.launchers import SlurmLauncher

        outcomes += SlurmLauncher(options).run_all(todo)
    elif options.jobs > 1:
        from suite.launchers import LocalPool

        outcomes += LocalPool(options).run_all(todo)
    else:
        outcomes += run_here(todo, options)
    order = {id(r): i for i, r in enumerate(runs)}
    return sorted(outcomes, key=lambda o: order[id(o.run)])


def refresh(run: PlannedRun, options: BenchOptions) -> Action:
    """The action for ``run`` now (after a failed attempt: resume it if it left a checkpoint)."""
    found = existing_runs(options.uri, run.config.experiment, run.plan).get(run.digest, [])
    action = decide(found, options.checkpoints)
    if action.kind == "new":
        mark_left_running(options.uri, found)
    return action


def run_here(todo: list[tuple[PlannedRun, Action]], options: BenchOptions) -> list[Outcome]:
    """One run after another in this process; each failure is tried once more."""
    import torch

    from suite import engine

    if options.threads is not None:
        torch.set_num_threads(options.threads)
    outcomes: list[Outcome] = []
    for number, (run, _) in enumerate(todo, 1):
        for attempt in (1, 2):
            action = refresh(run, options)  # a fresh look: another bench may have done it
            if action.kind in ("done", "busy"):
                outcomes.append(Outcome(run, "already finished" if action.kind == "done"
                                        else "busy", action.run_id, action.detail))
                break
            say(f"[{number}/{len(todo)}] {run.row}, seed {run.seed}: "
                + (f"resuming run {action.run_id}" if action.kind == "resume" else "starting")
                + (" (second attempt)" if attempt == 2 else ""))
            try:
                if action.kind == "resume":
                    assert action.run_id is not None
                    result = engine.resume_run(action.run_id, options.uri, options.show_progress,
                                               options.checkpoints)
                else:
                    result = engine.run(run.config, options.uri, options.show_progress,
                                        tags=run.tags(), checkpoints=options.checkpoints)
            except KeyboardInterrupt:
                outcomes.append(Outcome(run, "interrupted"))
                outcomes += [Outcome(r, "pending") for r, _ in todo[number:]]
                say(f"interrupted: {run.row}, seed {run.seed} stopped (KILLED, checkpoint "
                    f"kept); run the same command again to resume")
                raise Interrupted(outcomes) from None
            except Exception as exc:  # noqa: BLE001 - a failed run must not end the plan
                line = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
                say(f"  {run.row}, seed {run.seed} failed (attempt {attempt} of 2): {line}")
                if attempt == 2:
                    outcomes.append(Outcome(run, "failed", None, line))
                continue
            status: Status = "resumed" if action.kind == "resume" else "finished"
            outcomes.append(Outcome(run, status, result.run_id))
            say(f"  {run.row}, seed {run.seed}: {status}, run {result.run_id}, test t2v R-Sum "
                f"{result.test['t2v_rsum']:.1f}")
            break
    return outcomes


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the bench; ``outcomes`` says how far it got."""

    def __init__(self, outcomes: list[Outcome]) -> None:
        super().__init__()
        self.outcomes = outcomes


def summary_lines(outcomes: list[Outcome]) -> list[str]:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    lines = ["; ".join(f"{n} {status}" for status, n in counts.items())]
    for outcome in outcomes:
        if outcome.status in ("failed", "busy"):
            lines.append(f"  {outcome.run.row}, seed {outcome.run.seed}: {outcome.status}"
                         + (f" ({outcome.error})" if outcome.error else "")
                         + (f", run {outcome.run_id}" if outcome.run_id else ""))
    return lines


# -- dry run: what would run, and what it would cost -----------------------------------------


@dataclass
class Estimate:
    """Cost of one run: video multiply-adds, training steps and measured seconds per step."""

    video_gmacs: float
    steps: int | None  # training steps (search phase included); None: not known without data
    seconds_per_step: float | None  # at the run's batch, scaled from the measured batch
    measured_batch: int | None

    @property
    def seconds(self) -> float | None:
        if self.steps is None or self.seconds_per_step is None:
            return None
        return self.steps * self.seconds_per_step


def training_samples(run: PlannedRun) -> int | None:
    """Samples per training epoch, as the engine's sampler counts them; None when that needs
    the dataset's annotation files and there is no ``data_root``."""
    from suite.data.cards import load_card

    config = run.config
    card = load_card(config.dataset)
    options = {**card.options, **config.data_options}
    if card.loader == "synthetic":
        captions = 1 if card.train_sampling == "video" else int(options["train_captions"])
        return int(options["num_train"]) * captions
    if config.data_root is None:
        return None
    from suite.data.registry import load_split

    split = load_split(card, "train", config)
    return len(split.captions) if card.train_sampling == "all" else len(split.video_ids)


def training_steps(run: PlannedRun, method_config: Any) -> int | None:
    from methods.registry import get

    config = run.config
    if not get(config.method).learning_rates or config.train.epochs == 0:
        return 0
    samples = training_samples(run)
    if samples is None:
        return None
    per_epoch = samples // config.train.batch_size
    search = int(getattr(method_config, "search_epochs", 0) or 0)
    return per_epoch * (config.train.epochs + search)


def _model_key(run: PlannedRun) -> str:
    c = run.config
    return json.dumps([c.method, c.backbone, c.frames, c.words, c.train.batch_size,
                       c.method_options], sort_keys=True, default=str)


def estimate(runs: list[PlannedRun], time_steps: bool = True,
             on_model: Callable[[str], None] | None = None) -> dict[str, Estimate]:
    """Per run digest: video GMACs (folded model, as ``suite profile``) and, with
    ``time_steps``, one timed training step per distinct model config (random weights, on the
    runs' device, at the run's batch or, for open_clip backbones on the CPU, at ``suite
    profile``'s batch, scaled linearly to the run's)."""
    import torch

    from suite import engine
    from suite.backbone import load_backbone
    from suite.device import resolve_device
    from suite.embedded import embedded_names
    from suite.flops import count_macs
    from suite.profiling import default_batch, dummy_video, measure_training_step

    measured: dict[str, tuple[float, float | None, int | None]] = {}
    out: dict[str, Estimate] = {}
    for run in runs:
        key = _model_key(run)
        config = run.config
        method_config = engine.method_config(config)
        if key not in measured:
            if on_model is not None:
                on_model(f"{config.method} on {config.backbone}")
            from methods.registry import get

            device = resolve_device(config.device)
            torch.manual_seed(0)
            loaded = load_backbone(config.backbone, None, "cpu", show_progress=False)
            vocab = int(getattr(loaded.model, "vocab_size", 49408))
            model = get(config.method).build(loaded.model, method_config, config.frames,
                                             config.backbone).to(device)
            seconds: float | None = None
            batch: int | None = None
            if time_steps and model.trainable_parameters():
                tiny = config.backbone in embedded_names()
                batch = config.train.batch_size if tiny or device.type == "cuda" else min(
                    config.train.batch_size, default_batch(device))
                try:
                    cost = measure_training_step(model, config.frames, loaded.image_size,
                                                 config.words, device, batch, repeats=1,
                                                 warmup=1, vocab=vocab)
                    seconds = cost.seconds_per_step * config.train.batch_size / batch
                except (RuntimeError, MemoryError):  # out of memory at this batch: untimed
                    seconds, batch = None, None
            model.fold()
            model.to("cpu").eval()
            pixels, mask = dummy_video(1, config.frames, loaded.image_size, torch.device("cpu"))
            with torch.no_grad():
                gmacs = count_macs(model.video_encoder, (pixels, mask)).gmacs
            measured[key] = (gmacs, seconds, batch)
        gmacs, seconds, batch = measured[key]
        out[run.digest] = Estimate(gmacs, training_steps(run, method_config), seconds, batch)
    return out


def describe_duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "?"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


#: Settings a dry run shows for every row (the rest of the resolved config is in --json).
SHOWN = ("dataset", "backbone", "pretrained", "frames", "select_on", "preset", "train.epochs",
         "train.batch_size", "train.lr", "train.lr_pretrained", "train.optimizer")


def dry_run_lines(plan: Plan, runs: list[PlannedRun], actions: list[Action],
                  estimates: dict[str, Estimate]) -> list[str]:
    """The runs row by row: resolved settings once per row, then each seed with its digest,
    what the bench would do and its estimated cost; totals at the end."""
    lines = [f"plan {plan.name}: {plan.description}",
             f"experiment {runs[0].config.experiment}; {len(runs)} runs ({len(plan.seeds)} "
             f"seeds x {len({r.row for r in runs})} rows)"]
    previous = None
    for run, action in zip(runs, actions, strict=True):
        if run.row != previous:
            previous = run.row
            flat = run.config.flat()
            shown = ", ".join(f"{k}={flat[k]}" for k in SHOWN if k in flat)
            method = ", ".join(f"{k}={v}" for k, v in sorted(run.config.method_options.items()))
            lines.append(f"{run.row}: {run.config.method}" + (f" ({method})" if method else ""))
            lines.append(f"    {shown}")
            note = plan.row(run.base_row).note
            if note:
                lines.append(f"    {note}")
        e = estimates.get(run.digest)
        cost = ""
        if e is not None:
            steps = "?" if e.steps is None else str(e.steps)
            cost = f"  {e.video_gmacs:.3g} GMACs/video, {steps} training steps"
            if e.seconds_per_step is not None:
                scaled = ("" if e.measured_batch in (None, run.config.train.batch_size)
                          else f" (measured at batch {e.measured_batch}, scaled)")
                cost += (f" x {e.seconds_per_step:.3g} s{scaled} = "
                         f"{describe_duration(e.seconds)}")
        todo = {"done": f"finished (run {action.run_id}), skipped",
                "busy": f"under way ({action.detail}), skipped",
                "resume": f"resume run {action.run_id}", "new": "start"}[action.kind]
        lines.append(f"  seed {run.seed}  digest {run.digest}  {todo}{cost}")
    pending = [r for r, a in zip(runs, actions, strict=True) if a.kind in ("new", "resume")]
    timed = [r for r in pending if estimates.get(r.digest) is not None
             and (estimates[r.digest].steps == 0 or estimates[r.digest].seconds is not None)]
    if estimates and any(estimates[r.digest].seconds_per_step is not None for r in pending):
        unknown = len(pending) - len(timed)
        lines.append(f"estimated training time of the {len(pending)} runs to do, one after "
                     f"another: {describe_duration(total_for(timed, estimates))}"
                     + (f" (+ {unknown} runs not estimated: their steps need --data-root)"
                        if unknown else "") + "; evaluation not included")
    elif estimates:
        lines.append(f"{len(pending)} runs to do; training time not estimated (--no-timing)")
    return lines


def total_for(runs: list[PlannedRun], estimates: dict[str, Estimate]) -> float:
    return sum(estimates[r.digest].seconds or 0.0 for r in runs if r.digest in estimates)


def dry_run_json(runs: list[PlannedRun], actions: list[Action],
                 estimates: dict[str, Estimate]) -> str:
    out = []
    for run, action in zip(runs, actions, strict=True):
        e = estimates.get(run.digest)
        out.append({"row": run.row, "seed": run.seed, "digest": run.digest,
                    "action": action.kind, "run_id": action.run_id,
                    "config": run.config.to_dict(),
                    "estimate": None if e is None else {
                        "video_gmacs": e.video_gmacs, "steps": e.steps,
                        "seconds_per_step": e.seconds_per_step, "seconds": e.seconds}})
    return json.dumps(out, indent=2, sort_keys=True)


def default_workdir(plan: Plan) -> Path:
    return Path(os.environ.get("SUITE_BENCH_DIR", "bench")) / plan.name
