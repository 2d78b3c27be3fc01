"""The retrieval model every method builds, and the pieces methods share.

A retrieval model wraps an open_clip CLIP: ``encode_text(ids)`` and ``encode_video(frames, mask)``
give L2-normalised embeddings, ``video_encoder`` is the module that cost profiling calls alone,
and ``trainable_parameters()`` says what an optimiser should update. Parameters that came with
the backbone are "pretrained" (they get the smaller learning rate when a method trains them);
anything a method adds (LoRA, clip position embeddings, adapters) is "new".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cliptools.lora import fold_lora
from cliptools.towers import masked_mean


def encode_text_tokens(clip: Any, ids: torch.Tensor) -> torch.Tensor:
    """CLIP text features for ``ids`` of any length up to the model's context.

    open_clip's ``CLIP.encode_text`` needs ids padded to the full context (77): here the
    position embedding and causal mask are cut to ``ids.shape[1]`` (32 words by protocol), which
    gives the same EOT feature at less cost, because the mask is causal.
    """
    if not hasattr(clip, "token_embedding"):  # towers such as HF text models handle it
        return clip.encode_text(ids)
    length = ids.shape[1]
    cast = clip.transformer.get_cast_dtype()
    x = clip.token_embedding(ids).to(cast) + clip.positional_embedding[:length].to(cast)
    mask = clip.attn_mask[:length, :length] if clip.attn_mask is not None else None
    x = clip.ln_final(clip.transformer(x, attn_mask=mask))
    from open_clip.transformer import text_global_pool

    eos = getattr(clip, "text_eos_id", None)
    x = text_global_pool(x, ids, clip.text_pool_type, eos_token_id=eos)
    if isinstance(clip.text_projection, nn.Linear):
        return clip.text_projection(x)
    return x @ clip.text_projection if clip.text_projection is not None else x


class MeanPoolVideoEncoder(nn.Module):
    """CLIP4Clip's parameter-free mean pooling of L2-normalised per-frame CLIP embeddings."""

    visual: Any  # an open_clip VisionTransformer

    def __init__(self, visual: nn.Module) -> None:
        super().__init__()
        self.visual = visual

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, f = frames.shape[:2]
        per_frame = self.visual(frames.flatten(0, 1)).view(b, f, -1)
        return masked_mean(F.normalize(per_frame, dim=-1), mask)


@dataclass
class SearchPhase:
    """Something a method learns on the training split before training proper (DiffRate: its
    compression rates), returned by :meth:`RetrievalModel.search_phase`.

    The engine makes ``epochs`` passes over the training batches: ``start_epoch(epoch)`` before
    each pass, then per batch the run's loss (with :meth:`RetrievalModel.extra_loss`), backward
    and ``optimizer.step()`` (the optimiser holds only what the phase learns; nothing else
    moves). After the last pass ``finish()`` fixes what was learned, leaves the model ready to
    train, and returns figures the engine logs as ``search/NAME``.
    """

    epochs: int
    optimizer: torch.optim.Optimizer
    start_epoch: Callable[[int], None]
    finish: Callable[[], dict[str, float]]


class RetrievalModel(nn.Module):
    """Text and video towers sharing one embedding space."""

    clip: Any  # an open_clip CLIP
    _peft_model: Any

    def __init__(self, clip: nn.Module, video_encoder: nn.Module,
                 pretrained_ids: set[int], peft_model: nn.Module | None = None) -> None:
        super().__init__()
        self.clip = clip
        self.video_encoder = video_encoder
        self._pretrained_ids = pretrained_ids
        # Kept outside the module tree: the peft wrapper holds the same CLIP, not new weights.
        object.__setattr__(self, "_peft_model", peft_model)
        clip.logit_scale.requires_grad_(False)  # frozen CLIP temperature (protocol.md)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.exp()

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return F.normalize(encode_text_tokens(self.clip, ids), dim=-1)

    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.video_encoder(frames, mask), dim=-1)

    def forward(self, ids: torch.Tensor, frames: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Text and video embeddings of a training batch (the call DistributedDataParallel
        wraps)."""
        return self.encode_text(ids), self.encode_video(frames, mask)

    def extra_loss(self) -> torch.Tensor | None:
        """A term the engine adds to the contrastive loss of each training step, after the
        forward (e.g. a cost penalty); None (the default): nothing."""
        return None

    def search_phase(self) -> SearchPhase | None:
        """A phase to run before training (see :class:`SearchPhase`); None (the default):
        none. Not called when a run resumes: what the phase learned must be part of
        :meth:`trainable_state`, so the checkpoint restores it."""
        return None

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Trainable parameters split into (new, pretrained)."""
        new, pretrained = self.named_parameter_groups()
        return [p for _, p in new], [p for _, p in pretrained]

    def named_parameter_groups(self) -> tuple[list[tuple[str, nn.Parameter]],
                                              list[tuple[str, nn.Parameter]]]:
        """Trainable (name, parameter) pairs split into (new, pretrained)."""
        new: list[tuple[str, nn.Parameter]] = []
        pretrained: list[tuple[str, nn.Parameter]] = []
        for name, p in self.named_parameters():
            if p.requires_grad:
                (pretrained if id(p) in self._pretrained_ids else new).append((name, p))
        return new, pretrained

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The trained weights: every parameter that requires grad, by name, on the CPU."""
        return {n: p.detach().cpu().clone() for n, p in self.named_parameters() if p.requires_grad}

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        params = dict(self.named_parameters())
        with torch.no_grad():
            for name, value in state.items():
                params[name].copy_(value)

    def fold(self) -> RetrievalModel:
        """Fold LoRA deltas into the frozen weights for inference; a no-op without LoRA."""
        if self._peft_model is not None:
            fold_lora(self._peft_model)
            object.__setattr__(self, "_peft_model", None)
        return self


def backbone_parameter_ids(clip: nn.Module) -> set[int]:
    """Identity of every parameter the backbone came with (before a method adds its own)."""
    return {id(p) for p in clip.parameters()}
