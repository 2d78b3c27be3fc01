"""Rich consoles: progress bars on stderr, so ``--json`` output on stdout stays clean."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

console = Console(stderr=True)
# Tables and results go to stdout, wide enough to stay readable when piped to a file.
stdout = Console(width=None if sys.stdout.isatty() else 160)


@contextmanager
def progress_bar(description: str, total: int, enabled: bool = True
                 ) -> Iterator[Callable[..., None]]:
    """Yield ``advance(**fields)``: one step done; ``fields`` (e.g. loss) show beside the bar."""
    if not enabled:
        yield lambda **fields: None
        return
    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
        console=console, transient=False,
    )
    with progress:
        task = progress.add_task(description, total=total, info="")

        def advance(**fields: float) -> None:
            info = " ".join(f"{k} {v:.4g}" for k, v in fields.items())
            progress.update(task, advance=1, info=info)

        yield advance
