"""The TempMe video encoder: an open_clip ``VisionTransformer`` run over all frames of a video with
progressive token merging (ImgMe, then ClipMe), pooled into one video embedding.

The encoder wraps the open_clip visual tower instead of patching it: it reuses the tower's
modules (patch embedding, blocks' ``ln_1``/``attn``/``ls_1``/``ln_2``/``mlp``/``ls_2``, ``ln_post``,
``proj``) in its own forward and never changes them, so the tower keeps working as before and
"unpatching" is simply using ``encoder.visual`` directly. The only new weights are the clip
position embeddings. Attention weights are read through :func:`cliptools.lora.fused_in_proj`, so an
unmerged peft LoRA trains through this forward exactly as through the tower's own.

State is explicit: every forward starts from the frames and carries (features, sizes, CLS count
per sequence, optional source matrix) from block to block; :meth:`TempMeVideoEncoder.
forward_with_trace` returns the per-layer token counts (the same rows as
:meth:`tempme.schedule.TempMeSchedule.token_table`) and the source matrices.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cliptools.lora import attention_module, fused_in_proj
from cliptools.towers import check_vision_transformer, embed_images, masked_mean
from tempme.merge import (
    bipartite_soft_matching,
    merge_sources,
    merge_tokens,
    proportional_attention,
)
from tempme.schedule import LayerTokens, TempMeSchedule, ratio_count


def baseline_video_embedding(visual: nn.Module, frames: torch.Tensor, mask: torch.Tensor
                             ) -> torch.Tensor:
    """The unmerged reference: open_clip's own per-frame forward, each frame embedding
    L2-normalised, masked mean over frames. Pools exactly as :class:`TempMeVideoEncoder`."""
    b, f = frames.shape[:2]
    out = visual(frames.flatten(0, 1))
    if isinstance(out, tuple):  # output_tokens=True towers return (pooled, tokens)
        out = out[0]
    return masked_mean(F.normalize(out.view(b, f, -1), dim=-1), mask)


@dataclass
class TempMeOutput:
    """What one forward produced.

    ``embedding`` (B, D) video embeddings; ``frame_embeddings`` (B, F, D) the L2-normalised
    per-frame CLS embeddings they average; ``trace`` one :class:`LayerTokens` per block (tokens
    per sequence); ``sources`` (B, S, N, F x T) when tracked: 1 where final token n of sequence s
    stands for original token t (frame-major over the video); ``sizes`` (B, S, N) token sizes.
    """

    embedding: torch.Tensor
    frame_embeddings: torch.Tensor
    trace: list[LayerTokens]
    sizes: torch.Tensor
    sources: torch.Tensor | None = None


def _join(t: torch.Tensor, group: int, cls: int) -> torch.Tensor:
    """Join every ``group`` neighbouring sequences of ``t`` (R, N, ...) into one: all their CLS
    tokens first (in order), then all their patch tokens (in order)."""
    rows, n = t.shape[:2]
    t = t.reshape(rows // group, group, n, *t.shape[2:])
    head = t[:, :, :cls].reshape(rows // group, group * cls, *t.shape[3:])
    tail = t[:, :, cls:].reshape(rows // group, group * (n - cls), *t.shape[3:])
    return torch.cat([head, tail], dim=1)


def _check_visual(visual: Any) -> None:
    """Fail early on towers this encoder cannot run faithfully."""
    check_vision_transformer(visual)
    pooling = getattr(visual, "pool_type", "tok")
    if getattr(visual, "attn_pool", None) is not None or pooling != "tok":
        raise TypeError("TempMe needs CLS-token pooling (pool_type='tok', no attentional pool)")
    for block in visual.transformer.resblocks:
        for name in ("ln_1", "attn", "ls_1", "ln_2", "mlp", "ls_2"):
            if not hasattr(block, name):
                raise TypeError(f"unsupported block {type(block).__name__}: no {name}")
        attention_module(block.attn)  # raises unless nn.MultiheadAttention (peft-wrapped or not)


class TempMeVideoEncoder(nn.Module):
    """TempMe video encoder over an open_clip ``VisionTransformer`` (held, never modified).

    ``forward(frames (B, F, 3, H, W), mask (B, F) bool) -> (B, D)``: the F CLS tokens leave the
    last block, go through ``ln_post`` and ``proj``, are L2-normalised each and mean-pooled over
    the mask (the mean is not renormalised).
    """

    visual: Any  # an open_clip VisionTransformer (duck-typed: its submodules are read by name)

    def __init__(self, visual: nn.Module, schedule: TempMeSchedule, num_frames: int) -> None:
        super().__init__()
        _check_visual(visual)
        self.visual = visual
        self.depth = len(self.visual.transformer.resblocks)
        schedule.validate(num_frames, self.depth)
        self.schedule = schedule
        self.num_frames = num_frames
        cls_embed = self.visual.class_embedding
        width = cls_embed.shape[-1]
        self.clip_pos_embed = nn.ParameterDict()
        if schedule.clip_pos_embed:
            counts = schedule.clip_input_sequences(num_frames)
            for layer, count in zip(schedule.clip_layers, counts, strict=True):
                self.clip_pos_embed[str(layer)] = nn.Parameter(
                    torch.zeros(count, width, dtype=cls_embed.dtype, device=cls_embed.device))

    def clip_position_parameters(self) -> list[nn.Parameter]:
        """The trainable clip position embeddings, one (sequences_in, width) tensor per ClipMe
        layer, in layer order."""
        return list(self.clip_pos_embed.values())

    def token_table(self) -> list[LayerTokens]:
        """The analytic per-layer token table for this encoder's tower and frame count."""
        tokens_per_frame = self.visual.positional_embedding.shape[0]
        return self.schedule.token_table(tokens_per_frame, self.num_frames, self.depth)

    # -- forward ---------------------------------------------------------------------------

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.forward_with_trace(frames, mask).embedding

    @staticmethod
    def _attention(block: Any, x: torch.Tensor, sizes: torch.Tensor | None
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """Proportional self-attention of ``block`` on ``x``; returns (output, keys averaged
        over heads), the keys being the merge metric."""
        mha = attention_module(block.attn)
        weight, bias = fused_in_proj(block.attn)
        rows, n, width = x.shape
        heads = mha.num_heads
        qkv = F.linear(block.ln_1(x), weight, bias).view(rows, n, 3, heads, width // heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)
        out = proportional_attention(q, k, v, sizes)
        out = mha.out_proj(out.transpose(1, 2).reshape(rows, n, width))
        # keys averaged over heads, reduced in qkv's own layout (3x faster than over k's
        # permuted view, same values)
        return out, qkv[:, :, 1].mean(dim=2)

    def attend(self, layer: int, block: Any, x: torch.Tensor, sizes: torch.Tensor | None,
               cls: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention of block ``layer`` on ``x`` (rows, tokens, width), whose first ``cls``
        tokens per row are CLS tokens: (output, merge metric) for exactly those tokens. A
        subclass may attend to more (prompt tokens) as long as it returns these shapes."""
        return self._attention(block, x, sizes)

    def forward_with_trace(self, frames: torch.Tensor, mask: torch.Tensor,
                           track_sources: bool = False) -> TempMeOutput:
        """Encode videos and report the tokens per sequence after every block (and, with
        ``track_sources``, which original tokens every final token stands for)."""
        batch, num_frames = frames.shape[:2]
        if num_frames != self.num_frames:
            raise ValueError(f"encoder built for {self.num_frames} frames, got {num_frames}")
        s = self.schedule
        x = embed_images(self.visual, frames.flatten(0, 1))  # (B*F, T, C): one per frame
        tokens = x.shape[1]
        sizes = torch.ones(x.shape[:2], dtype=x.dtype, device=x.device)
        sources = None
        if track_sources:
            eye = torch.eye(num_frames * tokens, dtype=x.dtype, device=x.device)
            sources = eye.view(num_frames, tokens, -1).repeat(batch, 1, 1)
        cls = 1  # protected CLS tokens per sequence
        merged_any = False  # sizes are all 1 until the first merge: skip the zero bias
        trace: list[LayerTokens] = []
        for layer, block in enumerate(self.visual.transformer.resblocks):
            kind = s.kind(layer)
            after_cross = None
            if kind == "clipme":
                group = s.group_at(layer)
                metric = _join(x, group, cls)  # token features before the clip position embed
                if str(layer) in self.clip_pos_embed:
                    pos = self.clip_pos_embed[str(layer)].to(x.dtype)
                    x = x + pos.repeat(batch, 1).unsqueeze(1)
                x = _join(x, group, cls)
                sizes = _join(sizes, group, cls)
                if sources is not None:
                    sources = _join(sources, group, cls)
                cls *= group
                tokens_in = x.shape[1]
                m = bipartite_soft_matching(metric, ratio_count(s.ratio_cross, tokens_in), cls)
                x, sizes = merge_tokens(m, x, sizes)
                sources = merge_sources(m, sources) if sources is not None else None
                merged_any |= m is not None
                after_cross = x.shape[1]
            else:
                tokens_in = x.shape[1]
            attn_out, keys = self.attend(layer, block, x, sizes if merged_any else None, cls)
            x = x + block.ls_1(attn_out)
            intra = ratio_count(s.ratio_intra, x.shape[1])
            r = s.imgme_r_at(layer) if kind == "imgme" else intra
            m = bipartite_soft_matching(keys, r, cls)
            x, sizes = merge_tokens(m, x, sizes)
            sources = merge_sources(m, sources) if sources is not None else None
            merged_any |= m is not None
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
            trace.append(LayerTokens(layer, kind, x.shape[0] // batch, tokens_in, after_cross,
                                     x.shape[1]))

        v = self.visual
        cls_tokens = x[:, :cls].reshape(batch, num_frames, -1)  # frame order is kept
        pooled = v.ln_post(cls_tokens)
        if v.proj is not None:
            pooled = pooled @ v.proj
        per_frame = F.normalize(pooled, dim=-1)
        seqs = x.shape[0] // batch
        return TempMeOutput(
            embedding=masked_mean(per_frame, mask),
            frame_embeddings=per_frame,
            trace=trace,
            sizes=sizes.view(batch, seqs, -1),
            sources=sources.view(batch, seqs, x.shape[1], -1) if sources is not None else None,
        )
