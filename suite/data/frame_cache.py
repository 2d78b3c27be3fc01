"""The frame cache and the scan journal that ``suite prepare`` writes.

Frame cache: one file per video holding its sampled real frames (uint8, n x S x S x 3, what
``suite.data.video.read_clip`` returns), in a folder keyed by everything that decides those
frames: dataset, video folder, frames, policy, the policy's window rule, size, the version of
the sampling rules (``suite.data.video.SAMPLING_VERSION``), so frames sampled by an older rule
are never read as the new rule's, and the storage format (``data.cache_format``):

- ``npy`` (default): the raw array, exact; the fastest to read.
- ``ffv1``: the frames as a lossless FFV1 video (PyAV, RGB), exact; 1.4-1.5x smaller than
  ``npy`` on the benchmark's clips, read at about 3 ms per 224 px frame.
- ``jpeg``: one JPEG per frame (Pillow, quality 95, no chroma subsampling) in an ``.npz``;
  3x smaller, read at about 0.7 ms per frame, and lossy: pixels move by up to about 20 levels
  (``benchmarks/results/decode.md``), so it is never the default.

Runs read the cache automatically when the folder exists; files are written atomically
(``suite.common.files.write_atomic``), so an interrupted ``prepare --cache`` leaves only whole
files and resumes where it stopped.

Scan journal: one JSON line per checked video (id, file, size, modification time, status), keyed
by dataset and video folder. ``prepare`` appends to it as it goes (so it resumes), and building a
split trusts what it records while the file is unchanged (readable or not) instead of probing.

Both live under ``$SUITE_CACHE_DIR`` (default ``~/.cache/tvr-suite``), or ``data.cache_dir``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from suite.common.files import write_atomic

CACHE_VERSION = 1
CACHE_FORMATS = ("npy", "ffv1", "jpeg")
SUFFIXES = {"npy": ".npy", "ffv1": ".mkv", "jpeg": ".jpg.npz"}
JPEG_QUALITY = 95


def cache_root(explicit: str | None = None) -> Path:
    """Where caches live: ``explicit`` if given, else the suite's cache folder."""
    if explicit:
        return Path(explicit).expanduser()
    from suite.common.paths import cache_dir

    return cache_dir()


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def frames_dir(root: Path, dataset: str, videos_dir: Path, frames: int, policy: str,
               size: int | None, window: str = "", fmt: str = "npy") -> Path:
    """The cache folder for one (dataset, video folder, frames, policy, window rule, size,
    format) under the current sampling rules (``npy`` folders keep their pre-format names)."""
    from suite.data.video import SAMPLING_VERSION

    key = {"dataset": dataset, "videos": str(Path(videos_dir).resolve()), "frames": frames,
           "policy": policy, "size": size, "v": CACHE_VERSION, "sampling": SAMPLING_VERSION,
           "window": window}
    tail = ""
    if fmt != "npy":
        key["format"] = fmt
        tail = f"-{fmt}"
    return root / "frames" / f"{dataset}-{frames}f-{policy}-{size}px{tail}-{_digest(key)}"


def journal_path(root: Path, dataset: str, videos_dir: Path) -> Path:
    key = {"dataset": dataset, "videos": str(Path(videos_dir).resolve()), "v": CACHE_VERSION}
    return root / "scans" / f"{dataset}-{_digest(key)}.jsonl"


def file_name(video_id: str, fmt: str = "npy") -> str:
    """A flat, reversible file name for any video id (ids may contain '/', '@', spaces)."""
    return quote(video_id, safe="@._-+=,") + SUFFIXES[fmt]


def encode(clip: np.ndarray, fmt: str) -> bytes:
    """The bytes of a cache file holding ``clip`` (uint8, n x H x W x 3) in format ``fmt``."""
    buffer = io.BytesIO()
    if fmt == "npy":
        np.save(buffer, clip, allow_pickle=False)
    elif fmt == "jpeg":
        from PIL import Image

        parts = []
        for frame in clip:
            one = io.BytesIO()
            Image.fromarray(frame).save(one, "JPEG", quality=JPEG_QUALITY, subsampling=0)
            parts.append(np.frombuffer(one.getvalue(), dtype=np.uint8))
        ends = np.cumsum([len(part) for part in parts]).astype(np.int64)
        np.savez(buffer, data=np.concatenate(parts), ends=ends,
                 shape=np.array(clip.shape, dtype=np.int64))
    elif fmt == "ffv1":
        import av

        with av.open(buffer, "w", format="matroska") as container:
            stream = container.add_stream("ffv1", rate=1)
            stream.width, stream.height, stream.pix_fmt = clip.shape[2], clip.shape[1], "bgr0"
            for frame in clip:
                container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            container.mux(stream.encode())
    else:
        raise ValueError(f"unknown cache format {fmt!r}")
    return buffer.getvalue()


def decode(data: bytes | Path, fmt: str) -> np.ndarray:
    """The frames (uint8, n x H x W x 3) of a cache file's bytes (or the file) in ``fmt``."""
    source = data if isinstance(data, Path) else io.BytesIO(data)
    if fmt == "npy":
        return np.load(source, allow_pickle=False)
    if fmt == "jpeg":
        from PIL import Image

        with np.load(source, allow_pickle=False) as parts:
            blob, ends, shape = parts["data"], parts["ends"], tuple(parts["shape"])
        starts = np.concatenate([[0], ends[:-1]])
        frames = [np.asarray(Image.open(io.BytesIO(blob[a:b].tobytes())).convert("RGB"))
                  for a, b in zip(starts, ends, strict=True)]
        clip = np.stack(frames) if frames else np.zeros(shape, np.uint8)
        return clip if clip.shape == shape else np.zeros((0,), np.uint8)
    if fmt == "ffv1":
        import av

        with av.open(source if isinstance(source, io.BytesIO) else str(source),
                     "r") as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(stream)])
    raise ValueError(f"unknown cache format {fmt!r}")


@dataclass(frozen=True)
class FrameCache:
    """Sampled frames of a dataset, one file per video (a plain path: pickles into workers)."""

    directory: Path
    frames: int
    size: int | None
    format: str = "npy"

    def path(self, video_id: str) -> Path:
        return self.directory / file_name(video_id, self.format)

    def get(self, video_id: str) -> np.ndarray | None:
        """The cached frames, or None when absent, unreadable or not of the expected shape."""
        path = self.path(video_id)
        if self.format != "npy" and not path.is_file():
            return None
        try:
            clip = decode(path, self.format)
        except (OSError, ValueError, KeyError, EOFError, RuntimeError):
            return None  # av.FFmpegError and PIL's errors are OSError or ValueError
        ok = (clip.dtype == np.uint8 and clip.ndim == 4 and 1 <= len(clip) <= self.frames
              and clip.shape[-1] == 3
              and (self.size is None or clip.shape[1:3] == (self.size, self.size)))
        return clip if ok else None

    def put(self, video_id: str, clip: np.ndarray) -> None:
        data = encode(clip, self.format)
        write_atomic(self.path(video_id), data)

    def has(self, video_id: str) -> bool:
        return self.path(video_id).is_file()

    def write_manifest(self, meta: dict) -> None:
        """What the folder holds, for people looking at it (runs do not read it)."""
        text = json.dumps(meta, indent=2, sort_keys=True) + "\n"
        write_atomic(self.directory / "manifest.json", text)


def file_stamp(path: str | Path) -> tuple[int, int] | None:
    """(size, modification time in ns) of a file, or None if it is gone."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


@dataclass(frozen=True)
class ScanEntry:
    video_id: str
    path: str
    size: int
    mtime_ns: int
    status: str  # "ok" or "unreadable"
    error: str = ""

    def current(self) -> bool:
        """Whether the file is still the one that was checked."""
        return file_stamp(self.path) == (self.size, self.mtime_ns)


def read_journal(path: Path) -> dict[str, ScanEntry]:
    """The last entry per video id; a torn last line (interrupted write) is ignored."""
    entries: dict[str, ScanEntry] = {}
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return entries
    for line in lines:
        try:
            raw = json.loads(line)
            entry = ScanEntry(**raw)
        except (json.JSONDecodeError, TypeError):
            continue
        entries[entry.video_id] = entry
    return entries


class Journal:
    """Appends scan entries, one flushed line each, so an interrupted scan loses nothing."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = path.open("a", encoding="utf-8")

    def add(self, entry: ScanEntry) -> None:
        self._file.write(json.dumps(entry.__dict__, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
