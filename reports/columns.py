"""What a report table shows: its figure columns, their number formats and units, the marks and
notes every format shares, and :class:`Shown`, a table formatted for reading."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd

RSUM = "R-Sum"
GFLOPS = "GFLOPs (MACs)"
SKIPPED = "skipped test videos"
NO_PRESET = ("None", "-", "")
Format = Callable[[float], str]


def _gflops(value: float) -> str:
    """Two decimals from 1 GFLOP, four below (tiny models: 0.0747 and 0.1070 line up), three
    significant digits under 0.001."""
    if abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.4f}" if abs(value) >= 1e-3 else f"{value:.3g}"


#: (column label, MLflow metric, number format, std shown whenever n > 1).
#: Retrieval metrics always show their spread; cost figures only when it is not zero
#: (GFLOPs, tokens and parameters do not depend on the seed).
COLUMNS: list[tuple[str, str, Format, bool]] = [
    ("R@1", "test/t2v_R1", "{:.1f}".format, True),
    ("R@5", "test/t2v_R5", "{:.1f}".format, True),
    ("R@10", "test/t2v_R10", "{:.1f}".format, True),
    ("MdR", "test/t2v_MdR", "{:.1f}".format, True),
    ("MnR", "test/t2v_MnR", "{:.1f}".format, True),
    (RSUM, "test/t2v_rsum", "{:.1f}".format, True),
    (GFLOPS, "cost/video_gmacs", _gflops, False),
    ("tokens", "cost/output_tokens", "{:.0f}".format, False),
    ("trainable params", "cost/params_trainable", "{:,.0f}".format, False),
    ("videos/s", "cost/videos_per_second", "{:.2f}".format, False),
    ("train peak MiB", "cost/training_peak_mib", "{:.0f}".format, False),
    (SKIPPED, "data/test_skipped_videos", "{:.0f}".format, False),
]
#: Which way is better, per column: +1 higher, -1 lower. Not named: trainable parameters (a
#: property of the method, zero for zero-shot, not a figure of merit) and skipped videos.
BETTER = {"R@1": 1, "R@5": 1, "R@10": 1, "MdR": -1, "MnR": -1, RSUM: 1, GFLOPS: -1,
          "tokens": -1, "videos/s": 1, "train peak MiB": -1}
#: Columns shown only when some row has a figure other than 0 (or a preset).
OPTIONAL = {SKIPPED}
KEYS = ["dataset", "backbone", "method", "selected_on", "preset"]
FORMATS = {"md": "md", "latex": "tex", "csv": "csv", "html": "html"}  # format -> extension
TEST_MARK = "†"
RETRIEVAL_NOTE = ("Text-to-video retrieval on the test split; mean ± std over runs (seeds) "
                  "when n > 1.")
UNITS_NOTE = ("R@k: % of test captions whose video ranks in the top k (higher is better); "
              "MdR, MnR: median and mean rank of the right video (lower is better); "
              f"{RSUM} = R@1 + R@5 + R@10.")
GFLOPS_NOTE = (f"{GFLOPS} = multiply-adds of the visual tower per video, the protocol's (and "
               "the papers') convention; tokens = tokens leaving the last visual block per "
               "video.")
COST_NOTE = ("videos/s: inference throughput of the video tower on the run's machine; "
             "train peak MiB: peak memory of a training step.")
TEST_NOTE = f"{TEST_MARK} selected on test split (papers' practice); other rows on validation."


def figure_cell(record: pd.Series, label: str, number: Format, always_std: bool) -> str:
    """``mean ± std`` of one column of a table row (``n`` runs): ``-`` without a figure, the
    spread only over several runs and, unless ``always_std``, only when it is not 0."""
    mean, std = record[label], record[f"{label} std"]
    if pd.isna(mean):
        return "-"
    cell = number(mean)
    if record["n"] > 1 and not pd.isna(std) and (always_std or std > 0):
        cell += " ± " + number(std)
    return cell


def number_of(label: str) -> Format:
    """The number format of column ``label``."""
    return next(fmt for name, _, fmt, _ in COLUMNS if name == label)


def best_cells(table: pd.DataFrame, shown: list[str], groups: list[str]
               ) -> set[tuple[int, str]]:
    """(row position, column) of the best mean of each column in ``shown`` that has a
    direction (``BETTER``), within each group of rows sharing ``groups`` (one dataset and
    backbone): compared as shown (rounded), ties all marked, and nothing marked where fewer
    than two rows have a figure or all show the same."""
    best: set[tuple[int, str]] = set()
    positions = pd.Series(range(len(table)), index=table.index)
    for _, rows in table.groupby(groups, sort=False):
        for label in (c for c in shown if c in BETTER):
            number = number_of(label)
            values = rows[label].dropna().map(lambda v, f=number: float(f(v).replace(",", "")))
            if values.nunique() < 2:
                continue
            top = values.max() if BETTER[label] > 0 else values.min()
            best |= {(int(positions[i]), label) for i in values.index[values == top]}
    return best


@dataclass(frozen=True)
class Shown:
    """A table formatted for reading: headers, cells as text, the notes under it; the first
    ``text_columns`` columns are text (left-aligned), the others figures (right-aligned)."""

    headers: list[str]
    rows: list[list[str]]
    notes: list[str]
    text_columns: int
    best: set[tuple[int, int]] = field(default_factory=set)  # (row, column) of a best figure
    baseline: int | None = None  # the position of the baseline row
    runs: list[list[str]] = field(default_factory=list)  # the MLflow run ids of each row
