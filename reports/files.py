"""The report files (table + plots) of one folder, each replaced atomically."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from suite.common.files import write_atomic
from suite.errors import ReportError


def write_report(table: pd.DataFrame, fmt: str, folder: Path) -> list[Path]:
    """``report.<ext>`` in ``fmt`` and one R-Sum vs GFLOPs plot per (dataset, backbone)."""
    from reports.plots import rsum_vs_gflops
    from reports.tables import FORMATS, render

    text = render(table, fmt)  # validates fmt before anything is written
    if folder.exists() and not folder.is_dir():
        raise ReportError(f"--out {folder} is a file, not a folder")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"report.{FORMATS[fmt]}"
    write_atomic(path, text)
    return [path, *rsum_vs_gflops(table, folder)]
