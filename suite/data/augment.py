"""Training augmentation: RandAugment with the same operations for every frame of a video.

``data.augment`` picks one:

- ``true``: torchvision's ``RandAugment(2, 9)`` (``VideoRandAugment``). torchvision draws its
  operations and magnitudes once per call and treats leading dimensions as a batch, so one call
  on the stacked frames (F, 3, H, W) augments the whole clip alike.
- a timm RandAugment policy such as ``"rand-m7-n4-mstd0.5-inc1"`` (``TEMPME_POLICY``, TempMe's,
  ``VideoPolicyAugment``): timm's ``rand_augment_transform`` of that string, bicubic, with one
  draw of operations, magnitudes and signs for all frames of a clip.

How TempMe gets one draw per video (LunarShen/TempMe@e624930): ``dataloader_retrieval.py``
86-90 builds ``create_random_augment(auto_augment='rand-m7-n4-mstd0.5-inc1',
interpolation='bicubic')`` and 280-283 applies it to the list of a video's PIL frames (decoded
at full size, before the resize and crop of 56-62). Its ``rand_augment.py`` is timm's with a
list branch: ``RandAugment.__call__`` (468-478) draws the ops once with ``np.random.choice``,
and ``AugmentOp.__call__`` (364-382) draws apply-or-skip, the magnitude (``random.gauss``) and
the sign once, then maps the op over every frame. timm's ops take one image; their draws never
depend on the pixels, so running timm's transform on each frame from the same ``random`` and
``np.random`` state gives every frame that one draw, and leaves both generators where one call
leaves them: the official sequence of draws, with timm's op code.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from suite.errors import UserError

# TempMe's policy (dataloader_retrieval.py 88): magnitude 7, 4 ops, magnitude std 0.5, the
# transforms whose strength increases with the magnitude.
TEMPME_POLICY = "rand-m7-n4-mstd0.5-inc1"
# timm's numeric sections of a RandAugment string (auto_augment.py rand_augment_transform);
# a section starting with "t" names a transform set, and timm silently takes its default set
# for a name it does not know (rand_augment_choices), so the names are checked here.
_NUMERIC = {"m": int, "n": int, "mmax": int, "inc": int, "p": float, "mstd": float}
_TRANSFORM_SETS = ("weights", "3a", "3aw")
_SECTION = re.compile(r"([a-z]+)(\d.*)")
GRAMMAR = ("timm's 'rand[-m<int>][-n<int>][-mstd<float>][-inc<0|1>][-p<float>][-mmax<int>]"
           "[-t<set>]'")


def _policy_problem(policy: str) -> str:
    """What is wrong with ``policy`` in timm's RandAugment grammar ("" if nothing)."""
    sections = policy.split("-")
    if sections[0] != "rand":
        return "it must start with 'rand'"
    for section in sections[1:]:
        if section.startswith("t"):
            if section[1:] not in _TRANSFORM_SETS:
                return (f"unknown transform set {section[1:]!r}; valid: "
                        f"{', '.join(_TRANSFORM_SETS)}")
            continue
        match = _SECTION.fullmatch(section)
        if match is None or match[1] not in _NUMERIC:
            return f"unknown section {section!r}"
        try:
            _NUMERIC[match[1]](match[2])
        except ValueError:
            kind = "a whole number" if _NUMERIC[match[1]] is int else "a number"
            return f"section {section!r}: {match[1]} takes {kind}"
        if match[1] == "inc" and match[2] not in ("0", "1"):
            return f"section {section!r}: inc is 0 or 1"
    return ""


def timm_transform(policy: str, size: int) -> Any:
    """timm's RandAugment for ``policy`` with TempMe's settings: bicubic resampling, grey fill
    (timm's default), ``translate_const = int(0.45 * size)`` (video_transforms.py 641-649; used
    only by the absolute translations, which the default sets do not draw). A bad policy is a
    one-line UserError, so is a missing timm."""
    bad = _policy_problem(policy) if isinstance(policy, str) else "not a string"
    if bad:
        raise UserError(f"data.augment {policy!r}: {bad}; valid: true, false or a RandAugment "
                        f"policy in {GRAMMAR} grammar such as {TEMPME_POLICY!r}")
    try:
        from PIL import Image
        from timm.data.auto_augment import rand_augment_transform
    except ImportError:
        raise UserError(f"data.augment={policy} needs timm: pip install timm") from None
    hparams = {"translate_const": int(0.45 * size), "interpolation": Image.Resampling.BICUBIC}
    try:
        return rand_augment_transform(policy, hparams)
    except (AssertionError, ValueError, KeyError) as exc:
        raise UserError(f"data.augment: timm rejects the policy {policy!r}: {exc}") from None


@dataclass
class VideoPolicyAugment:
    """timm's RandAugment ``policy`` with one draw of its operations for all frames of a clip.

    Randomness comes from Python's ``random`` and NumPy's global generator, as in timm; the
    engine seeds both, and DataLoader workers seed both per worker.
    """

    policy: str = TEMPME_POLICY
    size: int = 224  # the frame size the policy is built for (translate_const)
    transform: Any = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.transform = timm_transform(self.policy, self.size)

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        """uint8 frames (F, H, W, 3) -> augmented uint8 frames of the same shape."""
        from PIL import Image

        state, np_state = random.getstate(), np.random.get_state()
        out = []
        for frame in clip:
            random.setstate(state)
            np.random.set_state(np_state)
            out.append(np.asarray(self.transform(Image.fromarray(frame)), dtype=np.uint8))
        return np.stack(out)


@dataclass(frozen=True)
class VideoRandAugment:
    """``num_ops`` random operations of strength ``magnitude`` (torchvision's defaults: 2, 9)."""

    num_ops: int = 2
    magnitude: int = 9

    def __post_init__(self) -> None:
        # Import here, in the main process: forked DataLoader workers then inherit the module
        # instead of each paying torchvision's slow first import.
        from torchvision.transforms import v2  # noqa: F401

    def __call__(self, clip: np.ndarray) -> np.ndarray:
        """uint8 frames (F, H, W, 3) -> augmented uint8 frames of the same shape.

        Randomness comes from torch's generator, which DataLoader workers seed per worker.
        """
        import torch
        from torchvision.transforms import v2

        x = torch.from_numpy(np.ascontiguousarray(clip)).permute(0, 3, 1, 2)
        y = v2.RandAugment(num_ops=self.num_ops, magnitude=self.magnitude)(x)
        return y.permute(0, 2, 3, 1).contiguous().numpy()


def check_augment(value: Any) -> None:
    """Raise a one-line UserError unless ``value`` is a valid ``data.augment``."""
    if not isinstance(value, bool):
        timm_transform(value, 224)


def make_augment(value: bool | str, size: int) -> VideoRandAugment | VideoPolicyAugment | None:
    """The training augmentation ``data.augment`` names, for frames of ``size`` pixels."""
    if value is True:
        return VideoRandAugment()
    if value is False:
        return None
    return VideoPolicyAugment(value, size)
