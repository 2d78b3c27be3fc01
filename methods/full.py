"""Full fine-tuning with CLIP4Clip's mean pooling: every backbone weight trains."""

from __future__ import annotations

from dataclasses import dataclass

from methods.base import MeanPoolVideoEncoder, RetrievalModel, backbone_parameter_ids
from methods.registry import Method


@dataclass(frozen=True)
class FullConfig:
    """No knobs beyond training: pretrained weights use ``train.lr_pretrained``."""


def build(clip, config: FullConfig, frames: int, backbone: str) -> RetrievalModel:
    ids = backbone_parameter_ids(clip)
    clip.requires_grad_(True)
    return RetrievalModel(clip, MeanPoolVideoEncoder(clip.visual), ids)


METHOD = Method(
    name="full",
    description="Full fine-tuning, mean-pooled frame embeddings (CLIP4Clip meanP)",
    reference="Luo et al., Neurocomputing 2022 (CLIP4Clip)",
    config_cls=FullConfig,
    build=build,
    learning_rates=("lr_pretrained",),
)
