"""The model configs shipped with the suite (the embedded ``tiny-clip``), registered with
open_clip like real architectures, and a quiet mode for open_clip's logging. Kept apart from
suite.models.backbone so that the pre-training (suite.models.pretrain) and the backbone loader
can both use them without importing each other."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from suite.common.paths import MODEL_CONFIGS

_registered = False


def register_embedded_configs() -> None:
    """Make the shipped JSON configs (``tiny-clip``) known to open_clip."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(MODEL_CONFIGS)
        _registered = True


def text_context(name: str) -> int:
    """Longest caption (in tokens) the text tower of ``name`` takes, from its config."""
    import open_clip

    register_embedded_configs()
    config = open_clip.get_model_config(name) or {}
    return int(config.get("text_cfg", {}).get("context_length", 77))


def embedded_names() -> list[str]:
    return sorted(p.stem for p in MODEL_CONFIGS.glob("*.json"))


@contextmanager
def quiet_logging() -> Iterator[None]:
    """Silence log records up to ERROR while open_clip and the hub client work (open_clip also
    warns whenever it builds a model without weights, which the suite does on purpose)."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)
