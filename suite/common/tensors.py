"""The one way the suite reads a file of tensors: ``torch.load`` as data only, one-line errors.

Every ``.pt`` file the suite reads (epoch checkpoints, a run's ``trained_weights.pt``, a local
backbone checkpoint) comes through :func:`load_tensors`. A pickle may name any callable and
``torch.load(weights_only=False)`` would call it, so files are read with ``weights_only=True``:
tensors, containers and plain values only; a file that names anything else is refused and
nothing in it runs.

``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` turns weights-only loading off for callers that do not
pass ``weights_only``. torch (2.6 to 2.14 at least) lets an explicit ``weights_only=True`` win
over it, but it raises when ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` is set as well; so that neither
another torch version nor that clash can change what this loader does, the variable is taken out
of the environment for the duration of the call (under a lock) and put back afterwards.
"""

from __future__ import annotations

import io
import os
import re
import threading
from pathlib import Path
from typing import Any

from suite.errors import UserError

#: The variable that would turn weights-only loading off.
FORCE_UNSAFE = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"
_ENVIRONMENT = threading.Lock()
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def load_tensors(source: Path | str | bytes, failure: str) -> Any:
    """The tensors and plain values in ``source`` (a path, or the bytes of a file), on the CPU.

    Anything that is not such a file (a pickle naming a class or function, a damaged or cut
    file) is a one-line UserError ``"{failure}: {why}"``; ``failure`` names the file and what
    could not be done, e.g. ``"checkpoint x.pt is unreadable"``.
    """
    import torch

    stream: Any = io.BytesIO(source) if isinstance(source, bytes) else str(source)
    with _ENVIRONMENT:
        forced = os.environ.pop(FORCE_UNSAFE, None)
        try:
            return torch.load(stream, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors of many types
            raise UserError(f"{failure}: {_reason(exc)}") from None
        finally:
            if forced is not None:
                os.environ[FORCE_UNSAFE] = forced


def _reason(exc: Exception) -> str:
    """One line of ``exc`` for the user. torch's own message for a refused file advises loading
    it with ``weights_only=False``, which the suite never does: only what the unpickler met is
    kept of it (an object it names, or an operand it does not know)."""
    text = _ANSI.sub("", str(exc))
    _, marker, rest = text.partition("WeightsUnpickler error:")
    if marker:
        met = next((line.strip() for line in rest.splitlines() if line.strip()), "")
        met = met.split(" was not an allowed global")[0].rstrip(".")[:200]
        if met.startswith("Unsupported global"):
            return (f"it holds more than tensors and plain values ({met}); refused, nothing "
                    f"in it was run: use a file the suite (or torch.save of tensors) wrote")
        return f"not a file of tensors torch.save wrote (the unpickler met: {met or 'junk'})"
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    first = re.split(r"(?<=\.)\s", lines[0])[0][:300] if lines else ""  # its first sentence
    return f"not a file of tensors torch.save wrote ({type(exc).__name__}: {first})"
