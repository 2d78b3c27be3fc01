"""What every command shares: the one place errors become exit codes, usage errors as one
line, SIGTERM as Ctrl-C, and the options several commands take (same name, help, default).

Exit codes: 0 done; 1 work that ran but did not succeed (a failed bench run, problems found by
``prepare``) or a fault of the machine (``MachineFault``: a full disk anywhere, a store that
went away mid-run); 2 a ``SuiteError`` (bad input, a store that fails), a usage error or a
filesystem problem; 130 Ctrl-C or SIGTERM. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from suite.common import faults
from suite.common.faults import STORE_ERRORS
from suite.errors import DiskFull, StoreError, SuiteError


def store_error(exc: BaseException) -> StoreError | None:
    """``exc`` as a StoreError when a tracking or study library raised it, else None."""
    for module_name, class_name in STORE_ERRORS:
        module = sys.modules.get(module_name)
        if module is not None and isinstance(exc, getattr(module, class_name)):
            return StoreError(f"tracking store: {faults.first_line(exc)[:300]}")
    return None


def disk_full(exc: BaseException) -> DiskFull | None:
    """``exc`` as a DiskFull (exit 1) when a full disk or quota is behind it, else None."""
    if not faults.is_disk_full(exc):
        return None
    where = faults.written_path(exc) or ("the tracking store" if faults.is_store_error(exc)
                                         else "a file")
    return DiskFull(f"disk full writing {where}: free space and run the command again")


def describe_os_error(exc: OSError) -> str:
    """``[Errno 30] Read-only file system: 'x'`` -> ``x: read-only file system``."""
    where = exc.filename or ""
    reason = (exc.strerror or str(exc)).lower()
    return f"{where}: {reason}" if where else reason


def fail(message: str, code: int) -> typer.Exit:
    """Print ``error: message`` on stderr; the Exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def guarded(command: Callable[..., Any]) -> Callable[..., Any]:
    """Run a command with the suite's error policy (the module docstring)."""

    @wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except SuiteError as exc:
            raise fail(str(exc), exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except BrokenPipeError:  # the reader went away (`suite list methods | head -3`)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(0) from None
        except Exception as exc:
            problem = disk_full(exc) or store_error(exc)
            if problem is None and isinstance(exc, OSError):
                raise fail(describe_os_error(exc), 2) from None
            if problem is None:
                raise
            raise fail(str(problem), problem.exit_code) from None

    return wrapper


class SuiteGroup(TyperGroup):
    """The command group: a usage mistake (unknown option, a value out of range, a missing
    argument) ends in the same one clean line and exit 2 as every other mistake."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

        try:
            code = super().main(*args, standalone_mode=False, **kwargs)
        except NoArgsIsHelpError as exc:  # bare `suite` or `suite bench`: the help
            exc.show()
            code = 2
        except UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "suite"
            typer.echo(f"error: {exc.format_message()} (see `{where} --help`)", err=True)
            code = 2
        except ClickException as exc:
            typer.echo(f"error: {exc.format_message()}", err=True)
            code = exc.exit_code
        except typer.Abort:
            typer.echo("interrupted", err=True)
            code = 130
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def stop_on_sigterm() -> None:
    """Schedulers (SLURM, Kubernetes, torchrun) stop jobs with SIGTERM: treat it as Ctrl-C, so
    the MLflow run ends KILLED and keeps its checkpoint for ``--resume``."""
    import signal

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def echo_json(value: Any) -> None:
    import json

    typer.echo(json.dumps(value, indent=2, sort_keys=True))


# -- options several commands share --------------------------------------------------------

TrackingUri = Annotated[str | None, typer.Option(
    help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in "
         "this folder).")]
JsonOut = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]
Sets = Annotated[list[str] | None, typer.Option(
    "--set", metavar="KEY=VALUE",
    help="key=value setting, repeatable: train.lr=1e-4, method.rank=4, data.num_train=500 "
         "(see docs/usage.md).")]
CheckpointDir = Annotated[Path, typer.Option(
    help="Where unfinished runs keep their epoch checkpoint.")]
Device = Annotated[str | None, typer.Option(
    help="auto (CUDA when present), cpu or cuda (default: auto).")]
Experiment = Annotated[str | None, typer.Option(
    help="MLflow experiment name (default: tvr-suite).")]
DataRoot = Annotated[str | None, typer.Option(
    help="Folder of a real dataset's files (see docs/datasets.md).")]
