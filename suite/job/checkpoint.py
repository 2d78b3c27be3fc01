"""Epoch checkpoints of a training run, so that an interrupted run resumes where it stopped.

After every epoch the trainer writes one file, ``<checkpoint dir>/<MLflow run id>/last.pt``:
the resolved config, the epochs and steps done, the trainable weights, optimiser, scheduler and
grad-scaler states, the kept (best) evaluation with its weights, the random-number states and
the timings. The file is replaced atomically (suite.common.files), so a crash while writing
leaves the previous epoch's checkpoint. A run that finishes deletes its checkpoint (its
trained weights are an MLflow artifact).

Nothing in a checkpoint runs code: it holds tensors and plain values only, is read with
``torch.load(weights_only=True)``, and carries a SHA-256 of its contents, checked before it is
read, so a damaged file is refused instead of resuming into garbage.
"""

from __future__ import annotations

import hashlib
import io
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from suite.common.files import write_atomic
from suite.errors import UserError

DEFAULT_DIR = Path("checkpoints")
FILE_NAME = "last.pt"
MAGIC = b"tvr-suite checkpoint v2\n"
KEYS = ("run_id", "config", "epoch", "step", "model", "optimizer", "scheduler", "scaler",
        "kept", "step_seconds", "rng", "training_seconds")


def checkpoint_path(folder: Path, run_id: str) -> Path:
    return folder / run_id / FILE_NAME


def save_atomic(state: dict[str, Any], path: Path) -> None:
    """Serialise ``state`` (tensors and plain values), prefix its digest, replace ``path``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    digest = hashlib.sha256(payload).hexdigest().encode()
    write_atomic(path, MAGIC + digest + b"\n" + payload)


def read(path: Path) -> dict[str, Any]:
    """The state in checkpoint file ``path``, after checking its digest; one-line errors."""
    data = path.read_bytes()
    if not data.startswith(MAGIC):
        raise UserError(f"checkpoint {path} is not a tvr-suite checkpoint (or from an older "
                        f"version); start the run again")
    digest, _, payload = data[len(MAGIC):].partition(b"\n")
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        raise UserError(f"checkpoint {path} is damaged (its checksum does not match); "
                        f"start the run again")
    try:
        state = torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means the same to a user
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise UserError(f"checkpoint {path} is unreadable: {first}") from None
    missing = [key for key in KEYS if not isinstance(state, dict) or key not in state]
    if missing:
        raise UserError(f"checkpoint {path} lacks {', '.join(missing)}; start the run again")
    return state


def load(folder: Path, run_id: str) -> dict[str, Any]:
    """The checkpoint of ``run_id``; a missing, damaged or unreadable one is a user error."""
    path = checkpoint_path(folder, run_id)
    if not path.is_file():
        raise UserError(f"no checkpoint for run {run_id} in {folder}/ (runs keep one from their "
                        f"first finished epoch until they finish); see --checkpoint-dir")
    return read(path)


def remove(folder: Path, run_id: str) -> None:
    shutil.rmtree(folder / run_id, ignore_errors=True)


def rng_states() -> dict[str, Any]:
    """Python, NumPy and torch generator states (CUDA too, when present), as tensors and plain
    values."""
    numpy_state = np.random.get_state(legacy=False)
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {"state": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                  "pos": int(numpy_state["state"]["pos"]),
                  "has_gauss": int(numpy_state["has_gauss"]),
                  "gauss": float(numpy_state["gauss"])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    random.setstate(states["python"])
    saved = states["numpy"]
    np.random.set_state({"bit_generator": "MT19937",
                         "state": {"key": saved["state"].numpy().astype(np.uint32),
                                   "pos": saved["pos"]},
                         "has_gauss": saved["has_gauss"], "gauss": saved["gauss"]})
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])
