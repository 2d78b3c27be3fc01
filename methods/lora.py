"""LoRA baseline: frozen CLIP, rank-8 LoRA on every fused q, k, v projection of both towers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from pydantic import Field

from cliptools.lora import add_lora
from methods.base import MeanPoolVideoEncoder, RetrievalModel, backbone_parameter_ids
from methods.registry import Method


@dataclass(frozen=True)
class LoraMethodConfig:
    """``rank``: LoRA rank (scale stays 1)."""

    rank: Annotated[int, Field(ge=1)] = 8


def build(clip, config: LoraMethodConfig, frames: int, backbone: str) -> RetrievalModel:
    ids = backbone_parameter_ids(clip)
    peft_model = add_lora(clip, rank=config.rank)
    return RetrievalModel(clip, MeanPoolVideoEncoder(clip.visual), ids, peft_model=peft_model)


METHOD = Method(
    name="lora",
    description="Frozen CLIP + LoRA (rank 8) on the fused qkv of both towers, mean pooling",
    reference="Hu et al., ICLR 2022 (LoRA); baseline of Shen et al., ICLR 2025 (TempMe)",
    config_cls=LoraMethodConfig,
    build=build,
    search_space=lambda trial: {"rank": trial.suggest_categorical("method.rank", [4, 8, 16])},
)
