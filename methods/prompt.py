"""Prompt baseline: VPT-deep on the frozen vision tower, LoRA on the frozen text tower.

Vision (Jia et al., ECCV 2022, VPT-deep): after the patch and CLS tokens are embedded (position
embedding, ``ln_pre``), ``num_prompts`` learnable tokens go between the CLS token and the patch
tokens; at the input of every later block the prompt tokens leaving the previous block are
replaced by that block's own fresh prompts (``depth x num_prompts x width`` parameters). Prompts
carry no position embedding and are dropped after the last block, before ``ln_post``, pooling
and ``proj``, so the CLS output is pooled as open_clip pools it. Prompts are initialised as in
VPT's release: Xavier-uniform in ``[-v, v]`` with ``v = sqrt(6 / (3 * patch_h * patch_w + width))``.
Frames are encoded one by one and mean-pooled (CLIP4Clip meanP), like the ``lora`` baseline.

The forward is :class:`PromptedVideoEncoder`, which reuses the tower's own modules (``conv1``,
``class_embedding``, ``positional_embedding``, ``patch_dropout``, ``ln_pre``, the blocks,
``ln_post``, ``proj``) and never changes them. With ``num_prompts = 0`` it is the tower's forward.

Text: ``cliptools.lora.add_lora`` targets every fused qkv projection of the module it is given, so
calling it on ``clip.transformer`` (the text tower alone) gives rank-``rank`` LoRA on the text
tower exactly as the ``lora`` baseline has it, and nothing on the vision tower; it folds away at
inference. Prompts cannot be folded: the prompt tokens cost extra multiply-adds in every block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from cliptools.lora import add_lora
from cliptools.towers import check_vision_transformer, masked_mean
from methods.base import RetrievalModel, backbone_parameter_ids
from methods.registry import Method


@dataclass(frozen=True)
class PromptConfig:
    """``num_prompts``: prompt tokens per vision block (0: none); ``rank``: text-tower LoRA rank."""

    num_prompts: Annotated[int, Field(ge=0)] = 8
    rank: Annotated[int, Field(ge=1)] = 8


def _check_visual(visual: Any) -> None:
    check_vision_transformer(visual)
    if getattr(visual, "attn_pool", None) is not None:
        raise TypeError("prompt tuning supports towers without an attentional pool")
    if getattr(visual, "pool_type", "tok") not in ("tok", "avg"):
        raise TypeError(f"unsupported vision pool type {visual.pool_type!r}; valid: tok, avg")


class PromptedVideoEncoder(nn.Module):
    """VPT-deep over an open_clip ``VisionTransformer`` (held, never modified), per frame, then
    the masked mean of the L2-normalised frame embeddings.

    ``forward(frames (B, F, 3, H, W), mask (B, F) bool) -> (B, D)``; ``encode_images(images
    (N, 3, H, W)) -> (N, D)`` is the prompted tower alone.
    """

    visual: Any  # an open_clip VisionTransformer (its submodules are read by name)

    def __init__(self, visual: nn.Module, num_prompts: int) -> None:
        super().__init__()
        _check_visual(visual)
        self.visual = visual
        self.num_prompts = num_prompts
        ref = self.visual.class_embedding
        depth, width = len(self.visual.transformer.resblocks), ref.shape[-1]
        patch = self.visual.conv1.kernel_size
        bound = math.sqrt(6.0 / (3 * patch[0] * patch[1] + width))
        prompts = torch.empty(depth, num_prompts, width, dtype=ref.dtype, device=ref.device)
        self.prompts = nn.Parameter(nn.init.uniform_(prompts, -bound, bound))

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        v = self.visual
        x = v.conv1(images)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = v.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        x = v.ln_pre(v.patch_dropout(x))
        n, p = x.shape[0], self.num_prompts
        batch_first = getattr(v.transformer, "batch_first", True)
        for i, block in enumerate(v.transformer.resblocks):
            prompts = self.prompts[i].to(x.dtype).unsqueeze(0).expand(n, -1, -1)
            kept = x[:, 1:] if i == 0 else x[:, 1 + p:]  # drop the previous block's prompts
            x = torch.cat([x[:, :1], prompts, kept], dim=1)
            x = block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)
        x = torch.cat([x[:, :1], x[:, 1 + p:]], dim=1)  # prompts leave before pooling
        if getattr(v, "final_ln_after_pool", False):
            pooled = v.ln_post(self._pool(x))
        else:
            pooled = self._pool(v.ln_post(x))
        return pooled @ v.proj if v.proj is not None else pooled

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        avg = getattr(self.visual, "pool_type", "tok") == "avg"
        return x[:, 1:].mean(dim=1) if avg else x[:, 0]

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, f = frames.shape[:2]
        per_frame = self.encode_images(frames.flatten(0, 1)).view(b, f, -1)
        return masked_mean(F.normalize(per_frame, dim=-1), mask)


def build(clip: Any, config: PromptConfig, frames: int, backbone: str) -> RetrievalModel:
    ids = backbone_parameter_ids(clip)
    clip.requires_grad_(False)
    peft_model = add_lora(clip.transformer, rank=config.rank)  # text tower only
    encoder = PromptedVideoEncoder(clip.visual, config.num_prompts)
    return RetrievalModel(clip, encoder, ids, peft_model=peft_model)


METHOD = Method(
    name="prompt",
    description="Frozen CLIP + VPT-deep prompts (8/block) on vision, LoRA on text, mean pooling",
    reference="Jia et al., ECCV 2022 (VPT); Hu et al., ICLR 2022 (LoRA, text tower)",
    config_cls=PromptConfig,
    build=build,
    search_space=lambda trial: {
        "num_prompts": trial.suggest_categorical("method.num_prompts", [4, 8, 16, 32])},
)
