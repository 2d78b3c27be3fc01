"""Progress on stderr, so ``--json`` output on stdout stays clean: rich bars on a terminal,
and plain lines every ``$SUITE_PROGRESS_SECONDS`` (default 30) when stderr is a file or a
pipe, as in a SLURM job's log, where a bar would show nothing until its loop ends."""

from __future__ import annotations

import os
import sys
import time
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
    if not console.is_terminal:
        with plain_progress(description, total) as advance:
            yield advance
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


PROGRESS_ENV = "SUITE_PROGRESS_SECONDS"
DEFAULT_PROGRESS_SECONDS = 30.0


def progress_seconds() -> float:
    """Seconds between two plain progress lines (``$SUITE_PROGRESS_SECONDS``, default 30)."""
    value = os.environ.get(PROGRESS_ENV)
    return float(value) if value else DEFAULT_PROGRESS_SECONDS


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


@contextmanager
def plain_progress(description: str, total: int, every: float | None = None,
                   clock: Callable[[], float] = time.monotonic
                   ) -> Iterator[Callable[..., None]]:
    """Like :func:`progress_bar`, as one line every ``every`` seconds and one at the end:
    ``description: step/total (percent), fields, rate/s, elapsed, ETA``."""
    interval = progress_seconds() if every is None else every
    start = last = clock()
    done = 0
    shown: dict[str, float] = {}

    def line(now: float) -> str:
        elapsed = now - start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / rate if rate > 0 else 0.0
        fields = "".join(f", {k} {v:.4g}" for k, v in shown.items())
        percent = 100.0 * done / total if total else 100.0
        return (f"{description}: {done}/{total} ({percent:.0f}%){fields}, {rate:.3g}/s, "
                f"elapsed {_duration(elapsed)}, ETA {_duration(eta)}")

    def advance(**fields: float) -> None:
        nonlocal done, last
        done += 1
        shown.update(fields)
        now = clock()
        if now - last >= interval and done < total:
            last = now
            console.print(line(now), markup=False, highlight=False, soft_wrap=True)

    yield advance
    console.print(line(clock()), markup=False, highlight=False, soft_wrap=True)
