"""Decoding and the frame policy of protocol.md, on tiny videos whose frames show their index."""

from __future__ import annotations

import numpy as np
import pytest
from video_fixtures import frame_indices, read_code, write_corrupt, write_video

from suite.data.augment import VideoRandAugment
from suite.data.frame_cache import FrameCache, Journal, ScanEntry, read_journal
from suite.data.video import (
    BadVideoError,
    _decode,
    candidate_frames,
    pad,
    probe,
    read_clip,
    sample_frames,
)
from suite.errors import UserError

SUFFIXES = [".mp4", ".webm", ".avi", ".mkv"]  # H.264, VP8, MPEG-4 part 2, VP9


@pytest.fixture(scope="module")
def videos(tmp_path_factory):
    """{(length, suffix): path}: 10 fps videos of 100 (10 s), 25 (2.5 s) and 3 frames."""
    folder = tmp_path_factory.mktemp("videos")
    return {(n, s): write_video(folder / f"v{n}{s}", n, fps=10) for n in (100, 25, 3)
            for s in SUFFIXES}


# ----------------------------------------------------------------------------- the policy


def test_candidates_are_one_frame_per_second():
    assert candidate_frames(100, 10).tolist() == list(range(0, 100, 10))
    assert candidate_frames(25, 10).tolist() == [0, 10, 20]
    assert candidate_frames(90, 29.97).tolist() == [0, 29, 59, 89]
    assert candidate_frames(5, 0.5).tolist() == [0, 1, 2, 3, 4]  # slower than 1 fps: every frame


def test_more_candidates_than_frames_take_evenly_spaced_candidates():
    for policy in ("tempme", "clip4clip"):
        s = sample_frames(100, 10, 4, policy)
        assert s.indices.tolist() == [0, 30, 60, 90] and s.real == 4
    assert sample_frames(100, 10, 10).indices.tolist() == list(range(0, 100, 10))


def test_fewer_candidates_tempme_spreads_raw_frames_and_repeats():
    s = sample_frames(25, 10, 4, "tempme")
    assert s.indices.tolist() == [0, 8, 16, 24] and s.real == 4
    tiny = sample_frames(3, 10, 4, "tempme")
    assert tiny.indices.tolist() == [0, 0, 1, 2] and tiny.real == 4  # repeats, no padding


def test_fewer_candidates_clip4clip_keeps_them_and_pads():
    s = sample_frames(25, 10, 4, "clip4clip")
    assert s.indices.tolist() == [0, 10, 20] and s.real == 3
    clip, mask = pad(np.ones((3, 2, 2, 3), np.uint8), 4)
    assert mask.tolist() == [True, True, True, False]
    assert clip.shape == (4, 2, 2, 3) and not clip[3].any()


def test_unknown_policy_is_a_user_error():
    with pytest.raises(UserError, match="valid: tempme, clip4clip"):
        sample_frames(10, 10, 4, "uniform")


# ----------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("suffix", SUFFIXES)
def test_decoded_frames_are_the_ones_the_policy_names(videos, suffix):
    assert frame_indices(read_clip(videos[100, suffix], 4, size=None)) == [0, 30, 60, 90]
    assert frame_indices(read_clip(videos[25, suffix], 4, size=None)) == [0, 8, 16, 24]
    assert frame_indices(read_clip(videos[3, suffix], 4, size=None)) == [0, 0, 1, 2]
    short = read_clip(videos[25, suffix], 4, "clip4clip", size=None)
    assert frame_indices(short) == [0, 10, 20]  # pad() adds the masked black frame


def test_frames_are_resized_and_centre_cropped(videos):
    clip = read_clip(videos[25, ".mp4"], 4, size=32)  # 64 x 48 -> 43 x 32 -> 32 x 32
    assert clip.shape == (4, 32, 32, 3) and clip.dtype == np.uint8
    assert frame_indices(clip) == [0, 8, 16, 24]  # the code sits in the centre square


def test_seeking_reads_the_same_frames_with_less_decoding(tmp_path):
    path = write_video(tmp_path / "gop.mp4", 300, fps=10, gop=5)
    targets = [0, 90, 190, 290]
    fast, decoded_fast = _decode(path, targets, 10.0, None, seek=True)
    slow, decoded_slow = _decode(path, targets, 10.0, None, seek=False)
    assert [read_code(fast[t])[1] for t in targets] == targets
    assert all(np.array_equal(fast[t], slow[t]) for t in targets)
    assert decoded_fast < decoded_slow / 4
    assert frame_indices(read_clip(path, 4, size=None)) == targets


def test_corrupt_and_missing_videos_raise_one_line_naming_the_file(tmp_path):
    bad = write_corrupt(tmp_path / "bad.mp4")
    with pytest.raises(BadVideoError, match=f"cannot decode video {bad}") as info:
        read_clip(bad, 4)
    assert "\n" not in str(info.value)
    assert probe(bad) and probe(tmp_path / "none.mp4")
    with pytest.raises(BadVideoError, match="none.mp4"):
        read_clip(tmp_path / "none.mp4", 4)


def test_bad_video_error_from_a_dataloader_worker_keeps_its_one_line():
    """DataLoader workers re-raise as type(exc)(traceback text); the first message survives."""
    wrapped = ("Caught BadVideoError in DataLoader worker process 0.\nOriginal Traceback (most "
               "recent call last):\n  File \"x.py\", line 1, in f\n    g()\n"
               "suite.data.video.BadVideoError: cannot decode video /d/v.mp4: Invalid data\n")
    assert str(BadVideoError(wrapped)) == "cannot decode video /d/v.mp4: Invalid data"
    assert isinstance(BadVideoError("x"), UserError)


# ----------------------------------------------------------------------------- augmentation


def test_randaugment_applies_the_same_ops_to_every_frame():
    import torch

    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    clip = np.stack([frame] * 4)
    torch.manual_seed(0)
    outs = [VideoRandAugment()(clip) for _ in range(6)]
    for out in outs:
        assert out.shape == clip.shape and out.dtype == np.uint8
        assert all(np.array_equal(out[0], out[i]) for i in range(1, 4))
    assert any(not np.array_equal(out, clip) for out in outs)


# ----------------------------------------------------------------------------- frame cache


def test_frame_cache_round_trip_and_shape_check(tmp_path):
    cache = FrameCache(tmp_path / "c", frames=4, size=8)
    clip = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    cache.put("some/odd id@x.mov", clip)
    assert np.array_equal(cache.get("some/odd id@x.mov"), clip)
    assert [p.name for p in (tmp_path / "c").iterdir()] == ["some%2Fodd%20id@x.mov.npy"]
    assert cache.get("absent") is None
    cache.put("wrong", clip[:, :4])
    assert cache.get("wrong") is None  # not this cache's size: decoded instead


def test_journal_keeps_the_last_entry_and_ignores_a_torn_line(tmp_path):
    video = write_video(tmp_path / "v.mp4", 3)
    path = tmp_path / "j.jsonl"
    st = video.stat()
    with Journal(path) as journal:
        journal.add(ScanEntry("a", str(video), st.st_size, st.st_mtime_ns, "unreadable", "x"))
        journal.add(ScanEntry("a", str(video), st.st_size, st.st_mtime_ns, "ok"))
    with path.open("a") as f:
        f.write('{"video_id": "b", "pa')  # interrupted mid-write
    entries = read_journal(path)
    assert list(entries) == ["a"] and entries["a"].status == "ok" and entries["a"].current()
    write_video(video, 4)
    assert not read_journal(path)["a"].current()
