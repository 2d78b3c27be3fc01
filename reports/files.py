"""Atomic file writes and the report files (table + plots) of one folder."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pandas as pd

from reports.errors import ReportError


def atomic_write(path: Path, write: Callable[[IO[bytes]], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it over ``path``.

    A crash leaves the previous file as it was and no temporary file behind.
    """
    temp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    # os.open with mode 0o666: the umask applies, as for any new file (mkstemp would make 0o600).
    handle = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise


def write_report(table: pd.DataFrame, fmt: str, folder: Path) -> list[Path]:
    """``report.<ext>`` in ``fmt`` and one R-Sum vs GFLOPs plot per (dataset, backbone)."""
    from reports.plots import rsum_vs_gflops
    from reports.tables import FORMATS, render

    text = render(table, fmt)  # validates fmt before anything is written
    if folder.exists() and not folder.is_dir():
        raise ReportError(f"--out {folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"report.{FORMATS[fmt]}"
    atomic_write(path, lambda file: file.write(text.encode("utf-8")))
    return [path, *rsum_vs_gflops(table, folder)]
