"""Benchmark: how fast sampled frames reach the model, by decoder, frame policy and DataLoader
workers, and from the frame cache in each format.

Writes N test videos (320 x 240, 30 fps, 15 s, H.264 by default; moving textured content so the
decoder has real work), then measures in one process, in alternating rounds (every setting once
per round, medians over rounds), so that load from other programs hits all settings alike:

- decoders: PyAV decoding every frame up to the last sampled one (``seek=False``, what the suite
  did before the decoding plan), PyAV with the plan (the default), and torchcodec and decord2
  when installed (``pip install -e .[decoders]``; torchcodec also needs FFmpeg's shared
  libraries), each taking the same sampled frame indices; videos/s with 0, 1 and 2 DataLoader
  workers (batches of 4, normalised as the CLIP collate does), CPU ms per video (0 workers),
  packets decoded per video;
- exactness: every decoder's frames against PyAV's at the video's own size, and at the model's
  size (PyAV scales in the same swscale call as the colour conversion; the others hand out RGB,
  which is then scaled with swscale bicubic);
- the frame cache: MiB per video, videos/s (0 workers) and what each format changes in pixels.

Prints one markdown table per part (and writes them to --out, with the rates as JSON rows in
the same name with .json, which ``benchmarks/throughput.py --decode-rates`` adds to its table)
with the CPU's flags.

    python benchmarks/decode.py                          # 16 videos, 12 frames, 224 px
    python benchmarks/decode.py --gop 50 --out benchmarks/results/decode-gop50.md
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import av
import numpy as np

from suite.data.decoders import convert, decode_planned, decode_sequential, index_stream
from suite.data.frame_cache import CACHE_FORMATS, FrameCache
from suite.data.video import read_clip, sample_frames

Reader = Callable[[str], np.ndarray]


def write_video(path: Path, seconds: int, fps: int, width: int, height: int, seed: int,
                codec: str, gop: int | None = None) -> None:
    """Textured gradient that pans, plus a moving square: real motion, real residuals."""
    rng = np.random.default_rng(seed)
    texture = rng.integers(0, 256, (height * 2, width * 2, 3), dtype=np.uint8)
    texture = (texture // 2 + np.linspace(0, 127, width * 2, dtype=np.uint8)[None, :, None])
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if gop:
            stream.codec_context.gop_size = gop
        for i in range(seconds * fps):
            dy, dx = (i * 2) % height, (i * 3) % width
            img = np.ascontiguousarray(texture[dy:dy + height, dx:dx + width])
            y, x = (i * 5) % (height - 40), (i * 7) % (width - 40)
            img[y:y + 40, x:x + 40] = (255, 64, 32)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# ----------------------------------------------------------------------------- decoders


def pyav_reader(frames: int, policy: str, size: int | None, seek: bool) -> Reader:
    return lambda path: read_clip(path, frames, policy, size, seek=seek)


def scale_rgb(clip: np.ndarray, size: int | None) -> np.ndarray:
    """RGB frames -> short side ``size`` (swscale bicubic), centre crop: ``convert`` on RGB."""
    if size is None:
        return clip
    return np.stack([convert(av.VideoFrame.from_ndarray(f, format="rgb24"), size)
                     for f in clip])


def sampled(path: str, frames: int, policy: str) -> list[int]:
    """The sampled indices, from the same stream facts PyAV's path uses."""
    info = index_stream(path).info
    return sample_frames(info.num_frames, info.fps, frames, policy).indices.tolist()


def torchcodec_reader(frames: int, policy: str, size: int | None) -> Reader:
    from torchcodec.decoders import VideoDecoder

    def read(path: str) -> np.ndarray:
        decoder = VideoDecoder(path, seek_mode="exact", num_ffmpeg_threads=1,
                               dimension_order="NHWC")
        batch = decoder.get_frames_at(sampled(path, frames, policy)).data.numpy()
        return scale_rgb(batch, size)

    return read


def decord_reader(frames: int, policy: str, size: int | None) -> Reader:
    import decord

    def read(path: str) -> np.ndarray:
        reader = decord.VideoReader(path, num_threads=1)
        return scale_rgb(reader.get_batch(sampled(path, frames, policy)).asnumpy(), size)

    return read


def optional_decoders(probe_path: str) -> tuple[dict[str, Callable[..., Reader]], list[str]]:
    """The optional decoders that load and decode here, and why the others do not."""
    found: dict[str, Callable[..., Reader]] = {}
    notes = []
    for name, make in (("torchcodec", torchcodec_reader), ("decord2", decord_reader)):
        try:
            make(1, "tempme", None)(probe_path)
            found[name] = make
        except ImportError:
            notes.append(f"{name}: not installed (`pip install -e .[decoders]`)")
        except Exception as exc:  # noqa: BLE001 - any failure to load means "not usable here"
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            notes.append(f"{name}: installed but does not decode here ({reason[:160]})")
    return found, notes


def packets_decoded(path: str, frames: int, policy: str, seek: bool) -> int:
    index = index_stream(path)
    targets = sorted(set(sampled(path, frames, policy)))
    planned = decode_planned(path, index, targets, None) if seek else None
    return planned[1] if planned is not None else decode_sequential(path, targets, None)[1]


# ----------------------------------------------------------------------------- timing


class Clips:
    """A map-style dataset: video i -> its frames, read by ``reader`` (picklable by fork)."""

    def __init__(self, items: list[str], reader: Reader) -> None:
        self.items, self.reader = items, reader

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        import torch

        return torch.from_numpy(np.ascontiguousarray(self.reader(self.items[i])))


def collate(clips):
    """Pad to the longest clip (clip4clip clips can be shorter) and stack."""
    import torch

    n = max(len(c) for c in clips)
    out = torch.zeros((len(clips), n, *clips[0].shape[1:]), dtype=torch.uint8)
    for i, c in enumerate(clips):
        out[i, :len(c)] = c
    return out


def cpu_ms(items: list[str], reader: Reader) -> float:
    """CPU ms per video of reading every video once in this process: the cost per core, which
    load from other programs on the machine does not change much."""
    started = time.process_time()
    for item in items:
        reader(item)
    return 1000 * (time.process_time() - started) / len(items)


def one_pass(items: list[str], reader: Reader, workers: int, batch: int, size: int) -> float:
    """Videos/s of one pass through a DataLoader that also normalises the frames as the
    suite's CLIP collate does."""
    import torch
    from torch.utils.data import DataLoader

    from suite.data.loading import ImageSpec, to_pixels

    spec = ImageSpec(size, (0.48145466, 0.4578275, 0.40821073),
                     (0.26862954, 0.26130258, 0.27577711))
    data = DataLoader(Clips(items, reader), batch_size=batch, num_workers=workers,
                      collate_fn=collate, shuffle=False)
    wall = time.perf_counter()
    count = sum(to_pixels(frames, spec, torch.device("cpu")).shape[0] for frames in data)
    return count / (time.perf_counter() - wall)


def max_mean_diff(a: np.ndarray, b: np.ndarray) -> tuple[int, float]:
    if a.shape != b.shape:
        return -1, float("nan")
    diff = np.abs(a.astype(np.int16) - b)
    return int(diff.max()), float(diff.mean())


def embedding_cosine(raw: list[np.ndarray], other: list[np.ndarray], size: int
                     ) -> tuple[float, float]:
    """(min, mean) cosine between a ViT-B-32 image tower's embeddings (random weights, seed 0:
    nothing is downloaded) of the same frames raw and from a lossy cache."""
    import open_clip
    import torch

    from suite.data.transforms import preprocess

    torch.manual_seed(0)
    model = open_clip.create_model("ViT-B-32", pretrained=None).eval()
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    cosines = []
    with torch.no_grad():
        for a, b in zip(raw, other, strict=True):
            ea, eb = (model.encode_image(preprocess(torch.from_numpy(c), size, mean, std))
                      for c in (a, b))
            cosines.append(torch.nn.functional.cosine_similarity(ea, eb))
    values = torch.cat(cosines)
    return values.min().item(), values.mean().item()


def cpu_description() -> tuple[str, str]:
    """(model and cores, flags) from lscpu, else /proc/cpuinfo."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        model = fields.get("Model name", model).strip()
        flags = fields.get("Flags", "").strip()
    except (OSError, subprocess.CalledProcessError):
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("flags"):
                    flags = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return f"{model}, {os.cpu_count()} CPUs", flags


def versions() -> str:
    import torch

    parts = [f"Python {platform.python_version()}", f"torch {torch.__version__}",
             f"PyAV {av.__version__} (FFmpeg {av.ffmpeg_version_info})"]
    for name, module in (("torchcodec", "torchcodec"), ("decord2", "decord")):
        with contextlib.suppress(ImportError):
            parts.append(f"{name} {__import__(module).__version__}")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--codec", default="libx264")
    parser.add_argument("--gop", type=int, default=0, help="keyframe interval (0: encoder's)")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--size", type=int, default=224, help="decode size (model input)")
    parser.add_argument("--policies", nargs="+", default=["tempme", "clip4clip"])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median)")
    parser.add_argument("--cosine", action="store_true",
                        help="also embed raw and cached frames with a ViT-B-32 image tower "
                             "(random weights) and report their cosine per cache format")
    parser.add_argument("--dir", type=Path, help="keep the videos here (default: temporary)")
    parser.add_argument("--out", type=Path, help="also write the markdown tables here, and "
                        "the rates as JSON rows beside it (.json) for benchmarks/throughput.py")
    args = parser.parse_args(argv)

    work = args.dir or Path(tempfile.mkdtemp(prefix="tvr-decode-bench-"))
    (work / "videos").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    items, written = [], 0
    for i in range(args.videos):
        path = work / "videos" / f"video{i}.mp4"
        if not path.is_file():
            write_video(path, args.seconds, args.fps, args.width, args.height, i, args.codec,
                        args.gop or None)
            written += 1
        items.append(str(path))
    made = (f"written in {time.perf_counter() - started:.0f} s" if written
            else f"reused from {work}")

    optional, notes = optional_decoders(items[0])
    makers: dict[str, Callable[[str], Reader]] = {
        "PyAV, every frame (before)": lambda p: pyav_reader(args.frames, p, args.size, False),
        "PyAV, decoding plan (default)": lambda p: pyav_reader(args.frames, p, args.size, True),
    }
    for name, make in optional.items():
        makers[name] = lambda p, make=make: make(args.frames, p, args.size)

    # Exactness at the video's own size and at the model's, against PyAV (every frame).
    exact: dict[tuple[str, str], str] = {}
    for policy in args.policies:
        reference = {s: [read_clip(v, args.frames, policy, s, seek=False) for v in items[:4]]
                     for s in (None, args.size)}
        for name in makers:
            cells = []
            for s in (None, args.size):
                if name.startswith("PyAV"):
                    reader = pyav_reader(args.frames, policy, s, "plan" in name)
                else:
                    reader = optional[name](args.frames, policy, s)
                diffs = [max_mean_diff(reader(v), r) for v, r in zip(items, reference[s],
                                                                      strict=False)]
                worst = max(d[0] for d in diffs)
                mean = statistics.fmean(d[1] for d in diffs)
                cells.append("identical" if worst == 0 else f"max {worst}, mean {mean:.2f}")
            exact[name, policy] = f"{cells[0]} / {cells[1]}"

    pairs = [(name, policy) for name in makers for policy in args.policies]
    rates: dict[tuple[str, str, int], list[float]] = {
        (name, policy, w): [] for name, policy in pairs for w in args.workers}
    costs: dict[tuple[str, str], list[float]] = {pair: [] for pair in pairs}
    for _ in range(args.rounds):
        for name, policy in pairs:
            reader = makers[name](policy)
            costs[name, policy].append(cpu_ms(items, reader))
            for workers in args.workers:
                rates[name, policy, workers].append(
                    one_pass(items, reader, workers, args.batch, args.size))
    packets = {(seek, policy): statistics.fmean(packets_decoded(v, args.frames, policy, seek)
                                                for v in items)
               for seek in (False, True) for policy in args.policies}
    frames_per_video = statistics.fmean(index_stream(v).info.num_frames for v in items)

    # The frame cache, per format: written from PyAV's frames, then read in alternating rounds.
    cache_rows = []
    clips = {v: read_clip(v, args.frames, args.policies[0], args.size) for v in items}
    caches = {fmt: FrameCache(work / "cache" / fmt, args.frames, args.size, fmt)
              for fmt in CACHE_FORMATS}
    for cache in caches.values():
        shutil.rmtree(cache.directory, ignore_errors=True)
        for v, clip in clips.items():
            cache.put(v.replace("/", "_"), clip)
    cache_rates: dict[str, list[float]] = {fmt: [] for fmt in CACHE_FORMATS}

    def cached(cache: FrameCache) -> Reader:
        def read(path: str) -> np.ndarray:
            clip = cache.get(path.replace("/", "_"))
            assert clip is not None
            return clip
        return read

    cache_costs: dict[str, list[float]] = {fmt: [] for fmt in CACHE_FORMATS}
    for _ in range(args.rounds):
        for fmt, cache in caches.items():
            cache_costs[fmt].append(cpu_ms(items, cached(cache)))
            cache_rates[fmt].append(one_pass(items, cached(cache), 0, args.batch, args.size))
    raw_size = statistics.fmean(cache.path(v.replace("/", "_")).stat().st_size
                                for cache in (caches["npy"],) for v in items)
    for fmt, cache in caches.items():
        size = statistics.fmean(cache.path(v.replace("/", "_")).stat().st_size for v in items)
        diffs = [max_mean_diff(cached(cache)(v), clips[v]) for v in items]
        worst = max(d[0] for d in diffs)
        change = ("none (exact)" if worst == 0 else
                  f"max {worst}, mean {statistics.fmean(d[1] for d in diffs):.2f}")
        if args.cosine and worst > 0:
            low, mean = embedding_cosine([clips[v] for v in items],
                                         [cached(cache)(v) for v in items], args.size)
            change += f"; embedding cosine min {low:.4f}, mean {mean:.5f}"
        cache_rows.append((fmt, size / 2**20, raw_size / size, statistics.median(cache_costs[fmt]),
                           statistics.median(cache_rates[fmt]), change))

    before = "PyAV, every frame (before)"
    model, flags = cpu_description()
    gop = f"keyframe every {args.gop} frames" if args.gop else "the encoder's keyframes"
    lines = [
        f"Decoding benchmark: {args.videos} videos, {args.width} x {args.height}, {args.fps} fps, "
        f"{args.seconds} s ({frames_per_video:.0f} frames), {args.codec} with {gop}; "
        f"{args.frames} frames at {args.size} px; batches of {args.batch} through a DataLoader "
        f"with the CLIP normalisation; medians of {args.rounds} alternating rounds (videos "
        f"{made}).",
        "",
        "| decoder | policy | exact vs PyAV (own size / model size) | packets decoded per "
        "video | CPU ms per video | CPU cost vs before | "
        + " | ".join(f"videos/s, {w} worker{'s' if w != 1 else ''}" for w in args.workers)
        + " |",
        "|---|---|---|---:|---:|---:|" + "---:|" * len(args.workers),
    ]
    for name, policy in pairs:
        seek = None if not name.startswith("PyAV") else "plan" in name
        decoded = f"{packets[seek, policy]:.0f}" if seek is not None else "-"
        cost = statistics.median(costs[name, policy])
        ratio = statistics.median(costs[before, policy]) / cost
        cells = [f"{statistics.median(rates[name, policy, w]):.1f}" for w in args.workers]
        lines.append(f"| {name} | {policy} | {exact[name, policy]} | {decoded} | {cost:.0f} | "
                     f"{ratio:.2f}x | " + " | ".join(cells) + " |")
    lines += ["", "| frame cache format | MiB per video | smaller than npy | CPU ms per read | "
              "videos/s, 0 workers | pixels changed |", "|---|---:|---:|---:|---:|---|"]
    lines += [f"| {fmt} | {mib:.2f} | {smaller:.1f}x | {cost:.1f} | {rate:.1f} | {change} |"
              for fmt, mib, smaller, cost, rate, change in cache_rows]
    lines += ["", "CPU ms: this process's CPU time per video, decoding (or reading the cache) "
              "and scaling only, one video after another (the cost per core; load from other "
              "programs barely moves it). videos/s: wall time through the DataLoader, which "
              "such load does move."]
    lines += ["", *[f"Not measured: {note}." for note in notes],
              f"Machine: {model}; {versions()}.", f"CPU flags: {flags}"]
    text = "\n".join(lines) + "\n"
    sys.stdout.write(text)
    if args.out:
        args.out.write_text(text)
        rows = [{"source": f"{name}, {policy}, 1 worker",
                 "videos_per_second": statistics.median(rates[name, policy, 1]),
                 "cpu_ms_per_video": statistics.median(costs[name, policy]),
                 "cpu_cost_vs_before": statistics.median(costs[before, policy])
                 / statistics.median(costs[name, policy])}
                for name, policy in pairs if (name, policy, 1) in rates]
        rows += [{"source": f"frame cache ({fmt}), 0 workers", "videos_per_second": rate,
                  "cpu_ms_per_video": cost, "mib_per_video": mib}
                 for fmt, mib, _, cost, rate, _ in cache_rows]
        args.out.with_suffix(".json").write_text(json.dumps(rows, indent=1) + "\n")
    if args.dir is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
