"""Frame preprocessing for CLIP: resize the short side (bicubic), centre crop, normalise."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """The shape torchvision's ``Resize(size)`` gives, as the references' loaders use it
    (TempMe ``dataloader_retrieval.py`` 57-58, CLIP4Clip ``rawvideo_util.py`` 18-19): the short
    side becomes ``size`` and the long side ``int(size * long / short)``, truncated (320 x 240
    at 224 gives 298 x 224)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def crop_start(length: int, size: int) -> int:
    """torchvision's ``CenterCrop``: the crop starts at ``int(round((length - size) / 2))``."""
    return int(round((length - size) / 2.0))


def preprocess(frames: torch.Tensor, image_size: int, mean: tuple[float, ...],
               std: tuple[float, ...]) -> torch.Tensor:
    """uint8 frames (..., H, W, 3) -> float (..., 3, S, S) as the CLIP image tower expects."""
    lead = frames.shape[:-3]
    h, w = frames.shape[-3], frames.shape[-2]
    x = frames.reshape(-1, h, w, 3).permute(0, 3, 1, 2).float().div_(255.0)
    if (h, w) != (image_size, image_size):
        nh, nw = resized_shape(h, w, image_size)
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True)
            x = x.clamp_(0.0, 1.0)  # bicubic overshoots; PIL clamps to the uint8 range too
        top, left = crop_start(nh, image_size), crop_start(nw, image_size)
        x = x[:, :, top:top + image_size, left:left + image_size]
    m = torch.tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    x = (x - m) / s
    return x.reshape(*lead, 3, image_size, image_size)
