"""The frame cache and the scan journal that ``suite prepare`` writes.

Frame cache: one ``.npy`` file per video holding its sampled real frames (uint8, n x S x S x 3,
exactly what ``suite.data.video.read_clip`` returns), in a folder keyed by everything that decides
those frames: dataset, video folder, frames, policy, the policy's window rule, size, and the
version of the sampling rules (``suite.data.video.SAMPLING_VERSION``), so frames sampled by an
older rule are never read as the new rule's. Runs read it automatically when the folder exists;
files are written atomically (``suite.files.write_atomic``), so an interrupted ``prepare
--cache`` leaves only whole files and resumes where it stopped.

Scan journal: one JSON line per checked video (id, file, size, modification time, status), keyed
by dataset and video folder. ``prepare`` appends to it as it goes (so it resumes), and building a
split trusts what it records while the file is unchanged (readable or not) instead of probing.

Both live under ``$SUITE_CACHE_DIR`` (default ``~/.cache/tvr-suite``), or ``data.cache_dir``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np

from suite.files import write_atomic

CACHE_VERSION = 1


def cache_root(explicit: str | None = None) -> Path:
    """Where caches live: ``explicit`` if given, else the suite's cache folder."""
    if explicit:
        return Path(explicit).expanduser()
    from suite.pretrain import cache_dir

    return cache_dir()


def _digest(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def frames_dir(root: Path, dataset: str, videos_dir: Path, frames: int, policy: str,
               size: int | None, window: str = "") -> Path:
    """The cache folder for one (dataset, video folder, frames, policy, window rule, size)
    under the current sampling rules."""
    from suite.data.video import SAMPLING_VERSION

    key = {"dataset": dataset, "videos": str(Path(videos_dir).resolve()), "frames": frames,
           "policy": policy, "size": size, "v": CACHE_VERSION, "sampling": SAMPLING_VERSION,
           "window": window}
    return root / "frames" / f"{dataset}-{frames}f-{policy}-{size}px-{_digest(key)}"


def journal_path(root: Path, dataset: str, videos_dir: Path) -> Path:
    key = {"dataset": dataset, "videos": str(Path(videos_dir).resolve()), "v": CACHE_VERSION}
    return root / "scans" / f"{dataset}-{_digest(key)}.jsonl"


def file_name(video_id: str) -> str:
    """A flat, reversible file name for any video id (ids may contain '/', '@', spaces)."""
    return quote(video_id, safe="@._-+=,") + ".npy"


@dataclass(frozen=True)
class FrameCache:
    """Sampled frames of a dataset, one file per video (a plain path: pickles into workers)."""

    directory: Path
    frames: int
    size: int | None

    def path(self, video_id: str) -> Path:
        return self.directory / file_name(video_id)

    def get(self, video_id: str) -> np.ndarray | None:
        """The cached frames, or None when absent or not of the expected shape."""
        path = self.path(video_id)
        try:
            clip = np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            return None
        ok = (clip.dtype == np.uint8 and clip.ndim == 4 and 1 <= len(clip) <= self.frames
              and clip.shape[-1] == 3
              and (self.size is None or clip.shape[1:3] == (self.size, self.size)))
        return clip if ok else None

    def put(self, video_id: str, clip: np.ndarray) -> None:
        write_atomic(self.path(video_id), lambda f: np.save(f, clip, allow_pickle=False))

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
