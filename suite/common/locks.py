"""File locks that let several processes on one machine share a local store.

A SQLite database (MLflow's ``mlflow.db``, Optuna's ``sqlite:///optuna.db``) is created and
migrated by whichever process first opens it; two doing so at once corrupt the schema
bookkeeping (alembic's version row). Holding ``<database>.lock`` (an ``flock``, released by the
kernel when its holder dies) around that first use serialises them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from suite.errors import UserError

WAIT_SECONDS = 300.0  # a first migration takes seconds; a lock held longer is a stuck process


def sqlite_lock_path(url: str) -> Path | None:
    """``<database file>.lock`` for a ``sqlite:///`` URL of a file; None otherwise."""
    if not url.startswith("sqlite:///"):
        return None
    database = url.removeprefix("sqlite:///").split("?")[0]
    return None if database in ("", ":memory:") else Path(database + ".lock")


@contextmanager
def held(path: Path, what: str, wait: float = WAIT_SECONDS) -> Iterator[None]:
    """Hold the lock file ``path`` (created with its folder if missing) for the block; ``what``
    names the store in the one-line error when it cannot be had."""
    from filelock import FileLock, Timeout

    lock = FileLock(str(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=wait)
    except Timeout:
        raise UserError(f"{what} stayed locked for {wait:.0f} s by another process ({path}); "
                        f"is one stuck?") from None
    except OSError as exc:
        raise UserError(f"cannot lock {what} ({path}): {exc.strerror or exc}") from None
    try:
        yield
    finally:
        lock.release()
