"""TempMe core library: token-merging primitives, the merge schedule, and the video encoder that
runs an open_clip ViT with progressive temporal token merging. No suite imports.

Heavy names (torch modules) are imported lazily so that ``import tempme`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BackboneDefaults",
    "LayerTokens",
    "Matching",
    "ScheduleError",
    "TempMeOutput",
    "TempMeSchedule",
    "TempMeVideoEncoder",
    "VIT_B_16_CHOICE",
    "baseline_video_embedding",
    "bipartite_soft_matching",
    "default_schedule",
    "generic_schedule",
    "known_backbones",
    "masked_mean",
    "merge_sources",
    "merge_tokens",
    "proportional_attention",
    "ratio_count",
]

_HOMES = {
    "BackboneDefaults": "tempme.defaults",
    "VIT_B_16_CHOICE": "tempme.defaults",
    "default_schedule": "tempme.defaults",
    "generic_schedule": "tempme.defaults",
    "known_backbones": "tempme.defaults",
    "LayerTokens": "cliptools.tokens",
    "ScheduleError": "tempme.schedule",
    "TempMeSchedule": "tempme.schedule",
    "ratio_count": "tempme.schedule",
    "Matching": "tempme.merge",
    "bipartite_soft_matching": "tempme.merge",
    "merge_sources": "tempme.merge",
    "merge_tokens": "tempme.merge",
    "proportional_attention": "tempme.merge",
    "TempMeOutput": "tempme.encoder",
    "TempMeVideoEncoder": "tempme.encoder",
    "baseline_video_embedding": "tempme.encoder",
    "masked_mean": "cliptools.towers",
}


def __getattr__(name: str) -> Any:
    """Import the public names on first use (PEP 562)."""
    if name in _HOMES:
        import importlib

        return getattr(importlib.import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'tempme' has no attribute {name!r}")
