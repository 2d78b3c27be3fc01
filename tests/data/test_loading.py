"""Training batches: every sample once per epoch, groups kept whole, seeded shuffles."""

from collections import Counter

import numpy as np

from suite.data.base import Clip, VideoTextSplit
from suite.data.loading import TrainingBatches
from suite.data.synthetic import SyntheticConfig, make_split


class Listed(VideoTextSplit):
    def load(self, index: int) -> Clip:
        return Clip(np.zeros((2, 4, 4, 3), np.uint8), np.ones(2, bool))


def split(videos=10, per_video=3, groups=None):
    caption_video = [v for v in range(videos) for _ in range(per_video)]
    s = Listed("t", [f"v{v}" for v in range(videos)], [f"c{i}" for i in range(len(caption_video))],
               caption_video)
    s.groups = groups
    return s


def test_all_sampling_takes_every_caption_once_per_epoch():
    sampler = TrainingBatches(split(), "all", batch_size=5, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 6
    assert sorted(c for b in batches for c in b) == list(range(30))


def test_video_sampling_takes_one_caption_per_video_and_reshuffles_by_epoch():
    s = split()
    sampler = TrainingBatches(s, "video", batch_size=5, seed=0)
    first = [c for b in sampler for c in b]
    assert sorted(s.caption_video[c] for c in first) == list(range(10))
    sampler.set_epoch(1)
    second = [c for b in sampler for c in b]
    assert first != second
    sampler.set_epoch(0)
    assert [c for b in sampler for c in b] == first  # seeded: the same epoch repeats


def test_groups_stay_together_and_the_last_partial_batch_is_dropped():
    groups = [0, 0, 0, 0, 1, 1, 2, 3, 3, 4]
    s = split(groups=groups)
    assert sum(len(b) for b in TrainingBatches(s, "video", batch_size=4, seed=3)) == 8
    order = [groups[s.caption_video[b[0]]] for b in TrainingBatches(s, "video", 1, seed=3)]
    assert Counter(order) == Counter(groups)
    runs = [g for i, g in enumerate(order) if i == 0 or order[i - 1] != g]
    assert len(runs) == len(set(groups))  # each group's videos are consecutive


def test_synthetic_training_videos_come_partly_in_minimal_groups():
    train = make_split(SyntheticConfig(num_train=40, train_captions=2, train_grouped=0.5),
                       "train")
    sizes = Counter(train.groups)
    assert max(sizes.values()) >= 2  # minimal groups present
    assert sum(1 for n in sizes.values() if n == 1) >= 15  # and independent videos
    grouped = make_split(SyntheticConfig(num_train=40, train_grouped=0.0), "train")
    assert set(Counter(grouped.groups).values()) == {1}
