"""Frame preprocessing for CLIP: resize the short side (bicubic), centre crop, normalise."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def preprocess(frames: torch.Tensor, image_size: int, mean: tuple[float, ...],
               std: tuple[float, ...]) -> torch.Tensor:
    """uint8 frames (..., H, W, 3) -> float (..., 3, S, S) as the CLIP image tower expects."""
    lead = frames.shape[:-3]
    h, w = frames.shape[-3], frames.shape[-2]
    x = frames.reshape(-1, h, w, 3).permute(0, 3, 1, 2).float().div_(255.0)
    if (h, w) != (image_size, image_size):
        scale = image_size / min(h, w)
        nh, nw = max(image_size, round(h * scale)), max(image_size, round(w * scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
            x = x.clamp_(0.0, 1.0)  # bicubic overshoots; PIL clamps to the uint8 range too
        top, left = (nh - image_size) // 2, (nw - image_size) // 2
        x = x[:, :, top:top + image_size, left:left + image_size]
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    x = (x - m) / s
    return x.reshape(*lead, 3, image_size, image_size)
