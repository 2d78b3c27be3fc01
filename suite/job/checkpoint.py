"""Epoch checkpoints of a training run, so that an interrupted run resumes where it stopped.

After every epoch the trainer writes one file, ``<checkpoint dir>/<MLflow run id>/last.pt``:
the resolved config, the epochs and steps done, the trainable weights, optimiser, scheduler and
grad-scaler states, the kept (best) evaluation with its weights, the random-number states and
the timings. The file is replaced atomically (suite.common.files), so a crash while writing
leaves the previous epoch's checkpoint. A run that finishes deletes its checkpoint (its
trained weights are an MLflow artifact).

Nothing in a checkpoint runs code: it holds tensors and plain values only, is read as data
only (``suite.common.tensors.load_tensors``), and carries a SHA-256 of its contents, checked
before it is read, so a damaged file is refused instead of resuming into garbage. Before a resume
loads anything, :func:`check_fits` compares its tensors with the model the run built, so a
checkpoint of another model is refused in one line before the MLflow run reopens.
"""

from __future__ import annotations

import hashlib
import io
import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from suite.common.files import write_atomic
from suite.common.tensors import load_tensors
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
    state = load_tensors(payload, f"checkpoint {path} is unreadable")
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
    state = read(path)
    check_progress(state, run_id, path)
    return state


def check_progress(state: dict[str, Any], run_id: str, path: Path) -> None:
    """Refuse a checkpoint of another run, or one whose plain values are not of their kind
    (the run's id, its epochs and steps done, its timings), in one line: resuming it would
    log into another run or fail deep inside training."""
    def number(value: Any) -> bool:
        return isinstance(value, int | float) and not isinstance(value, bool)

    if state["run_id"] != run_id:
        raise UserError(f"checkpoint {path} belongs to run {state['run_id']!r}, not {run_id}; "
                        f"start the run again")
    problems = [name for name, fine in (
        ("epoch", isinstance(state["epoch"], int) and not isinstance(state["epoch"], bool)
         and state["epoch"] >= 1),
        ("step", isinstance(state["step"], int) and not isinstance(state["step"], bool)
         and state["step"] >= 0),
        ("config", isinstance(state["config"], dict)),
        ("step_seconds", isinstance(state["step_seconds"], list)
         and all(number(s) for s in state["step_seconds"])),
        ("training_seconds", number(state["training_seconds"])),
        ("rng", isinstance(state["rng"], dict)),
        ("kept", state["kept"] is None or isinstance(state["kept"], dict)),
        ("optimizer", isinstance(state["optimizer"], dict)),
        ("scheduler", isinstance(state["scheduler"], dict)),
        ("scaler", isinstance(state["scaler"], dict))) if not fine]
    if not problems and not restorable(state["rng"]):
        problems.append("rng")
    if problems:
        raise UserError(f"checkpoint {path} holds no valid {problems[0]} (a value of another "
                        f"kind); start the run again")


def restorable(states: dict[str, Any]) -> bool:
    """Whether the random-number ``states`` of a checkpoint can be restored: tried, then this
    process's own states put back."""
    current = rng_states()
    try:
        restore_rng_states(states)
        return True
    except Exception:  # noqa: BLE001 - any failure: states of another kind
        return False
    finally:
        restore_rng_states(current)


def check_fits(state: dict[str, Any], trainable: Mapping[str, torch.Tensor],
               optimizer: torch.optim.Optimizer | None = None) -> None:
    """Refuse a checkpoint whose model, kept (best) weights or optimizer state do not fit the
    run's model, in one line naming the first tensor that differs, before anything is loaded.

    ``trainable`` is the model's trainable parameters by name (what ``trainable_state`` saves),
    ``optimizer`` one built over them as the run builds it. Loading does not check: a copy
    casts another dtype and broadcasts some shapes silently, and fails on others with a long
    traceback after the run was reopened.
    """
    problem, where = first_difference(state["model"], trainable), "model"
    kept = state.get("kept")
    if problem is None and kept is not None:
        weights = kept.get("weights") if isinstance(kept, dict) else kept
        problem, where = first_difference(weights, trainable), "kept (best) weights"
    if problem is None:
        problem, where = non_finite(state["model"], (kept or {}).get("weights")), "weights"
    if problem is None and optimizer is not None:
        names = {id(p): name for name, p in trainable.items()}
        problem, where = optimizer_difference(state["optimizer"], optimizer, names), "optimizer"
    if problem is not None:
        raise UserError(f"the checkpoint of run {state['run_id']} does not fit the model this "
                        f"run builds ({where}: {problem}): it was written by other code or "
                        f"settings; start the run anew instead of resuming it")


def first_difference(saved: Any, expected: Mapping[str, torch.Tensor]) -> str | None:
    """The first way ``saved`` (name -> tensor, read from a file) differs from ``expected``: a
    name missing or extra, or a tensor of another shape or dtype; None when they match."""
    if not isinstance(saved, dict):
        return f"a {type(saved).__name__} where named tensors belong"
    for name, want in expected.items():
        got = saved.get(name)
        if not isinstance(got, torch.Tensor):
            return f"no tensor {name!r}" if got is None else f"{name!r} is not a tensor"
        if got.shape != want.shape or got.dtype != want.dtype:
            return f"tensor {name!r} is {describe(got)}, the model's is {describe(want)}"
    extra = [name for name in saved if name not in expected]
    return f"tensor {extra[0]!r}, which the model does not train" if extra else None


def non_finite(*tensor_sets: Any) -> str | None:
    """The first floating tensor holding NaN or infinity in ``tensor_sets`` (name -> tensor
    maps, or None); a run resumed from it could only diverge. None when all are finite."""
    for tensors in tensor_sets:
        for name, value in (tensors or {}).items():
            if value.is_floating_point() and not torch.isfinite(value).all():
                return f"tensor {name!r} holds NaN or infinite values"
    return None


def optimizer_difference(saved: Any, optimizer: torch.optim.Optimizer,
                         names: Mapping[int, str]) -> str | None:
    """The first way a saved optimizer ``state_dict`` differs from ``optimizer``'s: its
    parameter groups and their sizes, and the shape of every per-parameter tensor (Adam's
    moments); ``names`` maps ``id(parameter)`` to its name for the message."""
    groups, state = (saved.get("param_groups"), saved.get("state")) if isinstance(
        saved, dict) else (None, None)
    if not isinstance(groups, list) or not isinstance(state, dict):
        return "not an optimizer's state"
    if len(groups) != len(optimizer.param_groups):
        return (f"{len(groups)} parameter groups, the run's optimizer has "
                f"{len(optimizer.param_groups)}")
    pairs = []
    for number, (got, want) in enumerate(zip(groups, optimizer.param_groups, strict=True)):
        ids = got.get("params") if isinstance(got, dict) else None
        if not isinstance(ids, list) or len(ids) != len(want["params"]):
            count = len(ids) if isinstance(ids, list) else 0
            return (f"parameter group {number} holds {count} parameters, the run's "
                    f"{len(want['params'])}")
        pairs += zip(ids, want["params"], strict=True)
    expected = state_kinds(optimizer)
    for index, param in pairs:
        entry = state.get(index, {})
        kinds = ({key: isinstance(value, torch.Tensor) for key, value in entry.items()}
                 if isinstance(entry, dict) else None)
        if kinds is None or (entry and kinds != expected):
            return (f"the state of {names.get(id(param), f'parameter {index}')!r} holds "
                    f"{sorted(entry) if isinstance(entry, dict) else type(entry).__name__}, "
                    f"the run's optimizer keeps {sorted(expected)} (tensors where it has them)")
        for key, value in entry.items():
            if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape != param.shape:
                return (f"{key} of {names.get(id(param), f'parameter {index}')!r} is "
                        f"{describe(value)}, the parameter is {describe(param)}")
    return None


def state_kinds(optimizer: torch.optim.Optimizer) -> dict[str, bool]:
    """What ``optimizer``'s kind keeps per parameter (Adam: a step and two moments), each
    name with whether it is a tensor; found by one step of a copy of it on a parameter of
    one element."""
    probe = torch.zeros(1, requires_grad=True)
    probe.grad = torch.zeros(1)
    copy = type(optimizer)([{**optimizer.defaults, "params": [probe]}])
    copy.step()
    return {key: isinstance(value, torch.Tensor) for key, value in copy.state[probe].items()}


def describe(tensor: torch.Tensor) -> str:
    """``float32 [4, 512]``."""
    return f"{str(tensor.dtype).removeprefix('torch.')} {list(tensor.shape)}"


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
