"""R-Sum against GFLOPs, one scatter per (dataset, backbone), one point per table row: as PNG
files or as SVG for the HTML page.

Short labels sit beside their points, on the side that keeps them inside the axes; long ones
(a setting, a plan row with its grid point) become numbered markers with a key below the axes,
so that no label runs off the figure or squeezes the axes.
"""

from __future__ import annotations

import base64
import io
import re
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from reports.columns import GFLOPS, RSUM, TEST_MARK, TEST_NOTE

#: Labels longer than this, or more points than ``MAX_LABELLED``, get numbered markers.
LONG_LABEL = 16
MAX_LABELLED = 8
CAPTION = (f"Text-to-video {RSUM} on the test split (R@1 + R@5 + R@10, in %; higher is better) "
           "against video GFLOPs (multiply-adds of the visual tower per video; lower is "
           "cheaper). Error bars: std over seeds.")


@dataclass(frozen=True)
class Plot:
    """The scatter of one dataset and backbone."""

    dataset: str
    backbone: str
    figure: Figure

    @property
    def stem(self) -> str:
        return f"rsum_vs_gflops_{_slug(self.dataset)}_{_slug(self.backbone)}"

    def svg_uri(self) -> str:
        """The figure as an SVG data URI, for an ``<img>`` of a self-contained page."""
        buffer = io.BytesIO()
        self.figure.savefig(buffer, format="svg", metadata={"Date": None})
        return "data:image/svg+xml;base64," + base64.b64encode(buffer.getvalue()).decode()


def plots(points: pd.DataFrame) -> list[Plot]:
    """One plot per (dataset, backbone) of ``points`` (columns ``dataset``, ``backbone``,
    ``label``, ``selected_on``, GFLOPs, R-Sum and its std); rows without GFLOPs or R-Sum are
    left out. Uses the Agg canvas directly (no pyplot, no global backend change)."""
    found = []
    for (dataset, backbone), group in points.groupby(["dataset", "backbone"], sort=True):
        shown = group.dropna(subset=[GFLOPS, RSUM])
        if not shown.empty:
            found.append(Plot(str(dataset), str(backbone), _figure(shown, dataset, backbone)))
    return found


def write_png(found: list[Plot], folder: Path) -> list[Path]:
    """Each plot as ``<stem>.png`` in ``folder``, replaced atomically."""
    from suite.common.files import write_atomic

    paths = []
    for plot in found:
        path = folder / f"{plot.stem}.png"
        write_atomic(path, partial(plot.figure.savefig, format="png", dpi=150))
        paths.append(path)
    return paths


def _figure(points: pd.DataFrame, dataset: str, backbone: str) -> Figure:
    labels = [label + (TEST_MARK if on == "test" else "")
              for label, on in zip(points["label"], points["selected_on"], strict=True)]
    numbered = len(labels) > MAX_LABELLED or max(map(len, labels)) > LONG_LABEL
    tested = (points["selected_on"] == "test").any()
    key = [f"{i}  {label}" for i, label in enumerate(labels, 1)] if numbered else []
    if key and tested:
        key.append(TEST_NOTE)
    columns = 2 if len(key) > 6 and max(map(len, key)) <= 40 else 1
    lines = -(-len(key) // columns)
    figure = Figure(figsize=(6.4, 4.5 + 0.19 * lines), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.errorbar(points[GFLOPS], points[RSUM], yerr=points[f"{RSUM} std"].fillna(0),
                  fmt="o", capsize=3)
    xs = points[GFLOPS].to_numpy()
    right = xs.min() + 0.6 * (xs.max() - xs.min()) if xs.max() > xs.min() else float("inf")
    for i, (x, y, (dx, dy)) in enumerate(zip(xs, points[RSUM], label_offsets(points),
                                             strict=True)):
        text = str(i + 1) if numbered else labels[i]
        flip = x > right  # a label on the right-hand side would run off the axes
        note = axes.annotate(text, (x, y), textcoords="offset points",
                             xytext=(-dx if flip else dx, dy), ha="right" if flip else "left",
                             fontsize=8 if numbered else 9,
                             fontweight="bold" if numbered else "normal")
        note.set_in_layout(False)
    axes.set_xlabel("video GFLOPs (multiply-adds per video)")
    axes.set_ylabel(f"text-to-video {RSUM} (test, %)")
    axes.set_title(f"{dataset}, {backbone}")
    axes.margins(0.15)
    axes.grid(alpha=0.3)
    if key:
        figure.legend([Line2D([], [], linestyle="")] * len(key), key, loc="outside lower center",
                      ncols=columns, frameon=False, handlelength=0, handletextpad=0,
                      fontsize=8, alignment="left")
    elif tested:
        figure.supxlabel(TEST_NOTE, fontsize=7)
    return figure


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
