"""DGL: Dynamic Global-Local prompt tuning (Yang et al., AAAI 2024), as knightyxp/DGL builds it.

Read for this module (none of it copied): knightyxp/DGL at commit 9139fd1, ``modules/clip.py``
(``CLIP.encode_prompt`` ~655-683, ``VisualTransformer.incorporate_prompt`` ~386-411 and
``forward_deep_prompt`` ~413-450, ``ResidualAttentionBlock.forward`` ~272-308,
``CLIP.encode_text`` ~770-797 with ``incorporate_text_prompt`` / ``forward_deep_text_prompt``
~728-768, ``CLIP.encode_image`` ~685-712), ``modules/clip4clip.py`` (the loss, ~277-290),
``params.py`` (the defaults and the trainable modules, ~240-262) and ``scripts/msrvtt.sh``.

The CLIP backbone is frozen. What trains is a prompt generator and a few global prompts:

- **Shared latent space** (``latent``, ``shared_latent_space=transformer`` in scripts/msrvtt.sh):
  ``8 + 4F`` latent tokens per layer (an ``nn.Embedding`` of width ``layers x width``), one
  CLIP-style residual attention block (``width // 64`` heads, 4x QuickGELU MLP) run over each
  layer's tokens; the first 8 outputs go through an MLP (width -> 2 width -> text width) and
  become that layer's text prompts, the other 4F become that layer's frame prompts, 4 for each
  frame. ``latent="linear"`` (the paper's lighter variant) instead learns 4 tokens per layer used
  as every frame's prompts, and two linear maps of them as the text prefix and postfix prompts.
  The prompts do not depend on the input: the official code recomputes them for every batch row.
- **Text**: the layer-0 text prompts are inserted after the start token and after the last word
  position (4 prefix, 4 postfix, no position embedding; the words keep theirs); at every later
  layer the prompt positions are replaced by that layer's prompts. The causal mask spans the
  longer sequence, so the postfix prompts sit after every possible EOT and never reach the
  embedding (as in the official code). The embedding is the EOT token's projected feature.
- **Video** (global-local attention): each frame's sequence is its CLS token, its 4 frame
  prompts, its patches (the frame prompts are replaced at the input of every later block); 4
  global prompts per video (learned, Xavier-uniform as VPT) enter at the input only. In every
  block, each frame's tokens attend to the global prompts and that frame's tokens; the global
  prompts attend to themselves and to every token of every frame. Residuals and MLPs as CLIP.
  The video embedding is the first global prompt after ``ln_post`` and ``proj``
  (``visual_output_type=global_prompt0``). The official code never reads the frame mask, so
  padding frames would reach the embedding through the global prompts: the method refuses
  padded clips (``Method.accepts_padding``; a mask with zeros raises).
- **Loss**: the symmetric cross-entropy of ``modules/losses.py`` ``CrossEn`` over CLIP's
  similarity logits (the suite's InfoNCE); the logit scale is frozen (``freeze_clip=1``).

Trainable parameters (official configuration, ViT-B/32 and ViT-B/16 alike, 12 frames): the
latent embedding 56 x 9216 = 516,096, the prompt block 7,087,872, the text MLP 1,968,128 and the
global prompts 3,072: **9,575,168** (``latent="linear"``: 827,392, the "0.83M" of the paper's
README, which the shipped script does not use). The official training (scripts/msrvtt.sh) uses
AdamW at lr 2e-3 with decay 0.2 on every trainable tensor whose name lacks "bias"
(``train.no_decay=bias``), 5 epochs, batch 128; the suite's protocol applies unless changed.

Cost: the generator's output is fixed once training ends, so :meth:`DGLRetrievalModel.fold`
computes the prompts once and reuses them (``cache_prompts``, default): the measured GFLOPs
then leave prompt generation out, as the TempMe paper counts DGL "for fairness".
``cache_prompts=false`` generates them in every forward as the official code does (GFLOPs with
prompt generation). Both towers hold the generator; the video GFLOPs count it once per video.
Departure: ``ln_post`` and ``proj`` are applied to the one output token used, not to all.
On towers of different depths (tiny-clip: 6 vision, 4 text blocks) the generator makes prompts
for the deeper tower and the text tower uses the first layers'; the official code assumes 12/12.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from open_clip.transformer import QuickGELU, ResidualAttentionBlock
from torch import nn

from cliptools.tokens import LayerTokens
from cliptools.towers import check_vision_transformer, embed_images
from methods.base import RetrievalModel, backbone_parameter_ids
from methods.registry import Method

LATENTS = ("transformer", "linear")


@dataclass(frozen=True)
class DGLConfig:
    """Defaults of ``params.py`` / ``scripts/msrvtt.sh``: ``latent`` the shared latent space
    (transformer or linear); ``text_prompts`` per text layer (half prefix, half postfix; linear:
    twice ``frame_prompts``); ``frame_prompts`` per frame and layer; ``global_prompts`` per video;
    ``cache_prompts``: after training, generate the prompts once instead of in every forward."""

    latent: str = "transformer"
    text_prompts: int = 8
    frame_prompts: int = 4
    global_prompts: int = 4
    cache_prompts: bool = True


def _vpt_bound(patch: tuple[int, int], width: int) -> float:
    """VPT's Xavier-uniform bound for prompts, as DGL initialises them."""
    return math.sqrt(6.0 / (3 * patch[0] * patch[1] + width))


class PromptGenerator(nn.Module):
    """The shared latent space: ``forward() -> (text (layers, n_text, text_width),
    frames (layers, F, n_frame, width))``, the same for every input."""

    def __init__(self, latent: str, layers: int, width: int, text_width: int, frames: int,
                 text_prompts: int, frame_prompts: int, patch: tuple[int, int]) -> None:
        super().__init__()
        self.latent, self.layers, self.width = latent, layers, width
        self.frames, self.text_prompts, self.frame_prompts = frames, text_prompts, frame_prompts
        if latent == "transformer":
            tokens = text_prompts + frames * frame_prompts
            self.embedding = nn.Embedding(tokens, width * layers)  # N(0, 1), as nn.Embedding
            self.block = ResidualAttentionBlock(width, max(1, width // 64), mlp_ratio=4.0,
                                                act_layer=QuickGELU, batch_first=True)
            self.mlp = nn.Sequential(OrderedDict([
                ("c_fc", nn.Linear(width, width * 2)),
                ("gelu", QuickGELU()),
                ("c_proj", nn.Linear(width * 2, text_width))]))
        else:
            bound = _vpt_bound(patch, width)
            self.tokens = nn.Parameter(
                nn.init.uniform_(torch.empty(1, frame_prompts, layers * width), -bound, bound))
            self.prefix = nn.Linear(width, text_width)
            self.postfix = nn.Linear(width, text_width)

    def forward(self) -> tuple[torch.Tensor, torch.Tensor]:
        layers, width = self.layers, self.width
        if self.latent == "transformer":
            latent = self.embedding.weight.view(-1, layers, width).transpose(0, 1)
            out = self.block(latent)  # each layer's tokens are one sequence
            text = self.mlp(out[:, :self.text_prompts])
            frames = out[:, self.text_prompts:].reshape(layers, self.frames, self.frame_prompts,
                                                        width)
            return text, frames
        latent = self.tokens.view(self.frame_prompts, layers, width).transpose(0, 1)
        text = torch.cat([self.prefix(latent), self.postfix(latent)], dim=1)
        frames = latent.unsqueeze(1).expand(-1, self.frames, -1, -1)
        return text, frames


def _attend(block: Any, query: torch.Tensor, context: torch.Tensor, batch_first: bool
            ) -> torch.Tensor:
    """``block``'s attention of ``query`` (N, Lq, C) over ``context`` (N, Lk, C), both normed."""
    if batch_first:
        return block.attention(q_x=query, k_x=context, v_x=context)
    out = block.attention(q_x=query.transpose(0, 1), k_x=context.transpose(0, 1),
                          v_x=context.transpose(0, 1))
    return out.transpose(0, 1)


@dataclass
class DGLOutput:
    """``embedding`` (B, D); ``trace``: tokens leaving each block (one sequence per video: the
    global prompts and every frame's tokens); ``sources`` (B, 1, N, F x T) when tracked: each
    output frame token stands for itself, prompts for nothing (nothing merges)."""

    embedding: torch.Tensor
    trace: list[LayerTokens]
    sources: torch.Tensor | None = None


class DGLVideoEncoder(nn.Module):
    """DGL's global-local video tower over an open_clip ``VisionTransformer`` (held, never
    modified): ``forward(frames (B, F, 3, H, W), mask (B, F)) -> (B, D)``."""

    visual: Any

    def __init__(self, visual: Any, generator: PromptGenerator, frames: int,
                 global_prompts: int) -> None:
        super().__init__()
        check_vision_transformer(visual)
        if getattr(visual, "attn_pool", None) is not None:
            raise TypeError("DGL supports towers without an attentional pool")
        self.visual = visual
        self.generator = generator
        self.num_frames = frames
        ref = visual.class_embedding
        width = ref.shape[-1]
        bound = _vpt_bound(visual.conv1.kernel_size, width)
        self.global_prompts = nn.Parameter(nn.init.uniform_(
            torch.empty(1, global_prompts, width, dtype=ref.dtype, device=ref.device),
            -bound, bound))
        self.cached: tuple[torch.Tensor, torch.Tensor] | None = None

    def prompts(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(text, frame) prompts: the cached ones after folding, else freshly generated."""
        return self.cached if self.cached is not None else self.generator()

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.forward_with_trace(frames, mask).embedding

    def forward_with_trace(self, frames: torch.Tensor, mask: torch.Tensor,
                           track_sources: bool = False) -> DGLOutput:
        batch, num_frames = frames.shape[:2]
        if num_frames != self.num_frames:
            raise ValueError(f"DGL encoder built for {self.num_frames} frames, got {num_frames}")
        if int(mask.bool().sum()) < mask.numel():
            raise ValueError("dgl cannot take padded clips (a frame mask with zeros): its global "
                             "prompts attend to every frame; use data.policy=tempme")
        v = self.visual
        local = self.prompts()[1]
        x = embed_images(v, frames.flatten(0, 1))  # (B*F, 1 + P, C), rows b*F + f
        local = local.to(x.dtype)
        n = local.shape[2]
        g = self.global_prompts.to(x.dtype).expand(batch, -1, -1)
        batch_first = getattr(v.transformer, "batch_first", True)
        trace = []
        for i, block in enumerate(v.transformer.resblocks):
            prompts = local[i].repeat(batch, 1, 1)  # frame f of every video gets prompts[i, f]
            x = torch.cat([x[:, :1], prompts, x[:, 1 if i == 0 else 1 + n:]], dim=1)
            gn, xn = block.ln_1(g), block.ln_1(x)
            frame_context = torch.cat([gn.repeat_interleave(num_frames, dim=0), xn], dim=1)
            video_context = torch.cat([gn, xn.reshape(batch, -1, xn.shape[-1])], dim=1)
            x = x + block.ls_1(_attend(block, xn, frame_context, batch_first))
            g = g + block.ls_1(_attend(block, gn, video_context, batch_first))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
            g = g + block.ls_2(block.mlp(block.ln_2(g)))
            tokens = g.shape[1] + num_frames * x.shape[1]
            trace.append(LayerTokens(i, "imgme", 1, tokens, None, tokens))
        pooled = v.ln_post(g[:, 0])
        embedding = pooled @ v.proj if v.proj is not None else pooled
        sources = self._sources(batch, x.shape[1], g.shape[1], n, x) if track_sources else None
        return DGLOutput(embedding, trace, sources)

    def _sources(self, batch: int, per_frame: int, globals_: int, n: int, x: torch.Tensor
                 ) -> torch.Tensor:
        """Output tokens (global prompts, then each frame's CLS, prompts, patches) against the
        original tokens (each frame's CLS and patches): the identity, prompts standing for none."""
        frames, original = self.num_frames, per_frame - n
        out = torch.zeros(globals_ + frames * per_frame, frames * original, dtype=x.dtype,
                          device=x.device)
        for f in range(frames):
            rows = globals_ + f * per_frame + torch.tensor([0, *range(1 + n, per_frame)])
            out[rows, f * original + torch.arange(original)] = 1
        return out.expand(batch, 1, -1, -1)


class DGLRetrievalModel(RetrievalModel):
    """Frozen CLIP with DGL's prompts in both towers; the text tower reads the generator that
    the video encoder holds."""

    video_encoder: DGLVideoEncoder

    def __init__(self, clip: nn.Module, encoder: DGLVideoEncoder, pretrained_ids: set[int],
                 cache_prompts: bool) -> None:
        super().__init__(clip, encoder, pretrained_ids)
        self.cache_prompts = cache_prompts

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_features(ids), dim=-1)

    def text_features(self, ids: torch.Tensor) -> torch.Tensor:
        """The prompted text tower: EOT feature after ``ln_final`` and the projection."""
        clip = self.clip
        prompts = self.video_encoder.prompts()[0]
        length = ids.shape[1]
        cast = clip.transformer.get_cast_dtype()
        prompts = prompts.to(cast)
        prefix, count = prompts.shape[1] // 2, prompts.shape[1]
        x = clip.token_embedding(ids).to(cast) + clip.positional_embedding[:length].to(cast)
        total = length + count
        pos = torch.arange(total, device=x.device)
        mask = torch.zeros(total, total, dtype=cast, device=x.device).masked_fill(
            pos[None, :] > pos[:, None], float("-inf"))  # causal over words and prompts
        batch_first = getattr(clip.transformer, "batch_first", True)
        for i, block in enumerate(clip.transformer.resblocks):
            p = prompts[i].unsqueeze(0).expand(x.shape[0], -1, -1)
            words = x[:, 1:length] if i == 0 else x[:, 1 + prefix:prefix + length]
            x = torch.cat([x[:, :1], p[:, :prefix], words, p[:, prefix:]], dim=1)
            x = block(x, attn_mask=mask) if batch_first else \
                block(x.transpose(0, 1), attn_mask=mask).transpose(0, 1)
        x = clip.ln_final(x)
        eot = ids.argmax(dim=-1)
        eot = torch.where(eot > 0, eot + prefix, eot)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        if isinstance(clip.text_projection, nn.Linear):
            return clip.text_projection(x)
        return x @ clip.text_projection if clip.text_projection is not None else x

    def fold(self) -> RetrievalModel:
        """Fix the prompts for inference (``cache_prompts``): generated once, not per call."""
        if self.cache_prompts and self.video_encoder.cached is None:
            with torch.no_grad():
                text, frames = self.video_encoder.generator()
            self.video_encoder.cached = (text.detach(), frames.detach())
        return super().fold()


def _check_text(clip: Any) -> None:
    for name in ("token_embedding", "positional_embedding", "transformer", "ln_final"):
        if not hasattr(clip, name):
            raise TypeError(f"DGL needs an open_clip CLIP text tower, missing {name}")


def build(clip: Any, config: DGLConfig, frames: int, backbone: str) -> RetrievalModel:
    check_vision_transformer(clip.visual)
    _check_text(clip)
    ids = backbone_parameter_ids(clip)
    clip.requires_grad_(False)
    visual = clip.visual
    width = visual.class_embedding.shape[-1]
    layers = max(len(visual.transformer.resblocks), len(clip.transformer.resblocks))
    text_width = clip.token_embedding.weight.shape[-1]
    generator = PromptGenerator(config.latent, layers, width, text_width, frames,
                                config.text_prompts, config.frame_prompts,
                                tuple(visual.conv1.kernel_size))
    generator.to(device=visual.class_embedding.device)
    encoder = DGLVideoEncoder(visual, generator, frames, config.global_prompts)
    return DGLRetrievalModel(clip, encoder, ids, config.cache_prompts)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate(config: DGLConfig, backbone: str, frames: int) -> None:
    if config.latent not in LATENTS:
        raise ValueError(f"dgl latent must be one of {', '.join(LATENTS)}, got {config.latent!r}")
    for name in ("text_prompts", "frame_prompts", "global_prompts"):
        value = getattr(config, name)
        if not _is_int(value) or value < 1:
            raise ValueError(f"dgl {name} must be an integer >= 1, got {value!r}")
    if config.latent == "linear" and config.text_prompts != 2 * config.frame_prompts:
        raise ValueError(f"dgl latent 'linear' makes text_prompts = 2 x frame_prompts "
                         f"({2 * config.frame_prompts}), got {config.text_prompts}")
    if not isinstance(config.cache_prompts, bool):
        raise ValueError(f"dgl cache_prompts must be true or false, got {config.cache_prompts!r}")


def search_space(trial: Any) -> dict[str, Any]:
    return {
        "frame_prompts": trial.suggest_categorical("method.frame_prompts", [2, 4, 8]),
        "global_prompts": trial.suggest_categorical("method.global_prompts", [1, 2, 4, 8]),
        "text_prompts": trial.suggest_categorical("method.text_prompts", [4, 8, 16]),
    }


METHOD = Method(
    name="dgl",
    description="DGL: frozen CLIP, text/frame prompts from a shared latent space, global prompts",
    reference="Yang et al., AAAI 2024 (DGL: Dynamic Global-Local Prompt Tuning), knightyxp/DGL",
    config_cls=DGLConfig,
    build=build,
    search_space=search_space,
    validate=validate,
    accepts_padding=False,  # the global prompts attend to every frame, padding included
)
