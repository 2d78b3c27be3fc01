"""TempMe: frozen CLIP, LoRA on both towers, progressive temporal token merging in the video tower.

Knobs left at ``None`` take the backbone's default schedule (``tempme.defaults``): for ViT-B/32
with 12 frames, ImgMe r = 2 in layers 0-7 and ClipMe layers 8, 9, 10 with groups 2, 2, 3.
Clips padded with masked frames are refused (see :class:`UnpaddedTempMeEncoder`).

``method.base`` says what trains besides the clip position embeddings: ``lora`` (the paper's
TempMe: LoRA of ``rank`` on both towers), ``prompt`` (the ``prompt`` method's tuning: VPT-deep
prompts in the vision tower, here inside the merging encoder, and LoRA on the text tower) or
``adapter`` (the ``adapter`` method's bottleneck adapters after every MLP of both towers), so
that TempMe's merging can be put on top of the other parameter-efficient methods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
from torch import nn

from cliptools.lora import add_lora
from cliptools.towers import vision_depth
from methods.base import RetrievalModel, backbone_parameter_ids
from methods.registry import Method
from tempme.defaults import default_schedule
from tempme.encoder import TempMeOutput, TempMeVideoEncoder
from tempme.schedule import TempMeSchedule

#: TempMe's schedule knobs: the fields of tempme's TempMeSchedule, the one place they are named.
SCHEDULE_FIELDS = tuple(f.name for f in fields(TempMeSchedule))


@dataclass(frozen=True)
class ScheduleConfig:
    """The merge schedule knobs as method options, one per ``SCHEDULE_FIELDS`` in that order
    (``None``: the backbone's default; tested to match)."""

    imgme_r: int | list[int] | None = None
    clip_layers: list[int] | None = None
    clip_groups: list[int] | None = None
    ratio_cross: float | None = None
    ratio_intra: float | None = None
    clip_pos_embed: bool = True


@dataclass(frozen=True)
class TempMeConfig(ScheduleConfig):
    """The schedule knobs, what trains (``base``) and its sizes: ``rank`` (LoRA of both towers
    with ``base="lora"``, of the text tower with ``"prompt"``; unused with ``"adapter"``),
    ``num_prompts`` (prompts per vision block, ``"prompt"`` only; default 8) and ``bottleneck``
    (adapter width, ``"adapter"`` only; default min(64, width // 4))."""

    rank: int = 8
    base: Literal["lora", "prompt", "adapter"] = "lora"
    num_prompts: int | None = None
    bottleneck: int | None = None


def checked_schedule(schedule: TempMeSchedule, backbone: str, frames: int) -> TempMeSchedule:
    """``schedule`` once checked (``TempMeSchedule.validate``) against ``frames`` and the depth
    of ``backbone``'s vision tower: how every merging method (tempme, tempme-full, tome)
    refuses a schedule that cannot run."""
    schedule.validate(frames, vision_depth(backbone))
    return schedule


def schedule_of(config: ScheduleConfig, backbone: str, frames: int) -> TempMeSchedule:
    """The validated schedule: the backbone's default with the config's explicit knobs on top."""
    depth = None if _known(backbone) else vision_depth(backbone)
    base = default_schedule(backbone, frames, depth=depth).as_dict()
    chosen = {k: getattr(config, k) for k in SCHEDULE_FIELDS if getattr(config, k) is not None}
    return checked_schedule(TempMeSchedule.from_dict({**base, **chosen}), backbone, frames)


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


class PromptedTempMeEncoder(UnpaddedTempMeEncoder):
    """TempMe with VPT-deep prompts (the ``prompt`` method's, Jia et al., ECCV 2022): every
    block's attention also attends to that block's ``num_prompts`` learnable tokens, inserted
    after each sequence's CLS tokens (size 1, never merged) and dropped after the attention.

    In VPT-deep a block's prompt outputs are discarded (the next block brings fresh prompts, the
    last block's are dropped before pooling), so running the MLP on them changes nothing:
    dropping them after attention gives the same embeddings at less cost. Without merging this
    encoder equals ``methods.prompt.PromptedVideoEncoder`` with the same prompts (tested).
    """

    def __init__(self, visual: nn.Module, schedule: TempMeSchedule, num_frames: int,
                 num_prompts: int) -> None:
        super().__init__(visual, schedule, num_frames)
        ref = self.visual.class_embedding
        width = ref.shape[-1]
        patch = self.visual.conv1.kernel_size
        # VPT's initialisation, as methods/prompt.py: Xavier-uniform bound over the patch.
        bound = math.sqrt(6.0 / (3 * patch[0] * patch[1] + width))
        prompts = torch.empty(self.depth, num_prompts, width, dtype=ref.dtype, device=ref.device)
        self.prompts = nn.Parameter(nn.init.uniform_(prompts, -bound, bound))

    def attend(self, layer: int, block: Any, x: torch.Tensor, sizes: torch.Tensor | None,
               cls: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.prompts.shape[1]
        prompts = self.prompts[layer].to(x.dtype).unsqueeze(0).expand(x.shape[0], -1, -1)
        x = torch.cat([x[:, :cls], prompts, x[:, cls:]], dim=1)
        if sizes is not None:
            ones = torch.ones_like(sizes[:, :1]).expand(-1, p, *sizes.shape[2:])
            sizes = torch.cat([sizes[:, :cls], ones, sizes[:, cls:]], dim=1)
        out, keys = self._attention(block, x, sizes)
        keep = lambda t: torch.cat([t[:, :cls], t[:, cls + p:]], dim=1)  # noqa: E731
        return keep(out), keep(keys)


def build_tempme(clip: Any, config: ScheduleConfig, frames: int, backbone: str,
                 rank: int | None, base: str = "lora", num_prompts: int | None = None,
                 bottleneck: int | None = None) -> RetrievalModel:
    """A TempMe retrieval model: with ``base="lora"`` LoRA of ``rank`` on both towers (``None``:
    every backbone weight trains); ``"prompt"``: VPT-deep prompts in the merging encoder and
    LoRA of ``rank`` on the text tower; ``"adapter"``: bottleneck adapters in both towers."""
    ids = backbone_parameter_ids(clip)
    schedule = schedule_of(config, backbone, frames)
    peft_model = None
    encoder: UnpaddedTempMeEncoder
    if base == "prompt":
        clip.requires_grad_(False)
        peft_model = add_lora(clip.transformer, rank=rank or 8)  # text tower only
        encoder = PromptedTempMeEncoder(clip.visual, schedule, frames,
                                        8 if num_prompts is None else num_prompts)
    elif base == "adapter":
        from methods.adapter import add_adapters

        clip.requires_grad_(False)
        for tower in (clip.visual.transformer, clip.transformer):
            for p in add_adapters(tower, bottleneck):
                p.requires_grad_(True)
        encoder = UnpaddedTempMeEncoder(clip.visual, schedule, frames)
    else:
        peft_model = add_lora(clip, rank=rank) if rank is not None else None
        if rank is None:
            clip.requires_grad_(True)
        encoder = UnpaddedTempMeEncoder(clip.visual, schedule, frames)
    for p in encoder.clip_position_parameters():
        p.requires_grad_(True)
    return RetrievalModel(clip, encoder, ids, peft_model=peft_model)


def build(clip: Any, config: TempMeConfig, frames: int, backbone: str) -> RetrievalModel:
    return build_tempme(clip, config, frames, backbone, rank=config.rank, base=config.base,
                        num_prompts=config.num_prompts, bottleneck=config.bottleneck)


def group_choices(frames: int, steps: int = 3) -> list[str]:
    """Ways ClipMe can join ``frames`` sequences into one in at most ``steps`` steps: the
    frames merged per step, ascending, as ``"2,2,3"`` (Optuna's categorical values)."""
    def split(rest: int, low: int, left: int) -> list[list[int]]:
        if rest == 1:
            return [[]]
        if left == 0:
            return []
        return [[g, *tail] for g in range(low, rest + 1) if rest % g == 0
                for tail in split(rest // g, g, left - 1)]

    if frames == 1:
        return ["1"]
    return [",".join(map(str, groups)) for groups in split(frames, 2, steps)]


def search_space(trial: Any, backbone: str | None = None, frames: int | None = None
                 ) -> dict[str, Any]:
    """ImgMe r and the keep ratios; given the run's ``backbone`` and ``frames``, also the
    ClipMe schedule: the frames merged per step (``clip_groups``) on consecutive layers from
    a first ClipMe layer in the upper half of the tower (``clip_layers``)."""
    space: dict[str, Any] = {
        "ratio_cross": trial.suggest_float("method.ratio_cross", 0.1, 0.5, step=0.05),
        "ratio_intra": trial.suggest_float("method.ratio_intra", 0.0, 0.3, step=0.05),
        "imgme_r": trial.suggest_int("method.imgme_r", 0, 4),
    }
    if backbone is None or frames is None:
        return space
    depth = vision_depth(backbone)
    groups = [int(g) for g in
              trial.suggest_categorical("method.clip_groups", group_choices(frames)).split(",")]
    first = trial.suggest_int("method.clip_first_layer", depth // 2, max(depth // 2, depth - 3))
    first = min(first, depth - len(groups))  # fewer steps than 3 fit anywhere in the range
    return {**space, "clip_groups": groups, "clip_layers": list(range(first, first + len(groups)))}


def validate(config: ScheduleConfig, backbone: str, frames: int) -> None:
    schedule_of(config, backbone, frames)
    if not isinstance(config, TempMeConfig):
        return
    if config.num_prompts is not None and (config.base != "prompt" or config.num_prompts < 0):
        raise ValueError(f"method.num_prompts takes an integer >= 0 with method.base=prompt "
                         f"(got {config.num_prompts} with base {config.base})")
    if config.bottleneck is not None and (config.base != "adapter" or config.bottleneck < 1):
        raise ValueError(f"method.bottleneck takes an integer >= 1 with method.base=adapter "
                         f"(got {config.bottleneck} with base {config.base})")
    if config.rank < 1:
        raise ValueError(f"method.rank must be >= 1, got {config.rank}")


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
