"""Neutral helpers on open_clip towers that every method uses: the embedding stem of a vision
transformer, the masked mean over frames, checks of a tower's parts, and its depth.

Nothing here is specific to one method: TempMe's encoder and the baselines all build on it.
"""

from __future__ import annotations

from typing import Any

import torch


def masked_mean(embeddings: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over frames (B, F, D) of the frames ``mask`` (B, F) marks as real (no renormalising)."""
    weights = mask.to(embeddings.dtype).unsqueeze(-1)
    return (embeddings * weights).sum(1) / weights.sum(1).clamp(min=1.0)


def embed_images(visual: Any, images: torch.Tensor) -> torch.Tensor:
    """Patch + CLS + position embeddings and ln_pre of an open_clip ``VisionTransformer``, as
    the tower does before its blocks (no patch dropout): (N, 3, H, W) -> (N, 1 + P, C)."""
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], -1, -1).to(x.dtype)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    return visual.ln_pre(x)


def check_vision_transformer(visual: Any) -> None:
    """Raise unless ``visual`` has the open_clip ``VisionTransformer`` parts that encoders
    reusing the tower's modules read by name."""
    needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer",
              "ln_post", "proj")
    missing = [name for name in needed if not hasattr(visual, name)]
    if missing:
        raise TypeError(f"expected an open_clip VisionTransformer, missing {', '.join(missing)}")


def vision_depth(backbone: str) -> int:
    """Number of blocks of an open_clip vision tower, read from its config (no model built).

    Embedded configs (tiny-clip) must be registered with open_clip first; an unknown name
    is an error rather than a guess, so that no schedule is validated against the wrong depth.
    """
    import open_clip

    config = open_clip.get_model_config(backbone)
    if config is None:
        raise ValueError(f"unknown backbone {backbone!r}: open_clip has no config for it")
    return int(config.get("vision_cfg", {}).get("layers", 12))
