"""The one shape every dataset loader returns: a split of videos and captions."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Clip:
    """One video as the models see it: sampled frames and which of them are real."""

    frames: np.ndarray  # uint8, (F, H, W, 3)
    mask: np.ndarray  # bool, (F,)


class VideoTextSplit(ABC):
    """A split of a retrieval dataset.

    ``captions[i]`` describes ``video_ids[caption_video[i]]``. Multi-caption datasets list every
    caption; paragraph datasets list one joined paragraph per video. Loaders differ only in where
    the frames come from (``load``).

    An evaluation split whose loader left videos out (``--on-bad-video skip``) still owes the
    queries of those videos: ``missed_videos`` videos and their ``missed_captions`` captions
    are in the ground truth but not in ``video_ids``/``captions``. Evaluation counts each as a
    query that found nothing (ranked below every candidate), so a skip never raises a figure.
    """

    def __init__(self, name: str, video_ids: list[str], captions: list[str],
                 caption_video: list[int]) -> None:
        if len(captions) != len(caption_video):
            raise ValueError("captions and caption_video differ in length")
        self.name = name
        self.video_ids = video_ids
        self.captions = captions
        self.caption_video = caption_video
        # Optional group id per video: videos that training batches should keep together.
        self.groups: list[int] | None = None
        # Queries of left-out videos that evaluation counts as misses (see the class docstring).
        self.missed_videos = 0
        self.missed_captions = 0

    @abstractmethod
    def load(self, index: int) -> Clip:
        """Frames of video ``video_ids[index]``, sampled by the split's frame policy."""

    def __len__(self) -> int:
        return len(self.video_ids)

    def positives(self) -> np.ndarray:
        """Boolean (captions x videos) matrix of true pairs: the retrieval ground truth."""
        matrix = np.zeros((len(self.captions), len(self.video_ids)), dtype=bool)
        matrix[np.arange(len(self.captions)), self.caption_video] = True
        return matrix

    def captions_of(self, index: int) -> list[str]:
        """All captions of video ``index``."""
        return [c for c, v in zip(self.captions, self.caption_video, strict=True) if v == index]
