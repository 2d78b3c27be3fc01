"""One run: build the model, train with selection on validation, test once, log to MLflow."""

from __future__ import annotations

import json
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from suite import checkpoint, distributed, ownership, tracking
from suite.backbone import Backbone, check_backbone_name, load_backbone, text_context
from suite.config import RunConfig
from suite.data.cards import DatasetCard, load_card
from suite.data.loading import ImageSpec, make_collate, to_pixels, training_loader
from suite.data.registry import load_split
from suite.data.skipped import log_skipped_videos
from suite.device import autocast, grad_scaler, resolve_device, resolve_precision
from suite.errors import UserError
from suite.evaluation import evaluate
from suite.profiling import PeakMemory, as_metrics, default_batch, measure_inference
from suite.progress import console, progress_bar


@dataclass
class RunResult:
    """What a finished run reports back (also printed by ``suite run --json``)."""

    run_id: str
    test: dict[str, float]
    best_epoch: int | None
    extra: dict[str, Any] = field(default_factory=dict)
    # Metrics of the selection split for the kept weights (validation unless select_on="test").
    selection: dict[str, float] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def method_config(config: RunConfig) -> Any:
    """The method's resolved knobs; unknown methods and bad options are user errors."""
    from methods import registry

    method = registry.get(config.method)
    try:
        return method.make_config(config.backbone, config.frames, config.method_options)
    except (ValueError, TypeError) as exc:  # ScheduleError included
        raise UserError(str(exc).splitlines()[0]) from None


def build_model(config: RunConfig, backbone: Backbone) -> Any:
    """The method's retrieval model on ``backbone``."""
    from methods import registry

    method = registry.get(config.method)
    return method.build(backbone.model, method_config(config), config.frames, config.backbone)


def symmetric_infonce(text: torch.Tensor, video: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """CLIP's loss over a batch of matching (text, video) pairs, both directions averaged."""
    logits = scale * text @ video.t()
    target = torch.arange(len(text), device=text.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def make_optimizer(model: Any, config: RunConfig, steps: int) -> tuple[Any, Any]:
    """AdamW (no decay on biases and norms), cosine schedule with linear warm-up."""
    from transformers import get_cosine_schedule_with_warmup

    new, pretrained = model.parameter_groups()
    t = config.train
    groups = []
    for params, lr in ((new, t.lr), (pretrained, t.lr_pretrained)):
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        groups += [{"params": decay, "lr": lr, "weight_decay": t.weight_decay},
                   {"params": no_decay, "lr": lr, "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW([g for g in groups if g["params"]])
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(t.warmup * steps), steps)
    return optimizer, scheduler


class Trainer:
    """Epochs of InfoNCE training; keeps the weights with the best selection R-Sum.

    Under torchrun every process trains and evaluates its share of each batch and split
    (suite.distributed); the main process alone logs and checkpoints.
    """

    def __init__(self, model: Any, config: RunConfig, card: DatasetCard, backbone: Backbone,
                 device: torch.device, show_progress: bool,
                 processes: distributed.Processes = distributed.SINGLE) -> None:
        self.model, self.config, self.card, self.device = model, config, card, device
        self.processes = processes
        self.show_progress = show_progress and processes.main
        self.image = ImageSpec(backbone.image_size, backbone.mean, backbone.std)
        self.tokenize = lambda texts: backbone.tokenizer(texts, context_length=config.words)
        self.step_seconds: list[float] = []  # model step only, without data loading
        self.seconds_before = 0.0  # training wall time of earlier processes (resumed runs)
        # Called after each epoch (checkpoint written) with the epoch and its selection
        # metrics; a sweep reports them to Optuna and may stop the run (pruning).
        self.on_epoch: Callable[[int, dict[str, float]], None] | None = None

    def split(self, name: str) -> Any:
        split = load_split(self.card, name, self.config)
        if self.processes.main:
            log_skipped_videos(split)
        return split

    def evaluate(self, split: Any, dual_softmax: bool = False) -> dict[str, float]:
        t = self.config.train
        return evaluate(self.model, split, self.tokenize, self.image, self.device,
                        t.eval_batch_size, t.num_workers, self.show_progress, t.precision,
                        dual_softmax, self.processes)

    def loss(self, ids: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE over the global batch (every process's pairs), in fp32."""
        t = self.config.train
        ids, mask = ids.to(self.device), mask.to(self.device)
        pixels = to_pixels(frames, self.image, self.device)
        with autocast(self.device, t.precision):
            text = self.model.encode_text(ids)
            video = self.model.encode_video(pixels, mask)
        text = distributed.gather_batch(text.float(), self.processes)
        video = distributed.gather_batch(video.float(), self.processes)
        loss = symmetric_infonce(text, video, self.model.logit_scale)
        extra = self.model.extra_loss()  # a method's own term (RetrievalModel.extra_loss)
        return loss if extra is None else loss + extra.float()

    def search(self, train_split: Any, phase: Any) -> dict[str, float]:
        """Run a method's search phase (``methods.base.SearchPhase``) over the training
        batches with the run's loss, stepping only the phase's optimiser; log the mean loss
        of each pass as ``search/loss`` and what ``phase.finish()`` returns as ``search/*``."""
        t = self.config.train
        batches, sampler = training_loader(train_split, self.card.train_sampling,
                                           t.batch_size, make_collate(self.tokenize), t.seed,
                                           t.num_workers, self.processes.rank,
                                           self.processes.world)
        scaler = grad_scaler(self.device, t.precision)
        started = time.perf_counter()
        for epoch in range(phase.epochs):
            sampler.set_epoch(epoch)
            phase.start_epoch(epoch)
            self.model.train()
            losses = []
            with progress_bar(f"search {epoch + 1}/{phase.epochs}", len(batches),
                              enabled=self.show_progress) as advance:
                for ids, frames, mask in batches:
                    loss = self.loss(ids, frames, mask)
                    self.model.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(phase.optimizer)
                    scaler.update()
                    losses.append(loss.item())
                    advance(loss=losses[-1])
            tracking.log_metrics({"search/loss": float(np.mean(losses))}, step=epoch)
        self.model.zero_grad(set_to_none=True)
        figures = {**phase.finish(), "seconds": time.perf_counter() - started}
        tracking.log_metrics({f"search/{k}": v for k, v in figures.items()})
        return figures

    def fit(self, select_split: Any, save: Callable[[dict[str, Any]], None] | None = None,
            resume: dict[str, Any] | None = None) -> tuple[int, dict[str, float]]:
        """Train every epoch, evaluate ``select_split`` after each, restore the best epoch;
        return that epoch and its selection metrics.

        Per-epoch selection metrics are logged as ``val/...``, or ``test_epoch/...`` when a run
        selects on the test split (the papers' practice), apart from the final ``test/...``.
        After each epoch ``save`` receives the training state (see suite.checkpoint); a
        ``resume`` state continues after its last epoch, as if the run had not stopped.
        """
        prefix = "val" if self.config.select_on == "val" else "test_epoch"
        t = self.config.train
        batches, sampler = training_loader(self.split("train"), self.card.train_sampling,
                                           t.batch_size, make_collate(self.tokenize), t.seed,
                                           t.num_workers, self.processes.rank,
                                           self.processes.world)
        if len(batches) == 0:
            raise UserError(f"batch size {t.batch_size} exceeds the {sampler.samples()} "
                            f"training samples")
        optimizer, scheduler = make_optimizer(self.model, self.config, t.epochs * len(batches))
        scaler = grad_scaler(self.device, t.precision)
        params = self.model.trainable_parameters()
        best: tuple[dict[str, float], int, dict] | None = None
        first_epoch = 0
        if resume is not None:
            self.model.load_trainable_state(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            scaler.load_state_dict(resume["scaler"])
            best, first_epoch = resume["best"], resume["epoch"]
            self.step_seconds = list(resume["step_seconds"])
            self.seconds_before = resume["training_seconds"]
            checkpoint.restore_rng_states(resume["rng"])
        started = time.perf_counter()
        for epoch in range(first_epoch, t.epochs):
            sampler.set_epoch(epoch)
            self.model.train()
            losses, epoch_started = [], time.perf_counter()
            with progress_bar(f"epoch {epoch + 1}/{t.epochs}", len(batches),
                              enabled=self.show_progress) as advance:
                for ids, frames, mask in batches:
                    step_started = time.perf_counter()
                    loss = self.loss(ids, frames, mask)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    distributed.sum_gradients(params, self.processes)
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    losses.append(loss.item())  # .item() synchronises CUDA: honest step times
                    self.step_seconds.append(time.perf_counter() - step_started)
                    advance(loss=losses[-1])
            tracking.log_metrics({"train/loss": float(np.mean(losses)),
                                  "train/epoch_seconds": time.perf_counter() - epoch_started,
                                  "train/lr": scheduler.get_last_lr()[0]}, step=epoch)
            metrics = self.evaluate(select_split)
            tracking.log_metrics({f"{prefix}/{k}": v for k, v in metrics.items()}, step=epoch)
            if self.processes.main:
                console.print(f"epoch {epoch + 1}: loss {np.mean(losses):.4f}, "
                              f"{prefix} t2v R-Sum {metrics['t2v_rsum']:.1f}")
            if best is None or metrics["t2v_rsum"] > best[0]["t2v_rsum"]:
                best = (metrics, epoch, self.model.trainable_state())
            if save is not None:
                save({"epoch": epoch + 1, "model": self.model.trainable_state(),
                      "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                      "scaler": scaler.state_dict(), "best": best,
                      "step_seconds": self.step_seconds, "rng": checkpoint.rng_states(),
                      "training_seconds": self.seconds_before + time.perf_counter() - started})
            if self.on_epoch is not None and select_split is not None:
                self.on_epoch(epoch, metrics)
        self.seconds_before += time.perf_counter() - started
        assert best is not None
        self.model.load_trainable_state(best[2])
        return best[1], best[0]


def check(config: RunConfig) -> None:
    """Everything a user can get wrong, checked before an MLflow run is opened."""
    check_backbone_name(config.backbone)  # registers the embedded configs methods read
    method_config(config)
    from methods.registry import padding_refusal

    if refusal := padding_refusal(config.method, config.data_options.get("policy")):
        raise UserError(refusal)
    load_card(config.dataset)
    resolve_precision(config.train.precision, resolve_device(config.device))
    if config.words > text_context(config.backbone):
        raise UserError(f"words {config.words} exceeds the text context of {config.backbone} "
                        f"({text_context(config.backbone)}); use --set words=N with N <= that")
    if config.select_on not in ("val", "test"):
        raise UserError(f"unknown --select-on {config.select_on!r}; valid: val, test")
    if config.on_bad_video not in ("fail", "skip"):
        raise UserError(f"unknown --on-bad-video {config.on_bad_video!r}; valid: fail, skip")
    # Last: every video file the run reads is found and probed before anything trains or logs.
    from methods import registry
    from suite.data.real import check_files

    trains = bool(registry.get(config.method).learning_rates) and config.train.epochs > 0
    check_files(load_card(config.dataset), config, trains)


def run(config: RunConfig, uri: str | None = None, show_progress: bool = True,
        tags: dict[str, str] | None = None, checkpoints: Path | None = checkpoint.DEFAULT_DIR,
        resume: dict[str, Any] | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None) -> RunResult:
    """Execute one fully resolved run and log it to MLflow; ``tags`` are added to the run's.

    Every epoch is checkpointed under ``checkpoints`` (None: not at all); ``resume``, a loaded
    checkpoint (see ``resume_run``), continues its MLflow run after the checkpoint's epoch.
    ``on_epoch(epoch, selection metrics)`` is called after each epoch (``Trainer.on_epoch``).
    """
    check(config)
    card = load_card(config.dataset)
    processes = distributed.from_environment()
    device = distributed.local_device(processes, resolve_device(config.device))
    distributed.start(processes, device, config.train.batch_size)
    try:
        if not processes.main:  # trains and evaluates its share; rank 0 logs and checkpoints
            return _train_and_test(config, card, device, "", False, None, resume, processes)
        return _tracked_run(config, card, device, uri, show_progress, tags, checkpoints,
                            resume, processes)
    finally:
        distributed.stop()


def _tracked_run(config: RunConfig, card: DatasetCard, device: torch.device, uri: str | None,
                 show_progress: bool, tags: dict[str, str] | None, checkpoints: Path | None,
                 resume: dict[str, Any] | None, processes: distributed.Processes) -> RunResult:
    """The main process's run: an MLflow run around training and testing, then its
    checkpoint removed."""
    run_tags = {"method": config.method, "dataset": config.dataset,
                "backbone": config.backbone, "pretrained": str(config.pretrained),
                "device": str(device), "selected_on": config.select_on,
                "precision": resolve_precision(config.train.precision, device),
                "processes": str(processes.world), **environment_tags(), **(tags or {})}
    if resume is not None:
        run_tags["resumed_after_epoch"] = str(resume["epoch"])
    name = f"{config.method}-{config.dataset}-{config.backbone}"
    with tracking.mlflow_run(tracking.tracking_uri(uri), config.experiment, name, run_tags,
                             run_id=None if resume is None else resume["run_id"]) as active:
        run_id = active.info.run_id
        if resume is None:
            tracking.log_params(config.flat())
        try:
            # Locked while it trains, with a heartbeat (suite.ownership)
            with ownership.owned(tracking.tracking_uri(uri), run_id, checkpoints):
                result = _train_and_test(config, card, device, run_id, show_progress,
                                         checkpoints, resume, processes)
        except BaseException:
            if checkpoints and checkpoint.checkpoint_path(checkpoints, run_id).is_file():
                console.print(f"[yellow]run {run_id} stopped; its last finished epoch is "
                              f"checkpointed: suite run --resume {run_id}[/yellow]")
            raise
    if checkpoints is not None:
        checkpoint.remove(checkpoints, run_id)
    return result


def _train_and_test(config: RunConfig, card: DatasetCard, device: torch.device, run_id: str,
                    show_progress: bool, checkpoints: Path | None,
                    resume: dict[str, Any] | None, processes: distributed.Processes
                    ) -> RunResult:
    """The body of a run inside its MLflow run: train (or resume), select, test, log.
    Other processes than the main one take part in training and evaluation (their tracking
    calls do nothing) and skip the inference timing and the artifacts."""
    seed_everything(config.train.seed)  # random weights (--pretrained none) from the seed
    if not processes.main:
        distributed.barrier(processes)  # rank 0 fills the backbone cache first
    backbone = load_backbone(config.backbone, config.pretrained, str(device), show_progress)
    if processes.main:
        distributed.barrier(processes)
    # Seeded again after loading: a first-time pre-training must not change what follows.
    seed_everything(config.train.seed)
    model = build_model(config, backbone).to(device)
    trainer = Trainer(model, config, card, backbone, device, show_progress, processes)
    trains = bool(model.trainable_parameters()) and config.train.epochs > 0
    test = trainer.split("test")
    best_epoch: int | None = None
    selection: dict[str, float] = {}
    training: dict[str, float] = {
        "cost/params_trainable": sum(p.numel() for p in model.trainable_parameters())}
    if trains:
        select = test if config.select_on == "test" else trainer.split("val")
        save = None
        if checkpoints is not None:
            path = checkpoint.checkpoint_path(checkpoints, run_id)

            def save(state: dict[str, Any]) -> None:
                checkpoint.save_atomic({"run_id": run_id, "config": config.to_dict(), **state},
                                       path)

        phase = model.search_phase() if resume is None else None
        if phase is not None:  # what a method learns before training (DiffRate: its rates)
            trainer.search(trainer.split("train"), phase)
        with PeakMemory(device) as memory:
            best_epoch, selection = trainer.fit(select, save, resume)
        training.update(training_figures(trainer.step_seconds, memory.peak_mib,
                                         trainer.seconds_before))
    elif config.select_on == "val":
        # Nothing trains: validation is still evaluated once, so every run has its
        # selection figures (a sweep's objective) and its val/ metrics.
        selection = trainer.evaluate(trainer.split("val"))
        tracking.log_metrics({f"val/{k}": v for k, v in selection.items()}, step=0)
    trained = model.trainable_state()  # before folding: LoRA factors vanish into weights
    model.fold()
    metrics = trainer.evaluate(test, dual_softmax=True)
    tracking.log_metrics({f"test/{k}": v for k, v in metrics.items()})
    if processes.main:
        inference = measure_inference(model, config.frames, backbone.image_size, config.words,
                                      device, default_batch(device))
        tracking.log_metrics({**training, **as_metrics(inference)})
        log_outputs(config, trained, metrics, best_epoch)
    return RunResult(run_id, metrics, best_epoch,
                     selection=selection or metrics)  # untrained, select_on test: the same


def resume_run(run_id: str, uri: str | None = None, show_progress: bool = True,
               checkpoints: Path = checkpoint.DEFAULT_DIR) -> RunResult:
    """Continue an interrupted run from its checkpoint, in the same MLflow run.

    The run must be in the store (checked before any file is read) and not FINISHED; its lock
    is taken before its checkpoint is read, and a RUNNING run is taken over only when its
    owner is gone (suite.ownership).
    """
    from suite.config import from_dict

    status = tracking.run_status(tracking.tracking_uri(uri), run_id)
    if status is None:
        raise UserError(f"run {run_id} is not in the MLflow store {tracking.tracking_uri(uri)}; "
                        f"pass the store it was logged to with --tracking-uri")
    if status == "FINISHED":
        raise UserError(f"run {run_id} has already finished; nothing to resume")
    with ownership.claim(checkpoints, run_id, tracking.tracking_uri(uri)):
        state = checkpoint.load(checkpoints, run_id)
        ownership.take_over(tracking.tracking_uri(uri), run_id)
        console.print(f"resuming run {run_id} after epoch {state['epoch']}")
        return run(from_dict(state["config"]), uri, show_progress, checkpoints=checkpoints,
                   resume=state)


def training_figures(step_seconds: list[float], peak_mib: float, total: float
                     ) -> dict[str, float]:
    """Seconds per step after the first steps (warm-up excluded), total time, peak memory."""
    steady = step_seconds[2:] or step_seconds
    return {"cost/seconds_per_step": float(np.median(steady)), "cost/training_seconds": total,
            "cost/training_peak_mib": peak_mib}


def log_outputs(config: RunConfig, trained: dict[str, torch.Tensor],
                metrics: dict[str, float], best_epoch: int | None) -> None:
    """Artifacts: the resolved config (replayable), the metrics, the trained weights."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config.save(folder / "config.json")
        (folder / "metrics.json").write_text(json.dumps(
            {"test": metrics, "best_epoch": best_epoch}, indent=2, sort_keys=True) + "\n")
        for name in ("config.json", "metrics.json"):
            tracking.log_artifact(folder / name)
        if trained:
            torch.save(trained, folder / "trained_weights.pt")
            tracking.log_artifact(folder / "trained_weights.pt")


def environment_tags() -> dict[str, str]:
    """Versions and git commit, so that a result can be traced to the code that made it."""
    import subprocess
    from importlib.metadata import version

    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                                cwd=Path(__file__).parent, timeout=5).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {"git_commit": commit, "torch": torch.__version__,
            "open_clip": version("open_clip_torch"), "suite": version("tvr-suite"),
            "threads": str(torch.get_num_threads())}
