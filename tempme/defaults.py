"""Default TempMe schedules per backbone and frame count.

ViT-B-32 follows the paper: ImgMe r = 2 in layers 0-7, ClipMe layers 8, 9, 10 with groups
2, 2, 3 for 12 frames (4, 4, 4 for 64 frames), ratio_cross 0.30, ratio_intra 0.10: 1 x 97 output
tokens, about 34.8 GMACs for 12 frames.

ViT-B-16: the paper reports 127 output tokens (1 x 127) and 121.4 GFLOPs (multiply-adds) for 12
frames but not its schedule. With the paper's ratios no constant ImgMe r gives both: 127 tokens
needs r = 19 (about 91 GMACs) and 121 GMACs gives about 300 tokens. The choice here keeps the
B/32 structure (ClipMe layers 8, 9, 10, groups 2, 2, 3) and merges more per step, found by a
search over r, clip layers and ratios (round values preferred):

    imgme_r = 10 in layers 0-7, ratio_cross = 0.40, ratio_intra = 0.20

which gives, per sequence: 197 -> 117 after the ImgMe layers, then 234 -> 141 -> 113 (6 seqs),
226 -> 136 -> 109 (3), 327 -> 197 -> 158 (1), and 127 after layer 11: 1 x 127 tokens and
121.8 GMACs by the analytic count (patch embedding, qkv/out/MLP products, attention's two
products, merge similarities; the same count gives 210.8 for the unmerged encoder against the
paper's 211.3). It is exposed as :data:`VIT_B_16_CHOICE`.

tiny-clip (the embedded test backbone, 37 tokens per frame, depth 6): r = 2 in layers 0-2, ClipMe
layers 3, 4, 5.

Frame counts other than 12 and 64 split the frames into at most three balanced group sizes
(e.g. 8 -> 2, 2, 2; 4 -> 2, 2; 32 -> 2, 4, 4) on consecutive ClipMe layers from the same first
ClipMe layer.
"""

from __future__ import annotations

from dataclasses import dataclass

from tempme.schedule import ScheduleError, TempMeSchedule


@dataclass(frozen=True)
class BackboneDefaults:
    """What a backbone's default schedule is made of (groups come from the frame count)."""

    depth: int
    tokens_per_frame: int
    imgme_r: int
    first_clip_layer: int
    ratio_cross: float = 0.30
    ratio_intra: float = 0.10


VIT_B_16_CHOICE = BackboneDefaults(depth=12, tokens_per_frame=197, imgme_r=10, first_clip_layer=8,
                                   ratio_cross=0.40, ratio_intra=0.20)

DEFAULTS: dict[str, BackboneDefaults] = {
    "ViT-B-32": BackboneDefaults(depth=12, tokens_per_frame=50, imgme_r=2, first_clip_layer=8),
    "ViT-B-16": VIT_B_16_CHOICE,
    "tiny-clip": BackboneDefaults(depth=6, tokens_per_frame=37, imgme_r=2, first_clip_layer=3),
}

_FIXED_GROUPS: dict[int, tuple[int, ...]] = {12: (2, 2, 3), 64: (4, 4, 4)}


def known_backbones() -> list[str]:
    """Backbone names with a default schedule."""
    return sorted(DEFAULTS)


def clip_groups_for(num_frames: int, max_groups: int = 3) -> tuple[int, ...]:
    """Group sizes that join ``num_frames`` sequences into one in at most ``max_groups`` steps.

    The paper's choices for 12 and 64 frames; otherwise the prime factors spread over at most
    ``max_groups`` balanced groups, ascending. One frame gives ``(1,)`` (ClipMe merges within it).
    """
    if num_frames < 1:
        raise ScheduleError(f"num_frames must be >= 1, got {num_frames}")
    if num_frames in _FIXED_GROUPS and len(_FIXED_GROUPS[num_frames]) <= max_groups:
        return _FIXED_GROUPS[num_frames]
    primes, rest, p = [], num_frames, 2
    while rest > 1:
        while rest % p == 0:
            primes.append(p)
            rest //= p
        p += 1
    bins = [1] * max_groups
    for prime in sorted(primes, reverse=True):
        smallest = min(range(max_groups), key=bins.__getitem__)
        bins[smallest] *= prime
    groups = tuple(sorted(b for b in bins if b > 1))
    return groups or (1,)


def _schedule(d: BackboneDefaults, num_frames: int, depth: int) -> TempMeSchedule:
    groups = clip_groups_for(num_frames, max_groups=min(3, depth - d.first_clip_layer))
    layers = tuple(range(d.first_clip_layer, d.first_clip_layer + len(groups)))
    schedule = TempMeSchedule(imgme_r=d.imgme_r, clip_layers=layers, clip_groups=groups,
                              ratio_cross=d.ratio_cross, ratio_intra=d.ratio_intra)
    schedule.validate(num_frames, depth)
    return schedule


def generic_schedule(depth: int, num_frames: int, imgme_r: int = 2) -> TempMeSchedule:
    """A fallback for other backbones: ImgMe in the first two thirds of the blocks, then ClipMe."""
    if depth < 2:
        raise ScheduleError(f"TempMe needs a backbone with at least 2 blocks, got depth {depth}")
    first = max(1, (2 * depth) // 3)
    return _schedule(BackboneDefaults(depth, 0, imgme_r, first), num_frames, depth)


def default_schedule(backbone_name: str, num_frames: int, depth: int | None = None
                     ) -> TempMeSchedule:
    """The default schedule of ``backbone_name`` (an open_clip model name) for ``num_frames``.

    Unknown backbones fall back to :func:`generic_schedule` when ``depth`` is given and raise
    :class:`ScheduleError` otherwise.
    """
    defaults = DEFAULTS.get(backbone_name)
    if defaults is None:
        if depth is None:
            raise ScheduleError(
                f"no default TempMe schedule for backbone {backbone_name!r}; known: "
                f"{', '.join(known_backbones())} (or give the depth for a generic schedule)")
        return generic_schedule(depth, num_frames)
    if depth is not None and depth != defaults.depth:
        raise ScheduleError(
            f"backbone {backbone_name!r} has depth {defaults.depth}, got depth {depth}")
    return _schedule(defaults, num_frames, defaults.depth)
