"""From what a user typed to one resolved run config: the card's defaults (or a replayed
config file), a preset, then flags and ``--set`` values, checked once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from suite.errors import UserError
from suite.job import config as cfg

# The default dataset: the embedded synthetic videos with the tiny CLIP, nothing to download.
DEFAULT_DATASET = "synthetic"


def resolve_run(method: str | None, dataset: str | None, preset: str | None,
                config_file: Path | None, flags: dict[str, Any],
                sets: list[str]) -> cfg.RunConfig:
    """The config of a ``suite run``: ``config_file`` replayed, or ``method`` on ``dataset``
    (the synthetic default when None) with its card's defaults; then ``preset``; then the
    flags that were given (None means not given) and ``key=value`` items of ``sets``."""
    if config_file is not None:
        resolved = cfg.load_file(config_file)
        if preset is not None:
            resolved = cfg.apply_preset(resolved, preset)
    elif method is None:
        raise UserError("--method is required (or --config FILE); see `suite list methods`")
    else:
        resolved = cfg.base_for(method, dataset or DEFAULT_DATASET, preset)
    overrides = {key: value for key, value in flags.items() if value is not None}
    if isinstance(overrides.get("pretrained"), str) and overrides["pretrained"].lower() == "none":
        overrides["pretrained"] = None
    overrides.update(cfg.parse_sets(sets))
    return cfg.apply_overrides(resolved, overrides)


def parse_tags(items: list[str]) -> dict[str, str]:
    """``key=value`` items as a dict of MLflow tags."""
    tags = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--tag expects key=value, got {item!r}")
        tags[key.strip()] = value.strip()
    return tags
