"""A method's config for one backbone and frame count, resolved in one place.

A run (``suite.job.config.method_config``), ``suite profile`` (``suite.cost.profiling``) and a
plan's checks all resolve a method's knobs here, so a bad option, a merge schedule that does
not fit or an unknown backbone is the same one-line ``UserError`` everywhere.
"""

from __future__ import annotations

from typing import Any

from suite.errors import UserError
from suite.models.backbone import check_backbone_name


def resolve_method_config(method: str, backbone: str, frames: int,
                          options: dict[str, Any]) -> Any:
    """``method``'s config on ``backbone`` for ``frames`` frames: its defaults, the backbone's,
    then ``options``, validated (``Method.make_config``). An unknown backbone or method, an
    unknown or bad option or a schedule that does not fit is a one-line UserError."""
    from methods.registry import get

    check_backbone_name(backbone)  # registers the embedded configs methods read
    spec = get(method)
    try:
        return spec.make_config(backbone, frames, options)
    except (ValueError, TypeError) as exc:  # tempme's ScheduleError included
        raise UserError(str(exc).splitlines()[0]) from None
