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

Decoding (``suite.data.decoders``) follows a plan made from the packets' timestamps and keyframe
flags: only the packets from the keyframe before each sampled frame up to that frame are decoded,
every decoded run is checked, and the clip falls back to decoding every frame from the start
when the plan cannot be trusted; both give the same frames. Only the sampled frames are
converted to RGB (and scaled in the same swscale call).

Frames come out with the short side resized to ``size`` (bicubic) and centre-cropped to
``size x size``, which is what ``suite.data.transforms.preprocess`` would do with the model's
input size; doing it here keeps batches stackable and the frame cache small.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from suite.data.decoders import decode_planned, decode_sequential, index_stream, open_video
from suite.errors import BadVideoError, UserError

POLICIES = ("tempme", "clip4clip")
# 1: floor(k * fps) candidates for both policies; 2: each reference's own stride and window.
SAMPLING_VERSION = 3  # 3: torchvision's resize and crop rounding (suite.data.transforms)


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


def read_clip(path: str | Path, frames: int, policy: str = "tempme", size: int | None = 224,
              seek: bool = True, end_second: int | None = None) -> np.ndarray:
    """The sampled real frames of the video at ``path``: uint8 (n, S, S, 3), n <= ``frames``.

    ``n == frames`` except under the ``clip4clip`` policy for clips with ``frames`` candidates
    or fewer; ``pad`` makes the model input. ``end_second``: the clip4clip loader's window (see
    ``candidate_frames``). ``seek=False`` decodes every frame up to the last sampled one (the
    reference the decoding plan is tested against). Any decoding failure raises
    ``BadVideoError``.
    """
    import av

    check_policy(policy)
    if end_second is not None and policy != "clip4clip":
        raise ValueError("only the clip4clip policy reads a window of a clip")
    try:
        index = index_stream(path)
        num_frames = index.info.num_frames
        if num_frames <= 0:
            raise BadVideoError(f"video {path} has no frames")
        for attempt in range(2):
            sampling = sample_frames(num_frames, index.info.fps, frames, policy, end_second)
            targets = sorted(set(int(i) for i in sampling.indices))
            planned = decode_planned(path, index, targets, size) if seek else None
            if planned is not None:
                got, decoded = planned
            else:
                got, decoded = decode_sequential(path, targets, size)
            if len(got) == len(targets):
                return np.stack([got[int(i)] for i in sampling.indices])
            # The container over-stated its frame count: sample again from what is there.
            if decoded == 0 or attempt == 1:
                break
            num_frames = decoded
        raise BadVideoError(f"video {path} ended before its frames could be read")
    except BadVideoError:
        raise
    except (av.FFmpegError, OSError, ValueError, RuntimeError, EOFError, StopIteration) as exc:
        raise BadVideoError(f"cannot decode video {path}: {_reason(exc)}") from None


def probe(path: str | Path) -> str | None:
    """A quick check that ``path`` opens and its first frame decodes: None, or what is wrong."""
    import av

    try:
        with open_video(path) as container:
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
