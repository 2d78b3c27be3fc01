"""Rich tables for the terminal."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table


def cost_table(rows: list[dict[str, Any]]) -> Table:
    """Cost figures of one or more methods side by side (GFLOPs are multiply-adds)."""
    first = rows[0]
    table = Table(title=f"{first['backbone']}, {first['frames']} frames, {first['device']}, "
                        f"{first['threads']} threads, torch {first['torch']}",
                  caption="GFLOPs = multiply-adds of the visual tower per video (paper's "
                          "convention); text GFLOPs per caption")
    columns = [("method", "method", "{}"), ("video GFLOPs", "video_gmacs", "{:.2f}"),
               ("text GFLOPs", "text_gmacs", "{:.3f}"), ("out tokens", "output_tokens", "{}"),
               ("trainable", "params_trainable", "{:,}"), ("total params", "params_total", "{:,}"),
               ("videos/s", "videos_per_second", "{:.2f}"),
               ("train s/step", "seconds_per_step", "{:.3f}"),
               ("train peak MiB", "training_peak_mib", "{:.0f}"),
               ("infer peak MiB", "inference_peak_mib", "{:.0f}")]
    for title, _, _ in columns:
        table.add_column(title, justify="left" if title == "method" else "right")
    for row in rows:
        table.add_row(*(_cell(fmt, row[key]) for _, key, fmt in columns))
    return table


def _cell(fmt: str, value: Any) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    return fmt.format(value)
