"""What ``suite list`` shows: the methods, dataset cards, backbones, reference presets and
benchmark plans the suite knows, as rows of plain values (names first, cheap to read: only
``backbones`` imports open_clip and torch)."""

from __future__ import annotations

from typing import Any

from suite.errors import UserError

KINDS = ("methods", "datasets", "backbones", "presets", "plans")


def listing(what: str) -> list[dict[str, Any]]:
    """Rows for ``suite list WHAT`` (also its ``--json``)."""
    if what not in KINDS:
        raise UserError(f"cannot list {what!r}; valid: {', '.join(KINDS)}")
    return {"methods": methods, "datasets": datasets, "backbones": backbones,
            "presets": presets, "plans": plans}[what]()


def methods() -> list[dict[str, Any]]:
    from methods.registry import describe

    return [{"name": m.name, "description": m.description, "reference": m.reference}
            for m in describe()]


def datasets() -> list[dict[str, Any]]:
    from suite.data.cards import available, load_card

    return [{"name": n, "description": load_card(n).description} for n in available()]


def backbones() -> list[dict[str, Any]]:
    import open_clip

    from suite.models.embedded import embedded_names, register_embedded_configs

    register_embedded_configs()
    return ([{"name": n, "pretrained": "synthetic"} for n in embedded_names()]
            + [{"name": n, "pretrained": t} for n, t in open_clip.list_pretrained()])


def presets() -> list[dict[str, Any]]:
    from suite.job.presets import PRESETS

    return [{"name": p.name, "description": p.description, "source": p.source,
             "settings": {**p.settings, **p.video_settings}} for p in PRESETS.values()]


def plans() -> list[dict[str, Any]]:
    from suite.orchestrate.plans import available, count_runs, load_plan

    loaded = [load_plan(name) for name in available()]
    # Counted, not expanded: as many as expand makes, without resolving each run.
    return [{"name": p.name, "description": p.description, "experiment": p.experiment,
             "runs": count_runs(p)} for p in loaded]


def lines(what: str) -> list[str]:
    """``suite list WHAT`` as text, one entry a line (presets with their settings)."""
    if what == "presets":
        from suite.job.presets import PRESETS, describe

        return [line for preset in PRESETS.values() for line in describe(preset)]
    rows = listing(what)
    if what == "plans":
        return [f"{r['name']:28s} {r['description']} ({r['runs']} runs)" for r in rows]
    if what == "backbones":
        return [f"{r['name']:24s} "
                + ("embedded (pretrained: synthetic)" if r["pretrained"] == "synthetic"
                   and r["name"] in _embedded() else r["pretrained"]) for r in rows]
    return [f"{r['name']:14s} {r['description']}" for r in rows]


def _embedded() -> set[str]:
    from suite.models.embedded import embedded_names

    return set(embedded_names())
