"""``suite prepare``: a real dataset's files checked against its card, frames cached."""

from __future__ import annotations

from typing import Annotated

import typer

from suite.cli.common import JsonOut, Sets, echo_json, guarded

SUMMARY = "Check a dataset's files against its card and optionally cache sampled frames."
EXAMPLES = """Examples:

\b
  suite prepare --dataset msrvtt --data-root ~/data/msrvtt
  suite prepare --dataset msvd --data-root ~/data/msvd --cache --workers 2
"""


@guarded
def prepare(
    dataset: Annotated[str, typer.Option(
        help="Dataset card (msrvtt, msvd, lsmdc, didemo, activitynet).")],
    data_root: Annotated[str, typer.Option(help="Folder with the dataset's annotation files.")],
    cache: Annotated[bool, typer.Option(
        "--cache", help="Also write the sampled frames to the frame cache runs read.")] = False,
    frames: Annotated[int | None, typer.Option(
        min=1, help="Frames per video (default: the card's).")] = None,
    backbone: Annotated[str | None, typer.Option(
        help="Backbone whose input size the cached frames get (default: the card's).")] = None,
    workers: Annotated[int, typer.Option(min=0, help="Decoding processes (0: in this one).")] = 0,
    set_: Sets = None,
    allow_problems: Annotated[bool, typer.Option(
        "--allow-problems", help="Exit with code 0 even when videos are missing or unreadable "
        "or counts differ from the card (default: code 1).")] = False,
    json_out: JsonOut = False,
) -> None:
    """Check a dataset's files against its card and optionally cache sampled frames.

    Counts, missing and unreadable videos are reported; an interrupted prepare resumes. Only
    data.NAME settings apply (e.g. --set data.videos=DIR).
    """
    from suite.data.prepare import data_options
    from suite.data.prepare import prepare as run_prepare
    from suite.job.config import parse_sets

    options = data_options(parse_sets(set_ or []))
    report = run_prepare(dataset, data_root, options, frames=frames, backbone=backbone,
                         cache=cache, workers=workers, show_progress=not json_out)
    if json_out:
        echo_json(report.to_dict())
    else:
        for line in report.lines():
            typer.echo(line)
    if report.problems and not allow_problems:
        raise typer.Exit(1)
