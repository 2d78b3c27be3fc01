"""MLflow record of the videos the ``--on-bad-video skip`` policy left out of a split."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from suite.common.faults import writing


def log_skipped_videos(split: Any) -> int:
    """Log ``data/<split>_skipped_videos`` (0 for splits that skip nothing, e.g. synthetic) and,
    when videos were skipped, the list with reasons as artifact ``data/skipped_<split>.tsv``.
    Call inside the active MLflow run, once per split. Returns the count."""
    from suite.job import tracking

    count = int(getattr(split, "skipped", 0))
    tracking.log_metrics({f"data/{split.name}_skipped_videos": count})
    reasons: dict[str, str] = getattr(split, "skipped_videos", {})
    if count and reasons:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"skipped_{split.name}.tsv"
            with writing(path):  # a full disk names the file
                path.write_text("".join(f"{video}\t{why}\n" for video, why in reasons.items()))
            tracking.log_artifact(path, "data")
    return count
