"""ToMe baseline: frozen CLIP + LoRA, token merging inside every frame in every block.

Bolya et al. (ICLR 2023) merge ``r`` tokens per block by bipartite soft matching on the keys,
after attention, with proportional attention; frames stay independent and their CLS embeddings
are mean-pooled. That is exactly TempMe's ImgMe step applied in all blocks with no ClipMe layer,
so this method runs :class:`tempme.encoder.TempMeVideoEncoder` with such a schedule (no clip
position embeddings, nothing joins frames).

The default ``r`` per backbone makes ToMe cost about what TempMe costs, for a comparison at equal
compute (multiply-adds of the video tower for 12 frames, counted by suite.cost.flops): ViT-B/32
r = 3 gives 33.8 GMACs and 12 x 14 output tokens against TempMe's 34.8 and 1 x 97 (unmerged 53.0);
ViT-B/16 r = 13 gives 124.6 against TempMe's 121.8; tiny-clip uses r = 3.

Padding frames (``data.policy=clip4clip``) are safe: tokens merge only inside their own frame and
attention never crosses frames, so a padding frame touches no real token, and the masked mean
leaves its embedding out; a padded clip embeds exactly as its real frames alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cliptools.lora import add_lora
from methods.base import RetrievalModel, backbone_parameter_ids
from methods.registry import Method
from methods.tempme import checked_schedule
from tempme.encoder import TempMeVideoEncoder
from tempme.schedule import TempMeSchedule

DEFAULT_R = {"ViT-B-32": 3, "ViT-B-16": 13, "tiny-clip": 3}


@dataclass(frozen=True)
class ToMeConfig:
    """``r``: tokens merged per frame in each block (an int, or one int per block);
    ``rank``: LoRA rank on both towers."""

    r: int | list[int] = 3
    rank: int = 8


def schedule_of(config: ToMeConfig) -> TempMeSchedule:
    """Per-frame merging in every block: an ImgMe-only TempMe schedule."""
    return TempMeSchedule(imgme_r=config.r if isinstance(config.r, int) else tuple(config.r),
                          clip_layers=(), clip_groups=(), ratio_cross=0.0, ratio_intra=0.0,
                          clip_pos_embed=False)


def validate(config: ToMeConfig, backbone: str, frames: int) -> None:
    if config.rank < 1:
        raise ValueError(f"rank must be >= 1, got {config.rank}")
    checked_schedule(schedule_of(config), backbone, frames)


def build(clip: Any, config: ToMeConfig, frames: int, backbone: str) -> RetrievalModel:
    ids = backbone_parameter_ids(clip)
    peft_model = add_lora(clip, rank=config.rank)
    encoder = TempMeVideoEncoder(clip.visual, schedule_of(config), frames)
    return RetrievalModel(clip, encoder, ids, peft_model=peft_model)


METHOD = Method(
    name="tome",
    description="ToMe: frozen CLIP + LoRA, r tokens merged per frame in every block, mean pooling",
    reference="Bolya et al., ICLR 2023 (Token Merging: Your ViT But Faster)",
    config_cls=ToMeConfig,
    build=build,
    defaults_for=lambda backbone, frames: {"r": DEFAULT_R[backbone]} if backbone in DEFAULT_R
    else {},
    search_space=lambda trial: {"r": trial.suggest_int("method.r", 1, 8)},
    validate=validate,
)
