"""Embed a split and score it: text and video embeddings, similarity, retrieval metrics, and
the per-query ranks of the test evaluation as the run's artifact ``ranks.npz``."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from suite.common.faults import writing
from suite.common.progress import progress_bar
from suite.cost.device import autocast
from suite.data.base import VideoTextSplit
from suite.data.loading import ImageSpec, Videos, loader, make_collate, to_pixels
from suite.job import distributed, tracking
from suite.job.metrics import (
    both_query_ranks,
    dual_softmax_metrics,
    literature_metrics,
    retrieval_metrics,
)

#: The artifact of a run's per-query test ranks (reports.uncertainty reads it).
RANKS_ARTIFACT = "ranks.npz"


@torch.no_grad()
def embed_split(model: Any, split: VideoTextSplit,
                tokenize: Callable[[list[str]], torch.Tensor], image: ImageSpec,
                device: torch.device, batch_size: int, num_workers: int = 0,
                show_progress: bool = True, precision: str = "auto",
                processes: distributed.Processes = distributed.SINGLE
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-normalised caption embeddings (C, D) and video embeddings (V, D), on the CPU, fp32.

    Under torchrun every process embeds its contiguous share of the videos and captions, and
    every process receives all of them.
    """
    model.eval()
    video_share = distributed.share(len(split), processes)
    caption_share = distributed.share(len(split.captions), processes)
    videos = loader(Subset(Videos(split), video_share), batch_size, make_collate(tokenize),
                    shuffle=False, seed=0, num_workers=num_workers)
    captions = [split.captions[i] for i in caption_share]
    video_embs, text_embs = [], []
    total = len(videos) + (len(captions) + batch_size - 1) // batch_size
    with progress_bar(f"evaluating {split.name}", total, enabled=show_progress) as advance, \
            autocast(device, precision):
        for _, frames, mask in videos:
            pixels = to_pixels(frames, image, device)
            video_embs.append(model.encode_video(pixels, mask.to(device)).float())
            advance()
        for start in range(0, len(captions), batch_size):
            ids = tokenize(captions[start:start + batch_size]).to(device)
            text_embs.append(model.encode_text(ids).float())
            advance()
    text = distributed.gather_rows(torch.cat(text_embs), len(split.captions), processes)
    video = distributed.gather_rows(torch.cat(video_embs), len(split), processes)
    return text.cpu(), video.cpu()


def evaluate(model: Any, split: VideoTextSplit,
             tokenize: Callable[[list[str]], torch.Tensor], image: ImageSpec,
             device: torch.device, batch_size: int, num_workers: int = 0,
             show_progress: bool = True, precision: str = "auto",
             dual_softmax: bool = False,
             processes: distributed.Processes = distributed.SINGLE) -> dict[str, float]:
    """Retrieval metrics of ``model`` on ``split`` (cosine similarity, both directions), the
    CLIP4Clip family's figures under ``lit_...`` names, and with ``dual_softmax`` the figures
    after DSL under ``dsl_...`` names. Videos the split left out (``--on-bad-video skip``) and
    their captions count as misses, so skipping never raises a figure.

    The test evaluation (the one with ``dual_softmax``) also logs the per-query ranks as the
    artifact ``ranks.npz`` (``save_query_ranks``)."""
    text, video = embed_split(model, split, tokenize, image, device, batch_size, num_workers,
                              show_progress, precision, processes)
    positives = torch.from_numpy(split.positives())
    sims = text @ video.t()
    misses = {"missed_t2v": split.missed_captions, "missed_v2t": split.missed_videos}
    metrics = retrieval_metrics(sims, positives, **misses)
    if bool((positives.sum(dim=1) == 1).all()):  # every caption describes one video
        metrics.update(literature_metrics(sims, positives, **misses))
    if dual_softmax:
        metrics.update(dual_softmax_metrics(sims, positives, **misses))
        log_query_ranks(split, sims, positives)
    return metrics


def query_ids(split: VideoTextSplit) -> tuple[list[str], list[str]]:
    """The ids of the text-to-video queries (``<video id>#<n>``: the n-th caption of that
    video) and of the video-to-text queries (video ids), in the order of the ranks; the
    queries of left-out videos (misses) are ``missed-caption#i`` and ``missed-video#i``."""
    seen: dict[int, int] = {}
    captions = []
    for video in split.caption_video:
        captions.append(f"{split.video_ids[video]}#{seen.get(video, 0)}")
        seen[video] = seen.get(video, 0) + 1
    captions += [f"missed-caption#{i}" for i in range(split.missed_captions)]
    videos = [*split.video_ids, *(f"missed-video#{i}" for i in range(split.missed_videos))]
    return captions, videos


def save_query_ranks(path: Path, split: VideoTextSplit, sims: torch.Tensor,
                     positives: torch.Tensor) -> None:
    """``path`` (.npz): ``t2v`` and ``v2t`` ranks (int64, 1-based, as the metrics count them)
    and ``t2v_ids``, ``v2t_ids`` (the query ids, ``query_ids``), so that runs of different
    methods on one split pair by query."""
    t2v, v2t = both_query_ranks(sims, positives, split.missed_captions, split.missed_videos)
    t2v_ids, v2t_ids = query_ids(split)
    np.savez_compressed(path, t2v=t2v.numpy().astype(np.int64), v2t=v2t.numpy().astype(np.int64),
                        t2v_ids=np.array(t2v_ids, dtype=str), v2t_ids=np.array(v2t_ids, dtype=str))


def log_query_ranks(split: VideoTextSplit, sims: torch.Tensor, positives: torch.Tensor) -> None:
    """Log ``ranks.npz`` to the active MLflow run (the main process only; nothing without one)."""
    import mlflow

    if mlflow.active_run() is None:
        return
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / RANKS_ARTIFACT
        with writing(path):  # a full disk names the file
            save_query_ranks(path, split, sims, positives)
        tracking.log_artifact(path)
