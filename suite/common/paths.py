"""Where the suite keeps files of its own: the cache folder and the shipped model configs."""

from __future__ import annotations

import os
from pathlib import Path

# The JSON model configs shipped with the package (the embedded ``tiny-clip``).
MODEL_CONFIGS = Path(__file__).resolve().parents[1] / "model_configs"


def cache_dir() -> Path:
    """``$SUITE_CACHE_DIR``, else ``$XDG_CACHE_HOME/tvr-suite``, else ``~/.cache/tvr-suite``."""
    env = os.environ.get("SUITE_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "tvr-suite"
