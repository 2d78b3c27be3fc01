"""Benchmark: how fast videos reach the model, decoded with PyAV or read from the frame cache.

Writes N test videos (320 x 240, 30 fps, 15 s, H.264 by default; moving content with texture so
the decoder has real work), lays them out as an MSR-VTT-format dataset, and measures videos per
second through the suite's own pipeline (``load_split`` -> ``Videos`` -> DataLoader with the CLIP
collate: resize, crop, normalise) with 0, 1 and 2 worker processes, then again after
``suite prepare --cache`` from the frame cache. Prints a markdown table (and writes it to --out).

    python benchmarks/decode.py                     # 16 videos, 12 frames, 224 px
    python benchmarks/decode.py --videos 32 --frames 64 --out decode.md
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import av
import numpy as np


def write_video(path: Path, seconds: int, fps: int, width: int, height: int, seed: int,
                codec: str) -> None:
    """Textured gradient that pans, plus a moving square: real motion, real residuals."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (height * 2, width * 2, 3), dtype=np.uint8)
    texture = (texture // 2 + np.linspace(0, 127, width * 2, dtype=np.uint8)[None, :, None])
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(seconds * fps):
            dy, dx = (i * 2) % height, (i * 3) % width
            img = np.ascontiguousarray(texture[dy:dy + height, dx:dx + width])
            y, x = (i * 5) % (height - 40), (i * 7) % (width - 40)
            img[y:y + 40, x:x + 40] = (255, 64, 32)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_dataset(root: Path, videos: int, seconds: int, fps: int, width: int, height: int,
                 codec: str) -> None:
    """An MSR-VTT layout whose 1k-A test csv lists the benchmark videos."""
    (root / "videos").mkdir(parents=True, exist_ok=True)
    ids = [f"video{i}" for i in range(videos)]
    for i, video in enumerate(ids):
        write_video(root / "videos" / f"{video}.mp4", seconds, fps, width, height, i, codec)
    (root / "MSRVTT_data.json").write_text('{"sentences": []}')
    (root / "MSRVTT_train.9k.csv").write_text("video_id\n")
    (root / "MSRVTT_train.7k.csv").write_text("video_id\n")
    rows = "".join(f"ret{i},msr{i},{v},a benchmark clip {i}\n" for i, v in enumerate(ids))
    (root / "MSRVTT_JSFUSION_test.csv").write_text("key,vid_key,video_id,sentence\n" + rows)


def videos_per_second(split, workers: int, batch: int, image_size: int, repeats: int) -> float:
    """Median videos/s of full passes over the split through the suite's DataLoader."""
    import torch

    from suite.data.loading import ImageSpec, Videos, loader, make_collate, to_pixels

    spec = ImageSpec(image_size, (0.48145466, 0.4578275, 0.40821073),
                     (0.26862954, 0.26130258, 0.27577711))
    collate = make_collate(lambda texts: torch.empty(0))
    rates = []
    data = loader(Videos(split), batch, collate, shuffle=False, seed=0, num_workers=workers)
    cpu = torch.device("cpu")
    for _ in range(repeats):
        started = time.perf_counter()
        count = sum(to_pixels(frames, spec, cpu).shape[0] for _, frames, _ in data)
        rates.append(count / (time.perf_counter() - started))
    return statistics.median(rates)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--codec", default="libx264")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=224, help="decode size (model input)")
    parser.add_argument("--policy", default="tempme")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--repeats", type=int, default=3, help="passes per setting (median)")
    parser.add_argument("--dir", type=Path, help="keep the videos here (default: temporary)")
    parser.add_argument("--out", type=Path, help="also write the markdown table here")
    args = parser.parse_args(argv)

    import torch

    from suite.config import RunConfig
    from suite.data.cards import load_card
    from suite.data.registry import load_split
    from suite.prepare import prepare

    work = args.dir or Path(tempfile.mkdtemp(prefix="tvr-decode-bench-"))
    root, cache = work / "msrvtt", work / "cache"
    started = time.perf_counter()
    if not (root / "MSRVTT_JSFUSION_test.csv").is_file():
        make_dataset(root, args.videos, args.seconds, args.fps, args.width, args.height,
                     args.codec)
    made = time.perf_counter() - started
    options = {"size": args.size, "policy": args.policy, "cache_dir": str(cache)}
    shutil.rmtree(cache, ignore_errors=True)
    config = RunConfig(method="zeroshot", dataset="msrvtt", frames=args.frames,
                       data_root=str(root), data_options={**options, "cache": False})
    card = load_card("msrvtt")
    split = load_split(card, "test", config)

    rows = []
    for workers in args.workers:
        rate = videos_per_second(split, workers, args.batch, args.size, args.repeats)
        rows.append((f"PyAV decode, {workers} worker{'s' if workers != 1 else ''}", rate))
    decoded_rate = rows[0][1]

    started = time.perf_counter()
    report = prepare("msrvtt", str(root), options, frames=args.frames, cache=True,
                     show_progress=False)
    prepared = time.perf_counter() - started
    assert report.cached == args.videos, report.lines()
    cached_split = load_split(card, "test", RunConfig(
        method="zeroshot", dataset="msrvtt", frames=args.frames, data_root=str(root),
        data_options=options))
    assert cached_split.cache is not None
    cache_rate = videos_per_second(cached_split, 0, args.batch, args.size, args.repeats)
    rows.append(("frame cache, 0 workers", cache_rate))

    lines = [
        f"Decoding benchmark: {args.videos} videos, {args.width} x {args.height}, {args.fps} fps, "
        f"{args.seconds} s, {args.codec}; {args.frames} frames ({args.policy} policy) at "
        f"{args.size} px, batch {args.batch}, median of {args.repeats} passes, CLIP collate "
        "included.",
        "",
        "| source | videos / s | vs. decode (0 workers) |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {rate:.1f} | {rate / decoded_rate:.1f}x |" for name, rate in rows]
    lines += [
        "",
        f"Cache speed-up over decoding: {cache_rate / decoded_rate:.1f}x "
        f"(`suite prepare --cache` took {prepared:.1f} s; writing the videos {made:.1f} s).",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" torch {torch.__version__}, PyAV {av.__version__}, torch threads "
        f"{torch.get_num_threads()}.",
    ]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        args.out.write_text(text)
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
