"""Read a pickle of plain data without running anything it names.

A pickle runs code only through the objects it asks the unpickler to import (``find_class``:
``GLOBAL``/``STACK_GLOBAL``/``INST``/``OBJ`` and the copyreg extension codes, whose callables
``REDUCE`` then calls) and through persistent ids. ``PlainUnpickler`` refuses both, which is the
pattern of the Python documentation ("Restricting Globals"), with no class allowed at all: what
remains are the opcodes for dicts, lists, tuples, strings, numbers, booleans and None (and, from
protocol 4, sets and bytes, which older protocols build by naming a constructor).

The published MSVD ``raw-captions.pkl`` (CLIP4Clip's ``msvd_data.zip``, read with ``pickle.load``
in ``dataloaders/dataloader_msvd_retrieval.py`` line 51) is a dict from video id to a list of
captions, each a list of word strings: nothing in it needs an import.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

from suite.errors import UserError


class PlainUnpickler(pickle.Unpickler):
    """An unpickler that refuses every import and every persistent id."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"it names {module}.{name}, and only plain data "
                                     f"(dicts, lists, tuples, strings, numbers) is read")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("it refers to a persistent object; only plain data is read")


def loads_plain(data: bytes) -> Any:
    """Unpickle ``data`` if it holds only plain built-in values; ``pickle.UnpicklingError``
    otherwise. Strings pickled by Python 2 (``str``) are decoded as UTF-8."""
    return PlainUnpickler(io.BytesIO(data), encoding="utf-8").load()


def load_plain(path: Path) -> Any:
    """The plain data pickled in ``path``; anything else is a one-line ``UserError``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        return loads_plain(data)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
            AttributeError, UnicodeDecodeError, MemoryError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"{path} is not a pickle of plain data, refused: {reason}") from None
