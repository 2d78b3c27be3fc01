"""The embedded synthetic video-text dataset: moving coloured shapes, captions that need time.

Videos
    Short clips of one or two coloured shapes on a plain dark background. An object is a shape
    (``SHAPES``), a colour (``COLOURS``) and a size (``SIZES``). Each video has one or two
    *events*, each done by its own object: a motion (``MOTIONS``: slides left/right, moves up/down,
    grows, shrinks, stays still) or an appearance change (``EVENTS``: appears, disappears). With
    two events the first happens in the first half of the clip and the second in the second half;
    the object that is not acting stays where it is (and is invisible before it appears or after
    it disappears). Positions, distances, timing, colour shades and the background are random but
    drawn from ``np.random.default_rng`` seeded by ``(seed, split id, index)``, so the same config
    gives byte-identical frames and captions in any process. Frames are rendered lazily, with
    anti-aliased vectorised masks.

    The size word names an object's size at the start of the clip. ``grows`` always takes a small
    object to large size and ``shrinks`` a large one to small size, so "a small red square grows"
    played backwards is exactly "a large red square shrinks".

Captions
    A small grammar. A clause is ``a <size> <colour> <shape> <verb phrase>``; every action has a
    canonical verb phrase (the action's name, e.g. "slides left") and paraphrases ("moves to the
    left", ...). One event: ``{a}``, "in this video {a}", ... Two events: ``{a}, then {b}``
    (canonical), "first {a}, then {b}", "{b} after {a}", "{a} before {b}", ... Training videos
    get ``train_captions`` distinct captions, the first canonical and the rest random paraphrases;
    validation and test videos get one canonical caption each (like MSR-VTT 1k-A).

Validation and test: minimal groups
    Val and test are built of small groups of videos with the same objects, positions, timing
    and colours that differ in one temporal fact only, so a model that ignores frame order
    cannot tell the members apart:

    - motion groups (one event, 2 videos): the event and its time reversal (left <-> right,
      up <-> down, grows <-> shrinks, appears <-> disappears). The two clips show the same
      frames in opposite order within the event's window.
    - order groups (two events A, B, 4 videos): "A, then B"; "B, then A" (order swapped, same
      objects and positions); "A reversed, then B"; "A, then B reversed".

    ``VideoSpec.group`` numbers the groups and ``VideoSpec.variant`` names the member ("base",
    "reversed", "swapped", "first-reversed", "second-reversed"). Canonical captions are unique
    within a split (groups that would repeat one are redrawn), so every test caption has exactly
    one correct video. A split whose size does not divide into groups ends with a shortened
    group.

Training
    Training videos are drawn independently (``group == -1``), except for a share
    ``train_grouped`` (0 by default) drawn in minimal groups. ``SyntheticSplit.groups`` gives
    every video a group id, and training batches keep a group together
    (``suite.data.loading.TrainingBatches``), so that hard negatives which only a model of time
    can tell apart meet in one contrastive batch. Within the two epochs of the default run this
    lowered the test R-Sum of every method we tried (lora, tempme, full at
    ``train_grouped=0.5``), so it is an ablation knob, not the default.

Static pairs
    ``static_pairs`` renders single frames of one or two still objects with captions of colour,
    shape, size and position ("a large red square at the top left"), with no motion words, for
    pre-training the tiny CLIP: it learns the objects but not time.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Annotated

import numpy as np
from pydantic import Field
from pydantic.dataclasses import dataclass as pydantic_dataclass

from suite.data.base import Clip, VideoTextSplit

SHAPES: tuple[str, ...] = ("square", "circle", "triangle")
COLOURS: tuple[str, ...] = ("red", "green", "blue", "yellow", "white", "purple")
SIZES: tuple[str, ...] = ("small", "large")
MOTIONS: tuple[str, ...] = ("slides left", "slides right", "moves up", "moves down", "grows",
                            "shrinks", "stays still")
EVENTS: tuple[str, ...] = ("appears", "disappears")
ACTIONS: tuple[str, ...] = MOTIONS + EVENTS
SPLITS: tuple[str, ...] = ("train", "val", "test")

# The time reversal of each action ("stays still" has none worth testing).
OPPOSITE: dict[str, str] = {
    "slides left": "slides right", "slides right": "slides left",
    "moves up": "moves down", "moves down": "moves up",
    "grows": "shrinks", "shrinks": "grows",
    "appears": "disappears", "disappears": "appears",
}
REVERSIBLE: tuple[str, ...] = tuple(a for a in ACTIONS if a in OPPOSITE)

# Verb phrases per action; the first is canonical.
PARAPHRASES: dict[str, tuple[str, ...]] = {
    "slides left": ("slides left", "moves to the left", "slides to the left", "drifts left"),
    "slides right": ("slides right", "moves to the right", "slides to the right", "drifts right"),
    "moves up": ("moves up", "rises", "goes up", "slides upward"),
    "moves down": ("moves down", "sinks", "goes down", "slides downward"),
    "grows": ("grows", "gets bigger", "expands", "grows larger"),
    "shrinks": ("shrinks", "gets smaller", "contracts", "becomes smaller"),
    "stays still": ("stays still", "does not move", "stays in place"),
    "appears": ("appears", "shows up", "comes into view", "becomes visible"),
    "disappears": ("disappears", "vanishes", "goes away", "is no longer visible"),
}
SINGLE_TEMPLATES: tuple[str, ...] = (
    "{a}", "in this video {a}", "the video shows how {a}", "we watch as {a}",
)
DOUBLE_TEMPLATES: tuple[str, ...] = (
    "{a}, then {b}", "first {a}, then {b}", "{a}, and after that {b}",
    "{b} after {a}", "{a} before {b}", "{a}, afterwards {b}", "at first {a}, later {b}",
)
# The most captions a training video can have: the fewest distinct paraphrases of any spec.
MAX_TRAIN_CAPTIONS = len(SINGLE_TEMPLATES) * min(len(v) for v in PARAPHRASES.values())

# Positions in static captions: rows x columns of a 3 x 3 grid.
POSITIONS: tuple[tuple[str, ...], ...] = (
    ("at the top left", "at the top", "at the top right"),
    ("on the left", "in the centre", "on the right"),
    ("at the bottom left", "at the bottom", "at the bottom right"),
)
_STATIC_WORDS = {w for row in POSITIONS for p in row for w in p.split()}
# Words that only describe time (motion, events, order): never in a static caption.
MOTION_WORDS: frozenset[str] = frozenset(
    {w.strip(",") for ps in PARAPHRASES.values() for p in ps for w in p.split()}
    | {w.strip(",") for t in SINGLE_TEMPLATES + DOUBLE_TEMPLATES for w in t.split()
       if not w.startswith("{")}
) - _STATIC_WORDS - {"a", "and", "is", "the", "in", "this", "video", "shows", "we", "watch", "as",
                    "how"}

RGB: dict[str, tuple[int, int, int]] = {
    "red": (225, 45, 45), "green": (50, 190, 70), "blue": (55, 95, 235),
    "yellow": (235, 215, 50), "white": (235, 235, 235), "purple": (165, 70, 215),
}
HALF: dict[str, float] = {"small": 0.09, "large": 0.15}  # half side / radius, fraction of frame
_TRIANGLE = 1.15  # triangles are drawn a bit larger so their area is close to the others
_EXTENT = 1.15  # bounding half-extent of any shape, in units of its half size
_GAP = 0.03  # free space kept between objects and to the frame border (fraction of frame)
_SPLIT_ID = {"train": 0, "val": 1, "test": 2}
_STATIC_ID = 3
_CAPTION_ID = 4  # random stream of the training captions' paraphrases
_CELL = (0.22, 0.5, 0.78)  # centres of the 3 x 3 grid of static positions
_CELLS = [(r, c) for r in range(3) for c in range(3)]
_FAR_PAIRS = [(a, b) for a in _CELLS for b in _CELLS
              if max(abs(a[0] - b[0]), abs(a[1] - b[1])) == 2]


MAX_VIDEOS = 200_000  # training videos
MAX_EVAL_VIDEOS = 20_000  # validation or test videos
MAX_FRAMES = 1024
MAX_SIZE = 1024  # pixels


@pydantic_dataclass(frozen=True)
class SyntheticConfig:
    """Options of the synthetic dataset; the same config always gives the same data. Every
    field's type and range is checked on construction (a ValueError naming the field)."""

    # Upper bounds keep a mistyped size from generating for hours: every split is drawn up
    # front, and evaluation holds a queries x videos similarity matrix.
    seed: Annotated[int, Field(ge=0)] = 0
    num_train: Annotated[int, Field(ge=0, le=MAX_VIDEOS)] = 2000
    num_val: Annotated[int, Field(ge=0, le=MAX_EVAL_VIDEOS)] = 100  # 0: no validation split
    num_test: Annotated[int, Field(ge=1, le=MAX_EVAL_VIDEOS)] = 500
    frames: Annotated[int, Field(ge=4, le=MAX_FRAMES)] = 12  # two events need two frames each
    size: Annotated[int, Field(ge=16, le=MAX_SIZE)] = 64  # pixels
    train_captions: Annotated[int, Field(ge=1, le=MAX_TRAIN_CAPTIONS)] = 3
    # share of training videos drawn in minimal groups
    train_grouped: Annotated[float, Field(ge=0, le=1)] = 0.0


@dataclass(frozen=True)
class ObjectSpec:
    """What an object is: shape, colour and its size at the start of the clip."""

    shape: str
    colour: str
    size: str

    def phrase(self) -> str:
        """``small red square``."""
        return f"{self.size} {self.colour} {self.shape}"


@dataclass(frozen=True)
class Event:
    """One object doing one action during frames ``start..end`` (inclusive).

    Positions are centres as fractions of the frame (x right, y down) at the start and end of
    the action. ``threshold`` is the progress (0..1) at which an object that appears becomes
    visible or one that disappears becomes invisible.
    """

    obj: ObjectSpec
    action: str
    start: int
    end: int
    x0: float
    y0: float
    x1: float
    y1: float
    threshold: float
    rgb: tuple[int, int, int]

    def end_size(self) -> str:
        """The object's size after the action."""
        return {"grows": "large", "shrinks": "small"}.get(self.action, self.obj.size)

    def reversed(self) -> Event:
        """The same event played backwards within its window (left <-> right, ...)."""
        return replace(self, obj=replace(self.obj, size=self.end_size()),
                       action=OPPOSITE[self.action], x0=self.x1, y0=self.y1, x1=self.x0,
                       y1=self.y0, threshold=1.0 - self.threshold)

    def clause(self, verb: int = 0) -> str:
        """``a small red square slides left`` with paraphrase ``verb`` of the action."""
        return f"a {self.obj.phrase()} {PARAPHRASES[self.action][verb]}"


@dataclass(frozen=True)
class VideoSpec:
    """Everything that decides a video: events in temporal order and the background."""

    events: tuple[Event, ...]
    background: tuple[int, int, int]
    group: int = -1
    variant: str = "base"

    def caption(self, template: int = 0, verbs: Sequence[int] = (0, 0)) -> str:
        """Caption from ``template`` and a paraphrase index per event; all zeros = canonical."""
        if len(self.events) == 1:
            return SINGLE_TEMPLATES[template].format(a=self.events[0].clause(verbs[0]))
        a, b = (e.clause(v) for e, v in zip(self.events, verbs, strict=True))
        return DOUBLE_TEMPLATES[template].format(a=a, b=b)

    def num_captions(self) -> int:
        """How many distinct captions the grammar has for this video."""
        templates = SINGLE_TEMPLATES if len(self.events) == 1 else DOUBLE_TEMPLATES
        count = len(templates)
        for e in self.events:
            count *= len(PARAPHRASES[e.action])
        return count

    def captions(self, count: int, rng: np.random.Generator) -> list[str]:
        """The canonical caption and ``count - 1`` distinct random paraphrases."""
        total = self.num_captions()
        picks = [0] + (rng.choice(total - 1, size=count - 1, replace=False) + 1).tolist()
        out = []
        for code in picks:  # mixed radix: template, then one verb index per event
            digits = []
            for e in reversed(self.events):
                n = len(PARAPHRASES[e.action])
                digits.append(code % n)
                code //= n
            out.append(self.caption(code, digits[::-1]))
        return out


# ---------------------------------------------------------------------------------------------
# Rendering


@functools.lru_cache(maxsize=8)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates: xs (1, 1, S) and ys (1, S, 1), float32, read-only."""
    c = np.arange(size, dtype=np.float32) + np.float32(0.5)
    xs, ys = c.reshape(1, 1, size), c.reshape(1, size, 1)
    xs.flags.writeable = False
    ys.flags.writeable = False
    return xs, ys


def _alpha(shape: str, dx: np.ndarray, dy: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage (..., 1) of ``shape`` at offsets ``dx``, ``dy`` from its centre."""
    if shape == "square":
        dist = np.maximum(np.abs(dx), np.abs(dy)) - half
    elif shape == "circle":
        dist = np.sqrt(dx * dx + dy * dy) - half
    elif shape == "triangle":  # apex up, base at the bottom, inside the box of half size t
        t = half * np.float32(_TRIANGLE)
        dist = np.maximum(dy - t, (2 * np.abs(dx) - dy - t) * np.float32(1 / np.sqrt(5)))
    else:
        raise ValueError(f"unknown shape {shape!r}; valid: {', '.join(SHAPES)}")
    return np.clip(np.float32(0.5) - dist, 0.0, 1.0)[..., None]


def _blend(pixels: np.ndarray, alpha: np.ndarray, rgb: np.ndarray) -> None:
    """Lay ``rgb`` over uint8 ``pixels`` (N, H, W, 3) in place with coverage ``alpha``."""
    alpha = alpha[..., 0]
    hit = alpha > 0  # the shape covers a small part of its box: blend only there
    colour = np.asarray(rgb, dtype=np.float32)
    if colour.ndim == 2:  # one colour per image
        colour = np.broadcast_to(colour[:, None, None, :], (*alpha.shape, 3))[hit]
    under = pixels[hit].astype(np.float32)
    under += alpha[hit][:, None] * (colour - under) + np.float32(0.5)
    pixels[hit] = under.astype(np.uint8)


def _paint(out: np.ndarray, shape: str, cx: np.ndarray, cy: np.ndarray, half: np.ndarray,
           rgb: np.ndarray) -> None:
    """Draw one shape per image into uint8 ``out`` (N, S, S, 3), in place.

    ``cx``, ``cy``, ``half`` are (N,) in pixels; ``rgb`` is (3,) or (N, 3). Only the box that
    holds the shape in every image is computed (cheap for a moving object in a few frames).
    """
    size = out.shape[1]
    reach = half * _EXTENT + 1.0
    x_lo, x_hi = _span(cx - reach, cx + reach, size)
    y_lo, y_hi = _span(cy - reach, cy + reach, size)
    if x_lo >= x_hi or y_lo >= y_hi:
        return
    xs, ys = _grid(size)
    dx = xs[:, :, x_lo:x_hi] - cx.astype(np.float32).reshape(-1, 1, 1)
    dy = ys[:, y_lo:y_hi] - cy.astype(np.float32).reshape(-1, 1, 1)
    alpha = _alpha(shape, dx, dy, half.astype(np.float32).reshape(-1, 1, 1))
    _blend(out[:, y_lo:y_hi, x_lo:x_hi], alpha, rgb)


def _paint_windows(out: np.ndarray, idx: np.ndarray, shape: str, cx: np.ndarray,
                   cy: np.ndarray, half: np.ndarray, rgb: np.ndarray) -> None:
    """Like ``_paint`` for images ``out[idx]`` (``idx`` unique, ``out`` contiguous), each shape
    in its own small window; only covered pixels are read and written."""
    size = out.shape[1]
    reach = float(half.max()) * _EXTENT + 1.0
    width = min(size, 2 * int(np.ceil(reach)) + 2)
    steps = np.arange(width)
    ox = np.clip(np.floor(cx - reach).astype(np.int64), 0, size - width)
    oy = np.clip(np.floor(cy - reach).astype(np.int64), 0, size - width)
    dx = (ox[:, None] + steps + 0.5 - cx[:, None]).astype(np.float32)[:, None, :]
    dy = (oy[:, None] + steps + 0.5 - cy[:, None]).astype(np.float32)[:, :, None]
    alpha = _alpha(shape, dx, dy, half.astype(np.float32).reshape(-1, 1, 1))[..., 0]
    i, y, x = np.nonzero(alpha)
    pixel = (idx[i] * size + oy[i] + y) * size + ox[i] + x
    flat = out.reshape(-1, 3)
    under = flat[pixel].astype(np.float32)
    colour = np.asarray(rgb, dtype=np.float32)[i]
    under += alpha[i, y, x][:, None] * (colour - under) + np.float32(0.5)
    flat[pixel] = under.astype(np.uint8)


def _span(lo: np.ndarray, hi: np.ndarray, size: int) -> tuple[int, int]:
    """Pixel range [a, b) covering every interval [lo_i, hi_i], clipped to the frame."""
    return max(0, int(np.floor(lo.min()))), min(size, int(np.ceil(hi.max())))


def _states(event: Event, frames: int) -> tuple[np.ndarray, ...]:
    """Per-frame centre x, y, half size (fractions of the frame) and visibility of its object."""
    t = np.arange(frames, dtype=np.float64)
    p = np.minimum(np.maximum((t - event.start) / (event.end - event.start), 0.0), 1.0)
    cx = event.x0 + (event.x1 - event.x0) * p
    cy = event.y0 + (event.y1 - event.y0) * p
    h0, h1 = HALF[event.obj.size], HALF[event.end_size()]
    half = h0 + (h1 - h0) * p
    if event.action == "appears":
        visible = p >= event.threshold
    elif event.action == "disappears":
        visible = p < event.threshold
    else:
        visible = np.ones(frames, dtype=bool)
    return cx, cy, half, visible


def _draw_order(spec: VideoSpec) -> list[Event]:
    """Events by object identity, so swapping the event order never changes occlusion."""
    return sorted(spec.events, key=lambda e: (SHAPES.index(e.obj.shape),
                                              COLOURS.index(e.obj.colour)))


def render(spec: VideoSpec, frames: int, size: int) -> np.ndarray:
    """Frames of ``spec``: uint8 (frames, size, size, 3)."""
    out = np.empty((frames, size, size, 3), dtype=np.uint8)
    # Filling with one (size * 3) row is much faster than broadcasting a 3-vector.
    out.reshape(frames * size, size * 3)[...] = np.tile(np.asarray(spec.background, np.uint8),
                                                       size)
    for event in _draw_order(spec):
        cx, cy, half, visible = _states(event, frames)
        rgb = np.asarray(event.rgb)
        if visible.all():
            _paint(out, event.obj.shape, cx * size, cy * size, half * size, rgb)
        elif visible.any():
            idx = np.flatnonzero(visible)
            part = out[idx]
            _paint(part, event.obj.shape, cx[idx] * size, cy[idx] * size, half[idx] * size, rgb)
            out[idx] = part
    return out


# ---------------------------------------------------------------------------------------------
# Sampling specs


def _rng(seed: int, stream: int, index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, index]))


def _shade(rng: np.random.Generator, colour: str) -> tuple[int, int, int]:
    """The colour's RGB with a little random jitter per channel."""
    jitter = rng.integers(-12, 13, size=3).tolist()
    r, g, b = (min(255, max(0, c + j)) for c, j in zip(RGB[colour], jitter, strict=True))
    return r, g, b


def _background(rng: np.random.Generator) -> tuple[int, int, int]:
    """A dark grey with a faint random tint."""
    grey = int(rng.integers(6, 40))
    r, g, b = (grey + d for d in rng.integers(-4, 5, size=3).tolist())
    return r, g, b


def _object(rng: np.random.Generator, action: str, avoid: ObjectSpec | None) -> ObjectSpec:
    """A random object for ``action``, never the same shape and colour as ``avoid``."""
    while True:
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        colour = COLOURS[int(rng.integers(len(COLOURS)))]
        if avoid is None or (shape, colour) != (avoid.shape, avoid.colour):
            break
    size = {"grows": "small", "shrinks": "large"}.get(action) or SIZES[int(rng.integers(2))]
    return ObjectSpec(shape, colour, size)


def _place(rng: np.random.Generator, action: str, obj: ObjectSpec, window: tuple[int, int],
           rgb: tuple[int, int, int]) -> Event:
    """An event with a random position, distance and timing, inside the frame."""
    end_size = {"grows": "large", "shrinks": "small"}.get(action, obj.size)
    margin = max(HALF[obj.size], HALF[end_size]) * _EXTENT + _GAP
    u_dist, u_x, u_y, u_switch = rng.random(4).tolist()
    d = 0.24 + 0.08 * u_dist  # how far a sliding object travels
    dx = d if action in ("slides left", "slides right") else 0.0
    dy = d if action in ("moves up", "moves down") else 0.0
    x0 = margin + (1.0 - 2 * margin - dx) * u_x
    y0 = margin + (1.0 - 2 * margin - dy) * u_y
    x1, y1 = x0 + dx, y0 + dy
    if action in ("slides left", "moves up"):
        x0, y0, x1, y1 = x1, y1, x0, y0
    start, end = window
    steps = end - start
    # Switch visibility between two frames, never on one: exact under time reversal.
    threshold = (min(int(u_switch * steps), steps - 1) + 0.5) / steps
    return Event(obj, action, start, end, x0, y0, x1, y1, threshold, rgb)


def _windows(rng: np.random.Generator, frames: int, count: int) -> list[tuple[int, int]]:
    """Frame windows: the whole clip for one event, the two halves for two."""
    def jitter(length: int) -> int:
        return int(rng.integers(2)) if length >= 6 else 0

    if count == 1:
        return [(jitter(frames), frames - 1 - jitter(frames))]
    half = frames // 2
    return [(jitter(half), half - 1), (half, frames - 1 - jitter(frames - half))]


def _overlaps(spec: VideoSpec, frames: int) -> bool:
    """Whether two objects come closer than the gap in any frame where both are visible."""
    if len(spec.events) < 2:
        return False
    (ax, ay, ah, av), (bx, by, bh, bv) = (_states(e, frames) for e in spec.events)
    reach = (ah + bh) * _EXTENT + _GAP
    close = (np.abs(ax - bx) < reach) & (np.abs(ay - by) < reach)
    return bool(np.any(close & av & bv))


def _random_spec(rng: np.random.Generator, frames: int, count: int,
                 actions: Sequence[str]) -> VideoSpec:
    """``count`` events with random actions from ``actions``, objects not overlapping (if
    possible in 50 draws)."""
    windows = _windows(rng, frames, count)
    background = _background(rng)
    chosen = [actions[int(rng.integers(len(actions)))] for _ in range(count)]
    objs: list[ObjectSpec] = []
    for action in chosen:
        objs.append(_object(rng, action, objs[0] if objs else None))
    shades = [_shade(rng, o.colour) for o in objs]
    spec = VideoSpec((), background)
    for _ in range(50):
        events = tuple(_place(rng, a, o, w, c)
                       for a, o, w, c in zip(chosen, objs, windows, shades, strict=True))
        spec = VideoSpec(events, background)
        if not _overlaps(spec, frames):
            break
    return spec


def _train_spec(seed: int, index: int, frames: int) -> tuple[VideoSpec, np.random.Generator]:
    rng = _rng(seed, _SPLIT_ID["train"], index)
    if rng.random() < 0.5:
        return _random_spec(rng, frames, 1, ACTIONS), rng
    return _random_spec(rng, frames, 2, REVERSIBLE), rng


def _swapped(spec: VideoSpec) -> VideoSpec:
    """The two events in the other order, each keeping its object, positions and shade."""
    a, b = spec.events
    return replace(spec, events=(replace(b, start=a.start, end=a.end),
                                 replace(a, start=b.start, end=b.end)))


def _group(rng: np.random.Generator, frames: int, kind: str, group: int) -> list[VideoSpec]:
    """One minimal group (see the module docstring)."""
    if kind == "motion":
        base = _random_spec(rng, frames, 1, REVERSIBLE)
        members = [(base, "base"), (replace(base, events=(base.events[0].reversed(),)),
                                    "reversed")]
    else:
        for _ in range(50):
            base = _random_spec(rng, frames, 2, REVERSIBLE)
            a, b = base.events
            members = [(base, "base"), (_swapped(base), "swapped"),
                       (replace(base, events=(a.reversed(), b)), "first-reversed"),
                       (replace(base, events=(a, b.reversed())), "second-reversed")]
            if not any(_overlaps(s, frames) for s, _ in members):
                break
    return [replace(s, group=group, variant=v) for s, v in members]


def _grouped_specs(seed: int, split: str, count: int, frames: int, unique: bool = True
                   ) -> list[VideoSpec]:
    """``count`` videos in minimal groups; ``unique``: canonical captions never repeat."""
    specs: list[VideoSpec] = []
    seen: set[str] = set()
    group = 0
    while len(specs) < count:
        rng = _rng(seed, _SPLIT_ID[split], group)
        left = count - len(specs)
        kind = "order" if left == 3 or (left >= 4 and rng.random() < 0.7) else "motion"
        for attempt in range(100):
            members = _group(rng, frames, kind, group)[:left]
            captions = [s.caption() for s in members]
            if not unique or not seen.intersection(captions):
                break
            if attempt >= 20:
                kind = "order"  # few single-event captions exist; pairs are plentiful
        seen.update(captions)
        specs.extend(members)
        group += 1
    return specs


# ---------------------------------------------------------------------------------------------
# Splits


class SyntheticSplit(VideoTextSplit):
    """A split of the synthetic dataset: specs and captions up front, frames on demand."""

    def __init__(self, config: SyntheticConfig, split: str, specs: list[VideoSpec],
                 captions: list[str], caption_video: list[int]) -> None:
        ids = [f"synthetic-{split}-{i:06d}" for i in range(len(specs))]
        super().__init__(f"synthetic/{split}", ids, captions, caption_video)
        self.config = config
        self.split = split
        self.specs = specs
        # Group id per video: members of a minimal group share one; other videos get their own.
        self.groups = [s.group if s.group >= 0 else len(specs) + i for i, s in enumerate(specs)]

    def load(self, index: int) -> Clip:
        """Render video ``index``: uint8 (frames, size, size, 3) and an all-True mask."""
        frames = render(self.specs[index], self.config.frames, self.config.size)
        return Clip(frames, np.ones(self.config.frames, dtype=bool))


def make_split(config: SyntheticConfig, split: str) -> SyntheticSplit:
    """Split ``split`` ("train", "val" or "test") of the synthetic dataset for ``config``."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    captions: list[str] = []
    caption_video: list[int] = []
    if split == "train":
        grouped = round(config.train_grouped * config.num_train)
        specs = _grouped_specs(config.seed, split, grouped, config.frames, unique=False)
        for i in range(len(specs), config.num_train):
            specs.append(_train_spec(config.seed, i, config.frames)[0])
        for i, spec in enumerate(specs):
            rng = _rng(config.seed, _CAPTION_ID, i)
            captions.extend(spec.captions(config.train_captions, rng))
            caption_video.extend([i] * config.train_captions)
    else:
        count = config.num_val if split == "val" else config.num_test
        specs = _grouped_specs(config.seed, split, count, config.frames)
        captions = [s.caption() for s in specs]
        caption_video = list(range(len(specs)))
    return SyntheticSplit(config, split, specs, captions, caption_video)


# ---------------------------------------------------------------------------------------------
# Static image-text pairs for pre-training


def static_pairs(seed: int, count: int, size: int = 64) -> tuple[np.ndarray, list[str]]:
    """``count`` still frames uint8 (N, size, size, 3) of one or two objects, and captions
    naming size, colour, shape and position, e.g. "a large red square at the top left".

    Same renderer, shapes, colours, sizes and backgrounds as the videos; a second object (30%
    of images) sits two grid cells away from the first, so the two never touch.
    """
    rng = _rng(seed, _STATIC_ID, 0)
    kinds = len(SHAPES) * len(COLOURS)
    two = rng.random(count) < 0.3
    single = np.asarray(_CELLS)[rng.integers(len(_CELLS), size=count)]  # (N, 2) row, col
    pairs = np.asarray(_FAR_PAIRS)[rng.integers(len(_FAR_PAIRS), size=count)]  # (N, 2, 2)
    cells = np.where(two[:, None, None], pairs, np.stack([single, single], axis=1))
    kind = rng.integers(kinds, size=count)  # shape * len(COLOURS) + colour
    kind = np.stack([kind, (kind + 1 + rng.integers(kinds - 1, size=count)) % kinds], axis=1)
    shape, colour = np.divmod(kind, len(COLOURS))  # (N, 2) each; the two objects differ
    sizes = rng.integers(len(SIZES), size=(count, 2))
    centre = np.asarray(_CELL)[cells[..., ::-1]] + rng.uniform(-0.03, 0.03, size=(count, 2, 2))
    rgb = np.clip(np.asarray([RGB[c] for c in COLOURS])[colour]
                  + rng.integers(-12, 13, size=(count, 2, 3)), 0, 255)
    background = rng.integers(6, 40, size=(count, 1)) + rng.integers(-4, 5, size=(count, 3))

    images = np.empty((count, size, size, 3), dtype=np.uint8)
    images.reshape(count, size, size * 3)[...] = np.tile(background.astype(np.uint8),
                                                         (1, size))[:, None, :]
    half = np.asarray([HALF[s] for s in SIZES])[sizes] * size
    for slot in range(2):
        present = np.ones(count, dtype=bool) if slot == 0 else two
        for k, name in enumerate(SHAPES):
            idx = np.flatnonzero(present & (shape[:, slot] == k))
            for lo in range(0, idx.size, 4096):  # bounded memory
                part = idx[lo:lo + 4096]
                _paint_windows(images, part, name, centre[part, slot, 0] * size,
                               centre[part, slot, 1] * size, half[part, slot], rgb[part, slot])
    captions = []
    for i in range(count):
        objects = 2 if two[i] else 1
        captions.append(" and ".join(
            f"a {SIZES[sizes[i, j]]} {COLOURS[colour[i, j]]} {SHAPES[shape[i, j]]} "
            f"{POSITIONS[cells[i, j, 0]][cells[i, j, 1]]}" for j in range(objects)))
    return images, captions
