"""Which evaluation's weights a run keeps: the best by one selection metric, ties decided by a
rule (the references differ: TempMe keeps the earlier, CLIP4Clip the later)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Kept:
    """The kept evaluation: its metrics, the epoch (0-based) and global step after which it
    ran, and the trainable weights then."""

    metrics: dict[str, float]
    epoch: int
    step: int
    weights: dict[str, torch.Tensor]

    def to_state(self) -> dict[str, Any]:
        """Plain types and tensors only (checkpoints load with ``weights_only=True``)."""
        return {"metrics": self.metrics, "epoch": self.epoch, "step": self.step,
                "weights": self.weights}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Kept:
        return cls(dict(state["metrics"]), int(state["epoch"]), int(state["step"]),
                   dict(state["weights"]))


class Selection:
    """Keeps the best evaluation offered so far by ``metric`` (higher is better)."""

    def __init__(self, metric: str, ties: str, kept: Kept | None = None) -> None:
        self.metric, self.ties, self.kept = metric, ties, kept

    def better(self, metrics: dict[str, float]) -> bool:
        if self.kept is None:
            return True
        new, old = metrics[self.metric], self.kept.metrics[self.metric]
        return new > old or (new == old and self.ties == "later")

    def offer(self, metrics: dict[str, float], epoch: int, step: int,
              weights: dict[str, torch.Tensor]) -> bool:
        """Keep this evaluation if it is better; say whether it was kept."""
        if not self.better(metrics):
            return False
        self.kept = Kept(dict(metrics), epoch, step, weights)
        return True
