"""From dataset splits to batches: training pairs, evaluation videos, tokenised captions."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from suite.data.base import VideoTextSplit
from suite.data.transforms import preprocess


@dataclass(frozen=True)
class ImageSpec:
    """What the backbone's image tower expects."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


class TrainPairs(Dataset):
    """(caption, video) training samples.

    ``sampling="all"``: every caption is a sample (MSR-VTT's practice). ``"video"``: one sample
    per video per epoch with a caption drawn from the video's captions (``set_epoch`` reseeds).
    """

    def __init__(self, split: VideoTextSplit, sampling: str, seed: int) -> None:
        if sampling not in ("all", "video"):
            raise ValueError(f"unknown caption sampling {sampling!r}; valid: all, video")
        self.split = split
        self.sampling = sampling
        self.seed = seed
        self.by_video: list[list[int]] = [[] for _ in split.video_ids]
        for caption, video in enumerate(split.caption_video):
            self.by_video[video].append(caption)
        self.choice = [c[0] for c in self.by_video]

    def set_epoch(self, epoch: int) -> None:
        rng = np.random.default_rng([self.seed, epoch])
        self.choice = [c[rng.integers(len(c))] for c in self.by_video]

    def __len__(self) -> int:
        return len(self.split.captions) if self.sampling == "all" else len(self.split)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray, np.ndarray]:
        caption = i if self.sampling == "all" else self.choice[i]
        clip = self.split.load(self.split.caption_video[caption])
        return self.split.captions[caption], clip.frames, clip.mask


class Videos(Dataset):
    """Every video of a split once, in order (for evaluation)."""

    def __init__(self, split: VideoTextSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[str, np.ndarray, np.ndarray]:
        clip = self.split.load(i)
        return "", clip.frames, clip.mask


def make_collate(tokenize: Callable[[list[str]], torch.Tensor]
                 ) -> Callable[[list], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batch collation: token ids (B, words), uint8 frames (B, F, H, W, 3), frame mask (B, F).

    Frames stay uint8 until they reach the device (``to_pixels``): worker processes hand over
    a quarter of the bytes, and the normalisation runs on the GPU when there is one.
    """

    def collate(batch: list) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        texts, frames, masks = zip(*batch, strict=True)
        mask = torch.from_numpy(np.stack(masks))
        ids = tokenize(list(texts)) if any(texts) else torch.empty(0)
        return ids, torch.from_numpy(np.stack(frames)), mask

    return collate


def to_pixels(frames: torch.Tensor, image: ImageSpec, device: torch.device) -> torch.Tensor:
    """uint8 frames (B, F, H, W, 3) -> model input (B, F, 3, S, S) on ``device``."""
    return preprocess(frames.to(device), image.size, image.mean, image.std)


def loader(dataset: Dataset, batch_size: int, collate: Callable, shuffle: bool, seed: int,
           num_workers: int, drop_last: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, collate_fn=collate,
                      num_workers=num_workers, drop_last=drop_last,
                      generator=torch.Generator().manual_seed(seed),
                      persistent_workers=num_workers > 0)
