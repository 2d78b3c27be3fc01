"""Dataset cards: TOML files in the repository's top-level ``datasets/`` folder (shipped in the
package as ``suite/cards``).

A card says which loader reads the dataset, its caption mode, default frames and words, default
backbone, expected split counts, loader options and training defaults. The folder can be moved
with ``SUITE_DATASETS_DIR``. Cards kept elsewhere are found through ``SUITE_CARDS_PATH``:
folders separated by ``os.pathsep``, searched before the shipped folder. A card name found in
two folders is refused (a user error naming both files) rather than one silently winning.
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
    # The most frames a run may take per video (videos of a fixed, short length); None: any
    # (the synthetic generator renders the frames asked for, real loaders repeat or pad).
    max_frames: int | None = None


def search_path() -> list[Path]:
    """The folders searched for cards: those of ``SUITE_CARDS_PATH``, then ``cards_dir()``;
    a folder listed twice counts once, a listed folder that does not exist is a user error."""
    folders = [Path(p) for p in os.environ.get("SUITE_CARDS_PATH", "").split(os.pathsep) if p]
    for folder in folders:
        if not folder.is_dir():
            raise UserError(f"SUITE_CARDS_PATH names {folder}, which is not a folder")
    unique: dict[Path, Path] = {}
    for folder in (*folders, cards_dir()):
        unique.setdefault(folder.resolve(), folder)
    return list(unique.values())


def _card_files(name: str | None = None) -> dict[str, list[Path]]:
    """Card name -> the files that define it, in search order (all cards, or only ``name``)."""
    found: dict[str, list[Path]] = {}
    for folder in search_path():
        paths = sorted(folder.glob("*.toml")) if name is None else [folder / f"{name}.toml"]
        for path in paths:
            if path.is_file():
                found.setdefault(path.stem, []).append(path)
    return found


def _single(name: str, paths: list[Path]) -> Path:
    """The one file of card ``name``; two are a user error naming both."""
    if len(paths) > 1:
        raise UserError(f"dataset card {name!r} is defined twice, in {paths[0]} and {paths[1]}; "
                        f"remove or rename one")
    return paths[0]


def available() -> list[str]:
    """Names of every dataset that has a card; a name defined twice is a user error."""
    found = _card_files()
    for name, paths in found.items():
        _single(name, paths)
    return sorted(found)


def load_card(name: str) -> DatasetCard:
    """Read the card of dataset ``name``; an unknown name is a user error listing the valid ones."""
    paths = _card_files(name).get(name)
    if not paths:
        raise UserError(f"unknown dataset {name!r}; valid: {', '.join(sorted(_card_files()))}")
    path = _single(name, paths)
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
