"""R-Sum against GFLOPs, one scatter per (dataset, backbone), one labelled point per row."""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from reports.tables import GFLOPS, RSUM, TEST_MARK, TEST_NOTE
from suite.common.files import write_atomic


def rsum_vs_gflops(table: pd.DataFrame, folder: Path) -> list[Path]:
    """PNG plots of a comparison table (``reports.tables.comparison_table``) in ``folder``.

    Error bars are the std over seeds; rows without GFLOPs or R-Sum are left out. Uses the Agg
    canvas directly (no pyplot, no global backend change).
    """
    paths = []
    for (dataset, backbone), group in table.groupby(["dataset", "backbone"], sort=True):
        points = group.dropna(subset=[GFLOPS, RSUM])
        if points.empty:
            continue
        figure = Figure(figsize=(6, 4.5), layout="constrained")
        FigureCanvasAgg(figure)
        axes = figure.add_subplot()
        axes.errorbar(points[GFLOPS], points[RSUM], yerr=points[f"{RSUM} std"].fillna(0),
                      fmt="o", capsize=3)
        for (_, row), offset in zip(points.iterrows(), label_offsets(points), strict=True):
            label = row["method"] + (TEST_MARK if row["selected_on"] == "test" else "")
            if row.get("setting"):
                label += f" ({row['setting']})"
            axes.annotate(label, (row[GFLOPS], row[RSUM]), textcoords="offset points",
                          xytext=offset, fontsize=9)
        axes.set_xlabel("video GFLOPs (multiply-adds per video)")
        axes.set_ylabel("text-to-video R-Sum (test)")
        axes.set_title(f"{dataset}, {backbone}")
        axes.margins(0.15)
        axes.grid(alpha=0.3)
        if (points["selected_on"] == "test").any():
            figure.supxlabel(TEST_NOTE, fontsize=7)
        path = folder / f"rsum_vs_gflops_{_slug(dataset)}_{_slug(backbone)}.png"
        write_atomic(path, partial(figure.savefig, format="png", dpi=150))
        paths.append(path)
    return paths


def label_offsets(points: pd.DataFrame) -> list[tuple[int, int]]:
    """Label offsets (points) that step labels down when an earlier point sits close to the
    right-hand side of the same spot, where its label would overlap."""
    xs, ys = points[GFLOPS].to_numpy(), points[RSUM].to_numpy()
    x_span = float(xs.max() - xs.min()) or 1.0
    y_span = float(ys.max() - ys.min()) or 1.0
    offsets = []
    for i in range(len(points)):
        crowd = sum(1 for j in range(i) if abs(xs[j] - xs[i]) < 0.15 * x_span
                    and abs(ys[j] - ys[i]) < 0.03 * y_span)
        offsets.append((5, 5 - 12 * crowd))
    return offsets


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", str(text)).strip("_") or "_"
