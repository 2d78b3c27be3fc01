"""``suite bench PLAN``: every run of a plan, skipping what is done, resuming what was cut off.

Each run of a plan (suite.orchestrate.plans) is an ordinary ``suite run``: one MLflow run in
the plan's experiment, tagged ``plan``, ``plan_row`` and ``config_digest`` (a hash of its
resolved config, ``suite.orchestrate.plans.DIGEST_IGNORES`` left out). Before anything starts,
every run is looked up by its digest (suite.orchestrate.state):

- a FINISHED run: done, skipped;
- a RUNNING run whose owner lives (suite.job.ownership): trained elsewhere now, skipped;
- a run that stopped (Ctrl-C, SIGTERM, an error, a killed process) and left a checkpoint:
  resumed from it (``suite run --resume``); a RUNNING run whose owner is gone is first ended
  (FAILED, ``abandoned=true``: suite.job.ownership.end_orphans), as every run of the plans'
  experiments so left, each said in one line;
- otherwise (nothing yet, or stopped before its first checkpoint): started anew.

A run that fails is tried once more in the same invocation (resumed from its checkpoint when
it has one); a rerun of the command tries failed runs again. Ctrl-C or SIGTERM stops the bench
cleanly: the runs under way end KILLED with their checkpoints, the command exits 130, and the
next invocation resumes them. Runs go one after another in this process (``--jobs 1``), N at a
time as ``suite run`` processes (suite.orchestrate.launchers.LocalPool), or as SLURM jobs
through submitit (suite.orchestrate.launchers.SlurmLauncher).
"""

from __future__ import annotations

import os
from pathlib import Path

from suite.errors import RunClaimed, UserError
from suite.orchestrate.plans import Plan, PlannedRun
from suite.orchestrate.slurm import SlurmSettings
from suite.orchestrate.state import (
    Action,
    BenchOptions,
    Interrupted,
    Outcome,
    Status,
    plan_actions,
    refresh,
    say,
)

# -- the bench ------------------------------------------------------------------------------


def bench(plan: Plan, runs: list[PlannedRun], options: BenchOptions) -> list[Outcome]:
    """Bring every run of ``runs`` to FINISHED (see the module docstring)."""
    from suite.common import preflight
    from suite.job import ownership

    preflight.tracking_store(options.uri)
    preflight.writable_folder(options.checkpoints, "the checkpoint folder")
    preflight.writable_folder(options.workdir, "the bench folder")
    for experiment in sorted({r.config.experiment for r in runs}):
        ownership.end_orphans(options.uri, experiment)  # left RUNNING by a gone owner
    actions = plan_actions(runs, options)
    outcomes: list[Outcome] = []
    todo: list[tuple[PlannedRun, Action]] = []
    for run, action in zip(runs, actions, strict=True):
        if action.kind == "done":
            outcomes.append(Outcome(run, "already finished", action.run_id))
        elif action.kind == "busy":
            outcomes.append(Outcome(run, "busy", action.run_id, action.detail))
        else:
            todo.append((run, action))
    say(f"plan {plan.name}: {len(runs)} runs, {len(runs) - len(todo)} already finished or "
        f"under way elsewhere, {sum(a.kind == 'resume' for _, a in todo)} to resume, "
        f"{sum(a.kind == 'new' for _, a in todo)} to start")
    if not todo:
        return outcomes
    if options.launcher == "slurm":
        from suite.orchestrate.launchers import SlurmLauncher

        outcomes += SlurmLauncher(options).run_all(todo)
    elif options.jobs > 1:
        from suite.orchestrate.launchers import LocalPool

        outcomes += LocalPool(options).run_all(todo)
    else:
        outcomes += run_here(todo, options)
    order = {id(r): i for i, r in enumerate(runs)}
    return sorted(outcomes, key=lambda o: order[id(o.run)])


def run_here(todo: list[tuple[PlannedRun, Action]], options: BenchOptions) -> list[Outcome]:
    """One run after another in this process; each failure is tried once more."""
    import torch

    from suite.job import engine

    if options.threads is not None:
        torch.set_num_threads(options.threads)
    outcomes: list[Outcome] = []
    for number, (run, _) in enumerate(todo, 1):
        for attempt in (1, 2):
            action = refresh(run, options)  # a fresh look: another bench may have done it
            if action.kind in ("done", "busy"):
                outcomes.append(Outcome(run, "already finished" if action.kind == "done"
                                        else "busy", action.run_id, action.detail))
                break
            say(f"[{number}/{len(todo)}] {run.row}, seed {run.seed}: "
                + (f"resuming run {action.run_id}" if action.kind == "resume" else "starting")
                + (" (second attempt)" if attempt == 2 else ""))
            try:
                if action.kind == "resume":
                    assert action.run_id is not None
                    result = engine.resume_run(action.run_id, options.uri, options.show_progress,
                                               options.checkpoints)
                else:
                    result = engine.run(run.config, options.uri, options.show_progress,
                                        tags=run.tags(), checkpoints=options.checkpoints)
            except RunClaimed as claimed:  # another bench has it (suite.job.claims)
                outcomes.append(Outcome(run, "busy", None, str(claimed)))
                say(f"  {run.row}, seed {run.seed}: busy ({claimed})")
                break
            except KeyboardInterrupt:
                outcomes.append(Outcome(run, "interrupted"))
                outcomes += [Outcome(r, "pending") for r, _ in todo[number:]]
                say(f"interrupted: {run.row}, seed {run.seed} stopped (KILLED, checkpoint "
                    f"kept); run the same command again to resume")
                raise Interrupted(outcomes) from None
            except Exception as exc:  # noqa: BLE001 - a failed run must not end the plan
                line = f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"
                say(f"  {run.row}, seed {run.seed} failed (attempt {attempt} of 2): {line}")
                if attempt == 2:
                    outcomes.append(Outcome(run, "failed", None, line))
                continue
            status: Status = "resumed" if action.kind == "resume" else "finished"
            outcomes.append(Outcome(run, status, result.run_id))
            say(f"  {run.row}, seed {run.seed}: {status}, run {result.run_id}, test t2v R-Sum "
                f"{result.test['t2v_rsum']:.1f}")
            break
    return outcomes


def summary_lines(outcomes: list[Outcome]) -> list[str]:
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[outcome.status] = counts.get(outcome.status, 0) + 1
    lines = ["; ".join(f"{n} {status}" for status, n in counts.items())]
    for outcome in outcomes:
        if outcome.status in ("failed", "busy"):
            lines.append(f"  {outcome.run.row}, seed {outcome.run.seed}: {outcome.status}"
                         + (f" ({outcome.error})" if outcome.error else "")
                         + (f", run {outcome.run_id}" if outcome.run_id else ""))
    return lines


# -- dry run: what would run, and what it would cost -----------------------------------------


def default_workdir(plan: Plan) -> Path:
    return Path(os.environ.get("SUITE_BENCH_DIR", "bench")) / plan.name


def select_rows(plan: Plan, runs: list[PlannedRun], rows: list[str]) -> list[PlannedRun]:
    """The runs of the rows labelled ``rows`` (all runs when ``rows`` is empty)."""
    if not rows:
        return runs
    labels = {r.base_row for r in runs} | {r.row for r in runs}
    unknown = sorted(set(rows) - labels)
    if unknown:
        raise UserError(f"--row {unknown[0]!r} is not a row of plan {plan.name}; rows: "
                        f"{', '.join(r.label for r in plan.rows)}")
    return [r for r in runs if r.base_row in rows or r.row in rows]


LAUNCHERS = ("local", "slurm")
SUBMITIT_CLUSTERS = ("slurm", "local")


def check_launcher(launcher: str, submitit_cluster: str) -> None:
    """Refuse an unknown launcher, or a bench started under torchrun (it starts runs itself)."""
    from suite.job.distributed import from_environment

    if from_environment().enabled:
        raise UserError("suite bench starts its runs itself; start it without torchrun "
                        "(--launcher slurm --gpus-per-job N runs torchrun inside each job)")
    if launcher not in LAUNCHERS:
        raise UserError(f"unknown --launcher {launcher!r}; valid: {', '.join(LAUNCHERS)}")
    if submitit_cluster not in SUBMITIT_CLUSTERS:
        raise UserError(f"unknown --submitit-cluster {submitit_cluster!r}; valid: "
                        f"{', '.join(SUBMITIT_CLUSTERS)}")


def slurm_settings(plan: Plan, overrides: dict[str, object]) -> SlurmSettings:
    """The plan's ``[slurm]`` table with the command line's options on top (None: not given);
    a bad value is one line."""
    return slurm_settings_of(overrides, plan.slurm)


def slurm_settings_of(overrides: dict[str, object], base: SlurmSettings | None = None
                      ) -> SlurmSettings:
    """``base`` (the defaults when None) with ``overrides`` on top; a bad value is one line."""
    from pydantic import ValidationError

    from suite.job.config import first_problem

    try:
        return (base or SlurmSettings()).merged(overrides)
    except ValidationError as exc:
        raise UserError(f"SLURM settings: {first_problem(exc)}") from None
