"""``suite list``: what the suite knows, by name."""

from __future__ import annotations

from typing import Annotated

import typer

from suite.cli.common import JsonOut, echo_json, guarded

SUMMARY = "List the methods, dataset cards, backbones, reference presets or benchmark plans."
EXAMPLES = """Examples:

\b
  suite list methods
  suite list presets
  suite list plans --json
"""


@guarded
def list_(
    what: Annotated[str, typer.Argument(help="methods, datasets, backbones, presets or plans.")],
    json_out: JsonOut = False,
) -> None:
    """List the methods, dataset cards, backbones, reference presets or benchmark plans."""
    from suite import catalog

    if json_out:
        echo_json(catalog.listing(what))
        return
    for line in catalog.lines(what):
        typer.echo(line)
