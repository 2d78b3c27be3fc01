"""Fixtures that start real daemons for the tests in tests/cluster/ and stop them afterwards.

Session-scoped: `slurm` (munge, MariaDB + slurmdbd, slurmctld + slurmd; SLURM_CONF exported),
`postgres`, `mlflow_server` (on `postgres`); function-scoped: `postgres_db` (a fresh database).
Every test here carries the `cluster` marker. A daemon that cannot start fails the tests when
$CI is set and skips them otherwise (a laptop without root or packages).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from engines import (
    Accounting,
    EngineError,
    MlflowServer,
    Munge,
    Postgres,
    Slurm,
    ensure_packages,
    make_root,
)

HERE = Path(__file__).parent
E = TypeVar("E")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "cluster: needs the real daemons of tests/cluster/")


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in item.path.parents:
            item.add_marker(pytest.mark.cluster)


def start(what: str, starter: Callable[[], E]) -> E:
    """Start an engine; on failure fail in CI (with the logs), else skip with one line."""
    began = time.monotonic()
    try:
        engine = starter()
    except Exception as error:  # EngineError, or e.g. a binary or a user that is missing
        reason = str(error)
        if not isinstance(error, EngineError):
            reason = f"{type(error).__name__}: {reason}"
        if os.environ.get("CI"):
            pytest.fail(f"{what} did not start:\n{reason}", pytrace=False)
        pytest.skip(f"{what} did not start: {reason.splitlines()[0]}")
    print(f"{what} started in {time.monotonic() - began:.1f} s")
    return engine


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.fixture(scope="session")
def cluster_root() -> Iterator[Path]:
    """The temp root of all daemons; SIGTERM acts as Ctrl-C meanwhile (teardown still runs)."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    root = make_root()
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)
        signal.signal(signal.SIGTERM, previous)


@pytest.fixture(scope="session")
def munge(cluster_root: Path) -> Iterator[Munge]:
    def install_and_start() -> Munge:
        ensure_packages()
        return Munge.start(cluster_root)

    engine = start("munge", install_and_start)
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def slurm_accounting(cluster_root: Path, munge: Munge) -> Iterator[Accounting]:
    engine = start("MariaDB + slurmdbd", lambda: Accounting.start(cluster_root, munge))
    yield engine
    engine.stop()


@pytest.fixture(scope="session")
def slurm(cluster_root: Path, munge: Munge, slurm_accounting: Accounting) -> Iterator[Slurm]:
    """A one-node cluster (`.partition`, `.env`); SLURM_CONF is exported while it runs."""
    engine = start("slurmctld + slurmd",
                   lambda: Slurm.start(cluster_root, munge, slurm_accounting))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in engine.env.items():
            patch.setenv(name, value)
        yield engine
    engine.stop()


@pytest.fixture(scope="session")
def postgres(cluster_root: Path) -> Iterator[Postgres]:
    """A PostgreSQL server (`.url(db, driver)`, `.port`, `.create_database(name)`)."""
    engine = start("PostgreSQL", lambda: Postgres.start(cluster_root))
    yield engine
    engine.stop()


@pytest.fixture
def postgres_db(postgres: Postgres) -> Iterator[str]:
    """The URL (`postgresql://suite@127.0.0.1:PORT/NAME`) of a fresh database, dropped after."""
    name = f"test_{secrets.token_hex(4)}"
    yield postgres.create_database(name)
    postgres.drop_database(name)


@pytest.fixture(scope="session")
def mlflow_server(cluster_root: Path, postgres: Postgres) -> Iterator[MlflowServer]:
    """`mlflow server` (`.tracking_uri` = http://127.0.0.1:PORT, `.artifacts` its folder)."""
    engine = start("mlflow server", lambda: MlflowServer.start(cluster_root, postgres))
    yield engine
    engine.stop()
