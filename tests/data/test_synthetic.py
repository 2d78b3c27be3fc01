"""The embedded synthetic dataset: determinism, split shapes, temporal minimal groups."""

from __future__ import annotations

import hashlib
import inspect
import os
import subprocess
import sys
from collections import defaultdict

import numpy as np
import pytest

from suite.data.synthetic import (
    ACTIONS,
    COLOURS,
    MOTION_WORDS,
    OPPOSITE,
    SHAPES,
    SIZES,
    SyntheticConfig,
    SyntheticSplit,
    VideoSpec,
    make_split,
    static_pairs,
)

SMALL = SyntheticConfig(num_train=40, num_val=12, num_test=60, frames=8, size=32)


def digest(split: SyntheticSplit) -> str:
    """Hash of every frame, mask and caption of a split."""
    h = hashlib.sha256()
    for i in range(len(split)):
        clip = split.load(i)
        h.update(clip.frames.tobytes())
        h.update(clip.mask.tobytes())
    h.update("\n".join(split.captions).encode())
    h.update(repr(split.caption_video).encode())
    return h.hexdigest()


@pytest.mark.parametrize("name", ["train", "val", "test"])
def test_same_config_same_data(name: str) -> None:
    assert digest(make_split(SMALL, name)) == digest(make_split(SMALL, name))


@pytest.mark.subprocess
def test_deterministic_across_processes(tmp_path) -> None:
    """Another interpreter (another hash seed) renders the same bytes: no hash(), no globals."""
    source = inspect.getsource(digest)
    code = ("import hashlib\n"
            "from suite.data.synthetic import SyntheticConfig, SyntheticSplit, make_split\n"
            f"{source}\nprint(digest(make_split(SyntheticConfig(**{vars(SMALL)!r}), 'test')))")
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=tmp_path, env=env).stdout.strip()
    assert out == digest(make_split(SMALL, "test"))


def test_different_seeds_differ() -> None:
    a, b = make_split(SMALL, "train"), make_split(SyntheticConfig(**{**vars(SMALL), "seed": 1}),
                                                   "train")
    assert a.captions != b.captions
    assert not np.array_equal(a.load(0).frames, b.load(0).frames)


def test_split_sizes_and_captions() -> None:
    config = SyntheticConfig(num_train=30, num_val=9, num_test=23, train_captions=4)
    train, val, test = (make_split(config, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (30, 9, 23)
    assert len(train.captions) == 30 * 4
    assert all(len(set(train.captions_of(i))) == 4 for i in range(len(train)))
    assert len(val.captions) == 9 and len(test.captions) == 23
    assert train.positives().shape == (120, 30)
    assert (train.positives().sum(0) == 4).all() and (train.positives().sum(1) == 1).all()
    assert test.positives().shape == (23, 23) and (test.positives() == np.eye(23)).all()
    assert len(set(test.captions)) == len(test.captions)  # one right video per test caption
    ids = set(train.video_ids) | set(val.video_ids) | set(test.video_ids)
    assert len(ids) == 30 + 9 + 23
    assert train.video_ids[7] == "synthetic-train-000007"


def test_default_config_matches_card() -> None:
    config = SyntheticConfig()
    assert (config.seed, config.num_train, config.num_val, config.num_test) == (0, 2000, 100, 500)
    assert (config.frames, config.size, config.train_captions) == (12, 64, 3)
    test = make_split(config, "test")
    assert len(test) == 500 and len(set(test.captions)) == 500


def test_clip_format() -> None:
    split = make_split(SMALL, "val")
    clip = split.load(3)
    assert clip.frames.dtype == np.uint8 and clip.frames.shape == (8, 32, 32, 3)
    assert clip.mask.dtype == bool and clip.mask.shape == (8,) and clip.mask.all()


def test_captions_follow_the_grammar() -> None:
    split = make_split(SMALL, "test")
    for spec, caption in zip(split.specs, split.captions, strict=True):
        clauses = [f"a {e.obj.size} {e.obj.colour} {e.obj.shape} {e.action}"
                   for e in spec.events]
        assert caption == ", then ".join(clauses)
    train = make_split(SMALL, "train")
    for i, spec in enumerate(train.specs):
        first = train.captions_of(i)[0]
        assert first == spec.caption()  # canonical first, paraphrases after
        for caption in train.captions_of(i):
            for e in spec.events:
                assert f"{e.obj.size} {e.obj.colour} {e.obj.shape}" in caption


def moving_object_changes(spec: VideoSpec) -> bool:
    return any(e.action != "stays still" for e in spec.events)


def test_frames_change_over_time() -> None:
    split = make_split(SMALL, "train")
    for i, spec in enumerate(split.specs[:20]):
        frames = split.load(i).frames.astype(int)
        changes = np.abs(np.diff(frames, axis=0)).sum(axis=(1, 2, 3))
        if moving_object_changes(spec):
            for e in spec.events:  # each event changes the frames inside its own window
                assert changes[e.start:e.end].sum() > 0, (i, e.action)
        else:
            assert changes.sum() == 0


def test_two_events_happen_in_their_halves() -> None:
    split = make_split(SMALL, "test")
    half = SMALL.frames // 2
    two = [s for s in split.specs if len(s.events) == 2]
    assert two
    for spec in two:
        first, second = spec.events
        assert 0 <= first.start < first.end <= half - 1
        assert half <= second.start < second.end <= SMALL.frames - 1
        assert (first.obj.shape, first.obj.colour) != (second.obj.shape, second.obj.colour)


def identity(spec: VideoSpec) -> set[tuple[str, str]]:
    return {(e.obj.shape, e.obj.colour) for e in spec.events}


def test_test_split_is_built_of_minimal_groups() -> None:
    split = make_split(SyntheticConfig(num_test=120, frames=12), "test")
    groups: dict[int, list[int]] = defaultdict(list)
    for i, spec in enumerate(split.specs):
        groups[spec.group].append(i)
    kinds = set()
    for members in groups.values():
        base = split.specs[members[0]]
        assert base.variant == "base"
        for i in members[1:]:
            other = split.specs[i]
            assert identity(other) == identity(base)  # same objects ...
            assert split.captions[i] != split.captions[members[0]]
            kinds.add(other.variant)
            if other.variant == "swapped":  # ... in the other order
                assert [e.obj for e in other.events] == [e.obj for e in base.events][::-1]
                assert [e.action for e in other.events] == [e.action for e in base.events][::-1]
            else:  # ... or with one event reversed in time and everything else equal
                which = {"reversed": 0, "first-reversed": 0, "second-reversed": 1}[other.variant]
                for k, (e, f) in enumerate(zip(base.events, other.events, strict=True)):
                    if k == which:
                        assert f.action == OPPOSITE[e.action]
                        assert (f.x0, f.y0, f.x1, f.y1) == (e.x1, e.y1, e.x0, e.y0)
                    else:
                        assert f == e
    assert kinds == {"reversed", "swapped", "first-reversed", "second-reversed"}


def test_reversed_video_is_the_base_played_backwards() -> None:
    """A model that ignores frame order cannot tell a motion pair apart."""
    split = make_split(SyntheticConfig(num_test=80, frames=12, size=48), "test")
    pairs = [i for i, s in enumerate(split.specs) if s.variant == "reversed"]
    assert pairs
    for i in pairs:
        event = split.specs[i].events[0]
        window = slice(event.start, event.end + 1)
        base, flipped = split.load(i - 1).frames, split.load(i).frames
        assert np.array_equal(flipped[window], base[window][::-1])
        assert not np.array_equal(flipped, base)


def test_static_pairs() -> None:
    images, captions = static_pairs(3, 300, size=40)
    assert images.dtype == np.uint8 and images.shape == (300, 40, 40, 3)
    assert len(captions) == 300
    for caption in captions:
        words = caption.split()
        assert not MOTION_WORDS.intersection(words), caption
        assert any(s in words for s in SIZES) and any(c in words for c in COLOURS)
        assert any(s in words for s in SHAPES)
        assert any(p in words for p in ("top", "bottom", "left", "right", "centre"))
    assert any(" and " in c for c in captions)  # sometimes two objects
    assert images.reshape(300, -1).max(1).min() > 100  # every image shows a bright object
    again, same = static_pairs(3, 300, size=40)
    assert np.array_equal(images, again) and captions == same
    assert static_pairs(4, 300, size=40)[1] != captions


def test_motion_words_cover_the_actions() -> None:
    for action in ACTIONS:
        assert MOTION_WORDS.intersection(action.split()), action


def test_bad_split_and_config() -> None:
    with pytest.raises(ValueError, match="train, val, test"):
        make_split(SMALL, "validation")
    with pytest.raises(ValueError, match="frames"):
        SyntheticConfig(frames=2)
    with pytest.raises(ValueError, match="train_captions"):
        SyntheticConfig(train_captions=0)
