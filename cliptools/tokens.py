"""Token counts through a vision tower, one row per block: what a merging or pruning encoder
reports, and what a schedule predicts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

LayerKind = Literal["imgme", "clipme", "later"]


@dataclass(frozen=True)
class LayerTokens:
    """One row of the token table: tokens per sequence through one block.

    ``tokens_in`` is counted after ClipMe joined the sequences (so ``sequences`` is the count
    after joining); ``after_cross`` is ``None`` except in ClipMe layers; ``after_intra`` is what
    leaves the block.
    """

    layer: int
    kind: LayerKind
    sequences: int
    tokens_in: int
    after_cross: int | None
    after_intra: int
