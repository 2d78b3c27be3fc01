"""Video decoding with PyAV and the frame-sampling policies of protocol.md.

Each policy reproduces the frame indices of its reference's loader (``F`` frames per video of
``n`` frames at ``fps``, both as the container states them):

- ``tempme`` (default), as LunarShen/TempMe ``tvr/dataloaders/dataloader_retrieval.py``
  ``_get_rawvideo_dec`` (lines 258-277): candidates every ``round(fps)`` frames from frame 0
  (``t_stride = int(round(float(fps) / sample_fps))``, ``sample_fps = 1``). More than ``F``
  candidates: ``F`` of them evenly spaced (``linspace(0, len - 1, F)``, truncated); exactly ``F``:
  all; fewer: ``F`` evenly spaced raw frames over the whole clip (``linspace(0, n - 1, F)``), so
  frames repeat in very short clips; nothing is padded and the mask is all ones.
- ``clip4clip``, as ArrowLuo/CLIP4Clip ``dataloaders/rawvideo_util.py`` ``video_to_tensor``
  (lines 33-65): one frame per second at ``sec * int(fps)`` for ``sec`` from 0 to
  ``ceil(n / int(fps))`` (or to the end of the loader's window, see ``end_second``), stopping at
  the first frame past the end. More than ``F``: evenly spaced (``slice_framepos 2``, which every
  training script of the README uses; ``dataloader_msrvtt_retrieval.py`` lines 105-112); ``F``
  or fewer: all, and the clip is padded with black frames that the mask marks as absent.

Where a reference would fail (a stated rate below 0.5 fps for ``tempme``, below 1 for
``clip4clip``, or none), every frame is a candidate. ``SAMPLING_VERSION`` names these rules in
the frame cache key: change it whenever a policy's indices change.

Decoding is sequential from the start of the stream, only the sampled frames are converted to
RGB (and scaled in the same swscale call), decoding stops after the last sampled frame, and a
long gap between two sampled frames is crossed by seeking to the keyframe before the next one
when the stream's timestamps are regular enough to say which frame a seek landed on.

Frames come out with the short side resized to ``size`` (bicubic) and centre-cropped to
``size x size``, which is what ``suite.data.transforms.preprocess`` would do with the model's
input size; doing it here keeps batches stackable and the frame cache small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from suite.errors import UserError

POLICIES = ("tempme", "clip4clip")
# 1: floor(k * fps) candidates for both policies; 2: each reference's own stride and window.
SAMPLING_VERSION = 2


class BadVideoError(UserError):
    """A video file that is missing or cannot be decoded; the message names the file.

    A DataLoader worker re-raises an exception in the main process as
    ``type(exc)("Caught ... Original Traceback ...")``; the original one-line message is the last
    line of that text, so it is recovered here and the CLI still prints one line.
    """

    def __init__(self, message: str) -> None:
        if "Original Traceback" in message:
            lines = [line for line in message.strip().splitlines() if line.strip()]
            last = lines[-1] if lines else message
            for prefix in (f"{type(self).__module__}.{type(self).__qualname__}: ",
                           f"{type(self).__qualname__}: "):
                if last.startswith(prefix):
                    last = last[len(prefix):]
                    break
            message = last
        super().__init__(message)


@dataclass(frozen=True)
class Sampling:
    """Which raw frames to take (ascending, may repeat) and how many slots are real frames."""

    indices: np.ndarray  # int64, (n,)
    real: int  # == len(indices); the clip is padded to ``frames`` when real < frames


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise UserError(f"unknown frame policy {policy!r}; valid: {', '.join(POLICIES)}")


def stride(fps: float, policy: str) -> int:
    """Frames between two candidates: ``round(fps)`` (tempme; Python's round, half to even) or
    ``int(fps)`` (clip4clip); 1 when the rate is unknown or the reference's stride would be 0."""
    check_policy(policy)
    if not fps or not math.isfinite(fps) or fps <= 0:
        return 1
    return max(1, round(fps) if policy == "tempme" else int(fps))


def candidate_frames(num_frames: int, fps: float, policy: str = "tempme",
                     end_second: int | None = None) -> np.ndarray:
    """The policy's candidate frames (ascending) of a clip of ``num_frames`` frames.

    ``end_second`` (clip4clip only) is the last second a loader reads, as CLIP4Clip's DiDeMo (31)
    and ActivityNet (the annotated duration, rounded up) loaders pass it; the clip's own length
    still bounds it (``end_sec = end_time if end_time <= total_duration else total_duration``).
    """
    if num_frames <= 0:
        return np.zeros(0, dtype=np.int64)
    step = stride(fps, policy)
    if policy == "tempme":
        if end_second is not None:
            raise ValueError("the tempme policy reads whole clips (TempMe has no window)")
        return np.arange(0, num_frames, step, dtype=np.int64)
    last = -(-num_frames // step)  # total_duration = ceil(frameCount / fps)
    if end_second is not None:
        last = min(last, max(0, end_second))
    frames = np.arange(last + 1, dtype=np.int64) * step
    return frames[frames < num_frames]  # a read past the last frame ends the loop


def sample_frames(num_frames: int, fps: float, frames: int, policy: str = "tempme",
                  end_second: int | None = None) -> Sampling:
    """The frames the policy's reference takes from a clip of ``num_frames`` frames at ``fps``."""
    check_policy(policy)
    if frames < 1:
        raise ValueError("frames must be >= 1")
    if num_frames <= 0:
        raise ValueError("a clip needs at least one frame")
    candidates = candidate_frames(num_frames, fps, policy, end_second)
    if len(candidates) > frames:
        picked = candidates[np.linspace(0, len(candidates) - 1, frames).astype(np.int64)]
        return Sampling(picked, frames)
    if len(candidates) == frames or policy == "clip4clip":
        return Sampling(candidates, len(candidates))
    return Sampling(np.linspace(0, num_frames - 1, frames).astype(np.int64), frames)


def pad(clip: np.ndarray, frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Real frames (n, H, W, 3), n <= frames -> (frames, H, W, 3) black-padded, and the mask."""
    n = len(clip)
    mask = np.zeros(frames, dtype=bool)
    mask[:n] = True
    if n == frames:
        return clip, mask
    out = np.zeros((frames, *clip.shape[1:]), dtype=np.uint8)
    out[:n] = clip
    return out, mask


@dataclass(frozen=True)
class StreamInfo:
    """What the sampling needs to know about a video stream."""

    num_frames: int
    fps: float
    width: int
    height: int


def _open(path: str | Path):  # -> av.container.InputContainer
    import av

    container = av.open(str(path), metadata_errors="ignore")
    if not container.streams.video:
        container.close()
        raise BadVideoError(f"video {path} has no video stream")
    return container


def _stream_info(path: str | Path) -> StreamInfo:
    """Frame count, rate and size; counts packets when the container does not store a count."""
    with _open(path) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or stream.base_rate
        fps = float(rate) if rate else 0.0
        count = int(stream.frames or 0)
        width, height = stream.codec_context.width, stream.codec_context.height
        if count <= 0:  # e.g. WebM: demux (no decoding) and count the packets that carry data
            count = sum(1 for packet in container.demux(stream) if packet.size)
    return StreamInfo(count, fps, width, height)


def _convert(frame, size: int | None) -> np.ndarray:  # frame: av.VideoFrame
    """RGB uint8 (H, W, 3); with ``size``: short side to ``size`` (bicubic), centre crop."""
    if size is None:
        return frame.to_ndarray(format="rgb24")
    w, h = frame.width, frame.height
    scale = size / min(w, h)
    nw, nh = max(size, round(w * scale)), max(size, round(h * scale))
    if (nw, nh) == (w, h):
        rgb = frame.to_ndarray(format="rgb24")
    else:
        rgb = frame.reformat(width=nw, height=nh, format="rgb24",
                             interpolation="BICUBIC").to_ndarray()
    top, left = (nh - size) // 2, (nw - size) // 2
    return np.ascontiguousarray(rgb[top:top + size, left:left + size])


class _SeekFailed(Exception):
    """A seek landed somewhere the timestamps cannot place; decode sequentially instead."""


def _decode(path: str | Path, targets: list[int], fps: float, size: int | None,
            seek: bool) -> tuple[dict[int, np.ndarray], int]:
    """Decode frames ``targets`` (ascending, unique). Returns them and the frames decoded."""
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.codec_context.thread_count = 1  # parallelism comes from DataLoader workers
        time_base = float(stream.time_base) if stream.time_base else 0.0
        regular = seek and fps > 0 and time_base > 0  # timestamps say which frame is which
        out: dict[int, np.ndarray] = {}
        pos, index, decoded = 0, -1, 0
        pts0: int | None = None
        keyframes: list[int] = []
        after_seek = False
        last_seek = -1
        frames = container.decode(stream)
        while pos < len(targets):
            frame = next(frames, None)
            if frame is None:
                break
            decoded += 1
            if pts0 is None:
                pts0 = frame.pts
                regular = regular and pts0 is not None
            by_time = (round((frame.pts - pts0) * time_base * fps)
                       if regular and frame.pts is not None else None)
            if after_seek:
                if by_time is None or by_time > targets[pos] or by_time < 0:
                    raise _SeekFailed
                index, after_seek = by_time, False
            else:
                index += 1
                if by_time != index:
                    regular = False  # irregular timestamps: never seek in this stream
            if frame.key_frame and (not keyframes or index > keyframes[-1]):
                keyframes.append(index)
            if targets[pos] == index:
                out[index] = _convert(frame, size)
                pos += 1
            if (regular and pos < len(targets) and len(keyframes) >= 2
                    and targets[pos] > last_seek
                    and targets[pos] - index > 2 * (keyframes[-1] - keyframes[-2])):
                # Keyframes come often enough that one likely lies between here and the next
                # target: jump to the last keyframe before it (once per target).
                assert pts0 is not None
                last_seek = targets[pos]
                container.seek(pts0 + int(targets[pos] / fps / time_base), stream=stream,
                               backward=True, any_frame=False)
                frames = container.decode(stream)
                after_seek = True
    return out, decoded


def read_clip(path: str | Path, frames: int, policy: str = "tempme", size: int | None = 224,
              seek: bool = True, end_second: int | None = None) -> np.ndarray:
    """The sampled real frames of the video at ``path``: uint8 (n, S, S, 3), n <= ``frames``.

    ``n == frames`` except under the ``clip4clip`` policy for clips with ``frames`` candidates
    or fewer; ``pad`` makes the model input. ``end_second``: the clip4clip loader's window (see
    ``candidate_frames``). Any decoding failure raises ``BadVideoError``.
    """
    import av

    check_policy(policy)
    if end_second is not None and policy != "clip4clip":
        raise ValueError("only the clip4clip policy reads a window of a clip")
    try:
        info = _stream_info(path)
        if info.num_frames <= 0:
            raise BadVideoError(f"video {path} has no frames")
        for attempt in range(2):
            sampling = sample_frames(info.num_frames, info.fps, frames, policy, end_second)
            targets = sorted(set(int(i) for i in sampling.indices))
            try:
                got, decoded = _decode(path, targets, info.fps, size, seek)
            except _SeekFailed:
                got, decoded = _decode(path, targets, info.fps, size, seek=False)
            if len(got) == len(targets):
                return np.stack([got[int(i)] for i in sampling.indices])
            # The container over-stated its frame count: sample again from what is there.
            if decoded == 0 or attempt == 1:
                break
            info = StreamInfo(decoded, info.fps, info.width, info.height)
        raise BadVideoError(f"video {path} ended before its frames could be read")
    except BadVideoError:
        raise
    except (av.FFmpegError, OSError, ValueError, RuntimeError, EOFError, StopIteration) as exc:
        raise BadVideoError(f"cannot decode video {path}: {_reason(exc)}") from None


def probe(path: str | Path) -> str | None:
    """A quick check that ``path`` opens and its first frame decodes: None, or what is wrong."""
    import av

    try:
        with _open(path) as container:
            frame = next(container.decode(container.streams.video[0]), None)
            if frame is None:
                return "no frame decodes"
    except BadVideoError as exc:
        return str(exc)
    except (av.FFmpegError, OSError, ValueError, RuntimeError, EOFError) as exc:
        return _reason(exc)
    return None


def _reason(exc: BaseException) -> str:
    """One line saying what went wrong, without the errno and the path (the caller names it)."""
    text = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return str(text).splitlines()[0]
