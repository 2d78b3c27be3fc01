"""``suite prepare``: check a real dataset's files against its card, optionally cache frames.

For every annotation part of the card it counts the videos the annotation file lists and
compares them with the card's expected count, then looks for every video's file and decodes each
one exactly as a run would (same frame policy, window, frames and size). Missing and unreadable
videos are listed; any problem makes ``suite prepare`` exit with code 1 (``--allow-problems``:
0), so a script can stop before a run. With ``cache=True`` the sampled frames go to the frame
cache that later runs read automatically. Progress is journalled video by video
(``suite.data.frame_cache``), so an interrupted prepare resumes where it stopped; videos whose
file has not changed since they were checked are not decoded again.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from suite.data.cards import load_card
from suite.data.frame_cache import (
    FrameCache,
    Journal,
    ScanEntry,
    cache_root,
    file_stamp,
    frames_dir,
    journal_path,
    read_journal,
)
from suite.data.real import (
    REAL_LOADERS,
    SPLIT_PARTS,
    data_root,
    expected_file,
    image_size_of,
    read_part,
    resolve_options,
    resolve_videos,
    train_part,
    videos_dir,
    window_rule,
)
from suite.data.video import read_clip
from suite.errors import BadVideoError, UserError


@dataclass
class PartReport:
    """One annotation part: what the card expects and what the files hold."""

    name: str
    expected: int | None  # videos, from the card's [splits]
    annotated: int  # videos the annotation file lists (with at least one caption)
    captions: int
    present: int  # of those, with a video file
    missing: list[str] = field(default_factory=list)  # video ids without a file
    unreadable: list[str] = field(default_factory=list)  # video ids whose file does not decode
    error: str | None = None  # the annotation file itself is missing or malformed

    @property
    def count_ok(self) -> bool:
        return self.error is None and (self.expected is None or self.annotated == self.expected)


@dataclass
class PrepareReport:
    """What ``suite prepare`` found; ``lines()`` is the printed form, ``to_dict()`` the JSON."""

    dataset: str
    data_root: str
    videos_dir: str
    frames: int
    policy: str
    size: int
    parts: list[PartReport]
    splits: dict[str, str]  # suite split -> where it comes from
    missing: dict[str, str]  # video id -> the file that was looked for
    unreadable: dict[str, str]  # video id -> "file: reason"
    checked: int  # videos decoded by this call
    resumed: int  # videos an earlier prepare had already checked (file unchanged)
    cache_dir: str | None
    cached: int  # videos in the frame cache after this call
    journal: str
    seconds: float

    @property
    def problems(self) -> int:
        """Missing videos + unreadable videos + parts whose count or file is wrong."""
        return (len(self.missing) + len(self.unreadable)
                + sum(not p.count_ok for p in self.parts))

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["problems"] = self.problems
        return out

    def lines(self) -> list[str]:
        out = [f"{self.dataset} at {self.data_root} (videos: {self.videos_dir})",
               f"{'part':<10} {'expected':>9} {'annotated':>9} {'captions':>9} {'present':>8} "
               f"{'missing':>8} {'unreadable':>10}"]
        for p in self.parts:
            if p.error:
                out.append(f"{p.name:<10} {p.expected or '-':>9}  {p.error}")
                continue
            note = "" if p.count_ok else f"  count differs from the card ({p.expected})"
            out.append(f"{p.name:<10} {p.expected if p.expected is not None else '-':>9} "
                       f"{p.annotated:>9} {p.captions:>9} {p.present:>8} {len(p.missing):>8} "
                       f"{len(p.unreadable):>10}{note}")
        out.append("splits: " + ", ".join(f"{k} <- {v}" for k, v in self.splits.items()))
        if self.missing:
            out.append(f"missing videos ({len(self.missing)}):")
            out += [f"  {video}: {path}" for video, path in self.missing.items()]
        if self.unreadable:
            out.append(f"unreadable videos ({len(self.unreadable)}):")
            out += [f"  {video}: {why}" for video, why in self.unreadable.items()]
        out.append(f"checked {self.checked} videos in {self.seconds:.1f} s "
                   f"({self.resumed} already checked earlier, file unchanged); "
                   f"{self.frames} frames, {self.policy} policy, {self.size} px")
        if self.cache_dir:
            out.append(f"frame cache: {self.cache_dir} ({self.cached} videos); runs with the same "
                       f"frames, policy and size use it automatically")
        out.append("OK" if not self.problems else
                   f"{self.problems} problems; fix them (videos go in {self.videos_dir}, "
                   f"annotation files in --data-root {self.data_root}), or run with "
                   f"--on-bad-video skip, which leaves bad videos out and counts their test "
                   f"queries as misses")
        return out


def _check(video_id: str, path: str, frames: int, policy: str, size: int,
           cache: FrameCache | None, end_second: int | None = None) -> ScanEntry:
    """Decode one video as a run would; cache its frames if asked. Runs in worker processes."""
    stamp = file_stamp(path) or (0, 0)
    try:
        clip = read_clip(path, frames, policy, size, end_second=end_second)
    except BadVideoError as exc:
        reason = str(exc).removeprefix(f"cannot decode video {path}: ")
        return ScanEntry(video_id, path, *stamp, status="unreadable", error=reason)
    if cache is not None:
        cache.put(video_id, clip)
    return ScanEntry(video_id, path, *stamp, status="ok")


def _check_all(todo: list[tuple[str, str]], frames: int, policy: str, size: int,
               cache: FrameCache | None, workers: int, ends: dict[str, int]
               ) -> Iterator[ScanEntry]:
    if workers <= 0:
        for video, path in todo:
            yield _check(video, path, frames, policy, size, cache, ends.get(video))
        return
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=workers)
    try:
        n = len(todo)
        yield from pool.map(_check, [v for v, _ in todo], [p for _, p in todo], [frames] * n,
                            [policy] * n, [size] * n, [cache] * n,
                            [ends.get(v) for v, _ in todo], chunksize=4)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def split_sources(loader: str, train: str, val_fraction: float) -> dict[str, str]:
    """Where each split of a run that selects on validation comes from (runs with
    ``--select-on last`` or ``test`` train on the whole training part)."""
    parts = SPLIT_PARTS[loader]
    if parts["val"] is not None:
        return {"train": train, "val": parts["val"], "test": str(parts["test"])}
    if val_fraction == 0:
        return {"train": train, "val": "none (data.val_fraction=0)", "test": str(parts["test"])}
    return {"train": f"{train} minus {val_fraction:.0%} held out",
            "val": f"{val_fraction:.0%} of {train} (seeded)", "test": str(parts["test"])}


def prepare(dataset: str, root: str | None, options: dict[str, Any] | None = None,
            frames: int | None = None, backbone: str | None = None, cache: bool = False,
            workers: int = 0, show_progress: bool = True) -> PrepareReport:
    """Check dataset ``dataset`` under ``root`` against its card; cache frames if ``cache``."""
    from suite.common.progress import progress_bar

    started = time.perf_counter()
    card = load_card(dataset)
    if card.loader not in REAL_LOADERS:
        raise UserError(f"dataset {dataset!r} has no files to prepare; "
                        f"valid: {', '.join(REAL_LOADERS)}")
    opts = resolve_options(card, options or {})
    base = data_root(card, root)
    videos = videos_dir(card, base, opts)
    frames = frames or card.frames
    size = opts.size or image_size_of(backbone or card.backbone)

    parts: list[PartReport] = []
    order: dict[str, None] = {}
    members: dict[str, list[str]] = {}
    ends: dict[str, int] = {}  # the clip4clip windows a run reads
    for part, expected in card.splits.items():
        try:
            ann = read_part(base, card, part)
        except UserError as exc:
            parts.append(PartReport(part, expected, 0, 0, 0, error=str(exc)))
            continue
        members[part] = ann.video_ids
        order.update(dict.fromkeys(ann.video_ids))
        if opts.policy == "clip4clip":
            ends.update(ann.ends)
        parts.append(PartReport(part, expected, len(ann.video_ids), len(ann.captions), 0))
    ids = list(order)
    paths = dict(zip(ids, resolve_videos(card.loader, videos, ids), strict=True))

    root_dir = cache_root(opts.cache_dir or None)
    journal = journal_path(root_dir, card.name, videos)
    earlier = read_journal(journal)
    frame_cache = None
    if cache:
        window = window_rule(card, opts.policy)
        frame_cache = FrameCache(frames_dir(root_dir, card.name, videos, frames, opts.policy, size,
                                            window, opts.cache_format), frames, size,
                                 opts.cache_format)
        frame_cache.directory.mkdir(parents=True, exist_ok=True)
        frame_cache.write_manifest({"dataset": card.name, "videos": str(videos), "frames": frames,
                                    "policy": opts.policy, "size": size, "window": window,
                                    "format": opts.cache_format})
    status: dict[str, ScanEntry] = {}
    todo: list[tuple[str, str]] = []
    for video in ids:
        path = paths[video]
        if path is None:
            continue
        entry = earlier.get(video)
        if (entry is not None and entry.path == path and entry.current()
                and (frame_cache is None or entry.status != "ok" or frame_cache.has(video))):
            status[video] = entry
        else:
            todo.append((video, path))
    resumed = len(status)
    with Journal(journal) as log, progress_bar(f"checking {card.name} videos", len(todo),
                                                enabled=show_progress) as advance:
        for entry in _check_all(todo, frames, opts.policy, size, frame_cache, workers, ends):
            log.add(entry)
            status[entry.video_id] = entry
            advance()

    missing = {v: expected_file(card.loader, videos, v) for v in ids if paths[v] is None}
    unreadable = {v: f"{e.path}: {e.error}" for v, e in status.items() if e.status != "ok"}
    for report in parts:
        listed = members.get(report.name, [])
        report.present = sum(paths[v] is not None for v in listed)
        report.missing = [v for v in listed if v in missing]
        report.unreadable = [v for v in listed if v in unreadable]
    cached = 0
    if frame_cache is not None:
        cached = sum(frame_cache.has(v) for v in ids)
    return PrepareReport(
        dataset=card.name, data_root=str(base), videos_dir=str(videos), frames=frames,
        policy=opts.policy, size=size, parts=parts,
        splits=split_sources(card.loader, train_part(card, opts), opts.val_fraction),
        missing=missing, unreadable=unreadable, checked=len(todo), resumed=resumed,
        cache_dir=str(frame_cache.directory) if frame_cache else None, cached=cached,
        journal=str(journal), seconds=time.perf_counter() - started)



def data_options(sets: dict[str, Any]) -> dict[str, Any]:
    """``data.NAME=VALUE`` settings as data options; any other section is refused."""
    options = {}
    for key, value in sets.items():
        section, _, name = key.partition(".")
        if section != "data" or not name:
            raise UserError(f"prepare takes only --set data.NAME=VALUE, got {key!r}")
        options[name] = value
    return options
