"""TempMe's merge schedule as a value: which layers merge how much, validated, with a calculator.

A :class:`TempMeSchedule` says how many tokens each ImgMe layer merges (``imgme_r``), which layers
join neighbouring sequences into clips (``clip_layers`` with group sizes ``clip_groups``), and the
merge ratios of ClipMe and later layers. Nothing here touches a model: :meth:`token_table`
predicts the per-layer token counts analytically, and the patched encoder
(:mod:`tempme.encoder`) reads the same schedule, so the two can be checked against each other.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from cliptools.tokens import LayerKind, LayerTokens
from tempme.merge import max_merge


class ScheduleError(ValueError):
    """A schedule that cannot run; the one-line message says what is wrong and what is valid."""


def ratio_count(ratio: float, tokens: int) -> int:
    """``int(ratio x tokens)``: how many tokens a ratio removes from ``tokens``.

    A tiny epsilon absorbs binary floating-point error, so that an exact product such as
    0.3 x 30 = 9 is not truncated to 8 (0.3 * 30 may evaluate to 8.999...).
    """
    return int(math.floor(ratio * tokens + 1e-9))


@dataclass(frozen=True)
class TempMeSchedule:
    """Where and how much TempMe merges.

    - ``imgme_r``: tokens merged per sequence in every ImgMe layer (the layers before the first
      ClipMe layer; all layers if there is none), an int or one int per ImgMe layer.
    - ``clip_layers`` / ``clip_groups``: ClipMe layers (ascending, 0-indexed) and how many
      neighbouring sequences each joins into one clip.
    - ``ratio_cross``: share of a joined clip's tokens merged across the clip before attention.
    - ``ratio_intra``: share merged with the key metric after attention in ClipMe and later layers.
    - ``clip_pos_embed``: learnable clip position embeddings (one vector per input sequence).
    """

    imgme_r: int | tuple[int, ...] = 2
    clip_layers: tuple[int, ...] = ()
    clip_groups: tuple[int, ...] = ()
    ratio_cross: float = 0.30
    ratio_intra: float = 0.10
    clip_pos_embed: bool = True

    def __post_init__(self) -> None:
        # Accept lists (e.g. from a JSON/TOML config) but store tuples, so the value is hashable.
        for name in ("clip_layers", "clip_groups"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        if not isinstance(self.imgme_r, int):
            object.__setattr__(self, "imgme_r", tuple(self.imgme_r))

    @classmethod
    def no_merging(cls) -> TempMeSchedule:
        """A schedule that never merges: the encoder then equals per-frame CLIP."""
        return cls(imgme_r=0, clip_layers=(), clip_groups=(), ratio_cross=0.0, ratio_intra=0.0,
                   clip_pos_embed=False)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TempMeSchedule:
        """Build from plain values (lists allowed), e.g. a logged config."""
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples), e.g. to log the resolved config."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    # -- structure -------------------------------------------------------------------------

    def num_imgme_layers(self, depth: int) -> int:
        """ImgMe layers are every layer before the first ClipMe layer."""
        return self.clip_layers[0] if self.clip_layers else depth

    def kind(self, layer: int) -> LayerKind:
        """What block ``layer`` does: ImgMe, ClipMe, or a later (intra-merge only) layer."""
        if layer in self.clip_layers:
            return "clipme"
        if not self.clip_layers or layer < self.clip_layers[0]:
            return "imgme"
        return "later"

    def imgme_r_at(self, layer: int) -> int:
        """Tokens an ImgMe ``layer`` asks to merge (before the half-patch cap)."""
        if isinstance(self.imgme_r, int):
            return self.imgme_r
        return self.imgme_r[layer]

    def group_at(self, layer: int) -> int:
        """Group size of ClipMe ``layer``."""
        return self.clip_groups[self.clip_layers.index(layer)]

    def clip_input_sequences(self, num_frames: int) -> tuple[int, ...]:
        """Sequences entering each ClipMe layer (= clip position vectors that layer holds)."""
        counts, running = [], num_frames
        for group in self.clip_groups:
            counts.append(running)
            running //= group
        return tuple(counts)

    def output_sequences(self, num_frames: int) -> int:
        """Sequences leaving the last block."""
        return num_frames // math.prod(self.clip_groups)

    # -- validation ------------------------------------------------------------------------

    def validate(self, num_frames: int, depth: int) -> None:
        """Raise :class:`ScheduleError` unless this schedule can run ``num_frames`` frames
        through a ViT of ``depth`` blocks."""
        if num_frames < 1:
            raise ScheduleError(f"num_frames must be >= 1, got {num_frames}")
        if depth < 1:
            raise ScheduleError(f"depth must be >= 1, got {depth}")
        layers, groups = self.clip_layers, self.clip_groups
        if len(layers) != len(groups):
            raise ScheduleError(
                f"clip_layers {list(layers)} and clip_groups {list(groups)} differ in length; "
                "give one group size per ClipMe layer")
        for layer in layers:
            if not isinstance(layer, int) or not 0 <= layer < depth:
                raise ScheduleError(
                    f"clip layer {layer!r} is outside the backbone; valid layers: 0..{depth - 1}")
        if any(b <= a for a, b in zip(layers, layers[1:], strict=False)):
            raise ScheduleError(
                f"clip_layers {list(layers)} must be strictly ascending, e.g. [8, 9, 10]")
        running = num_frames
        for layer, group in zip(layers, groups, strict=True):
            if not isinstance(group, int) or group < 1 or running % group:
                divisors = [d for d in range(1, running + 1) if running % d == 0]
                raise ScheduleError(
                    f"clip group {group!r} at layer {layer} does not divide the {running} "
                    f"sequences entering it ({num_frames} frames); valid groups there: "
                    f"{', '.join(map(str, divisors))}")
            running //= group
        n_img = self.num_imgme_layers(depth)
        if isinstance(self.imgme_r, int):
            if self.imgme_r < 0:
                raise ScheduleError(f"imgme_r must be >= 0, got {self.imgme_r}")
        else:
            if len(self.imgme_r) != n_img:
                raise ScheduleError(
                    f"imgme_r lists {len(self.imgme_r)} values but there are {n_img} ImgMe "
                    f"layers (0..{n_img - 1}); give one int per ImgMe layer or a single int")
            if any(not isinstance(r, int) or r < 0 for r in self.imgme_r):
                raise ScheduleError(f"imgme_r values must be ints >= 0, got {list(self.imgme_r)}")
        for name in ("ratio_cross", "ratio_intra"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ScheduleError(f"{name} must be within [0, 1], got {value}")

    # -- calculator ------------------------------------------------------------------------

    def token_table(self, tokens_per_frame: int, num_frames: int, depth: int) -> list[LayerTokens]:
        """Tokens per sequence through every block, computed without running a model.

        ``tokens_per_frame`` counts the CLS token (50 for ViT-B/32 at 224). Follows the rules of
        the patched encoder: merge counts capped at half the patch tokens, CLS never merged.
        """
        self.validate(num_frames, depth)
        rows: list[LayerTokens] = []
        sequences, tokens, cls = num_frames, tokens_per_frame, 1
        for layer in range(depth):
            kind = self.kind(layer)
            after_cross: int | None = None
            if kind == "imgme":
                tokens_in = tokens
                tokens -= min(self.imgme_r_at(layer), max_merge(tokens, cls))
            elif kind == "clipme":
                group = self.group_at(layer)
                sequences //= group
                cls *= group
                tokens *= group
                tokens_in = tokens
                tokens -= min(ratio_count(self.ratio_cross, tokens), max_merge(tokens, cls))
                after_cross = tokens
                tokens -= min(ratio_count(self.ratio_intra, tokens), max_merge(tokens, cls))
            else:
                tokens_in = tokens
                tokens -= min(ratio_count(self.ratio_intra, tokens), max_merge(tokens, cls))
            rows.append(LayerTokens(layer, kind, sequences, tokens_in, after_cross, tokens))
        return rows

    def output_shape(self, tokens_per_frame: int, num_frames: int, depth: int) -> tuple[int, int]:
        """(sequences, tokens per sequence) leaving the last block."""
        last = self.token_table(tokens_per_frame, num_frames, depth)[-1]
        return last.sequences, last.after_intra

    def output_tokens(self, tokens_per_frame: int, num_frames: int, depth: int) -> int:
        """Tokens leaving the last block, summed over sequences (1 x 97 -> 97 for ViT-B/32)."""
        sequences, tokens = self.output_shape(tokens_per_frame, num_frames, depth)
        return sequences * tokens
