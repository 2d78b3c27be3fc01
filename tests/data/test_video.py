"""Decoding and the frame policy of protocol.md, on tiny videos whose frames show their index."""

from __future__ import annotations

import numpy as np
import pytest
from video_fixtures import frame_indices, read_code, write_corrupt, write_video

from suite.data.augment import VideoRandAugment
from suite.data.decoders import decode_planned, decode_sequential, index_stream
from suite.data.frame_cache import FrameCache, Journal, ScanEntry, frames_dir, read_journal
from suite.data.video import (
    BadVideoError,
    candidate_frames,
    pad,
    probe,
    read_clip,
    sample_frames,
    stride,
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


def tempme_reference(num_frames: int, fps: float, max_frames: int) -> list[int]:
    """LunarShen/TempMe tvr/dataloaders/dataloader_retrieval.py, ``_get_rawvideo_dec`` lines
    258-278, with no start or end time (every TempMe loader) and ``video_framerate=1`` (main.py
    line 56); ``num_frames`` and ``fps`` stand for ``len(vreader)`` and ``get_avg_fps()``:

        f_start = 0 if start_time is None else int(start_time * fps)
        f_end = int(min(1000000000 if end_time is None else end_time * fps, len(vreader) - 1))
        num_frames = f_end - f_start + 1
        if num_frames > 0:
            sample_fps = int(self.video_framerate)
            t_stride = int(round(float(fps) / sample_fps))
            all_pos = list(range(f_start, f_end + 1, t_stride))
            if len(all_pos) > self.max_frames:
                sample_pos = [all_pos[_] for _ in np.linspace(0, len(all_pos) - 1,
                                                              num=self.max_frames, dtype=int)]
            elif len(all_pos) == self.max_frames:
                sample_pos = all_pos
            else:
                sample_pos = list(np.linspace(f_start, f_end, num=self.max_frames, dtype=int))
    """
    f_start, f_end = 0, int(min(1000000000, num_frames - 1))
    t_stride = int(round(float(fps) / 1))
    all_pos = list(range(f_start, f_end + 1, t_stride))
    if len(all_pos) > max_frames:
        return [all_pos[i] for i in np.linspace(0, len(all_pos) - 1, num=max_frames, dtype=int)]
    if len(all_pos) == max_frames:
        return all_pos
    return [int(i) for i in np.linspace(f_start, f_end, num=max_frames, dtype=int)]


def clip4clip_reference(num_frames: int, fps: float, max_frames: int,
                        end_time: int | None = None) -> list[int]:
    """ArrowLuo/CLIP4Clip dataloaders/rawvideo_util.py ``video_to_tensor`` lines 33-65 with
    ``sample_fp=1`` (``--feature_framerate 1``) and start time 0 when a window is given (DiDeMo:
    0-31), then ``slice_framepos=2`` (every script of its README), e.g.
    dataloader_msrvtt_retrieval.py lines 105-112. A read at or past ``frameCount`` fails:

        frameCount = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        fps = int(cap.get(cv2.CAP_PROP_FPS))
        total_duration = (frameCount + fps - 1) // fps
        start_sec, end_sec = 0, total_duration
        if start_time is not None:
            start_sec, end_sec = start_time, end_time if end_time <= total_duration \
                else total_duration
        interval = fps // sample_fp ...; inds = [ind for ind in np.arange(0, fps, interval)]
        inds = inds[:sample_fp]
        for sec in np.arange(start_sec, end_sec + 1):
            if not ret: break
            sec_base = int(sec * fps)
            for ind in inds:
                cap.set(cv2.CAP_PROP_POS_FRAMES, sec_base + ind)
                ret, frame = cap.read()
                if not ret: break
        ...
        if self.max_frames < raw_video_slice.shape[0]:
            sample_indx = np.linspace(0, raw_video_slice.shape[0] - 1, num=self.max_frames,
                                      dtype=int)
    """
    fps_i = int(fps)
    total_duration = (num_frames + fps_i - 1) // fps_i
    start_sec, end_sec = 0, total_duration
    if end_time is not None:
        end_sec = end_time if end_time <= total_duration else total_duration
    inds = [int(i) for i in np.arange(0, fps_i, fps_i // 1)][:1]
    read, ret = [], True
    for sec in np.arange(start_sec, end_sec + 1):
        if not ret:
            break
        sec_base = int(sec * fps_i)
        for ind in inds:
            ret = sec_base + ind < num_frames
            if not ret:
                break
            read.append(sec_base + ind)
    if max_frames < len(read):
        return [read[i] for i in np.linspace(0, len(read) - 1, num=max_frames, dtype=int)]
    return read


RATES = [29.97, 30000 / 1001, 23.976, 24000 / 1001, 59.94, 60000 / 1001, 25.0, 30.0, 10.0]


@pytest.mark.parametrize("fps", RATES)
@pytest.mark.parametrize("frames", [4, 12, 64])
def test_tempme_policy_takes_the_frames_of_the_official_tempme_loader(fps, frames):
    for seconds in [0.03, 0.4, 1.0, 2.5, 3.99, 4.0, 7.3, 11.9, 12.0, 12.5, 15, 30, 63.7, 64,
                    65, 121.4, 180, 600]:
        n = max(1, round(seconds * fps))
        s = sample_frames(n, fps, frames, "tempme")
        assert s.indices.tolist() == tempme_reference(n, fps, frames), (n, fps, frames)
        assert s.real == frames  # never padded


@pytest.mark.parametrize("fps", RATES)
@pytest.mark.parametrize("frames", [4, 12, 64])
@pytest.mark.parametrize("end_second", [None, 31])
def test_clip4clip_policy_takes_the_frames_of_the_clip4clip_loader(fps, frames, end_second):
    for seconds in [0.03, 0.4, 1.0, 2.5, 3.99, 4.0, 7.3, 11.9, 12.0, 12.5, 15, 30, 31, 31.5,
                    32, 40, 63.7, 64, 65, 121.4, 180, 600]:
        n = max(1, round(seconds * fps))
        s = sample_frames(n, fps, frames, "clip4clip", end_second)
        expected = clip4clip_reference(n, fps, frames, end_second)
        assert s.indices.tolist() == expected, (n, fps, frames, end_second)
        assert s.real == len(expected)  # padded to ``frames`` by pad()


def test_strides_at_ntsc_rates_differ_from_one_frame_per_second():
    """The references' strides, not floor(k * fps): at 29.97 fps TempMe steps 30 frames,
    CLIP4Clip 29; 20 s (600 frames), 12 frames, worked by hand from the lines above."""
    assert stride(29.97, "tempme") == 30 and stride(29.97, "clip4clip") == 29
    assert stride(23.976, "tempme") == 24 and stride(23.976, "clip4clip") == 23
    assert stride(59.94, "tempme") == 60 and stride(59.94, "clip4clip") == 59
    assert stride(2.5, "tempme") == 2  # Python's round: half to even, as the reference
    # tempme: 20 candidates 0, 30, ..., 570; linspace(0, 19, 12) -> 0 1 3 5 6 8 10 12 13 15 17 19
    assert sample_frames(600, 29.97, 12, "tempme").indices.tolist() == [
        0, 30, 90, 150, 180, 240, 300, 360, 390, 450, 510, 570]
    # clip4clip: 21 candidates 0, 29, ..., 580; linspace(0, 20, 12) -> 0 1 3 5 7 9 10 12 14 16 18 20
    assert sample_frames(600, 29.97, 12, "clip4clip").indices.tolist() == [
        0, 29, 87, 145, 203, 261, 290, 348, 406, 464, 522, 580]
    # the rule before: floor(k * 29.97) -> the last candidate was frame 569 (tempme) or 599
    assert 599 not in sample_frames(600, 29.97, 12, "clip4clip").indices


def test_clip4clip_window_reads_seconds_0_to_31_only():
    """DiDeMo under clip4clip: 40 s at 29.97 fps (1199 frames) gives the 32 candidates of
    seconds 0-31 (0, 29, ..., 899), all kept and padded to 64; the whole file would give 42."""
    s = sample_frames(1199, 29.97, 64, "clip4clip", end_second=31)
    assert s.indices.tolist() == [29 * k for k in range(32)] and s.real == 32
    assert sample_frames(1199, 29.97, 64, "clip4clip").real == 42
    short = sample_frames(300, 29.97, 64, "clip4clip", end_second=31)  # 10 s: the clip bounds it
    assert short.indices.tolist() == [29 * k for k in range(11)]
    with pytest.raises(ValueError, match="TempMe has no window"):
        candidate_frames(1199, 29.97, "tempme", end_second=31)


def test_unknown_rate_takes_every_frame_as_a_candidate():
    for policy in ("tempme", "clip4clip"):
        assert candidate_frames(5, 0.0, policy).tolist() == [0, 1, 2, 3, 4]
        assert candidate_frames(5, float("nan"), policy).tolist() == [0, 1, 2, 3, 4]
        assert candidate_frames(5, 0.4, policy).tolist() == [0, 1, 2, 3, 4]  # stride would be 0


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


def test_decoded_frames_at_29_97_fps_follow_each_reference(tmp_path):
    """100 frames at 30000/1001 fps: TempMe strides 30 (0 30 60 90), CLIP4Clip 29 (0 29 58 87);
    the old floor(k * fps) rule took 0 29 59 89."""
    from fractions import Fraction

    path = write_video(tmp_path / "ntsc.mp4", 100, fps=Fraction(30000, 1001))
    for policy in ("tempme", "clip4clip"):
        expected = (tempme_reference if policy == "tempme" else clip4clip_reference)(
            100, 30000 / 1001, 4)
        assert frame_indices(read_clip(path, 4, policy, size=None)) == expected
    assert frame_indices(read_clip(path, 4, "tempme", size=None)) == [0, 30, 60, 90]
    assert frame_indices(read_clip(path, 4, "clip4clip", size=None)) == [0, 29, 58, 87]


def test_decoded_window_stops_at_second_31(tmp_path):
    """40 s at 2 fps (80 frames): seconds 0-31 are frames 0, 2, ..., 62; 4 of the 32 evenly."""
    path = write_video(tmp_path / "long.mp4", 80, fps=2)
    windowed = frame_indices(read_clip(path, 4, "clip4clip", size=None, end_second=31))
    assert windowed == clip4clip_reference(80, 2, 4, 31) == [0, 20, 40, 62]
    assert frame_indices(read_clip(path, 4, "clip4clip", size=None)) == [0, 26, 52, 78]
    with pytest.raises(ValueError, match="only the clip4clip policy"):
        read_clip(path, 4, "tempme", size=None, end_second=31)


def test_frames_are_resized_and_centre_cropped(videos):
    clip = read_clip(videos[25, ".mp4"], 4, size=32)  # 64 x 48 -> 43 x 32 -> 32 x 32
    assert clip.shape == (4, 32, 32, 3) and clip.dtype == np.uint8
    assert frame_indices(clip) == [0, 8, 16, 24]  # the code sits in the centre square


def test_the_plan_reads_the_same_frames_with_less_decoding(tmp_path):
    path = write_video(tmp_path / "gop.mp4", 300, fps=10, gop=5)
    targets = [0, 90, 190, 290]
    planned = decode_planned(path, index_stream(path), targets, None)
    assert planned is not None
    fast, decoded_fast = planned
    slow, decoded_slow = decode_sequential(path, targets, None)
    assert [read_code(fast[t])[1] for t in targets] == targets
    assert all(np.array_equal(fast[t], slow[t]) for t in targets)
    assert decoded_slow == 291 and decoded_fast < decoded_slow / 4
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
               "suite.errors.BadVideoError: cannot decode video /d/v.mp4: Invalid data\n")
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


def test_cache_folder_changes_with_the_sampling_rules(tmp_path, monkeypatch):
    """Frames cached under an older sampling rule are never read as the current rule's."""
    import hashlib
    import json

    import suite.data.video as video

    videos = tmp_path / "videos"
    args = (tmp_path, "didemo", videos, 12, "clip4clip", 224)
    now = frames_dir(*args)
    # The folder name before the rules were versioned (floor(k * fps) for both policies).
    before = {"dataset": "didemo", "videos": str(videos.resolve()), "frames": 12,
              "policy": "clip4clip", "size": 224, "v": 1}
    digest = hashlib.sha256(json.dumps(before, sort_keys=True).encode()).hexdigest()[:16]
    assert now != tmp_path / "frames" / f"didemo-12f-clip4clip-224px-{digest}"
    assert frames_dir(*args, window="seconds 0-31") != now
    monkeypatch.setattr(video, "SAMPLING_VERSION", video.SAMPLING_VERSION + 1)
    assert frames_dir(*args) != now


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
