"""Decoding the sampled frames of a video: PyAV with a decoding plan, and a plain reference.

The plan. One demux pass (no decoding) reads every packet's timestamp and keyframe flag, which
number the frames in display order: frame ``i`` is the packet with the ``i``-th smallest
timestamp, leaving out packets the demuxer marks to be discarded (edit-list pre-roll). For each
sampled frame the decoder then needs only the packets from the last keyframe before it (in
decode order, and not after it in display order) up to its own packet; runs of such packets
that touch are decoded in one go, and between two runs the decoder is drained and reset, which
is what a seek does. Nothing is decoded after the last sampled frame.

Every run is checked: each of its packets must come out as a frame, except the leading frames
of an open GOP (packets after the run's first keyframe in decode order but before it in display
order, which need the GOP before it), and no frame may come out marked corrupt; a keyframe that
is not a clean entry point, an invisible frame or a packet that does not decode fails the
check. Then, or when timestamps are missing or repeat, the clip is decoded with
``decode_sequential``: every frame from the start of the stream, numbered as it comes out,
which is the reference the plan is tested against (``tests/test_decoders.py``).

Frames from both paths go through the same conversion (``convert``), so they are identical.

Other decoders. torchcodec and decord2 were measured against this (``benchmarks/decode.py``,
``benchmarks/results/decode.md``): they read the same frame indices and, at the video's own size,
give PyAV's pixels exactly, but they hand out RGB, so they cannot give the frames the suite
scales in the same swscale call as the colour conversion (up to 82 levels apart at 224 px),
each spent more CPU per video than PyAV with the plan, and on open-GOP H.264 (decord2) and
MPEG-4 with B-frames (both) they returned frames other than the ones asked for. They are not
used here.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class StreamInfo:
    """What the sampling needs to know about a video stream."""

    num_frames: int
    fps: float
    width: int
    height: int


@dataclass(frozen=True)
class StreamIndex:
    """A video stream's header facts and its packets in decode order (data packets only)."""

    info: StreamInfo
    pts: list[int | None]
    keyframe: list[bool]
    discard: list[bool]

    def display_order(self) -> list[int] | None:
        """The packet of each frame in display order, or None when the timestamps cannot say
        (one missing, or two equal)."""
        live = [j for j, gone in enumerate(self.discard) if not gone]
        stamps = [self.pts[j] for j in live]
        if any(p is None for p in stamps) or len(set(stamps)) != len(stamps):
            return None
        return sorted(live, key=lambda j: self.pts[j])  # type: ignore[arg-type, return-value]


def open_video(path: str | Path):  # -> av.container.InputContainer
    """The container of ``path``; ``BadVideoError`` when it has no video stream."""
    import av

    from suite.errors import BadVideoError

    container = av.open(str(path), metadata_errors="ignore")
    if not container.streams.video:
        container.close()
        raise BadVideoError(f"video {path} has no video stream")
    return container


def index_stream(path: str | Path) -> StreamIndex:
    """Header facts and packet timestamps of the first video stream, by demuxing (no decoding).

    The frame count is the container's when it states one (as every reference reads it), else
    the number of packets that become frames (e.g. WebM, which stores no count).
    """
    with open_video(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        count = int(stream.frames or 0)
        width, height = stream.codec_context.width, stream.codec_context.height
        pts: list[int | None] = []
        keyframe: list[bool] = []
        discard: list[bool] = []
        for packet in container.demux(stream):
            if packet.size:
                pts.append(packet.pts)
                keyframe.append(bool(packet.is_keyframe))
                discard.append(bool(packet.is_discard))
    if count <= 0:
        count = len(discard) - sum(discard)
    return StreamIndex(StreamInfo(count, fps, width, height), pts, keyframe, discard)


def plan_runs(order: list[int], keyframe: list[bool], targets: list[int]) -> list[tuple[int, int]]:
    """The packet runs (first, last; decode order, inclusive) that decode frames ``targets``.

    ``order[i]`` is the packet of frame ``i``; ``targets`` ascending and unique. A frame's run
    starts at the last keyframe at or before its packet whose own frame is not after it (a
    keyframe whose leading frames come before it in display order cannot start them), or at the
    first packet when there is none. Runs that overlap or touch are joined.
    """
    frame_of = {packet: i for i, packet in enumerate(order)}
    keys = [j for j, key in enumerate(keyframe) if key and j in frame_of]
    spans = []
    for target in targets:
        packet = order[target]
        start = 0
        for k in reversed(keys[:bisect_right(keys, packet)]):
            if frame_of[k] <= target:
                start = k
                break
        spans.append((start, packet))
    runs: list[tuple[int, int]] = []
    for start, end in sorted(spans):  # B-frames: display order is not decode order
        if runs and start <= runs[-1][1] + 1:
            runs[-1] = (runs[-1][0], max(runs[-1][1], end))
        else:
            runs.append((start, end))
    return runs


def convert(frame, size: int | None) -> np.ndarray:  # frame: av.VideoFrame
    """RGB uint8 (H, W, 3); with ``size``: short side to ``size`` (bicubic, in the same swscale
    call as the colour conversion), then the centre ``size x size`` crop."""
    if size is None:
        return frame.to_ndarray(format="rgb24")
    from suite.data.transforms import crop_start, resized_shape

    w, h = frame.width, frame.height
    nh, nw = resized_shape(h, w, size)
    if (nw, nh) == (w, h):
        rgb = frame.to_ndarray(format="rgb24")
    else:
        rgb = frame.reformat(width=nw, height=nh, format="rgb24",
                             interpolation="BICUBIC").to_ndarray()
    top, left = crop_start(nh, size), crop_start(nw, size)
    return np.ascontiguousarray(rgb[top:top + size, left:left + size])


def decode_planned(path: str | Path, index: StreamIndex, targets: list[int],
                   size: int | None) -> tuple[dict[int, np.ndarray], int] | None:
    """Frames ``targets`` (ascending, unique, below the frame count) decoded by the plan, and
    the packets decoded; None when the timestamps or the check say to decode sequentially."""
    order = index.display_order()
    if order is None or not targets or targets[-1] >= len(order):
        return None
    runs = plan_runs(order, index.keyframe, targets)
    frame_of = {packet: i for i, packet in enumerate(order)}
    wanted = {index.pts[order[t]]: t for t in targets}
    out: dict[int, np.ndarray] = {}
    fed = 0
    with open_video(path) as container:
        stream = container.streams.video[0]
        codec = stream.codec_context
        codec.thread_count = 1  # parallelism comes from DataLoader workers
        run, position = 0, -1
        owed: set[int | None] = set()  # frames of this run that have not come out yet
        for packet in container.demux(stream):
            if not packet.size:
                continue
            position += 1
            first, last = runs[run]
            if position < first:
                continue
            if position >= len(index.pts) or packet.pts != index.pts[position]:
                return None  # the second pass sees other packets than the first
            if position in frame_of and frame_of[position] >= frame_of.get(first, 0):
                owed.add(packet.pts)  # not a leading frame of an open GOP: must decode
            frames = list(codec.decode(packet))
            fed += 1
            if position == last:
                frames += codec.decode(None)  # drain the frames the decoder still holds
                codec.flush_buffers()
            for frame in frames:
                if frame.is_corrupt:
                    return None  # decoded without all its references
                owed.discard(frame.pts)
                target = wanted.get(frame.pts)
                if target is not None:
                    out[target] = convert(frame, size)
            if position == last:
                if owed:
                    return None
                run += 1
                if run == len(runs):
                    break
    return (out, fed) if len(out) == len(targets) else None


def decode_sequential(path: str | Path, targets: list[int],
                      size: int | None) -> tuple[dict[int, np.ndarray], int]:
    """Frames ``targets`` (ascending, unique) numbered as they come out of the decoder, from the
    start of the stream; stops after the last one. Returns them and the frames decoded."""
    out: dict[int, np.ndarray] = {}
    decoded = 0
    if not targets:
        return out, decoded
    with open_video(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1
        pos = 0
        for index, frame in enumerate(container.decode(stream)):
            decoded += 1
            if index == targets[pos]:
                out[index] = convert(frame, size)
                pos += 1
                if pos == len(targets):
                    break
    return out, decoded
