"""The training objective every method shares: CLIP's symmetric InfoNCE over a batch of pairs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def symmetric_infonce(text: torch.Tensor, video: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of every text over the videos and every video over the texts, averaged
    (TempMe's CrossEn both ways, tvr/models/modeling.py ~165-172); pair i matches pair i."""
    logits = scale * text @ video.t()
    target = torch.arange(len(text), device=text.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
