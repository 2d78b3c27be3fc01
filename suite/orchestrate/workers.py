"""``suite sweep --workers N``: N workers on one Optuna study, as processes on this machine or
as SLURM jobs, sharing one goal of finished trials.

The study's storage is what the workers share: a journal file for processes on one machine
(the default, ``optuna.journal``), a database (``postgresql://...``) for jobs on many. The
parent opens the study (a bad one is refused before anything starts), sets the goal (the
trials that count now plus ``--trials``), starts the workers, waits for them and summarises.
Each worker is ``suite sweep --goal G`` (suite.orchestrate.sweep.asked_until).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

from suite.errors import UserError
from suite.orchestrate.slurm import SlurmSettings


def absolute_storage(storage: str) -> str:
    """A journal file as an absolute path (workers may start elsewhere); URLs as they are."""
    return storage if "://" in storage else str(Path(storage).absolute())


def worker_command(method: str, dataset: str, goal: int, storage: str, study: str,
                   seed: int | None, pruner: str, sets: list[str], experiment: str | None,
                   uri: str | None, extra: list[str] | None = None) -> list[str]:
    """The command line of one worker; ``extra``: options passed on as they are."""
    argv = [sys.executable, "-m", "suite.cli", "sweep", "--method", method, "--dataset",
            dataset, "--trials", "1", "--goal", str(goal), "--storage", storage, "--study",
            study, "--pruner", pruner, "--json"]
    if seed is not None:
        argv += ["--seed", str(seed)]
    if experiment is not None:
        argv += ["--experiment", experiment]
    if uri is not None:
        argv += ["--tracking-uri", uri]
    for item in sets:
        argv += ["--set", item]
    return argv + list(extra or [])


def run_command(argv: list[str], log: str) -> int:
    """What a worker job executes: the worker's command, its output to ``log``."""
    with open(log, "a") as out:
        return subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT).returncode


def run_here(commands: list[list[str]], folder: Path) -> list[int]:
    """The workers as processes of this machine, started together; their exit codes."""
    folder.mkdir(parents=True, exist_ok=True)
    logs = [(folder / f"worker{i}.log").open("a") for i in range(len(commands))]
    processes = [subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
                 for argv, log in zip(commands, logs, strict=True)]
    try:
        return [p.wait() for p in processes]
    except KeyboardInterrupt:
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()
        raise
    finally:
        for log in logs:
            log.close()


def run_on_slurm(commands: list[list[str]], folder: Path, settings: SlurmSettings) -> list[int]:
    """The workers as SLURM jobs through submitit (one job each); their exit codes."""
    import submitit

    folder.mkdir(parents=True, exist_ok=True)
    try:
        executor = submitit.AutoExecutor(folder=folder / "jobs", cluster=settings.cluster)
    except Exception as exc:  # noqa: BLE001 - no sbatch here, say so in one line
        raise UserError(f"cannot submit to SLURM from here: {exc}") from None
    executor.update_parameters(**settings.executor_parameters("sweep-worker"))
    jobs: list[Any] = []
    with executor.batch():
        for number, argv in enumerate(commands):
            jobs.append(executor.submit(run_command, argv, str(folder / f"worker{number}.log")))
    codes = []
    for job in jobs:
        try:
            codes.append(int(job.result()))
        except Exception:  # noqa: BLE001 - the job itself died (cancelled, node lost)
            codes.append(1)
    return codes
