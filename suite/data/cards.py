"""Dataset cards: TOML files in the repository's top-level ``datasets/`` folder (shipped in the
package as ``suite/cards``).

A card says which loader reads the dataset, its caption mode, default frames and words, default
backbone, expected split counts, loader options and training defaults. The folder can be moved
with ``SUITE_DATASETS_DIR``.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suite.errors import UserError


def cards_dir() -> Path:
    """Where the dataset cards live: ``suite/cards``, which in the repository is a link to the
    top-level ``datasets/`` and in an installed wheel holds copies of the cards."""
    env = os.environ.get("SUITE_DATASETS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "cards"


@dataclass(frozen=True)
class DatasetCard:
    """The parsed contents of one card."""

    name: str
    description: str
    loader: str
    caption_mode: str
    frames: int
    words: int
    backbone: str
    pretrained: str | None
    source: str
    train_sampling: str = "all"
    splits: dict[str, int] = field(default_factory=dict)
    options: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)
    files: dict[str, Any] = field(default_factory=dict)


def available() -> list[str]:
    """Names of every dataset that has a card."""
    return sorted(p.stem for p in cards_dir().glob("*.toml"))


def load_card(name: str) -> DatasetCard:
    """Read the card of dataset ``name``; an unknown name is a user error listing the valid ones."""
    path = cards_dir() / f"{name}.toml"
    if not path.is_file():
        raise UserError(f"unknown dataset {name!r}; valid: {', '.join(available())}")
    with path.open("rb") as f:
        raw = tomllib.load(f)
    known = set(DatasetCard.__dataclass_fields__)
    extra = sorted(set(raw) - known)
    if extra:
        raise UserError(f"card {path} has unknown keys {', '.join(extra)}; "
                        f"valid: {', '.join(sorted(known))}")
    try:
        return DatasetCard(**raw)
    except TypeError as exc:
        raise UserError(f"card {path} is incomplete: {exc}") from None
