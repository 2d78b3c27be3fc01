"""TempMe: frozen CLIP, LoRA on both towers, progressive temporal token merging in the video tower.

Knobs left at ``None`` take the backbone's default schedule (``tempme.defaults``): for ViT-B/32
with 12 frames, ImgMe r = 2 in layers 0-7 and ClipMe layers 8, 9, 10 with groups 2, 2, 3.
Clips padded with masked frames are refused (see :class:`UnpaddedTempMeEncoder`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from methods.base import RetrievalModel, backbone_parameter_ids
from methods.registry import Method
from tempme.defaults import default_schedule
from tempme.encoder import TempMeOutput, TempMeVideoEncoder
from tempme.lora import add_lora
from tempme.schedule import TempMeSchedule

SCHEDULE_FIELDS = ("imgme_r", "clip_layers", "clip_groups", "ratio_cross", "ratio_intra",
                   "clip_pos_embed")


@dataclass(frozen=True)
class ScheduleConfig:
    """The merge schedule knobs (``None``: the backbone's default)."""

    imgme_r: int | list[int] | None = None
    clip_layers: list[int] | None = None
    clip_groups: list[int] | None = None
    ratio_cross: float | None = None
    ratio_intra: float | None = None
    clip_pos_embed: bool = True


@dataclass(frozen=True)
class TempMeConfig(ScheduleConfig):
    """The schedule knobs and the LoRA rank."""

    rank: int = 8


def vision_depth(backbone: str) -> int:
    """Number of blocks of an open_clip vision tower, read from its config (no model built).

    Embedded configs (tiny-clip) must be registered first (``suite.backbone``); an unknown name
    is an error rather than a guess, so that no schedule is validated against the wrong depth.
    """
    import open_clip

    config = open_clip.get_model_config(backbone)
    if config is None:
        raise ValueError(f"unknown backbone {backbone!r}: open_clip has no config for it")
    return int(config.get("vision_cfg", {}).get("layers", 12))


def schedule_of(config: ScheduleConfig, backbone: str, frames: int) -> TempMeSchedule:
    """The validated schedule: the backbone's default with the config's explicit knobs on top."""
    depth = vision_depth(backbone)
    base = default_schedule(backbone, frames, depth=None if _known(backbone) else depth).as_dict()
    chosen = {k: getattr(config, k) for k in SCHEDULE_FIELDS if getattr(config, k) is not None}
    schedule = TempMeSchedule.from_dict({**base, **chosen})
    schedule.validate(frames, depth)
    return schedule


def _known(backbone: str) -> bool:
    from tempme.defaults import known_backbones

    return backbone in known_backbones()


class UnpaddedTempMeEncoder(TempMeVideoEncoder):
    """The TempMe encoder, refusing clips with padding frames.

    ClipMe joins neighbouring frames into one sequence and merges a fixed number of tokens per
    sequence by bipartite matching, so padding tokens would be matched with and attended by real
    ones; leaving them out would change every padded clip's merge counts and need attention
    masks, a different algorithm. TempMe's own loader never pads (short clips repeat frames, the
    suite's ``tempme`` policy), so the method refuses padding rather than define its own rule
    (``Method.accepts_padding``; the run's check refuses ``data.policy=clip4clip`` up front).
    """

    def forward_with_trace(self, frames: torch.Tensor, mask: torch.Tensor,
                           track_sources: bool = False) -> TempMeOutput:
        if int(mask.bool().sum()) < mask.numel():
            raise ValueError("tempme cannot take padded clips (a frame mask with zeros): ClipMe "
                             "would merge padding into real tokens; use data.policy=tempme")
        return super().forward_with_trace(frames, mask, track_sources)


def build_tempme(clip: Any, config: ScheduleConfig, frames: int, backbone: str,
                 rank: int | None) -> RetrievalModel:
    """A TempMe retrieval model with LoRA of ``rank``; ``None`` trains every backbone weight."""
    ids = backbone_parameter_ids(clip)
    schedule = schedule_of(config, backbone, frames)
    peft_model = add_lora(clip, rank=rank) if rank is not None else None
    if rank is None:
        clip.requires_grad_(True)
    encoder = UnpaddedTempMeEncoder(clip.visual, schedule, frames)
    for p in encoder.clip_position_parameters():
        p.requires_grad_(True)
    return RetrievalModel(clip, encoder, ids, peft_model=peft_model)


def build(clip: Any, config: TempMeConfig, frames: int, backbone: str) -> RetrievalModel:
    return build_tempme(clip, config, frames, backbone, rank=config.rank)


def search_space(trial: Any) -> dict[str, Any]:
    return {
        "ratio_cross": trial.suggest_float("method.ratio_cross", 0.1, 0.5, step=0.05),
        "ratio_intra": trial.suggest_float("method.ratio_intra", 0.0, 0.3, step=0.05),
        "imgme_r": trial.suggest_int("method.imgme_r", 0, 4),
    }


def validate(config: ScheduleConfig, backbone: str, frames: int) -> None:
    schedule_of(config, backbone, frames)


METHOD = Method(
    name="tempme",
    description="TempMe: frozen CLIP + LoRA, progressive temporal token merging (ImgMe, ClipMe)",
    reference="Shen et al., ICLR 2025 (TempMe), arXiv 2409.01156",
    config_cls=TempMeConfig,
    build=build,
    search_space=search_space,
    validate=validate,
    accepts_padding=False,
)
