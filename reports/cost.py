"""Rich tables for the terminal."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from rich.table import Table

from reports.columns import _gflops

#: (title, key, format: a str.format pattern or a function). GFLOPs with as many digits as a
#: report shows (reports.columns): 0.0747, not 0.07.
COST_COLUMNS: list[tuple[str, str, str | Callable[[float], str]]] = [
    ("method", "method", "{}"), ("video GFLOPs", "video_gmacs", _gflops),
    ("text GFLOPs", "text_gmacs", _gflops), ("out tokens", "output_tokens", "{}"),
    ("trainable", "params_trainable", "{:,}"), ("total params", "params_total", "{:,}"),
    ("videos/s", "videos_per_second", "{:.2f}"), ("GFLOP/s", "gflop_per_second", "{:,.1f}"),
    ("of peak", "peak_share", "{:.1%}"), ("train s/step", "seconds_per_step", "{:.3f}"),
    ("train peak MiB", "training_peak_mib", "{:.0f}"),
    ("infer peak MiB", "inference_peak_mib", "{:.0f}"),
]
COUNT_KEYS = ("method", "video_gmacs", "text_gmacs", "output_tokens", "params_trainable",
              "params_total")
COUNTS_CAPTION = ("GFLOPs = multiply-adds of the visual tower per video (the paper's "
                  "convention), text GFLOPs per caption")
COST_CAPTION = (f"{COUNTS_CAPTION}; GFLOP/s = 2 x video multiply-adds x videos/s, of peak = "
                "its share of this machine's measured matmul peak in the same precision")


def _columns(rows: list[dict[str, Any]]) -> list[tuple[str, str, str | Callable[[float], str]]]:
    """Every cost column, or the counts alone for rows without timings (--counts-only)."""
    if all("videos_per_second" not in row for row in rows):
        return [c for c in COST_COLUMNS if c[1] in COUNT_KEYS]
    return COST_COLUMNS


def _caption(rows: list[dict[str, Any]]) -> str:
    """What the columns mean; the timing columns' terms only where they are shown."""
    return COST_CAPTION if _columns(rows) == COST_COLUMNS else COUNTS_CAPTION


def _cost_title(row: dict[str, Any]) -> str:
    if "device" not in row:  # counts only
        return f"{row['backbone']}, {row['frames']} frames, {row['words']} words (counts only)"
    peak = row.get("peak_gflop_per_second", float("nan"))
    where = f"{row['device']}" + (f" ({row['cpu']}; {row['cpu_flags']})" if "cpu" in row else "")
    return (f"{row['backbone']}, {row['frames']} frames, {where}, {row['threads']} threads, "
            f"torch {row['torch']}, batch {row['batch']} {row.get('precision', '')} (training "
            f"step {row['train_batch']}), peak {peak:,.0f} GFLOP/s, fp32 GEMM "
            f"{row.get('cpu_gemm', '-')}")


def cost_table(rows: list[dict[str, Any]]) -> Table:
    """Cost figures of one or more methods side by side, for the terminal."""
    columns = _columns(rows)
    table = Table(title=_cost_title(rows[0]), caption=_caption(rows))
    for title, _, _ in columns:
        table.add_column(title, justify="left" if title == "method" else "right")
    for row in rows:
        table.add_row(*(_cell(fmt, row.get(key)) for _, key, fmt in columns))
    return table


def cost_markdown(rows: list[dict[str, Any]]) -> str:
    """The same table as Markdown (for a README or a report)."""
    from reports.columns import Shown
    from reports.formats import markdown

    columns = _columns(rows)
    headers = [title for title, _, _ in columns]
    cells = [[_cell(fmt, row.get(key)) for _, key, fmt in columns] for row in rows]
    return markdown(Shown(headers, cells, [f"{_cost_title(rows[0])}; {_caption(rows)}."], 1))


def _cell(fmt: str | Callable[[float], str], value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value) if isinstance(fmt, str) else fmt(value)
