"""Frame cache formats (data.cache_format): npy and ffv1 round-trip exactly, jpeg within its
measured tolerance; each format has its own folder; a run reads the format prepare wrote."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from video_fixtures import frame_indices, make_msrvtt, write_video

from suite.data.cards import load_card
from suite.data.frame_cache import CACHE_FORMATS, FrameCache, decode, encode, frames_dir
from suite.data.prepare import prepare
from suite.data.registry import load_split
from suite.data.video import read_clip
from suite.errors import UserError
from suite.job.config import RunConfig

# JPEG quality 95 without chroma subsampling, on decoded video frames at 224 px: measured
# in benchmarks/results/decode.md (up to about 20 levels, mean under 1.5).
JPEG_MAX_ABS = 40
JPEG_MEAN_ABS = 2.0


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Decoded frames of a fixture video at 224 px and at its own size, and noise of an odd
    size."""
    folder = tmp_path_factory.mktemp("cache-src")
    video = write_video(folder / "v.mp4", 60, fps=10, width=96, height=72)
    rng = np.random.default_rng(0)
    return {"video": read_clip(video, 6, size=224),
            "native": read_clip(video, 3, size=None),
            "odd noise": rng.integers(0, 256, (5, 33, 47, 3), dtype=np.uint8)}


@pytest.mark.parametrize("fmt", ["npy", "ffv1"])
def test_lossless_formats_round_trip_exactly(clips, fmt, tmp_path):
    for name, clip in clips.items():
        back = decode(encode(clip, fmt), fmt)
        assert back.dtype == np.uint8 and np.array_equal(back, clip), name
        cache = FrameCache(tmp_path / fmt, frames=8, size=None, format=fmt)
        cache.put(name, clip)
        assert np.array_equal(cache.get(name), clip)


def test_jpeg_round_trips_within_its_tolerance_and_is_smaller(clips):
    clip = clips["video"]
    data = encode(clip, "jpeg")
    back = decode(data, "jpeg")
    diff = np.abs(back.astype(np.int16) - clip)
    assert back.shape == clip.shape and back.dtype == np.uint8
    assert diff.max() <= JPEG_MAX_ABS and diff.mean() <= JPEG_MEAN_ABS
    assert diff.max() > 0  # lossy: why it is not the default
    assert len(data) < len(encode(clip, "npy")) / 2
    assert frame_indices(back) == frame_indices(clip)


@pytest.mark.slow
def test_jpeg_moves_embeddings_by_little(clips):
    """Cosine between a CLIP image tower's embeddings of the raw and the JPEG-cached frames
    (random ViT-B-32 weights: no weights are downloaded in tests)."""
    import open_clip
    import torch

    from suite.data.transforms import preprocess

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    clip = clips["video"]
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    with torch.no_grad():
        raw, jpeg = (model.encode_image(preprocess(torch.from_numpy(c), 224, mean, std))
                     for c in (clip, decode(encode(clip, "jpeg"), "jpeg")))
        other = model.encode_image(preprocess(torch.from_numpy(clip[::-1].copy()), 224, mean,
                                              std))
    cosine = torch.nn.functional.cosine_similarity(raw, jpeg).min().item()
    between_frames = torch.nn.functional.cosine_similarity(raw, other).min().item()
    assert cosine > 0.995 and cosine > between_frames


def test_each_format_has_its_own_folder_and_npy_keeps_the_old_name(tmp_path):
    videos = tmp_path / "videos"
    args = (tmp_path, "msrvtt", videos, 12, "tempme", 224)
    folders = {fmt: frames_dir(*args, fmt=fmt) for fmt in CACHE_FORMATS}
    assert len(set(folders.values())) == len(CACHE_FORMATS)
    from suite.data.video import SAMPLING_VERSION

    key = {"dataset": "msrvtt", "videos": str(videos.resolve()), "frames": 12,
           "policy": "tempme", "size": 224, "v": 1, "sampling": SAMPLING_VERSION, "window": ""}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    assert folders["npy"] == tmp_path / "frames" / f"msrvtt-12f-tempme-224px-{digest}"
    assert folders["jpeg"].name.startswith("msrvtt-12f-tempme-224px-jpeg-")


def test_unreadable_or_foreign_files_are_misses(tmp_path, clips):
    for fmt in CACHE_FORMATS:
        cache = FrameCache(tmp_path / fmt, frames=8, size=32, format=fmt)
        cache.path("x").parent.mkdir(parents=True, exist_ok=True)
        cache.path("x").write_bytes(b"not a cache file")
        assert cache.get("x") is None and cache.get("absent") is None
        cache.put("wrong-size", clips["video"])  # 224 px in a 32 px cache
        assert cache.get("wrong-size") is None


@pytest.mark.parametrize("fmt", ["ffv1", "jpeg"])
def test_prepare_writes_the_format_and_runs_read_it(tmp_path, fmt, monkeypatch):
    fx = make_msrvtt(tmp_path / "msrvtt")
    options = {"size": 32, "cache_format": fmt}
    report = prepare("msrvtt", str(fx.root), options, frames=4, cache=True,
                     show_progress=False)
    assert report.cached == 10 and report.cache_dir is not None
    config = RunConfig(method="zeroshot", dataset="msrvtt", backbone="tiny-clip", frames=4,
                       data_root=str(fx.root), on_bad_video="skip",
                       data_options={**options, "val_fraction": 0.25})
    split = load_split(load_card("msrvtt"), "test", config)
    assert split.cache is not None and split.cache.format == fmt
    assert str(split.cache.directory) == report.cache_dir
    assert split.cache.has("video8")
    assert split.cache.path("video8").name == {"ffv1": "video8.mkv", "jpeg": "video8.jpg.npz"}[fmt]
    expected = read_clip(fx.videos / "video8.mp4", 4, "tempme", 32)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the frame cache holds the video")

    monkeypatch.setattr("suite.data.real.read_clip", no_decoding)
    frames = split.load(split.video_ids.index("video8")).frames
    if fmt == "ffv1":
        assert np.array_equal(frames, expected)
    else:
        assert np.abs(frames.astype(np.int16) - expected).max() <= JPEG_MAX_ABS
    assert frame_indices(frames) == [0, 8, 16, 24]
    npy = load_split(load_card("msrvtt"), "test", RunConfig(
        method="zeroshot", dataset="msrvtt", backbone="tiny-clip", frames=4,
        data_root=str(fx.root), on_bad_video="skip",
        data_options={"size": 32, "val_fraction": 0.25}))
    assert npy.cache is None  # the npy cache was never written: formats never mix


def test_unknown_cache_format_is_a_user_error(tmp_path):
    fx = make_msrvtt(tmp_path / "msrvtt")
    with pytest.raises(UserError, match="valid: npy, ffv1, jpeg"):
        prepare("msrvtt", str(fx.root), {"cache_format": "png"}, frames=4,
                show_progress=False)
