"""Training augmentation: RandAugment with the same operations for every frame of a video.

torchvision's ``transforms.v2.RandAugment`` draws its operations and magnitudes once per call and
treats leading dimensions as a batch, so one call on the stacked frames (F, 3, H, W) applies the
same augmentation to the whole clip: the motion between frames is left as it was.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class VideoRandAugment:
    """``num_ops`` random operations of strength ``magnitude`` (torchvision's defaults: 2, 9)."""

    num_ops: int = 2
    magnitude: int = 9

    def __post_init__(self) -> None:
        # Import here, in the main process: forked DataLoader workers then inherit the module
        # instead of each paying torchvision's slow first import.
        from torchvision.transforms import v2  # noqa: F401

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        """uint8 frames (F, H, W, 3) -> augmented uint8 frames of the same shape.

        Randomness comes from torch's generator, which DataLoader workers seed per worker.
        """
        import torch
        from torchvision.transforms import v2

        x = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2)
        y = v2.RandAugment(num_ops=self.num_ops, magnitude=self.magnitude)(x)
        return y.permute(0, 2, 3, 1).contiguous().numpy()
