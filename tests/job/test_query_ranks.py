"""Per-query ranks: the same ranks as the logged metrics, their query ids, and the run's
artifact ``ranks.npz`` that the report's intervals read."""

from __future__ import annotations

import mlflow
import numpy as np
import torch

from suite.data.base import Clip, VideoTextSplit
from suite.job.evaluation import RANKS_ARTIFACT, log_query_ranks, query_ids, save_query_ranks
from suite.job.metrics import both_query_ranks, retrieval_metrics, summarise


class Listed(VideoTextSplit):
    def load(self, index: int) -> Clip:
        return Clip(np.zeros((2, 4, 4, 3), np.uint8), np.ones(2, bool))


def split(missed_videos: int = 0, missed_captions: int = 0) -> Listed:
    """Four videos, two captions each; optionally videos left out (misses)."""
    caption_video = [0, 0, 1, 1, 2, 2, 3, 3]
    s = Listed("test", ["a", "b", "c", "d"], [f"c{i}" for i in range(8)], caption_video)
    s.missed_videos, s.missed_captions = missed_videos, missed_captions
    return s


def scored(s: VideoTextSplit) -> tuple[torch.Tensor, torch.Tensor]:
    sims = torch.randn(len(s.captions), len(s), generator=torch.Generator().manual_seed(0))
    return sims, torch.from_numpy(s.positives())


def test_ranks_are_those_of_the_logged_metrics():
    """Summarised, both directions' ranks give the logged figures, misses included."""
    s = split(missed_videos=1, missed_captions=2)
    sims, positives = scored(s)
    t2v, v2t = both_query_ranks(sims, positives, 2, 1)
    assert len(t2v) == 8 + 2 and len(v2t) == 4 + 1
    assert t2v[-2:].tolist() == [5, 5] and v2t[-1].item() == 10  # misses rank last
    metrics = retrieval_metrics(sims, positives, missed_t2v=2, missed_v2t=1)
    for key, value in summarise(t2v).items():
        assert metrics[f"t2v_{key}"] == value
    for key, value in summarise(v2t).items():
        assert metrics[f"v2t_{key}"] == value


def test_query_ids_name_each_caption_by_its_video_in_rank_order():
    captions, videos = query_ids(split(missed_videos=1, missed_captions=2))
    assert captions == ["a#0", "a#1", "b#0", "b#1", "c#0", "c#1", "d#0", "d#1",
                        "missed-caption#0", "missed-caption#1"]
    assert videos == ["a", "b", "c", "d", "missed-video#0"]


def test_saved_ranks_load_without_pickle(tmp_path):
    s = split()
    sims, positives = scored(s)
    save_query_ranks(tmp_path / RANKS_ARTIFACT, s, sims, positives)
    with np.load(tmp_path / RANKS_ARTIFACT) as saved:  # allow_pickle is False by default
        t2v, v2t = both_query_ranks(sims, positives)
        assert np.array_equal(saved["t2v"], t2v.numpy())
        assert np.array_equal(saved["v2t"], v2t.numpy())
        assert saved["t2v_ids"].tolist() == query_ids(s)[0]
        assert saved["v2t_ids"].tolist() == ["a", "b", "c", "d"]


def test_ranks_are_logged_to_the_active_run_only(tmp_path):
    s = split()
    sims, positives = scored(s)
    log_query_ranks(s, sims, positives)  # no run: nothing, no error
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri)
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "art").as_uri())
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    try:
        with mlflow.start_run(experiment_id=experiment) as run:
            log_query_ranks(s, sims, positives)
    finally:
        mlflow.set_tracking_uri(previous)
    assert [f.path for f in client.list_artifacts(run.info.run_id)] == [RANKS_ARTIFACT]
