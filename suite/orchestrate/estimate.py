"""``suite bench --dry-run``: what each run of a plan would do and cost before anything runs:
multiply-adds of each distinct model and, unless ``--no-timing``, one timed training step."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suite.orchestrate.plans import Plan, PlannedRun
from suite.orchestrate.state import Action


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
    from suite.job.config import trains

    config = run.config
    if not trains(config):
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

    from suite.cost.device import resolve_device
    from suite.cost.flops import count_macs
    from suite.cost.profiling import default_batch, dummy_video, measure_training_step
    from suite.job.config import method_config
    from suite.job.engine import build_model
    from suite.models.backbone import load_backbone
    from suite.models.embedded import embedded_names

    measured: dict[str, tuple[float, float | None, int | None]] = {}
    out: dict[str, Estimate] = {}
    for run in runs:
        key = _model_key(run)
        config = run.config
        knobs = method_config(config)
        if key not in measured:
            if on_model is not None:
                on_model(f"{config.method} on {config.backbone}")
            device = resolve_device(config.device)
            torch.manual_seed(0)
            loaded = load_backbone(config.backbone, None, "cpu", show_progress=False)
            vocab = int(getattr(loaded.model, "vocab_size", 49408))
            model = build_model(config, loaded, knobs).to(device)
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
        out[run.digest] = Estimate(gmacs, training_steps(run, knobs), seconds, batch)
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


def dry_run(runs: list[PlannedRun], options: Any, timing: bool,
            on_model: Callable[[str], None] | None = None
            ) -> tuple[list[Action], dict[str, Estimate]]:
    """What ``suite bench --dry-run`` shows: each run's action and the estimated cost of each
    distinct model. Nothing is written: a store that does not exist yet is not created (every
    run is then new)."""
    from suite.orchestrate.state import plan_actions

    store = options.uri.removeprefix("sqlite:///")
    if options.uri.startswith("sqlite:///") and not Path(store).is_file():
        actions = [Action("new") for _ in runs]
    else:
        actions = plan_actions(runs, options)
    return actions, estimate(runs, timing, on_model=on_model)
