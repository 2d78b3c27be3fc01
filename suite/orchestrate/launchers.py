"""How ``suite bench`` runs several runs at once: ``suite run`` processes on this machine
(:class:`LocalPool`, ``--jobs N``) or SLURM jobs submitted through submitit
(:class:`SlurmLauncher`, ``--launcher slurm``).

Every run is the same command a user could type: ``suite run --config FILE --tag ...`` for a new
run (the resolved config written under the bench folder), ``suite run --resume RUN_ID`` for an
interrupted one, each with the bench's tracking URI and checkpoint folder. Output goes to one
log file per run (``<bench folder>/logs``). A run whose process fails is tried once more
(resumed when it left a checkpoint); Ctrl-C or SIGTERM stops every process with SIGTERM (each
run ends KILLED with its checkpoint) or cancels every job, and the bench exits 130.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

from suite.errors import RunClaimed, UserError
from suite.orchestrate.plans import PlannedRun
from suite.orchestrate.state import (
    Action,
    BenchOptions,
    Interrupted,
    Outcome,
    Status,
    refresh,
    say,
)

POLL_SECONDS = 0.5
STOP_SECONDS = 120.0  # how long stopped processes get to write their KILLED status


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_") or "_"


def command(run: PlannedRun, action: Action, options: BenchOptions) -> list[str]:
    """The ``suite run`` command line of a planned run (new or resumed)."""
    base = [sys.executable, "-m", "suite.cli", "run"]
    common = ["--tracking-uri", options.uri, "--checkpoint-dir",
              str(options.checkpoints.absolute()), "--json"]
    if action.kind == "resume":
        assert action.run_id is not None
        return [*base, "--resume", action.run_id, *common]
    path = (options.workdir / "configs" / f"{run.digest}.json").absolute()
    run.config.save(path)
    tags = [part for key, value in run.tags().items() for part in ("--tag", f"{key}={value}")]
    return [*base, "--config", str(path), *tags, *common]


def run_id_of(stdout: str) -> str | None:
    """The run id a ``suite run --json`` printed (None if it printed none)."""
    try:
        return str(json.loads(stdout[stdout.index("{"):])["run_id"])
    except (ValueError, KeyError):
        return None


def log_path(run: PlannedRun, options: BenchOptions) -> Path:
    return options.workdir / "logs" / f"{_slug(run.row)}-seed{run.seed}.log"


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM when the bench dies (kill -9 included), so that no
    run trains on unowned; the run then ends KILLED with its checkpoint."""
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def slot_environments(options: BenchOptions, runs: list[PlannedRun]) -> list[dict[str, str]]:
    """One environment per concurrent job: a GPU each (``CUDA_VISIBLE_DEVICES``) when the runs
    use CUDA, else an equal share of the CPU cores (``OMP_NUM_THREADS``, which torch reads)."""
    import torch

    from suite.cost.device import resolve_device

    jobs = options.jobs
    cuda = any(resolve_device(r.config.device).type == "cuda" for r in runs)
    if cuda:
        count = torch.cuda.device_count()
        if jobs > count:
            raise UserError(f"--jobs {jobs} needs {jobs} GPUs, this machine has {count}")
        return [{"CUDA_VISIBLE_DEVICES": str(i)} for i in range(jobs)]
    threads = options.threads or max(1, (os.cpu_count() or 1) // jobs)
    return [{"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
            for _ in range(jobs)]


class LocalPool:
    """``--jobs N`` on this machine: N ``suite run`` processes at a time."""

    def __init__(self, options: BenchOptions) -> None:
        self.options = options

    def start(self, run: PlannedRun, action: Action, env: dict[str, str], attempt: int
              ) -> tuple[subprocess.Popen[str], Any]:
        """The process of one attempt; stderr (progress, messages) goes to the run's log,
        stdout (the JSON summary) to a file beside it, read when the process ends."""
        path = log_path(run, self.options)
        path.parent.mkdir(parents=True, exist_ok=True)
        log = path.open("a")
        log.write(f"--- attempt {attempt}: {action.kind} {action.run_id or ''}\n")
        log.flush()
        out = path.with_suffix(".out").open("w+")
        linux = sys.platform.startswith("linux")
        process = subprocess.Popen(command(run, action, self.options), stdout=out, stderr=log,
                                   text=True, env={**os.environ, **env},
                                   preexec_fn=_die_with_parent if linux else None,
                                   start_new_session=True)
        return process, (log, out)

    def run_all(self, todo: list[tuple[PlannedRun, Action]]) -> list[Outcome]:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from suite.common.progress import console

        slots = slot_environments(self.options, [r for r, _ in todo])
        queue: deque[tuple[PlannedRun, int]] = deque((run, 1) for run, _ in todo)
        running: dict[int, tuple[PlannedRun, Action, int, subprocess.Popen[str], Any]] = {}
        outcomes: list[Outcome] = []
        progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                            console=console, disable=not self.options.show_progress)
        try:
            with progress:
                task = progress.add_task(f"{len(slots)} jobs", total=len(todo))
                while queue or running:
                    for slot in range(len(slots)):
                        if slot in running or not queue:
                            continue
                        run, attempt = queue.popleft()
                        action = refresh(run, self.options)
                        if action.kind in ("done", "busy"):
                            outcomes.append(Outcome(run, "already finished" if action.kind ==
                                                    "done" else "busy", action.run_id,
                                                    action.detail))
                            progress.advance(task)
                            continue
                        process, log = self.start(run, action, slots[slot], attempt)
                        running[slot] = (run, action, attempt, process, log)
                        progress.console.print(
                            f"{run.row}, seed {run.seed}: "
                            + ("resumed" if action.kind == "resume" else "started")
                            + f" (job {slot}, log {log_path(run, self.options)})",
                            markup=False, highlight=False)
                    for slot, (run, action, attempt, process, log) in list(running.items()):
                        if process.poll() is None:
                            continue
                        log, stdout = log
                        stdout.seek(0)
                        out = stdout.read()
                        stdout.close()
                        log.close()
                        del running[slot]
                        outcome = self.finished(run, action, attempt, process.returncode, out)
                        if outcome is None:
                            queue.appendleft((run, attempt + 1))
                            continue
                        outcomes.append(outcome)
                        progress.advance(task)
                    time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            self.stop(running)
            outcomes += [Outcome(run, "interrupted") for run, *_ in running.values()]
            outcomes += [Outcome(run, "pending") for run, _ in queue]
            say("interrupted: the runs under way stopped (KILLED, checkpoints kept); run the "
                "same command again to resume")
            raise Interrupted(outcomes) from None
        return outcomes

    def finished(self, run: PlannedRun, action: Action, attempt: int, code: int, out: str
                 ) -> Outcome | None:
        """The outcome of an ended process; None: try it again."""
        run_id = run_id_of(out)
        where = f"{run.row}, seed {run.seed}"
        if code == 0:
            status: Status = "resumed" if action.kind == "resume" else "finished"
            say(f"{where}: {status}, run {run_id}")
            return Outcome(run, status, run_id)
        if code == RunClaimed.exit_code:  # another bench has it (suite.job.claims)
            say(f"{where}: busy, trained by another bench (see {log_path(run, self.options)})")
            return Outcome(run, "busy", None, "claimed by another bench")
        line = f"exit code {code}; see {log_path(run, self.options)}"
        say(f"{where} failed (attempt {attempt} of 2): {line}")
        if code == 130 or attempt >= 2:
            return Outcome(run, "interrupted" if code == 130 else "failed", run_id, line)
        return None

    @staticmethod
    def stop(running: dict[int, tuple[Any, ...]]) -> None:
        """SIGTERM to every run under way (each ends KILLED, keeping its checkpoint); wait."""
        for *_, process, _log in running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_SECONDS
        for *_, process, log in running.values():
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
            for file in log:
                file.close()


# -- SLURM through submitit -------------------------------------------------------------------


def job_argv(argv: list[str], gpus: int) -> list[str]:
    """The ``suite run`` command of a job, under torchrun's standalone rendezvous when the job
    has more than one GPU (one process per GPU)."""
    if gpus <= 1:
        return argv
    python, _, _, *rest = argv  # [python, -m, suite.cli, run, ...]
    return [python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={gpus}",
            "-m", "suite.cli", *rest]


class BenchJob:
    """What a submitted job executes: the planned run's ``suite run`` (new or resumed) as a
    child process; returns its exit code and what it printed on stdout (its JSON summary).

    Preemption and the time-limit warning (SLURM's ``--signal``, which submitit turns into a
    call of :meth:`checkpoint`): the child is stopped with SIGTERM (its run ends KILLED with
    its last epoch checkpointed), and the job is requeued as a new ``BenchJob`` that looks the
    run up again when it starts, so it resumes from that checkpoint. submitit's
    ``Checkpointable`` protocol, without importing submitit here.
    """

    def __init__(self, run: PlannedRun, options: BenchOptions, action: Action | None,
                 cwd: str) -> None:
        self.run, self.options, self.action, self.cwd = run, options, action, cwd
        self.child: subprocess.Popen[str] | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "child": None}  # a process does not travel with the job

    def __call__(self) -> tuple[int, str]:
        action = self.action or refresh(self.run, self.options)  # requeued: look again
        if action.kind in ("done", "busy"):
            return 0 if action.kind == "done" else RunClaimed.exit_code, ""
        argv = job_argv(command(self.run, action, self.options), self.options.slurm.gpus_per_job)
        self.child = subprocess.Popen(argv, cwd=self.cwd, stdout=subprocess.PIPE, text=True)
        out, _ = self.child.communicate()
        sys.stdout.write(out)
        return self.child.returncode, out

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Stop the run (KILLED, checkpoint kept) and requeue a job that resumes it."""
        from submitit.helpers import DelayedSubmission

        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)
            try:
                self.child.wait(timeout=STOP_SECONDS)
            except subprocess.TimeoutExpired:
                self.child.kill()
        return DelayedSubmission(BenchJob(self.run, self.options, None, self.cwd))


class SlurmLauncher:
    """``--launcher slurm``: one submitit job per run, all submitted at once, then awaited.

    ``options.slurm`` (suite.orchestrate.slurm.SlurmSettings) holds the sbatch options; its
    ``cluster`` is submitit's executor (``local`` runs the jobs as local processes through
    submitit's local executor, a test without a scheduler).
    """

    def __init__(self, options: BenchOptions) -> None:
        self.options = options
        self.settings = options.slurm

    def executor(self) -> Any:
        import submitit

        folder = (self.options.workdir / "jobs").absolute()
        try:
            executor = submitit.AutoExecutor(folder=folder, cluster=self.settings.cluster)
        except Exception as exc:  # noqa: BLE001 - no sbatch here, say so in one line
            raise UserError(f"cannot submit to SLURM from here: {exc}") from None
        executor.update_parameters(
            **self.settings.executor_parameters(f"bench-{self.options.workdir.name}"))
        return executor

    def record(self, run: PlannedRun, job: Any) -> None:
        """Name the job and its log in the bench folder (``jobs.tsv``) and on the console."""
        table = self.options.workdir / "jobs.tsv"
        log = Path(job.paths.stdout).absolute()
        if not table.exists():
            table.write_text("row\tseed\tjob_id\tlog\n")
        with table.open("a") as out:
            out.write(f"{run.row}\t{run.seed}\t{job.job_id}\t{log}\n")
        say(f"{run.row}, seed {run.seed}: job {job.job_id} submitted (log {log})")

    def submit(self, executor: Any, run: PlannedRun, action: Action) -> Any:
        return executor.submit(BenchJob(run, self.options, action, str(Path.cwd())))

    def run_all(self, todo: list[tuple[PlannedRun, Action]]) -> list[Outcome]:
        executor = self.executor()
        jobs: dict[int, tuple[PlannedRun, Action, int, Any]] = {}
        outcomes: list[Outcome] = []
        try:
            for number, (run, action) in enumerate(todo):
                jobs[number] = (run, action, 1, self.submit(executor, run, action))
                self.record(run, jobs[number][3])
            while jobs:
                for number, (run, action, attempt, job) in list(jobs.items()):
                    if not job.done():
                        continue
                    del jobs[number]
                    try:
                        code, out = job.result()
                    except Exception as exc:  # noqa: BLE001 - the job itself failed
                        code, out = 1, ""
                        say(f"{run.row}, seed {run.seed}: job {job.job_id} failed: "
                            f"{(str(exc).strip().splitlines() or [''])[-1]}")
                    if code == 0:
                        status: Status = "resumed" if action.kind == "resume" else "finished"
                        outcomes.append(Outcome(run, status, run_id_of(out)))
                        say(f"{run.row}, seed {run.seed}: {status}, run {run_id_of(out)} "
                            f"(job {job.job_id})")
                    elif code == RunClaimed.exit_code:  # another bench has it
                        outcomes.append(Outcome(run, "busy", None, "claimed by another bench"))
                        say(f"{run.row}, seed {run.seed}: busy, trained by another bench "
                            f"(job {job.job_id})")
                    elif attempt < 2 and code != 130:
                        again = refresh(run, self.options)
                        jobs[number] = (run, again, 2, self.submit(executor, run, again))
                        self.record(run, jobs[number][3])
                        say(f"{run.row}, seed {run.seed}: job {job.job_id} exited {code}; "
                            f"submitted again as {jobs[number][3].job_id}")
                    else:
                        outcomes.append(Outcome(run, "failed", run_id_of(out),
                                                f"job {job.job_id} exited {code}"))
                time.sleep(POLL_SECONDS)
        except KeyboardInterrupt:
            for run, _, _, job in jobs.values():
                job.cancel(check=False)
                outcomes.append(Outcome(run, "interrupted"))
            outcomes += [Outcome(run, "pending") for number, (run, _) in enumerate(todo)
                         if number not in jobs and not any(o.run is run for o in outcomes)]
            say("interrupted: the jobs were cancelled (SLURM stops them with SIGTERM: the "
                "runs end KILLED with their checkpoints); run the same command again to resume")
            raise Interrupted(outcomes) from None
        return outcomes
