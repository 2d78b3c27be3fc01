"""A report ready to render: the table of figures, how it reads, what it compares and the
points of its plots; rendered as Markdown, LaTeX, CSV or one HTML page, or written to a folder."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from reports import formats
from reports.about import About
from reports.columns import FORMATS, Shown
from suite.errors import ReportError


def check_format(fmt: str) -> None:
    if fmt not in FORMATS:
        raise ReportError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")


@dataclass(frozen=True)
class Report:
    """``table``: the figures (CSV, ``--json``); ``shown``: the same formatted for reading;
    ``points``: one per row with ``dataset``, ``backbone``, ``label``, ``selected_on``,
    GFLOPs, R-Sum and its std (the plots); ``stem``: the file name without its extension."""

    stem: str
    table: pd.DataFrame
    shown: Shown
    about: About
    points: pd.DataFrame

    def render(self, fmt: str) -> str:
        """The report as ``md``, ``latex``, ``csv`` or ``html`` (a page with the plots)."""
        check_format(fmt)
        if fmt == "csv":
            return formats.csv(self.table)
        if fmt == "md":
            return formats.markdown(self.shown)
        if fmt == "latex":
            return formats.latex(self.shown)
        from reports.html import Image, page
        from reports.plots import CAPTION, plots

        images = [Image(f"{p.dataset}, {p.backbone}", p.svg_uri(), CAPTION)
                  for p in plots(self.points)]
        return page(self.shown, self.about, images)

    def write(self, fmt: str, folder: Path) -> list[Path]:
        """``<stem>.<ext>`` in ``folder`` and, beside any format but the self-contained HTML
        page, one R-Sum vs GFLOPs PNG per (dataset, backbone); each file replaced atomically."""
        from reports.plots import plots, write_png
        from suite.common.files import write_atomic

        text = self.render(fmt)  # validates fmt before anything is written
        if folder.exists() and not folder.is_dir():
            raise ReportError(f"--out {folder} is a file, not a folder")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{self.stem}.{FORMATS[fmt]}"
        write_atomic(path, text)
        return [path] if fmt == "html" else [path, *write_png(plots(self.points), folder)]
