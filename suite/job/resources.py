"""Whether a run fits the machine, checked before anything is allocated or logged.

``suite.job.engine.check`` calls :func:`check_memory`: the run's peak memory, estimated from its
settings (:mod:`suite.cost.memory`), against what the device has free now (host memory, or the
cgroup's limit when lower; a CUDA device's free memory). A run that would not fit is refused in
one line saying what to lower; ``train.memory_check=false`` turns the check off (an estimate can
be wrong). :func:`check_frames` refuses more frames than the dataset card says its videos give.
"""

from __future__ import annotations

from typing import Any

import torch

from suite.cost.memory import (
    MemoryEstimate,
    available_memory,
    estimate,
    gib,
    local_processes,
    model_shape,
    per_process,
)
from suite.data.cards import DatasetCard
from suite.errors import UserError
from suite.job.config import RunConfig, trains


def data_size(config: RunConfig, card: DatasetCard) -> int | None:
    """The square size frames are decoded at (``data.size``), None for the model's input size
    (real datasets' ``size = 0``) or a value the loader will refuse."""
    size = {**card.options, **config.data_options}.get("size")
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None


def run_estimate(config: RunConfig, knobs: Any, card: DatasetCard, device: torch.device,
                 world: int = 1) -> MemoryEstimate | None:
    """The estimated peak of one process of ``config`` on ``device`` (its share of the batch
    among ``world`` processes), evaluation at the larger of ``train.eval_batch_size`` and the
    inference timing's batch; None for a backbone whose shapes its config does not give."""
    from suite.cost.device import resolve_precision
    from suite.cost.profiling import default_batch

    shape = model_shape(config.method, config.backbone, config.frames, knobs)
    if shape is None:
        return None
    t = config.train
    precision = resolve_precision(t.precision, device)
    # auto evaluates in bf16 on a CPU only where measured faster; fp32 counts more, unmeasured
    eval_precision = ("fp32" if t.precision == "auto" and device.type == "cpu"
                      else resolve_precision(t.precision, device, "eval"))
    return estimate(shape, per_process(t.batch_size, world), config.frames, config.words,
                    max(t.eval_batch_size, default_batch(device)), precision, eval_precision,
                    data_size(config, card), trains(config), t.num_workers)


def check_memory(config: RunConfig, knobs: Any, card: DatasetCard, device: torch.device,
                 world: int = 1) -> MemoryEstimate | None:
    """Refuse (one-line UserError) a run whose estimated peak exceeds the memory available on
    ``device``; on the CPU the run's processes on this machine share it. Nothing is checked
    under ``train.memory_check=false``. Returns the estimate."""
    if not config.train.memory_check:
        return None
    found = run_estimate(config, knobs, card, device, world)
    if found is None:
        return None
    sharing = local_processes() if device.type == "cpu" else 1
    needed = found.peak * sharing
    available, what = available_memory(device)
    if needed > available:
        each = f" for {sharing} processes" if sharing > 1 else ""
        raise UserError(
            f"estimated peak memory {gib(needed)}{each} ({found.phase}, batch "
            f"{config.train.batch_size}, {config.frames} frames, eval batch "
            f"{config.train.eval_batch_size}) exceeds the {gib(available)} of {what}; lower "
            f"--batch-size, --frames or train.eval_batch_size, or pass "
            f"--set train.memory_check=false to run anyway")
    return found


def check_frames(config: RunConfig, card: DatasetCard) -> None:
    """Refuse more frames per video than the card says its videos give (``max_frames``)."""
    limit = card.max_frames
    if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool)
                              or limit < 1):
        raise UserError(f"card {card.name}: max_frames must be a positive whole number, "
                        f"got {limit!r}")
    if limit is not None and config.frames > limit:
        raise UserError(f"frames {config.frames} exceeds what {card.name}'s videos give "
                        f"(max_frames {card.max_frames} in its card); use --frames N with "
                        f"N <= {card.max_frames}")
