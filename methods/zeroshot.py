"""Zero-shot CLIP: frozen backbone, per-frame embeddings mean-pooled, no training."""

from __future__ import annotations

from dataclasses import dataclass

from methods.base import MeanPoolVideoEncoder, RetrievalModel, backbone_parameter_ids
from methods.registry import Method


@dataclass(frozen=True)
class ZeroShotConfig:
    """No knobs: the frozen backbone as it is."""


def build(clip, config: ZeroShotConfig, frames: int, backbone: str) -> RetrievalModel:
    ids = backbone_parameter_ids(clip)
    clip.requires_grad_(False)
    return RetrievalModel(clip, MeanPoolVideoEncoder(clip.visual), ids)


METHOD = Method(
    name="zeroshot",
    description="Frozen CLIP, frame embeddings mean-pooled; nothing trains",
    reference="Radford et al., ICML 2021 (CLIP); Luo et al., 2021 (CLIP4Clip mean pooling)",
    config_cls=ZeroShotConfig,
    build=build,
    learning_rates=(),
)
