"""Loaders for the real datasets: MSR-VTT, MSVD, LSMDC, DiDeMo, ActivityNet.

Each reads the annotation files of the CLIP4Clip family of code (protocol.md), exactly as those
repositories name them; the card's ``[files]`` table names every file. Layout: the annotation
files sit in ``--data-root``; the videos in the folder ``data.videos`` (default ``videos`` under
the data root, or any absolute path), searched recursively like CLIP4Clip does, so LSMDC's
per-movie folders and mixed ``.mp4``/``.webm`` copies work.

The card's ``[splits]`` table names the annotation parts (``train``, ``test``, ``val_1``,
``train_7k`` ...) with their expected video counts; ``SPLIT_PARTS`` maps the suite's splits onto
them. Where a dataset has no validation split, ``val`` holds out ``data.val_fraction`` (5%) of the
training videos, chosen deterministically from ``train.seed``, and ``train`` is the rest; runs
that select on the test split or take the last epoch (``select_on`` "test" or "last") need no
validation and train on the whole training part, as does ``data.val_fraction=0``.

Frames follow ``data.policy`` (``suite.data.video``). Under ``clip4clip`` the loaders also read
the window CLIP4Clip's loader reads: seconds 0-31 of a DiDeMo video, seconds 0 to the annotated
duration (rounded up) of an ActivityNet video.

Bad videos (``--on-bad-video``). When a split is built every video file is looked for and
checked: recorded as readable or not by ``suite prepare`` (while the file is unchanged), or else
probed (opened and its first frame decoded; once per file and process). ``check_files`` builds
every split a run needs this way before the run starts.

- ``fail`` (default): a missing or unreadable video stops the run, in one line naming the file.
- ``skip``: such videos are left out with their captions and counted in ``split.skipped``; in
  the evaluation splits (val, test) their captions still count as queries that found nothing
  (``missed_videos``, ``missed_captions``), so skipping never raises a figure.

A video that passes the probe but breaks further in still stops the run with one line; ``suite
prepare`` decodes every video as a run would and finds those.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import math
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from suite.data.augment import check_augment, make_augment
from suite.data.base import Clip, VideoTextSplit
from suite.data.cards import DatasetCard
from suite.data.frame_cache import (
    CACHE_FORMATS,
    FrameCache,
    cache_root,
    file_stamp,
    frames_dir,
    journal_path,
    read_journal,
)
from suite.data.safe_pickle import load_plain
from suite.data.video import POLICIES, pad, probe, read_clip
from suite.errors import BadVideoError, DataError, UserError

if TYPE_CHECKING:
    from suite.job.config import RunConfig

REAL_LOADERS = ("msrvtt", "msvd", "lsmdc", "didemo", "activitynet")
VIDEO_EXTENSIONS = ("mp4", "webm", "mkv", "avi", "mov", "m4v", "mpg", "mpeg", "flv", "3gp",
                    "ogv", "wmv")

# Suite split -> annotation part; None: held out of the training part.
SPLIT_PARTS: dict[str, dict[str, str | None]] = {
    "msrvtt": {"train": "train", "val": None, "test": "test"},
    "msvd": {"train": "train", "val": "val", "test": "test"},
    "lsmdc": {"train": "train", "val": "val", "test": "test"},
    "didemo": {"train": "train", "val": "val", "test": "test"},
    "activitynet": {"train": "train", "val": None, "test": "val_1"},
}

# Options every real dataset takes (``--set data.NAME=VALUE``), with their checks.
COMMON_OPTIONS = ("videos", "policy", "size", "augment", "cache", "cache_dir", "cache_format",
                  "val_fraction")
EXTRA_OPTIONS = {"msrvtt": ("train_split",)}
MSRVTT_TRAIN_SPLITS = {"9k": "train", "7k": "train_7k"}

# CLIP4Clip's DiDeMo loader reads every video as seconds 0-31 (dataloader_didemo_retrieval.py
# lines 79-84: ``caption_dict[k_]["start"] = [0]``, ``caption_dict[k_]["end"] = [31]``).
DIDEMO_END_SECOND = 31
# What the clip4clip policy's window is on each dataset (part of the frame cache key).
CLIP4CLIP_WINDOWS = {"didemo": f"seconds 0-{DIDEMO_END_SECOND}",
                     "activitynet": "seconds 0 to ceil(annotated duration)"}


# ----------------------------------------------------------------------------- annotations


@dataclass
class Annotations:
    """One annotation part: videos in file order and the captions of each."""

    video_ids: list[str]
    captions: list[str]
    caption_video: list[int]
    # Video id -> the last second CLIP4Clip's loader reads (its window; clip4clip policy only).
    ends: dict[str, int] = field(default_factory=dict)

    def subset(self, keep: Iterable[int]) -> Annotations:
        """Only the videos at positions ``keep`` (in order), with their captions."""
        keep = list(keep)
        new_index = {old: new for new, old in enumerate(keep)}
        captions, caption_video = [], []
        for caption, video in zip(self.captions, self.caption_video, strict=True):
            if video in new_index:
                captions.append(caption)
                caption_video.append(new_index[video])
        ids = [self.video_ids[i] for i in keep]
        return Annotations(ids, captions, caption_video,
                           {v: self.ends[v] for v in ids if v in self.ends})


def group(pairs: Iterable[tuple[str, str]], order: list[str] | None = None) -> Annotations:
    """(video id, caption) pairs -> Annotations. With ``order``, exactly those videos (in that
    order) that have at least one caption; otherwise videos in order of first appearance."""
    by_video: dict[str, list[str]] = {}
    wanted = set(order) if order is not None else None
    for video, caption in pairs:
        if wanted is None or video in wanted:
            by_video.setdefault(video, []).append(caption)
    if order is not None:
        ids = [v for v in dict.fromkeys(order) if v in by_video]
    else:
        ids = list(by_video)
    captions, caption_video = [], []
    for i, video in enumerate(ids):
        for caption in by_video[video]:
            captions.append(caption)
            caption_video.append(i)
    return Annotations(ids, captions, caption_video)


def paragraphs(ann: Annotations) -> Annotations:
    """Paragraph-to-video: all captions of a video joined into one, in file order."""
    joined = [" ".join(c.strip() for c in captions if c.strip())
              for captions in _captions_by_video(ann)]
    return Annotations(ann.video_ids, joined, list(range(len(ann.video_ids))), ann.ends)


def _captions_by_video(ann: Annotations) -> list[list[str]]:
    out: list[list[str]] = [[] for _ in ann.video_ids]
    for caption, video in zip(ann.captions, ann.caption_video, strict=True):
        out[video].append(caption)
    return out


def _file(root: Path, card: DatasetCard, key: str) -> Path:
    name = card.files.get(key)
    if not name:
        raise UserError(f"card {card.name} names no file {key!r} in its [files] table")
    path = root / name
    if not path.is_file():
        raise DataError(f"{card.name}: annotation file {path} does not exist "
                        f"(source: {card.source})")
    return path


def _read_text(path: Path) -> str:
    """The text of annotation file ``path``: UTF-8 without NUL bytes, as every published file
    is; a file in another encoding, or binary or damaged, is one DataError naming the line."""
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise DataError(f"annotation file {path} is not UTF-8 text (byte "
                        f"0x{data[exc.start]:02x} on line {line}): download it again, or "
                        f"convert it to UTF-8 (iconv -t utf-8)") from None
    nul = text.find("\0")
    if nul >= 0:
        line = text.count("\n", 0, nul) + 1
        raise DataError(f"annotation file {path} has a NUL byte on line {line}: it is damaged "
                        f"or not a text file; download it again")
    return text


def _load_json(path: Path) -> Any:
    try:
        return json.loads(_read_text(path))
    except json.JSONDecodeError as exc:
        raise DataError(f"annotation file {path} is not valid JSON: {exc}; download it "
                        f"again") from None
    except RecursionError:
        raise DataError(f"annotation file {path} is not valid JSON: nested too deeply; "
                        f"download it again") from None


# csv refuses fields over csv.field_size_limit() characters (131072 by default), a setting of
# the whole process. A caption may be as long as its file allows, so while one file is read the
# limit is raised to that file's length (no field can be longer) and then put back; the lock
# keeps two threads from putting back each other's limit in the middle of a read.
_CSV_LIMIT = threading.Lock()
_C_LONG_MAX = 2**31 - 1  # the limit is a C long, 32 bits on some platforms


@contextmanager
def _csv_fields_up_to(characters: int) -> Iterator[None]:
    """csv's field size limit at least ``characters`` inside the block, as it was after."""
    with _CSV_LIMIT:
        wanted = max(csv.field_size_limit(), min(characters, _C_LONG_MAX))
        previous = csv.field_size_limit(wanted)
        try:
            yield
        finally:
            csv.field_size_limit(previous)


def _shown(text: str, limit: int = 120) -> str:
    """``text`` from a file as a message quotes it: at most ``limit`` characters, one line."""
    text = " ".join(text.split())
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text):,} characters)"


def _csv_column(path: Path, *columns: str) -> list[tuple[str, ...]]:
    text = _read_text(path)
    rows: list[tuple[str, ...]] = []
    with _csv_fields_up_to(len(text) + 1):
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            names = reader.fieldnames or []
            missing = [c for c in columns if c not in names]
            if missing:
                raise DataError(f"annotation file {path} has no column {', '.join(missing)}; "
                                f"columns: {_shown(', '.join(names))}")
            for row in reader:
                values = [row[c] for c in columns]
                if any(value is None for value in values):
                    raise DataError(f"annotation file {path} line {reader.line_num}: fewer "
                                    f"values than the columns of its header "
                                    f"({_shown(', '.join(names))})")
                rows.append(tuple(value.strip() for value in values))
        except csv.Error as exc:
            raise DataError(f"annotation file {path} line {reader.line_num}: not valid CSV "
                            f"({exc})") from None
    return rows


def _read_lines(path: Path) -> list[str]:
    return [line.strip() for line in _read_text(path).splitlines() if line.strip()]


def read_msrvtt(root: Path, card: DatasetCard, part: str) -> Annotations:
    """``MSRVTT_data.json`` sentences for the training lists; the JSFUSION csv for 1k-A test."""
    if part == "test":
        rows = _csv_column(_file(root, card, "test"), "video_id", "sentence")
        return group((video, sentence) for video, sentence in rows)
    key = {"train": "train_9k", "train_7k": "train_7k"}.get(part)
    if key is None:
        raise UserError(f"msrvtt has no annotation part {part!r}")
    order = [v for (v,) in _csv_column(_file(root, card, key), "video_id")]
    data = _load_json(_file(root, card, "data"))
    try:
        pairs = [(s["video_id"], s["caption"]) for s in data["sentences"]]
    except (KeyError, TypeError):
        raise DataError(f"{root / card.files['data']} has no 'sentences' list of "
                        f"video_id/caption") from None
    return group(pairs, order)


def read_msvd(root: Path, card: DatasetCard, part: str) -> Annotations:
    """``{part}_list.txt`` ids, captions from ``raw-captions.pkl`` (video id -> captions, each a
    list of words, joined with spaces as CLIP4Clip does). The pickle is read as plain data only
    (``suite.data.safe_pickle``): a planted object is refused, never run."""
    order = _read_lines(_file(root, card, part))
    path = _file(root, card, "captions")
    captions = load_plain(path)
    if not isinstance(captions, dict):
        raise DataError(f"{path} must map video ids to lists of captions, "
                        f"got a {type(captions).__name__}")
    pairs = []
    for video in order:
        entries = captions.get(video, [])
        if not isinstance(entries, list | tuple):
            raise DataError(f"{path}: the captions of {_shown(video)} are not a list")
        for caption in entries:
            if isinstance(caption, list | tuple) and all(isinstance(w, str) for w in caption):
                pairs.append((video, " ".join(caption)))
            elif isinstance(caption, str):
                pairs.append((video, caption))
            else:
                raise DataError(f"{path}: a caption of {_shown(video)} is neither text nor a "
                                f"list of words")
    return group(pairs, order)


def read_lsmdc(root: Path, card: DatasetCard, part: str) -> Annotations:
    """Tab-separated: clip id, four time columns, sentence (clip ids repeat in training)."""
    path = _file(root, card, part)
    pairs = []
    for number, line in enumerate(_read_text(path).splitlines(), 1):
        if not line.strip():
            continue
        fields = line.rstrip("\n").split("\t")
        if len(fields) < 6:
            raise DataError(f"{path} line {number}: expected 6 tab-separated columns "
                            f"(clip id, 4 times, sentence), got {len(fields)}")
        pairs.append((fields[0].strip(), "\t".join(fields[5:]).strip()))
    return group(pairs)


def read_didemo(root: Path, card: DatasetCard, part: str) -> Annotations:
    """``{part}_data.json``: list of {video, description, times}; optional ``{part}_list.txt``."""
    data = _load_json(_file(root, card, part))
    try:
        pairs = [(item["video"], item["description"]) for item in data]
    except (KeyError, TypeError):
        raise DataError(f"{root / card.files[part]} is not a list of video/description "
                        f"entries") from None
    listing = card.files.get(f"{part}_list")
    order = _read_lines(root / listing) if listing and (root / listing).is_file() else None
    ann = group(pairs, order)
    ann.ends = dict.fromkeys(ann.video_ids, DIDEMO_END_SECOND)
    return ann


def read_activitynet(root: Path, card: DatasetCard, part: str) -> Annotations:
    """``{part}.json`` (id -> duration, timestamps, sentences), ids in ``{part}_ids`` order."""
    data = _load_json(_file(root, card, part))
    order = _load_json(_file(root, card, f"{part}_ids"))
    if not isinstance(data, dict) or not isinstance(order, list):
        raise DataError(f"{card.name}: {card.files[part]} must map ids to entries and "
                        f"{card.files[f'{part}_ids']} must list ids")
    try:
        pairs = [(video, sentence) for video, entry in data.items()
                 for sentence in entry["sentences"]]
    except (KeyError, TypeError):
        raise DataError(f"{root / card.files[part]} entries need a 'sentences' list") from None
    ann = group(pairs, [str(v) for v in order])
    for video in ann.video_ids:
        end = activitynet_end(data[video].get("duration"))
        if end is not None:
            ann.ends[video] = end
    return ann


def activitynet_end(duration: Any) -> int | None:
    """The last second CLIP4Clip reads of an ActivityNet video: its annotated duration rounded
    up (``dataloader_activitynet_retrieval.py`` line 120), at least 1 (``_get_rawvideo`` lines
    174-181 turn an empty window [0, 0] into [0, 1]); None (the whole file) without a duration."""
    try:
        seconds = float(duration)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(seconds):
        return None
    return max(math.ceil(seconds), 0) or 1


READERS: dict[str, Callable[[Path, DatasetCard, str], Annotations]] = {
    "msrvtt": read_msrvtt, "msvd": read_msvd, "lsmdc": read_lsmdc, "didemo": read_didemo,
    "activitynet": read_activitynet,
}


def read_part(root: Path, card: DatasetCard, part: str) -> Annotations:
    """Annotation part ``part`` of the card's dataset, in its caption mode."""
    ann = READERS[card.loader](root, card, part)
    return paragraphs(ann) if card.caption_mode == "paragraph" else ann


# ----------------------------------------------------------------------------- video files


def file_candidates(loader: str, video_id: str) -> list[str]:
    """Names (with or without extension) a video's file may have, most likely first."""
    if loader == "activitynet" and video_id.startswith("v_"):
        return [video_id[2:], video_id]  # files are named by the YouTube id without "v_"
    stem, dot, ext = video_id.rpartition(".")
    if loader == "didemo" and dot and ext.lower() in VIDEO_EXTENSIONS:
        return [video_id, stem]  # ids carry the original extension; copies may be re-encoded
    return [video_id]


def video_index(videos_dir: str) -> tuple[dict[str, str], dict[str, str]]:
    """Every video file under ``videos_dir``: by file name and by name without extension (the
    preferred extension wins: mp4 first, then webm, ...). Walked once per process and folder
    (again when the folder itself changes)."""
    return _walk(videos_dir, os.stat(videos_dir).st_mtime_ns)


@lru_cache(maxsize=16)
def _walk(videos_dir: str, _stamp: int) -> tuple[dict[str, str], dict[str, str]]:
    by_name: dict[str, str] = {}
    by_stem: dict[str, tuple[int, str]] = {}
    for folder, dirs, files in os.walk(videos_dir, followlinks=True):
        dirs.sort()
        for name in sorted(files):
            stem, dot, ext = name.rpartition(".")
            if not dot or ext.lower() not in VIDEO_EXTENSIONS or name.startswith("."):
                continue
            path = os.path.join(folder, name)
            by_name.setdefault(name, path)
            rank = VIDEO_EXTENSIONS.index(ext.lower())
            if stem not in by_stem or rank < by_stem[stem][0]:
                by_stem[stem] = (rank, path)
    return by_name, {stem: path for stem, (_, path) in by_stem.items()}


def resolve_videos(loader: str, videos_dir: Path, video_ids: list[str]) -> list[str | None]:
    """The file of each video, or None when it is missing."""
    by_name, by_stem = video_index(str(videos_dir))
    out: list[str | None] = []
    for video in video_ids:
        found = None
        for name in file_candidates(loader, video):
            found = by_name.get(name) or by_stem.get(name)
            if found:
                break
        out.append(found)
    return out


def expected_file(loader: str, videos_dir: Path, video_id: str) -> str:
    """How a missing file is named in messages: the folder and the likeliest name."""
    name = file_candidates(loader, video_id)[0]
    _, dot, ext = name.rpartition(".")
    suffix = "" if dot and ext.lower() in VIDEO_EXTENSIONS else ".*"
    return str(videos_dir / f"{name}{suffix}")


# ----------------------------------------------------------------------------- options


@dataclass(frozen=True)
class DataOptions:
    """The resolved ``data.*`` options of a real dataset."""

    videos: str = "videos"
    policy: str = "tempme"
    size: int = 0  # 0: the backbone's input size
    augment: bool | str = False  # true: torchvision's RandAugment; a string: a timm policy
    cache: bool = True
    cache_dir: str = ""
    cache_format: str = "npy"  # suite.data.frame_cache.CACHE_FORMATS
    val_fraction: float = 0.05
    train_split: str = "9k"


def resolve_options(card: DatasetCard, overrides: dict[str, Any]) -> DataOptions:
    """The card's ``[options]`` with ``--set data.X`` overrides; bad ones are one-line errors."""
    valid = COMMON_OPTIONS + EXTRA_OPTIONS.get(card.loader, ())
    merged = {**card.options, **overrides}
    unknown = sorted(set(merged) - set(valid))
    if unknown:
        raise UserError(f"{card.name} has no option {', '.join(unknown)}; "
                        f"valid: {', '.join(sorted(valid))}")
    opts = DataOptions(**merged)
    if opts.policy not in POLICIES:
        raise UserError(f"unknown data.policy {opts.policy!r}; valid: {', '.join(POLICIES)}")
    if opts.train_split not in MSRVTT_TRAIN_SPLITS:
        raise UserError(f"unknown data.train_split {opts.train_split!r}; "
                        f"valid: {', '.join(MSRVTT_TRAIN_SPLITS)}")
    if not isinstance(opts.size, int) or isinstance(opts.size, bool) or opts.size < 0:
        raise UserError(f"data.size must be a whole number of pixels (0: the backbone's), "
                        f"got {opts.size!r}")
    if (not isinstance(opts.val_fraction, int | float) or isinstance(opts.val_fraction, bool)
            or not 0 <= opts.val_fraction < 1):
        raise UserError(f"data.val_fraction must be at least 0 and below 1 (0: no validation "
                        f"split), got {opts.val_fraction!r}")
    if not isinstance(opts.cache, bool):
        raise UserError(f"data.cache must be true or false, got {opts.cache!r}")
    check_augment(opts.augment)
    if not isinstance(opts.videos, str) or not isinstance(opts.cache_dir, str):
        raise UserError("data.videos and data.cache_dir must be paths")
    if opts.cache_format not in CACHE_FORMATS:
        raise UserError(f"unknown data.cache_format {opts.cache_format!r}; "
                        f"valid: {', '.join(CACHE_FORMATS)}")
    return opts


def train_part(card: DatasetCard, opts: DataOptions) -> str:
    part = SPLIT_PARTS[card.loader]["train"]
    assert part is not None
    return MSRVTT_TRAIN_SPLITS[opts.train_split] if card.loader == "msrvtt" else part


def data_root(card: DatasetCard, root: str | None) -> Path:
    if not root:
        raise UserError(f"dataset {card.name} needs --data-root DIR (the folder with its "
                        f"annotation files; source: {card.source})")
    path = Path(root).expanduser().resolve()
    if not path.is_dir():
        raise UserError(f"data root {path} is not a folder")
    return path


def videos_dir(card: DatasetCard, root: Path, opts: DataOptions) -> Path:
    path = (root / Path(opts.videos).expanduser()).resolve()
    if not path.is_dir():
        raise UserError(f"{card.name}: video folder {path} does not exist; put the videos there "
                        f"or pass --set data.videos=DIR")
    return path


def image_size_of(backbone: str) -> int:
    """The input size of an open_clip model config, read from its JSON without importing
    open_clip (``prepare`` stays light); 224 when the name is not a plain config."""
    from suite.common.paths import MODEL_CONFIGS

    places = [MODEL_CONFIGS]
    spec = importlib.util.find_spec("open_clip")
    if spec is not None and spec.submodule_search_locations:
        places += [Path(p) / "model_configs" for p in spec.submodule_search_locations]
    for folder in places:
        path = folder / f"{backbone}.json"
        if path.is_file():
            size = json.loads(path.read_text())["vision_cfg"].get("image_size", 224)
            return int(size[0] if isinstance(size, list) else size)
    return 224


def holdout(n: int, fraction: float, seed: int) -> np.ndarray:
    """Positions of the held-out validation videos among ``n`` training videos (sorted)."""
    if n < 2 or fraction <= 0:
        return np.zeros(0, dtype=np.int64)
    count = min(n - 1, max(1, round(fraction * n)))
    rng = np.random.default_rng([seed, 20240601])
    return np.sort(rng.choice(n, size=count, replace=False))


# ----------------------------------------------------------------------------- the split

# Runs that need no validation split: they train on the whole training part.
WHOLE_TRAINING = ("last", "test")
# Splits whose figures are reported: a video left out there still owes its queries.
EVALUATION_SPLITS = ("val", "test")


@dataclass
class Screened:
    """The videos a split keeps, and what it left out under the skip policy."""

    keep: list[int]
    skipped: dict[str, str] = field(default_factory=dict)  # video id -> reason


# (path, size, modification time) -> what ``probe`` found: every file is probed once per process
# while it is unchanged, however many times a split is built (``check_files``, then the run).
_PROBED: dict[tuple[str, int, int], str | None] = {}


def probe_once(path: str) -> str | None:
    """``probe(path)``, remembered while the file is unchanged."""
    stamp = file_stamp(path)
    if stamp is None:
        return probe(path)
    key = (path, *stamp)
    if key not in _PROBED:
        _PROBED[key] = probe(path)
    return _PROBED[key]


def probe_all(paths: list[str]) -> list[str | None]:
    """``probe_once`` of every path, a few at a time (opening a file is mostly waiting)."""
    if len(paths) < 2:
        return [probe_once(p) for p in paths]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1, len(paths))) as pool:
        return list(pool.map(probe_once, paths))


def screen(card: DatasetCard, split: str, ids: list[str], paths: list[str | None], mode: str,
           videos: Path, journal: Path, root: Path) -> Screened:
    """Apply the bad-video policy to a split's videos (see the module docstring)."""
    if mode not in ("fail", "skip"):
        raise UserError(f"unknown --on-bad-video {mode!r}; valid: fail, skip")
    hint = (f"`suite prepare --dataset {card.name} --data-root {root}` lists them, "
            f"--on-bad-video skip leaves them out")
    missing = [i for i, p in enumerate(paths) if p is None]
    if mode == "fail" and missing:
        first = expected_file(card.loader, videos, ids[missing[0]])
        raise BadVideoError(f"{card.name} {split}: video file {first} is missing ({len(missing)} "
                            f"of {len(ids)} missing; {hint})")
    scanned = read_journal(journal)
    problems: dict[int, str] = {}
    to_probe: list[int] = []
    for i, (video, path) in enumerate(zip(ids, paths, strict=True)):
        if path is None:
            continue
        entry = scanned.get(video)
        if entry is not None and entry.path == path and entry.current():
            if entry.status != "ok":
                problems[i] = entry.error or "unreadable"
        else:
            to_probe.append(i)
    if len(to_probe) > 200:
        from suite.common.progress import console

        console.print(f"{card.name} {split}: checking {len(to_probe)} videos that no "
                      f"`suite prepare` has scanned")
    found = probe_all([paths[i] for i in to_probe])  # type: ignore[misc]
    problems.update({i: why for i, why in zip(to_probe, found, strict=True) if why is not None})
    if mode == "fail" and problems:
        first_bad = min(problems)
        raise BadVideoError(f"{card.name} {split}: video {paths[first_bad]} cannot be decoded: "
                            f"{problems[first_bad]} ({len(problems)} of {len(ids)} unreadable; "
                            f"{hint})")
    out = Screened([])
    for i, video in enumerate(ids):
        if paths[i] is None:
            out.skipped[video] = "missing"
        elif i in problems:
            out.skipped[video] = f"unreadable: {problems[i]}"
        else:
            out.keep.append(i)
    return out


def split_annotations(card: DatasetCard, split: str, config: RunConfig, root: Path,
                      opts: DataOptions) -> Annotations:
    """The annotation part behind split ``split``, with the validation hold-out applied."""
    parts = SPLIT_PARTS[card.loader]
    official = parts["test"] if split == "test" else parts["val"] if split == "val" else None
    if official is not None:
        return read_part(root, card, official)
    whole = config.select_on in WHOLE_TRAINING
    if split == "val" and whole:
        raise UserError(f"{card.name} has no validation split when a run trains on the whole "
                        f"training part (--select-on {config.select_on})")
    if split == "val" and opts.val_fraction == 0:
        raise UserError(f"{card.name} has no validation split with data.val_fraction=0; use "
                        f"--select-on last or --select-on test, or a val_fraction above 0")
    ann = read_part(root, card, train_part(card, opts))
    if parts["val"] is not None or (split == "train" and (whole or opts.val_fraction == 0)):
        return ann
    held = holdout(len(ann.video_ids), opts.val_fraction, config.train.seed)
    if split == "val":
        return ann.subset(int(i) for i in held)
    held_set = set(held.tolist())
    return ann.subset(i for i in range(len(ann.video_ids)) if i not in held_set)


@dataclass
class SplitFiles:
    """A split's usable videos and captions, and what the bad-video policy left out."""

    ann: Annotations  # the kept videos
    paths: list[str]
    root: Path
    skipped: dict[str, str]  # video id -> why it was left out
    missed_videos: int  # left-out videos whose queries evaluation counts as misses
    missed_captions: int
    opts: DataOptions
    videos: Path
    cache_base: Path


def split_files(card: DatasetCard, split: str, config: RunConfig) -> SplitFiles:
    """Read split ``split``'s annotations, find its files and apply the bad-video policy."""
    opts = resolve_options(card, config.data_options)
    root = data_root(card, config.data_root)
    videos = videos_dir(card, root, opts)
    ann = split_annotations(card, split, config, root, opts)
    cache_base = cache_root(opts.cache_dir or None)
    paths = resolve_videos(card.loader, videos, ann.video_ids)
    screened = screen(card, split, ann.video_ids, paths, config.on_bad_video, videos,
                      journal_path(cache_base, card.name, videos), root)
    if not screened.keep:
        raise UserError(f"{card.name} {split}: no usable videos ({len(screened.skipped)} "
                        f"skipped as missing or unreadable, of {len(ann.video_ids)})")
    missed_videos = missed_captions = 0
    if split in EVALUATION_SPLITS:
        gone = set(range(len(ann.video_ids))) - set(screened.keep)
        missed_videos = len(gone)
        missed_captions = sum(video in gone for video in ann.caption_video)
    kept_paths = [paths[i] for i in screened.keep]
    return SplitFiles(ann.subset(screened.keep), [p for p in kept_paths if p is not None], root,
                      screened.skipped, missed_videos, missed_captions, opts, videos, cache_base)


def needed_splits(config: RunConfig, trains: bool) -> list[str]:
    """The splits a run reads, test first: train when it trains, val when it selects on it
    (an untrained run still reports validation figures then)."""
    return ["test"] + (["val"] if config.select_on == "val" else []) + (
        ["train"] if trains else [])


def check_files(card: DatasetCard, config: RunConfig, trains: bool = True) -> dict[str, int]:
    """Build every split the run needs up to its files (annotations read, every video looked
    for and probed) before anything trains or is logged: a missing or unreadable video stops
    here under ``fail``. Returns the videos each split leaves out under ``skip``; nothing for
    loaders without files (synthetic)."""
    if card.loader not in REAL_LOADERS:
        return {}
    return {split: len(split_files(card, split, config).skipped)
            for split in needed_splits(config, trains)}


def window_rule(card: DatasetCard, policy: str) -> str:
    """The window the policy reads of this dataset's videos ("" for whole files)."""
    return CLIP4CLIP_WINDOWS.get(card.loader, "") if policy == "clip4clip" else ""


class RealSplit(VideoTextSplit):
    """A split of a real dataset: frames from the frame cache when present, else decoded."""

    def __init__(self, name: str, ann: Annotations, paths: list[str], frames: int, policy: str,
                 size: int, cache: FrameCache | None, augment: Callable | None,
                 skipped: dict[str, str], dataset: str, on_bad_video: str,
                 data_root: Path | None = None) -> None:
        super().__init__(name, ann.video_ids, ann.captions, ann.caption_video)
        self.paths = paths
        self.frames = frames
        self.policy = policy
        # The last second read of each video (clip4clip windows); absent: the whole file.
        self.ends = dict(ann.ends) if policy == "clip4clip" else {}
        self.size = size
        self.cache = cache
        self.augment = augment
        self.skipped_videos = skipped  # video id -> why it was left out
        self.dataset = dataset
        self.on_bad_video = on_bad_video
        self.data_root = data_root

    @property
    def skipped(self) -> int:
        """How many videos the skip policy left out of this split."""
        return len(self.skipped_videos)

    def read(self, index: int) -> np.ndarray:
        """The sampled real frames (n, S, S, 3) of video ``index``, before augmentation."""
        video = self.video_ids[index]
        clip = self.cache.get(video) if self.cache is not None else None
        if clip is not None:
            return clip
        try:
            return read_clip(self.paths[index], self.frames, self.policy, self.size,
                             end_second=self.ends.get(video))
        except BadVideoError as exc:
            root = f" --data-root {self.data_root}" if self.data_root else ""
            raise BadVideoError(f"{exc} (it passed the quick check when the split was built; "
                                f"`suite prepare --dataset {self.dataset}{root}` decodes every "
                                f"video as a run does and finds such videos before a run)"
                                ) from None

    def load(self, index: int) -> Clip:
        clip = self.read(index)
        if self.augment is not None:
            clip = self.augment(clip)
        frames, mask = pad(clip, self.frames)
        return Clip(frames, mask)


def load_real_split(card: DatasetCard, split: str, config: RunConfig) -> RealSplit:
    """Split ``split`` ("train", "val", "test") of a real dataset, as ``config`` asks for it."""
    files = split_files(card, split, config)
    opts = files.opts
    size = opts.size or image_size_of(config.backbone)
    cache = None
    if opts.cache:
        folder = frames_dir(files.cache_base, card.name, files.videos, config.frames, opts.policy,
                            size, window_rule(card, opts.policy), opts.cache_format)
        cache = (FrameCache(folder, config.frames, size, opts.cache_format) if folder.is_dir()
                 else None)
    augment = make_augment(opts.augment, size) if split == "train" else None
    out = RealSplit(split, files.ann, files.paths, config.frames, opts.policy, size, cache,
                    augment, files.skipped, card.name, config.on_bad_video, files.root)
    out.missed_videos, out.missed_captions = files.missed_videos, files.missed_captions
    return out
