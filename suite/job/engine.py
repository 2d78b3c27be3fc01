"""One run: build the model, train with selection on validation, test once, log to MLflow."""

from __future__ import annotations

import json
import random
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from suite.common.progress import console, progress_bar
from suite.cost import cpu
from suite.cost.device import (
    autocast,
    cast_weights_once,
    grad_scaler,
    resolve_device,
    resolve_precision,
)
from suite.cost.profiling import PeakMemory, as_metrics, default_batch, measure_inference
from suite.data.cards import DatasetCard, load_card
from suite.data.loading import ImageSpec, make_collate, to_pixels, training_loader
from suite.data.registry import load_split
from suite.errors import RunClaimed, TrainingDiverged, UserError
from suite.job import checkpoint, claims, distributed, optim, ownership, tracking
from suite.job.config import RunConfig, method_config, trains
from suite.job.evaluation import evaluate
from suite.job.selection import Kept, Selection
from suite.job.skipped import log_skipped_videos
from suite.models.backbone import Backbone, load_backbone
from suite.models.embedded import text_context
from suite.models.loss import symmetric_infonce


@dataclass
class RunResult:
    """What a finished run reports back (also printed by ``suite run --json``)."""

    run_id: str
    test: dict[str, float]
    best_epoch: int | None
    extra: dict[str, Any] = field(default_factory=dict)
    # Metrics of the selection split for the kept weights (validation unless select_on="test").
    selection: dict[str, float] = field(default_factory=dict)
    # Videos the --on-bad-video skip policy left out, per split (their queries count as misses).
    skipped: dict[str, int] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def build_model(config: RunConfig, backbone: Backbone, knobs: Any = None) -> Any:
    """The method's retrieval model on ``backbone``, built from ``knobs``, the method config
    already resolved (``check``); None: resolved here (``suite.job.config.method_config``)."""
    from methods import registry

    if knobs is None:
        knobs = method_config(config)
    return registry.get(config.method).build(backbone.model, knobs, config.frames,
                                             config.backbone)


def make_optimizer(model: Any, config: RunConfig, steps: int) -> tuple[Any, Any]:
    """``train.optimizer`` over the new parameters (``lr``) and the backbone's (``lr_pretrained``),
    weight decay spared as ``train.no_decay`` says, and its schedule (suite.job.optim)."""
    new, pretrained = model.named_parameter_groups()
    t = config.train
    groups = (optim.parameter_groups(new, t.lr, t.weight_decay, t.no_decay)
              + optim.parameter_groups(pretrained, t.lr_pretrained, t.weight_decay, t.no_decay))
    return optim.make_optimizer(groups, t.optimizer, t.warmup, steps)


class Trainer:
    """Epochs of InfoNCE training; keeps the weights with the best selection R-Sum.

    Under torchrun every process trains and evaluates its share of each batch and split
    (suite.job.distributed); the main process alone logs and checkpoints.
    """

    def __init__(self, model: Any, config: RunConfig, card: DatasetCard, backbone: Backbone,
                 device: torch.device, show_progress: bool,
                 processes: distributed.Processes = distributed.SINGLE) -> None:
        self.model, self.config, self.card, self.device = model, config, card, device
        self.processes = processes
        self.parallel = distributed.data_parallel(model, processes, device)
        self.show_progress = show_progress and processes.main
        self.image = ImageSpec(backbone.image_size, backbone.mean, backbone.std)
        self.tokenize = lambda texts: backbone.tokenizer(texts, context_length=config.words)
        self.step_seconds: list[float] = []  # model step only, without data loading
        self.seconds_before = 0.0  # training wall time of earlier processes (resumed runs)
        # Called after each epoch (checkpoint written) with the epoch and its selection
        # metrics; a sweep reports them to Optuna and may stop the run (pruning).
        self.on_epoch: Callable[[int, dict[str, float]], None] | None = None

    def evaluate(self, split: Any, dual_softmax: bool = False) -> dict[str, float]:
        """Metrics on ``split`` in the evaluation precision (``train.precision=auto``: bf16 on
        a CPU measured to run it much faster, suite.cost.device), frozen weights cast once."""
        t = self.config.train
        precision = resolve_precision(t.precision, self.device, "eval")
        with cast_weights_once(self.model, precision):
            return evaluate(self.model, split, self.tokenize, self.image, self.device,
                            t.eval_batch_size, t.num_workers, self.show_progress, precision,
                            dual_softmax, self.processes)

    def loss(self, ids: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Symmetric InfoNCE over the global batch (every process's pairs), in fp32."""
        t = self.config.train
        ids, mask = ids.to(self.device), mask.to(self.device)
        pixels = to_pixels(frames, self.image, self.device)
        with autocast(self.device, t.precision):
            text, video = self.parallel(ids, pixels, mask)
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

    def train_step(self, ids: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor,
                   optimizer: Any, scaler: Any, scheduler: Any, params: list[torch.nn.Parameter]
                   ) -> float:
        """One optimisation step on a batch; its loss. The gradient applied is the global-batch
        loss's divided by ``train.grad_divisor``, clipped to ``train.grad_clip``."""
        t = self.config.train
        loss = self.loss(ids, frames, mask)
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"training diverged: the loss is {loss.item()}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss / t.grad_divisor).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, t.grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        return loss.item()  # .item() synchronises CUDA: honest step times

    def select(self, selection: Selection, split: Any, prefix: str, epoch: int, step: int,
               after_epoch: bool) -> dict[str, float]:
        """Evaluate ``split``, log it (per epoch under ``prefix/``, between epochs under
        ``prefix_step/`` at the global step) and offer it to ``selection``."""
        metrics = self.evaluate(split)
        if after_epoch:
            tracking.log_metrics({f"{prefix}/{k}": v for k, v in metrics.items()}, step=epoch)
        else:
            tracking.log_metrics({f"{prefix}_step/{k}": v for k, v in metrics.items()},
                                 step=step)
        selection.offer(metrics, epoch, step, self.model.trainable_state())
        self.model.train()
        return metrics

    def fit(self, train_split: Any, select_split: Any | None,
            save: Callable[[dict[str, Any]], None] | None = None,
            resume: dict[str, Any] | None = None) -> Kept:
        """Train every epoch, evaluate ``select_split`` after each (and every
        ``train.eval_steps`` steps), restore the kept evaluation's weights and return it.

        Selection metrics are logged as ``val/...``, or ``test_epoch/...`` when a run selects on
        the test split (the papers' practice), apart from the final ``test/...``. Without a
        selection split (``select_on="last"``) the final weights are kept. After each epoch
        ``save`` receives the training state (see suite.job.checkpoint); a ``resume`` state
        continues after its last epoch, as if the run had not stopped.
        """
        prefix = "val" if self.config.select_on == "val" else "test_epoch"
        t = self.config.train
        batches, sampler = training_loader(train_split, self.card.train_sampling,
                                           t.batch_size, make_collate(self.tokenize), t.seed,
                                           t.num_workers, self.processes.rank,
                                           self.processes.world)
        if len(batches) == 0:
            raise UserError(f"batch size {t.batch_size} exceeds the {sampler.samples()} "
                            f"training samples")
        optimizer, scheduler = make_optimizer(self.model, self.config, t.epochs * len(batches))
        scaler = grad_scaler(self.device, t.precision)
        params = self.model.trainable_parameters()
        selection = Selection(t.select_metric, t.select_ties)
        first_epoch = step = 0
        if resume is not None:
            self.model.load_trainable_state(resume["model"])
            optimizer.load_state_dict(resume["optimizer"])
            scheduler.load_state_dict(resume["scheduler"])
            scaler.load_state_dict(resume["scaler"])
            if resume["kept"] is not None:
                selection.kept = Kept.from_state(resume["kept"])
            first_epoch, step = resume["epoch"], resume["step"]
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
                    try:
                        losses.append(self.train_step(ids, frames, mask, optimizer, scaler,
                                                      scheduler, params))
                    except TrainingDiverged as exc:
                        raise TrainingDiverged(f"{exc} at epoch {epoch + 1}, step {step + 1} "
                                               f"(train.lr {t.lr:g}, lr_pretrained "
                                               f"{t.lr_pretrained:g}); the run stops, FAILED"
                                               ) from None
                    step += 1
                    self.step_seconds.append(time.perf_counter() - step_started)
                    advance(loss=losses[-1])
                    if select_split is not None and t.eval_steps and (
                            step == 1 or step % t.eval_steps == 0):
                        self.select(selection, select_split, prefix, epoch, step, False)
            tracking.log_metrics({"train/loss": float(np.mean(losses)),
                                  "train/epoch_seconds": time.perf_counter() - epoch_started,
                                  "train/lr": scheduler.get_last_lr()[0]}, step=epoch)
            summary = f"epoch {epoch + 1}: loss {np.mean(losses):.4f}"
            if select_split is not None:
                metrics = self.select(selection, select_split, prefix, epoch, step, True)
                summary += f", {prefix} t2v R-Sum {metrics['t2v_rsum']:.1f}"
            else:  # select_on="last": the final weights, nothing evaluated between epochs
                selection.kept = Kept({}, epoch, step, self.model.trainable_state())
            if self.processes.main:
                console.print(summary)
            if save is not None:
                kept = selection.kept.to_state() if selection.kept is not None else None
                save({"epoch": epoch + 1, "step": step, "model": self.model.trainable_state(),
                      "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                      "scaler": scaler.state_dict(), "kept": kept,
                      "step_seconds": self.step_seconds, "rng": checkpoint.rng_states(),
                      "training_seconds": self.seconds_before + time.perf_counter() - started})
            if self.on_epoch is not None and select_split is not None:
                self.on_epoch(epoch, metrics)
        self.seconds_before += time.perf_counter() - started
        assert selection.kept is not None
        self.model.load_trainable_state(selection.kept.weights)
        return selection.kept


def check_method(config: RunConfig) -> Any:
    """The run's method config, resolved once (backbone name, method options, merge schedule
    checked); refused if the method cannot take the padded clips of the run's data policy."""
    from methods.registry import padding_refusal

    knobs = method_config(config)
    if refusal := padding_refusal(config.method, config.data_options.get("policy")):
        raise UserError(refusal)
    return knobs


def check(config: RunConfig) -> Any:
    """Everything a user can get wrong, checked before an MLflow run is opened (the types and
    ranges of every setting were checked when the config was built). Returns the method
    config it resolved (``check_method``), for the job to build its model from."""
    knobs = check_method(config)
    load_card(config.dataset)
    resolve_precision(config.train.precision, resolve_device(config.device))
    if config.words > text_context(config.backbone):
        raise UserError(f"words {config.words} exceeds the text context of {config.backbone} "
                        f"({text_context(config.backbone)}); use --set words=N with N <= that")
    if config.preset is not None:
        from suite.job.presets import get as get_preset

        get_preset(config.preset)
    # Frames the card's videos give, and the estimated peak memory against what is free now.
    from suite.job.resources import check_frames, check_memory

    check_frames(config, load_card(config.dataset))
    check_memory(config, knobs, load_card(config.dataset), resolve_device(config.device),
                 distributed.from_environment().world)
    # Last: every video file the run reads is found and probed before anything trains or logs.
    from suite.data.real import check_files

    check_files(load_card(config.dataset), config, trains(config))
    return knobs


@dataclass
class Job:
    """A run made ready before anything is logged: the backbone loaded, the model built, the
    splits it needs read and screened. A mistake in any of these (a bad checkpoint file, a
    data option, a missing video) stops here, before an MLflow run or a file exists."""

    config: RunConfig
    knobs: Any  # the method config, resolved once (check) and built from
    card: DatasetCard
    device: torch.device
    processes: distributed.Processes
    backbone: Backbone
    model: Any
    trainer: Trainer
    splits: dict[str, Any]

    @property
    def trains(self) -> bool:
        return trains(self.config)


def prepare(config: RunConfig, knobs: Any, card: DatasetCard, device: torch.device,
            show_progress: bool, processes: distributed.Processes) -> Job:
    """Read and build everything a run needs (see ``Job``) with the method config ``knobs``:
    the splits first (cheap, and a data mistake should not wait for a backbone's first-time
    pre-training), then the model."""
    names = ["test"]
    if trains(config):
        names.append("train")
    if config.select_on == "val":
        names.append("val")
    splits = {name: load_split(card, name, config) for name in names}
    if "train" in splits:
        check_batches(splits["train"], card, config, processes)
    seed_everything(config.train.seed)  # random weights (--pretrained none) from the seed
    if not processes.main:
        distributed.barrier(processes)  # rank 0 fills the backbone cache first
    backbone = load_backbone(config.backbone, config.pretrained, str(device),
                             show_progress and processes.main, config.trust_torchscript)
    if processes.main:
        distributed.barrier(processes)
    # Seeded again after loading: a first-time pre-training must not change what follows.
    seed_everything(config.train.seed)
    model = build_model(config, backbone, knobs).to(device)
    trainer = Trainer(model, config, card, backbone, device, show_progress, processes)
    return Job(config, knobs, card, device, processes, backbone, model, trainer, splits)


def check_batches(split: Any, card: DatasetCard, config: RunConfig,
                  processes: distributed.Processes) -> None:
    """A training split with fewer samples than one batch (``Trainer.fit`` drops the last
    incomplete batch) is refused here, before an MLflow run is opened: the trainer would find
    it only inside the run, and leave the run FAILED."""
    from suite.data.loading import TrainingBatches

    t = config.train
    batches = TrainingBatches(split, card.train_sampling, t.batch_size, t.seed, processes.rank,
                              processes.world)
    if len(batches) == 0:
        raise UserError(f"batch size {t.batch_size} exceeds the {batches.samples()} training "
                        f"samples; use a smaller --batch-size or more training data")


def run(config: RunConfig, uri: str | None = None, show_progress: bool = True,
        tags: dict[str, str] | None = None, checkpoints: Path | None = checkpoint.DEFAULT_DIR,
        resume: dict[str, Any] | None = None,
        on_epoch: Callable[[int, dict[str, float]], None] | None = None,
        on_open: Callable[[str], None] | None = None) -> RunResult:
    """Execute one fully resolved run and log it to MLflow; ``tags`` are added to the run's.

    Every epoch is checkpointed under ``checkpoints`` (None: not at all); ``resume``, a loaded
    checkpoint (see ``resume_run``), continues its MLflow run after the checkpoint's epoch.
    ``on_epoch(epoch, selection metrics)`` is called after each epoch (``Trainer.on_epoch``);
    ``on_open(run id)`` as soon as the MLflow run is open (a sweep records it on its trial).
    """
    knobs = check(config)
    cpu.configure_process()  # before torch's thread pool starts (denormals, allocator)
    card = load_card(config.dataset)
    processes = distributed.from_environment()
    if processes.main:  # the places this run writes to, before any work
        from suite.common import preflight

        preflight.tracking_store(tracking.tracking_uri(uri))
        if checkpoints is not None:
            preflight.writable_folder(checkpoints, "the checkpoint folder")
    device = distributed.local_device(processes, resolve_device(config.device))
    distributed.start(processes, device, config.train.batch_size)
    try:
        job = prepare(config, knobs, card, device, show_progress, processes)
        if resume is not None:  # a checkpoint of another model stops before the run reopens
            check_resume(job, resume)
            if processes.main:
                console.print(f"resuming run {resume['run_id']} after epoch {resume['epoch']}")
        job.trainer.on_epoch = on_epoch
        with cpu.kernels(device, model=job.model):  # the fastest fp32 GEMMs (suite.cost.cpu)
            if not processes.main:  # trains and evaluates its share; rank 0 logs, checkpoints
                return _train_and_test(job, "", None, resume)
            return _tracked_run(job, uri, tags, checkpoints, resume, on_open)
    finally:
        distributed.stop()


def trainable_parameters(model: Any) -> dict[str, torch.Tensor]:
    """The parameters ``trainable_state`` saves, by name (not copied: only their shapes and
    dtypes are read)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def check_resume(job: Job, resume: dict[str, Any]) -> None:
    """Refuse a checkpoint that does not fit the job's model (suite.job.checkpoint.check_fits),
    its optimizer state checked against an optimizer built as ``Trainer.fit`` builds it."""
    optimizer, scheduler = make_optimizer(job.model, job.config, 1)
    checkpoint.check_fits(resume, trainable_parameters(job.model), optimizer)
    scaler = grad_scaler(job.device, job.config.train.precision)
    for name, part in (("scheduler", scheduler), ("grad scaler", scaler)):
        try:  # loaded into throwaway copies: a state of another kind fails here, not mid-run
            part.load_state_dict(dict(resume[name if name == "scheduler" else "scaler"]))
        except Exception as exc:  # noqa: BLE001 - any failure means the same to a user
            raise UserError(f"the checkpoint of run {resume['run_id']} holds no valid {name} "
                            f"state ({type(exc).__name__}); start the run anew") from None


def _tracked_run(job: Job, uri: str | None, tags: dict[str, str] | None,
                 checkpoints: Path | None, resume: dict[str, Any] | None,
                 on_open: Callable[[str], None] | None = None) -> RunResult:
    """The main process's run: an MLflow run around training and testing, then its
    checkpoint removed. Runs of the experiment left RUNNING by an owner that is gone are ended
    first (suite.job.ownership.end_orphans); a fault of the machine (a full disk, the store
    failing mid-run) ends in one line (``tracking.machine_fault``)."""
    config, device = job.config, job.device
    run_tags = {"method": config.method, "dataset": config.dataset,
                "backbone": config.backbone, "pretrained": config.pretrained or "none",
                "device": str(device), "selected_on": config.select_on,
                "select_metric": config.train.select_metric,
                "precision": resolve_precision(config.train.precision, device),
                "eval_precision": resolve_precision(config.train.precision, device, "eval"),
                **cpu.settings(device, job.model),
                "processes": str(job.processes.world), **environment_tags(), **(tags or {})}
    if config.preset is not None:
        run_tags["preset"] = config.preset
    if resume is not None:
        run_tags["resumed_after_epoch"] = str(resume["epoch"])
    name = run_name(config, run_tags)
    digest = run_tags.get(claims.DIGEST_TAG) if resume is None else None
    if digest is not None:  # a planned run: trained once across benches (suite.job.claims)
        store = tracking.client(tracking.tracking_uri(uri))
        experiment_id = tracking.open_experiment(tracking.tracking_uri(uri), config.experiment)
        claims.check_new(store, experiment_id, digest)
    ownership.end_orphans(tracking.tracking_uri(uri), config.experiment,
                          keep=None if resume is None else resume["run_id"])
    run_id = None
    try:
        with tracking.mlflow_run(tracking.tracking_uri(uri), config.experiment, name, run_tags,
                                 run_id=None if resume is None else resume["run_id"]) as active:
            run_id = active.info.run_id
            if on_open is not None:
                on_open(run_id)
            if resume is None:
                tracking.log_params(config.flat())
            try:
                # Locked while it trains, with a heartbeat (suite.job.ownership)
                with ownership.owned(tracking.tracking_uri(uri), run_id, checkpoints):
                    if digest is not None:
                        claims.contest_new(store, experiment_id, digest, run_id)
                    result = _train_and_test(job, run_id, checkpoints, resume)
            except BaseException as exc:
                if checkpoints and checkpoint.checkpoint_path(checkpoints, run_id).is_file():
                    console.print(f"[yellow]run {run_id} stopped; its last finished epoch is "
                                  f"checkpointed: suite run --resume {run_id}[/yellow]")
                if isinstance(exc, TrainingDiverged):
                    tracking.set_tags({"diverged": "true"})
                raise
    except RunClaimed:  # lost the claim: the run this process created is not kept
        if digest is not None and run_id is not None:
            store.delete_run(run_id)
        raise
    except Exception as exc:
        resumable = bool(checkpoints and run_id
                         and checkpoint.checkpoint_path(checkpoints, run_id).is_file())
        fault = tracking.machine_fault(exc, tracking.tracking_uri(uri), run_id, resumable)
        if fault is None:
            raise
        raise fault from None
    if checkpoints is not None:
        checkpoint.remove(checkpoints, run_id)
    return result


def run_name(config: RunConfig, tags: dict[str, str]) -> str:
    """A readable MLflow run name: ``lora-synthetic-trial3`` for a sweep trial (tag ``trial``),
    ``tempme-fp32-evaluation-synthetic-s0`` for a plan run (its row, tag ``plan_row``),
    ``tempme-synthetic-s0`` for any other run."""
    if "trial" in tags:
        return f"{config.method}-{config.dataset}-trial{tags['trial']}"
    what = _slug(tags["plan_row"]) if "plan_row" in tags else config.method
    return f"{what}-{config.dataset}-s{config.train.seed}"


def _slug(text: str) -> str:
    """``TempMe (full fine-tuning)`` -> ``tempme-full-fine-tuning``."""
    return "-".join(re.findall(r"[a-z0-9.]+", text.lower()))


def _train_and_test(job: Job, run_id: str, checkpoints: Path | None,
                    resume: dict[str, Any] | None) -> RunResult:
    """The body of a run inside its MLflow run: train (or resume), select, test, log.
    Other processes than the main one take part in training and evaluation (their tracking
    calls do nothing) and skip the inference timing and the artifacts."""
    config, model, trainer, splits = job.config, job.model, job.trainer, job.splits
    skipped = {name: log_skipped_videos(split) if job.processes.main else 0
               for name, split in splits.items()}
    tracking.log_metrics({f"data/{name}_videos": len(split) for name, split in splits.items()})
    test = splits["test"]
    best_epoch: int | None = None
    selection: dict[str, float] = {}
    training: dict[str, float] = {
        "cost/params_trainable": sum(p.numel() for p in model.trainable_parameters())}
    if job.trains:
        select = {"val": splits.get("val"), "test": test, "last": None}[config.select_on]
        save = None
        if checkpoints is not None:
            path = checkpoint.checkpoint_path(checkpoints, run_id)

            def save(state: dict[str, Any]) -> None:
                checkpoint.save_atomic({"run_id": run_id, "config": config.to_dict(), **state},
                                       path)

        phase = model.search_phase() if resume is None else None
        if phase is not None:  # what a method learns before training (DiffRate: its rates)
            trainer.search(splits["train"], phase)
        with PeakMemory(job.device) as memory:
            kept = trainer.fit(splits["train"], select, save, resume)
        best_epoch, selection = kept.epoch, kept.metrics
        tracking.log_metrics({"selected/epoch": kept.epoch, "selected/step": kept.step})
        training.update(training_figures(trainer.step_seconds, memory.peak_mib,
                                         trainer.seconds_before))
    elif config.select_on == "val":
        # Nothing trains: validation is still evaluated once, so every run has its
        # selection figures (a sweep's objective) and its val/ metrics.
        selection = trainer.evaluate(splits["val"])
        tracking.log_metrics({f"val/{k}": v for k, v in selection.items()}, step=0)
    trained = model.trainable_state()  # before folding: LoRA factors vanish into weights
    model.fold()
    metrics = trainer.evaluate(test, dual_softmax=True)
    tracking.log_metrics({f"test/{k}": v for k, v in metrics.items()})
    if job.processes.main:
        inference = measure_inference(model, config.frames, job.backbone.image_size,
                                      config.words, job.device, default_batch(job.device))
        tracking.log_metrics({**training, **as_metrics(inference)})
        log_outputs(config, trained, metrics, best_epoch)
    return RunResult(run_id, metrics, best_epoch, selection=selection or metrics,
                     skipped={k: v for k, v in skipped.items() if v})


def resume_run(run_id: str, uri: str | None = None, show_progress: bool = True,
               checkpoints: Path = checkpoint.DEFAULT_DIR) -> RunResult:
    """Continue an interrupted run from its checkpoint, in the same MLflow run.

    The run must be in the store (checked before any file is read) and not FINISHED; its lock
    is taken before its checkpoint is read, and a RUNNING run is taken over only when its
    owner is gone (suite.job.ownership).
    """
    from suite.job.config import from_dict

    status = tracking.run_status(tracking.tracking_uri(uri), run_id)
    if status is None:
        raise UserError(f"run {run_id} is not in the MLflow store {tracking.tracking_uri(uri)}; "
                        f"pass the store it was logged to with --tracking-uri")
    if status == "FINISHED":
        raise UserError(f"run {run_id} has already finished; nothing to resume")
    with ownership.claim(checkpoints, run_id, tracking.tracking_uri(uri)):
        state = checkpoint.load(checkpoints, run_id)
        config = from_dict(state["config"])  # a broken config is refused before the takeover
        logged_in = tracking.experiment_of_run(tracking.tracking_uri(uri), run_id)
        if config.experiment != logged_in:
            raise UserError(f"the checkpoint of run {run_id} names experiment "
                            f"{config.experiment!r}, but the run is in {logged_in!r}; start "
                            f"the run again")
        if state["epoch"] > config.train.epochs:
            raise UserError(f"the checkpoint of run {run_id} is after epoch {state['epoch']} "
                            f"of a run of {config.train.epochs} epochs; start the run again")
        ownership.take_over(tracking.tracking_uri(uri), run_id)
        if distributed.from_environment().main:  # one resumer across machines (suite.job.claims)
            claims.claim_resume(tracking.client(tracking.tracking_uri(uri)), run_id)
        return run(config, uri, show_progress, checkpoints=checkpoints, resume=state)


def training_figures(step_seconds: list[float], peak_mib: float, total: float
                     ) -> dict[str, float]:
    """Seconds per step after the first steps (warm-up excluded), total time, peak memory."""
    steady = step_seconds[2:] or step_seconds
    return {"cost/seconds_per_step": float(np.median(steady)), "cost/training_seconds": total,
            "cost/training_peak_mib": peak_mib}


def log_outputs(config: RunConfig, trained: dict[str, torch.Tensor],
                metrics: dict[str, float], best_epoch: int | None) -> None:
    """Artifacts: the resolved config (replayable), the metrics, the trained weights. Written
    through Python files, so that a full disk is an OSError naming the file (torch.save to a
    path says only ``unexpected pos``)."""
    from suite.common.faults import writing

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config.save(folder / "config.json")
        with writing(folder / "metrics.json"):
            (folder / "metrics.json").write_text(json.dumps(
                {"test": metrics, "best_epoch": best_epoch}, indent=2, sort_keys=True) + "\n")
        for name in ("config.json", "metrics.json"):
            tracking.log_artifact(folder / name)
        if trained:
            weights = folder / "trained_weights.pt"
            with writing(weights), weights.open("wb") as file:
                torch.save(trained, file)
            tracking.log_artifact(weights)


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
