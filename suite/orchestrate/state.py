"""What the shared store already holds for a plan's runs, and what a bench does with each:
the action types every launcher shares (done, busy, resume, new), how a run ended, and the
options of a bench. See ``suite.orchestrate.bench`` for the whole procedure."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from suite.common.progress import console
from suite.orchestrate.plans import PlannedRun
from suite.orchestrate.slurm import SlurmSettings

Kind = Literal["done", "busy", "resume", "new"]


@dataclass(frozen=True)
class Action:
    """What the bench does with a planned run: ``done`` and ``busy`` are skipped, ``resume``
    continues ``run_id`` from its checkpoint, ``new`` starts a run."""

    kind: Kind
    run_id: str | None = None
    detail: str = ""


Status = Literal["already finished", "finished", "resumed", "busy", "failed", "interrupted",
                 "pending"]


@dataclass
class Outcome:
    """How a planned run ended in this invocation."""

    run: PlannedRun
    status: Status
    run_id: str | None = None
    error: str = ""


@dataclass
class BenchOptions:
    """Where runs go and how they are launched."""

    uri: str
    checkpoints: Path
    workdir: Path  # configs, logs and job folders of the bench
    jobs: int = 1
    threads: int | None = None  # per job; None: cores // jobs (one job: unchanged)
    launcher: Literal["local", "slurm"] = "local"
    slurm: SlurmSettings = field(default_factory=SlurmSettings)
    show_progress: bool = True


def say(text: str) -> None:
    console.print(text, markup=False, highlight=False, soft_wrap=True)


# -- what the store already holds ---------------------------------------------------------


def existing_runs(uri: str, experiment: str, plan: str) -> dict[str, list[Any]]:
    """The plan's MLflow runs in ``experiment`` by config digest, newest first."""
    from mlflow.tracking import MlflowClient

    from suite.job import tracking

    tracking._quiet()  # no migration chatter when the store is new
    with tracking.first_use(uri):
        client = MlflowClient(uri)
        found = client.get_experiment_by_name(experiment)
    if found is None:
        return {}
    out: dict[str, list[Any]] = {}
    token = None
    while True:
        page = client.search_runs([found.experiment_id], f"tags.plan = '{plan}'",
                                  max_results=1000, page_token=token,
                                  order_by=["attributes.start_time DESC"])
        for run in page:
            digest = run.data.tags.get("config_digest")
            if digest:
                out.setdefault(digest, []).append(run)
        token = page.token
        if not token:
            return out


def decide(runs: list[Any], checkpoints: Path) -> Action:
    """The action for a planned run whose earlier MLflow runs (newest first) are ``runs``."""
    from suite.job import checkpoint, ownership

    for run in runs:
        if run.info.status == "FINISHED":
            return Action("done", run.info.run_id)
    if not runs:
        return Action("new")
    latest = runs[0]
    run_id = latest.info.run_id
    owner = ownership.Owner.from_tags(latest.data.tags)
    if latest.info.status == "RUNNING" and owner is not None and not owner.gone():
        return Action("busy", run_id, f"trained by {owner.describe()}")
    if checkpoint.checkpoint_path(checkpoints, run_id).is_file():
        return Action("resume", run_id, f"{latest.info.status.lower()}, checkpoint kept")
    return Action("new", None, f"earlier run {run_id} {latest.info.status.lower()} before its "
                               f"first checkpoint")


def plan_actions(runs: list[PlannedRun], options: BenchOptions) -> list[Action]:
    by_digest: dict[str, list[Any]] = {}
    for experiment in sorted({r.config.experiment for r in runs}):
        by_digest.update(existing_runs(options.uri, experiment, runs[0].plan))
    return [decide(by_digest.get(r.digest, []), options.checkpoints) for r in runs]


def mark_left_running(uri: str, runs: list[Any]) -> None:
    """A RUNNING run whose owner is gone and that left no checkpoint is started anew; mark the
    old one abandoned (FAILED, ``abandoned=true``) so that no report waits for it."""
    from suite.job import ownership

    for run in runs:
        if run.info.status == "RUNNING":
            owner = ownership.Owner.from_tags(run.data.tags)
            if owner is None or owner.gone():
                ownership.mark_abandoned(uri, run.info.run_id)


def refresh(run: PlannedRun, options: BenchOptions) -> Action:
    """The action for ``run`` now (after a failed attempt: resume it if it left a checkpoint)."""
    found = existing_runs(options.uri, run.config.experiment, run.plan).get(run.digest, [])
    action = decide(found, options.checkpoints)
    if action.kind == "new":
        mark_left_running(options.uri, found)
    return action


class Interrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM stopped the bench; ``outcomes`` says how far it got."""

    def __init__(self, outcomes: list[Outcome]) -> None:
        super().__init__()
        self.outcomes = outcomes
