"""From dataset splits to batches: training pairs, evaluation videos, tokenised captions."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from suite.data.base import VideoTextSplit
from suite.data.transforms import preprocess


@dataclass(frozen=True)
class ImageSpec:
    """What the backbone's image tower expects."""

    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]


class TrainPairs(Dataset):
    """(caption, video) training samples, indexed by caption."""

    def __init__(self, split: VideoTextSplit) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split.captions)

    def __getitem__(self, caption: int) -> tuple[str, np.ndarray, np.ndarray]:
        clip = self.split.load(self.split.caption_video[caption])
        return self.split.captions[caption], clip.frames, clip.mask


class TrainingBatches(Sampler[list[int]]):
    """The caption indices of every training batch of an epoch (``set_epoch`` reseeds).

    ``sampling="all"``: every caption is a sample (MSR-VTT's practice); ``"video"``: one caption
    per video and epoch, drawn at random. When the split groups its videos (``split.groups``),
    groups are shuffled and kept whole, so near-duplicate videos of a group meet as each other's
    negatives in one contrastive batch; otherwise samples are shuffled freely. The last
    incomplete batch is dropped. Runs in the main process, so worker processes need no state.
    Under data-parallel training (``world`` processes) every process draws the same global
    batches and yields its contiguous share, the ``rank``-th.
    """

    def __init__(self, split: VideoTextSplit, sampling: str, batch_size: int, seed: int,
                 rank: int = 0, world: int = 1) -> None:
        if sampling not in ("all", "video"):
            raise ValueError(f"unknown caption sampling {sampling!r}; valid: all, video")
        self.rank, self.world = rank, world
        self.sampling = sampling
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0
        self.by_video: list[list[int]] = [[] for _ in split.video_ids]
        for caption, video in enumerate(split.caption_video):
            self.by_video[video].append(caption)
        groups = split.groups if split.groups is not None else range(len(split.video_ids))
        self.group_videos: dict[int, list[int]] = {}
        for video, group in enumerate(groups):
            self.group_videos.setdefault(group, []).append(video)
        self.grouped = split.groups is not None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def samples(self) -> int:
        return sum(len(c) for c in self.by_video) if self.sampling == "all" else len(self.by_video)

    def __len__(self) -> int:
        return self.samples() // self.batch_size

    def _captions(self, video: int, rng: np.random.Generator) -> list[int]:
        captions = self.by_video[video]
        return list(captions) if self.sampling == "all" else [captions[rng.integers(len(captions))]]

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.grouped:
            keys = list(self.group_videos)
            order = [keys[k] for k in rng.permutation(len(keys))]
            items = [c for g in order for v in self.group_videos[g] for c in self._captions(v, rng)]
        else:
            items = [c for v in range(len(self.by_video)) for c in self._captions(v, rng)]
            items = [items[i] for i in rng.permutation(len(items))]
        share = self.batch_size // self.world
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            first = start + self.rank * share
            yield items[first:first + share]


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


def training_loader(split: VideoTextSplit, sampling: str, batch_size: int, collate: Callable,
                    seed: int, num_workers: int, rank: int = 0, world: int = 1
                    ) -> tuple[DataLoader, TrainingBatches]:
    """Training batches of ``split`` (this process's share of each global batch of
    ``batch_size``) and their sampler (call ``set_epoch`` on it)."""
    batches = TrainingBatches(split, sampling, batch_size, seed, rank, world)
    data = DataLoader(TrainPairs(split), batch_sampler=batches, collate_fn=collate,
                      num_workers=num_workers, persistent_workers=num_workers > 0)
    return data, batches
