"""Rich tables for the terminal."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

COST_COLUMNS = [
    ("method", "method", "{}"), ("video GFLOPs", "video_gmacs", "{:.2f}"),
    ("text GFLOPs", "text_gmacs", "{:.3f}"), ("out tokens", "output_tokens", "{}"),
    ("trainable", "params_trainable", "{:,}"), ("total params", "params_total", "{:,}"),
    ("videos/s", "videos_per_second", "{:.2f}"), ("train s/step", "seconds_per_step", "{:.3f}"),
    ("train peak MiB", "training_peak_mib", "{:.0f}"),
    ("infer peak MiB", "inference_peak_mib", "{:.0f}"),
]
COST_CAPTION = ("GFLOPs = multiply-adds of the visual tower per video (the paper's convention), "
                "text GFLOPs per caption")


def _cost_title(row: dict[str, Any]) -> str:
    return (f"{row['backbone']}, {row['frames']} frames, {row['device']}, {row['threads']} "
            f"threads, torch {row['torch']}, batch {row['batch']} (training step "
            f"{row['train_batch']})")


def cost_table(rows: list[dict[str, Any]]) -> Table:
    """Cost figures of one or more methods side by side, for the terminal."""
    table = Table(title=_cost_title(rows[0]), caption=COST_CAPTION)
    for title, _, _ in COST_COLUMNS:
        table.add_column(title, justify="left" if title == "method" else "right")
    for row in rows:
        table.add_row(*(_cell(fmt, row[key]) for _, key, fmt in COST_COLUMNS))
    return table


def cost_markdown(rows: list[dict[str, Any]]) -> str:
    """The same table as Markdown (for a README or a report)."""
    from reports.tables import markdown

    headers = [title for title, _, _ in COST_COLUMNS]
    cells = [[_cell(fmt, row[key]) for _, key, fmt in COST_COLUMNS] for row in rows]
    return markdown(headers, cells, [f"{_cost_title(rows[0])}; {COST_CAPTION}."], 1)


def _cell(fmt: str, value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return fmt.format(value)
