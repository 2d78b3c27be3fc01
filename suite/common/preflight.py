"""Checks of the places a command will write to, made before any work starts: a read-only
folder, a file where a folder should be, a damaged database or an unknown store address is
one line at once, not a traceback after a minute of pre-training or a whole training run."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from urllib.parse import urlparse

from suite.errors import UserError

# Store schemes MLflow can track to (a database dialect may name its driver: postgresql+psycopg2).
TRACKING_SCHEMES = ("sqlite", "file", "http", "https", "databricks", "postgresql", "mysql",
                    "mssql")
SQLITE_HEADER = b"SQLite format 3\x00"


def writable_folder(folder: Path, what: str) -> None:
    """``folder`` is a folder a file can be created in, or, when it does not exist yet, its
    nearest existing parent is (nothing is created: a refused command leaves no trace)."""
    folder = Path(folder).expanduser().absolute()
    if folder.exists() and not folder.is_dir():
        raise UserError(f"{what} {folder} is a file, not a folder")
    existing = folder
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"{what} {folder} cannot be made: {existing} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise UserError(f"{what} {folder} is not writable ({(exc.strerror or str(exc)).lower()})"
                        ) from None


def tracking_store(uri: str) -> None:
    """A tracking URI MLflow can write to: a known scheme; for SQLite, a writable folder and a
    file that is a SQLite database (or does not exist yet)."""
    scheme = urlparse(uri).scheme.split("+")[0]
    if len(scheme) == 1:  # a Windows drive letter: a plain path
        scheme = ""
    if scheme and scheme not in TRACKING_SCHEMES:
        raise UserError(f"unknown tracking URI scheme {scheme!r} in {uri!r}; valid: sqlite:///"
                        f"PATH, file:///PATH or a plain folder, http(s)://HOST, databricks, "
                        f"postgresql://, mysql://, mssql://")
    if scheme == "sqlite":
        database = Path(uri.removeprefix("sqlite:///")).expanduser()
        writable_folder(database.resolve().parent, "the folder of the MLflow store")
        if database.is_file() and database.stat().st_size > 0:
            with database.open("rb") as file:
                if file.read(len(SQLITE_HEADER)) != SQLITE_HEADER:
                    raise UserError(f"MLflow store {database} is not a SQLite database; move it "
                                    f"away or pass another --tracking-uri")
            if not os.access(database, os.W_OK):
                raise UserError(f"MLflow store {database} is read-only")
    elif scheme in ("", "file"):
        writable_folder(Path(urlparse(uri).path if scheme else uri), "MLflow store folder")
