"""TempMe with full fine-tuning: the same merging, every backbone weight trains (no LoRA)."""

from __future__ import annotations

from typing import Any

from methods.base import RetrievalModel
from methods.registry import Method
from methods.tempme import ScheduleConfig, build_tempme, search_space, validate


def build(clip: Any, config: ScheduleConfig, frames: int, backbone: str) -> RetrievalModel:
    return build_tempme(clip, config, frames, backbone, rank=None)


METHOD = Method(
    name="tempme-full",
    description="TempMe merging with full fine-tuning of the backbone",
    reference="Shen et al., ICLR 2025 (TempMe), arXiv 2409.01156",
    config_cls=ScheduleConfig,
    build=build,
    search_space=search_space,
    validate=validate,
    learning_rates=("lr", "lr_pretrained"),
    accepts_padding=False,  # ClipMe would merge padding into real tokens (methods.tempme)
)
