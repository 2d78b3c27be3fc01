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
    models = len({_model_key(run) for run in runs})
    for run in runs:
        key = _model_key(run)
        config = run.config
        knobs = method_config(config)
        if key not in measured:
            if on_model is not None:
                on_model(f"model {len(measured) + 1}/{models}, {config.method} on "
                         f"{config.backbone}")
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


UNITS = (("s", 1.0), ("min", 60.0), ("h", 3600.0), ("d", 86400.0))


def unit_for(seconds: float) -> tuple[str, float]:
    """The unit a duration of ``seconds`` reads best in: s below 2 min, min below 2 h, h below
    2 days, then days."""
    for (name, size), (_, bigger) in zip(UNITS, UNITS[1:], strict=False):
        if seconds < 2 * bigger:
            return name, size
    return UNITS[-1]


def describe_duration(seconds: float | None, unit: tuple[str, float] | None = None) -> str:
    """``seconds`` in ``unit`` (default: the one it reads best in, ``unit_for``)."""
    if seconds is None or math.isnan(seconds):
        return "?"
    name, size = unit or unit_for(seconds)
    value = seconds / size
    return f"{value:.1f} {name}" if 0 < value < 10 and size > 1 else f"{value:.0f} {name}"


#: Settings a dry run shows once, as the plan's defaults (the rest is in --json).
SHOWN = ("dataset", "backbone", "pretrained", "frames", "select_on", "preset", "train.epochs",
         "train.batch_size", "train.lr", "train.lr_pretrained", "train.optimizer",
         "train.precision")
#: Settings no row line repeats: the plan's (the seed) or shown otherwise (method options).
NOT_ROW_SETTINGS = ("experiment", "train.seed", "method", "method_options")


def _show(value: Any) -> str:
    return "none" if value is None else str(value)


def plan_defaults(runs: list[PlannedRun]) -> dict[str, Any]:
    """Each setting's value in most rows (the first row's on a tie): what a row changes is
    measured against these."""
    rows = list({run.row: run.config.flat() for run in runs}.values())
    keys = dict.fromkeys(k for flat in rows for k in flat if k not in NOT_ROW_SETTINGS)
    out = {}
    for key in keys:
        values = [json.dumps(flat.get(key), sort_keys=True, default=str) for flat in rows]
        out[key] = rows[values.index(max(values, key=values.count))].get(key)
    return out


def changed(run: PlannedRun, defaults: dict[str, Any]) -> dict[str, Any]:
    """The settings ``run``'s row changes from the plan's defaults (``plan_defaults``)."""
    flat = run.config.flat()
    return {k: flat.get(k) for k in defaults if flat.get(k) != defaults[k]}


def dry_run_lines(plan: Plan, runs: list[PlannedRun], actions: list[Action],
                  estimates: dict[str, Estimate]) -> list[str]:
    """The runs row by row: resolved settings once per row, then each seed with its digest,
    what the bench would do and its estimated cost; totals at the end."""
    defaults = plan_defaults(runs)
    changes = {run.row: changed(run, defaults) for run in runs}
    # The defaults every row keeps, the ones some row changes, and no unset one.
    keys = [k for k in SHOWN if k in defaults] + sorted(
        {k for change in changes.values() for k in change} - set(SHOWN))
    seconds = [e.seconds for e in estimates.values() if e.seconds is not None]
    unit = unit_for(max(seconds)) if seconds else None  # one unit for every run's cost
    lines = [f"plan {plan.name}: {plan.description}",
             f"experiment {runs[0].config.experiment}; {len(runs)} runs ({len(plan.seeds)} "
             f"seeds x {len({r.row for r in runs})} rows)",
             "defaults: " + ", ".join(f"{k}={_show(defaults[k])}" for k in keys
                                      if defaults[k] is not None)]
    previous = None
    for run, action in zip(runs, actions, strict=True):
        if run.row != previous:
            previous = run.row
            method = ", ".join(f"{k}={v}" for k, v in sorted(run.config.method_options.items()))
            lines.append(f"{run.row}: {run.config.method}" + (f" ({method})" if method else ""))
            if changes[run.row]:
                lines.append("    " + ", ".join(f"{k}={_show(v)}"
                                                for k, v in changes[run.row].items()))
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
                         f"{describe_duration(e.seconds, unit)}")
        todo = {"done": f"finished (run {action.run_id}), skipped",
                "busy": f"under way ({action.detail}), skipped",
                "resume": f"resume run {action.run_id}", "new": "start"}[action.kind]
        lines.append(f"  seed {run.seed}  digest {run.digest}  {todo}{cost}")
    pending = [r for r, a in zip(runs, actions, strict=True) if a.kind in ("new", "resume")]
    timed = [r for r in pending if estimates.get(r.digest) is not None
             and (estimates[r.digest].steps == 0 or estimates[r.digest].seconds is not None)]
    if estimates and any(estimates[r.digest].seconds_per_step is not None for r in pending):
        unknown = len(pending) - len(timed)
        total = total_for(timed, estimates)
        readable = ("" if unit_for(total) == unit
                    else f" ({describe_duration(total)})")
        lines.append(f"estimated training time of the {len(pending)} runs to do, one after "
                     f"another: {describe_duration(total, unit)}{readable}"
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
    from suite.common.progress import console
    from suite.orchestrate.state import plan_actions, say

    def progress(text: str) -> None:  # a line each model where no status line shows
        if on_model is not None:
            on_model(text)
        if not console.is_terminal:
            say(f"estimating costs: {text}")

    store = options.uri.removeprefix("sqlite:///")
    if options.uri.startswith("sqlite:///") and not Path(store).is_file():
        actions = [Action("new") for _ in runs]
    else:
        actions = plan_actions(runs, options)
    return actions, estimate(runs, timing, on_model=progress)
