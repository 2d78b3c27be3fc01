"""Faults of the machine recognised in an exception, whoever raised it: a full disk (ENOSPC,
EDQUOT, SQLite's "database or disk is full") and the tracking or study libraries' own errors.

A library wraps the error it met (SQLite's in SQLAlchemy's in MLflow's), so each question here
walks the whole chain (``__cause__``, ``__context__``, SQLAlchemy's ``orig``). Library classes
are looked up only when the library is already imported: an exception cannot come from a
module never loaded, so recognising them costs no import.
"""

from __future__ import annotations

import errno
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

DISK_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
# How the libraries that hide the errno say it (SQLite's SQLITE_FULL, torch's writer).
DISK_FULL_TEXTS = ("database or disk is full", "no space left on device", "disk quota exceeded")
# Library errors that mean "the tracking store or the study database failed".
STORE_ERRORS = (
    ("mlflow.exceptions", "MlflowException"),
    ("sqlalchemy.exc", "SQLAlchemyError"),
    ("sqlite3", "Error"),
    ("optuna.exceptions", "OptunaError"),
)
# First lines of a library message that say nothing about the fault itself.
NOISE = ("(raised as a result of", "(background on this error")


def chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every error behind it, outermost first, each once."""
    found: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop(0)
        if current is None or any(current is seen for seen in found):
            continue
        found.append(current)
        orig = getattr(current, "orig", None)  # SQLAlchemy's DBAPI error
        todo += [orig if isinstance(orig, BaseException) else None, current.__cause__,
                 current.__context__]
    return found


def is_disk_full(exc: BaseException) -> bool:
    """Whether ``exc`` comes from a full disk or an exhausted quota."""
    for error in chain(exc):
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            return True
        if any(text in str(error).lower() for text in DISK_FULL_TEXTS):
            return True
    return False


def written_path(exc: BaseException) -> str | None:
    """The file being written when a disk filled up, when an ``OSError`` behind ``exc`` names
    it (a copy names its destination second)."""
    for error in chain(exc):
        if isinstance(error, OSError) and error.errno in DISK_FULL_ERRNOS:
            where = error.filename2 or error.filename
            if where is not None:
                return str(where)
    return None


def is_store_error(exc: BaseException) -> bool:
    """Whether a tracking or study library raised ``exc`` (see ``STORE_ERRORS``)."""
    for module_name, class_name in STORE_ERRORS:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(exc, getattr(module, class_name)):
            return True
    return False


def first_line(exc: BaseException) -> str:
    """The first line of ``exc``'s message that says something (library preambles skipped);
    the error's type name when it has none."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not line.lower().startswith(NOISE)]
    return (useful or lines or [type(exc).__name__])[0]


def cause(exc: BaseException) -> str:
    """The innermost error's first line: what the machine said (``attempt to write a readonly
    database``), not what each library wrapped around it."""
    inner, seen = exc, [exc]
    while True:  # down the wrapping (SQLAlchemy's orig, else the cause), not the context: an
        orig = getattr(inner, "orig", None)  # error met while handling another is its own
        below = orig if isinstance(orig, BaseException) else inner.__cause__
        if below is None or any(below is e for e in seen):
            break
        inner = below
        seen.append(inner)
    line = first_line(inner)
    # SQLAlchemy prefixes the DBAPI class: "(sqlite3.OperationalError) disk I/O error".
    if line.startswith("(") and ") " in line:
        line = line.split(") ", 1)[1]
    return line


@contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Name ``path`` on an ``OSError`` raised in the block without a file name (a write through
    an open file names none), so that the one line printed says which file."""
    try:
        yield
    except OSError as exc:
        if exc.errno is not None and exc.filename is None:  # the system's, naming no file
            exc.filename = str(path)
        raise
