"""Epoch checkpoints of a training run, so that an interrupted run resumes where it stopped.

After every epoch the trainer writes one file, ``<checkpoint dir>/<MLflow run id>/last.pt``:
the resolved config, the epochs done, the trainable weights, optimiser, scheduler and grad-scaler
states, the best epoch so far with its weights, the random-number states and the timings. The
file is replaced atomically, so a crash while writing leaves the previous epoch's checkpoint.
A run that finishes deletes its checkpoint (its trained weights are an MLflow artifact).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from suite.errors import UserError

DEFAULT_DIR = Path("checkpoints")
FILE_NAME = "last.pt"


def checkpoint_path(folder: Path, run_id: str) -> Path:
    return folder / run_id / FILE_NAME


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` with torch.save to a temporary file beside ``path``, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        torch.save(state, temporary)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load(folder: Path, run_id: str) -> dict[str, Any]:
    """The checkpoint of ``run_id``; a missing or unreadable one is a user error."""
    path = checkpoint_path(folder, run_id)
    if not path.is_file():
        raise UserError(f"no checkpoint for run {run_id} in {folder}/ (runs keep one from their "
                        f"first finished epoch until they finish); see --checkpoint-dir")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same to a user
        raise UserError(f"checkpoint {path} is unreadable: {exc}") from None


def remove(folder: Path, run_id: str) -> None:
    shutil.rmtree(folder / run_id, ignore_errors=True)


def rng_states() -> dict[str, Any]:
    """Python, NumPy and torch generator states (CUDA too, when present)."""
    states: dict[str, Any] = {"python": random.getstate(), "numpy": np.random.get_state(),
                              "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
