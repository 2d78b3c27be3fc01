"""Every error the suite raises on purpose, under one base.

The CLI (``suite.cli.errors``) turns a ``SuiteError`` into its one-line message and its
``exit_code``; anything else is a bug and keeps its traceback. The bottom layer: it imports
nothing of the project, so every layer (``methods`` included) can raise these.

- ``UserError``: bad input (an option, a setting, a file named on the command line). Exit 2.
  - ``DataError``: a dataset file that is missing or cannot be read (``BadVideoError``).
  - ``MethodError``: an unknown or duplicate method, or method settings that cannot run.
  - ``ReportError``: nothing to report, or a format that does not exist.
  - ``TrainingDiverged``: the loss became NaN or infinite under the given settings.
- ``StoreError``: the tracking store or the study database failed. Exit 2.
- ``UncountedOperatorError``: the cost counter met an operator it cannot count. Exit 1.
- ``MachineFault``: the machine failed under a run, not its input (a store that went away
  mid-run). Exit 1.
  - ``DiskFull``: no space left (or the quota reached) writing a file or the store.
- ``RunClaimed``: a planned run is already trained (or resumed) elsewhere; not an error of
  anyone's, the run is skipped. Exit 3.
"""

from __future__ import annotations


class SuiteError(Exception):
    """An error the suite raises on purpose: its message is one line that says what is wrong
    and what to do; ``exit_code`` is what the command exits with."""

    exit_code = 2

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class UserError(SuiteError):
    """Bad input: what is wrong and what is valid, in one line."""


class DataError(UserError):
    """A dataset file is missing or unreadable; the message names it."""


class BadVideoError(DataError):
    """A video file that is missing or cannot be decoded; the message names the file.

    A DataLoader worker re-raises an exception in the main process as
    ``type(exc)("Caught ... Original Traceback ...")``; the original one-line message is the last
    line of that text, so it is recovered here and the CLI still prints one line.
    """

    def __init__(self, message: str) -> None:
        if "Original Traceback" in message:
            lines = [line for line in message.strip().splitlines() if line.strip()]
            last = lines[-1] if lines else message
            for prefix in (f"{type(self).__module__}.{type(self).__qualname__}: ",
                           f"{type(self).__qualname__}: "):
                if last.startswith(prefix):
                    last = last[len(prefix):]
                    break
            message = last
        super().__init__(message)


class MethodError(UserError):
    """A method name no one registered, a name registered twice, or method settings that
    cannot run (an unknown option, a merge schedule that does not fit)."""


class UnknownMethodError(MethodError):
    """Asked for a method name that no module or plug-in provides."""


class DuplicateMethodError(MethodError):
    """Two registrations under the same name."""


class ReportError(UserError):
    """A report that cannot be made: unknown experiment, no finished runs, bad format."""


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite: the run stops (FAILED) instead of training
    on, and keeps the checkpoint of its last finished epoch."""


class StoreError(SuiteError):
    """The MLflow tracking store or the Optuna study database failed (damaged, locked, gone)."""


class UncountedOperatorError(SuiteError):
    """An operator that carries real work has no multiply-add handle: a gap in the counter,
    not the user's input."""

    exit_code = 1


class MachineFault(SuiteError):
    """A fault of the machine, not of the input: a tracking store that went away mid-run, a
    full disk. The message names what failed and what to do (free space, resume the run)."""

    exit_code = 1


class DiskFull(MachineFault):
    """No space left on a device (or the disk quota reached) while writing; the message names
    the file or store that was being written."""


class RunClaimed(SuiteError):
    """A planned run that another process trains, resumes or has finished (suite.job.claims):
    this one stops before training, and a bench counts the run as busy."""

    exit_code = 3
