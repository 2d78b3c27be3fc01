"""Hyper-parameter sweeps: an Optuna study whose trials are suite runs.

Each trial draws the method's knobs (``Method.search_space``) and the learning rates that reach
its trainable parameters (``Method.learning_rates``: ``train.lr`` and/or ``train.lr_pretrained``,
log-uniform over a tenth to ten times the base config's), runs ``suite.job.engine.run`` and reports
the validation text-to-video R-Sum of the selected epoch; the test split never steers a sweep.
A trial that raises is marked FAIL and the sweep goes on.

Studies live in an Optuna storage, so an interrupted sweep resumes under the same study name,
and several workers (``suite sweep`` started more than once) can share a study, as Optuna
recommends: a journal file (default ``optuna.journal`` here) for processes on one machine, a
database URL (``postgresql://...``, ``sqlite:///...``) for several machines. Each trial's draw
is seeded by the sweep's seed and the trial's number, which the storage hands out once, so
workers draw different trials. A pruner (median or Hyperband) may stop a trial after an epoch
on the per-epoch validation R-Sum: the trial is PRUNED in Optuna and its MLflow run ends KILLED
with the tag ``pruned=true``.

Several objectives (``--objective r_sum --objective gflops``) make a multi-objective study
(NSGA-II by default, multi-objective TPE with ``--sampler tpe``) whose summary is its Pareto
front; accuracy objectives are read on validation (the selected epoch), the others from the
run's logged metrics. A budget (``--budget "gflops<=X"``) counts each trial's multiply-adds
before training (random weights, no data): a trial over it is marked FAIL with the user attrs
``over_budget`` (its GFLOPs) and ``error``, and never trains (no MLflow run).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from suite.common import locks
from suite.common.progress import console
from suite.errors import UserError
from suite.job import engine, ownership, tracking
from suite.job.config import RunConfig, TrainConfig, apply_overrides, base_for

DEFAULT_STORAGE = "optuna.journal"
OBJECTIVE = "val/t2v_rsum"
PRUNERS = ("none", "median", "hyperband")
SAMPLERS = ("nsga2", "tpe")
#: Short objective names: the MLflow metric and its default direction.
OBJECTIVES = {
    "r_sum": ("val/t2v_rsum", "maximize"), "rsum": ("val/t2v_rsum", "maximize"),
    "r1": ("val/t2v_R1", "maximize"), "r5": ("val/t2v_R5", "maximize"),
    "r10": ("val/t2v_R10", "maximize"),
    "gflops": ("cost/video_gmacs", "minimize"), "text_gflops": ("cost/text_gmacs", "minimize"),
    "params": ("cost/params_trainable", "minimize"),
    "videos_per_second": ("cost/videos_per_second", "maximize"),
    "seconds_per_step": ("cost/seconds_per_step", "minimize"),
}
#: Budget names that are counted without data or training: the ``Counts`` field.
COUNTED = {"gflops": "video_gmacs", "text_gflops": "text_gmacs"}


@dataclass(frozen=True)
class Objective:
    """One objective of a study: an MLflow metric and whether to maximise or minimise it."""

    metric: str
    direction: str  # "maximize" or "minimize"

    @classmethod
    def parse(cls, text: str) -> Objective:
        """``NAME[:max|min]``: a short name (``OBJECTIVES``) or any logged metric name;
        accuracy comes from validation, never test."""
        name, _, way = text.partition(":")
        metric, direction = OBJECTIVES.get(name, (name, None))
        if metric.startswith("test/"):
            raise UserError(f"--objective {text!r} reads the test split; a sweep scores on "
                            f"validation (val/...)")
        if way:
            direction = {"max": "maximize", "min": "minimize"}.get(way)
            if direction is None:
                raise UserError(f"--objective {text!r}: the direction is max or min")
        if direction is None:
            raise UserError(f"--objective {text!r} has no default direction; give "
                            f"{name}:max or {name}:min (known: {', '.join(OBJECTIVES)})")
        return cls(metric, direction)

    def value(self, selection: dict[str, float], logged: dict[str, float]) -> float:
        """The trial's value: a ``val/`` metric of the selected epoch, else the logged one."""
        if self.metric.startswith("val/"):
            return selection[self.metric.removeprefix("val/")]
        if self.metric not in logged:
            raise UserError(f"the run logged no metric {self.metric!r}")
        return logged[self.metric]


DEFAULT_OBJECTIVES = (Objective(OBJECTIVE, "maximize"),)


@dataclass(frozen=True)
class Budget:
    """``gflops<=X``: a cost counted before training; a trial over it does not run."""

    name: str
    limit: float
    text: str

    @classmethod
    def parse(cls, text: str) -> Budget:
        found = re.fullmatch(r"\s*(\w+)\s*<=\s*([0-9.eE+-]+)\s*", text)
        if found is None or found[1] not in COUNTED:
            raise UserError(f"--budget {text!r}: give NAME<=NUMBER with NAME one of "
                            f"{', '.join(COUNTED)} (counted without training)")
        try:
            return cls(found[1], float(found[2]), text.strip())
        except ValueError:
            raise UserError(f"--budget {text!r}: {found[2]!r} is not a number") from None


class OverBudget(Exception):
    """A trial whose counted cost is over the budget: refused before training."""

    def __init__(self, budget: Budget, value: float) -> None:
        super().__init__(f"{budget.name} {value:.4g} over the budget {budget.text}")
        self.value = value


@dataclass
class SweepSummary:
    """The study after a sweep; ``best_*`` cover every trial of the study, resumed ones too."""

    study: str
    storage: str
    objective: str
    trials: int  # all trials in the study
    complete: int
    failed: int
    complete_now: int  # completed by this invocation
    pruned: int = 0
    pruned_now: int = 0
    best_trial: int | None = None
    best_value: float | None = None
    best_params: dict[str, Any] | None = None
    best_mlflow_run_id: str | None = None
    objectives: list[str] = field(default_factory=list)  # "metric:direction", in order
    over_budget: int = 0  # trials refused by --budget, never trained
    front: list[dict[str, Any]] = field(default_factory=list)  # Pareto front (several objectives)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        pruned = f"{self.pruned} pruned, " if self.pruned else ""
        refused = f", {self.over_budget} of them over budget" if self.over_budget else ""
        head = (f"study {self.study}: {self.trials} trials ({self.complete} complete, "
                f"{pruned}{self.failed} failed{refused}) in {self.storage}")
        if self.front:
            rows = [f"Pareto front ({len(self.front)} trials; {', '.join(self.objectives)}):"]
            rows += [f"  trial {t['trial']}: {', '.join(f'{v:.4g}' for v in t['values'])} "
                     f"({show_params(t['params'])}), MLflow run {t['mlflow_run_id']}"
                     for t in self.front]
            return [head, *rows]
        if self.best_trial is None:
            return [head]
        params = show_params(self.best_params or {})
        return [head, f"best trial {self.best_trial}: val t2v R-Sum {self.best_value:.2f} "
                      f"({params}), MLflow run {self.best_mlflow_run_id}"]


def show_params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in params.items())


def say(text: str) -> None:
    """One progress line on stderr, printed as it is (no markup, no wrapping)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def first_line(exc: BaseException) -> str:
    """The first line of an error message (empty if it has none)."""
    return (str(exc).splitlines() or [""])[0]


def draw(trial: Any, method: Any, train: TrainConfig, backbone: str | None = None,
         frames: int | None = None) -> dict[str, Any]:
    """A trial's overrides: the method's knobs (given ``backbone`` and ``frames``, those that
    depend on them too: TempMe's ClipMe schedule) and its learning rates (log-uniform)."""
    knobs = (method.search_space(trial) if backbone is None or frames is None
             else method.draw(trial, backbone, frames))
    overrides = {f"method.{k}": v for k, v in knobs.items()}
    for name in method.learning_rates:
        base = getattr(train, name)
        overrides[f"train.{name}"] = trial.suggest_float(f"train.{name}", base / 10, base * 10,
                                                         log=True)
    return overrides


def base_config(method: str, dataset: str, overrides: dict[str, Any]) -> RunConfig:
    """The config every trial starts from, checked as ``suite run`` would check it, and
    refused if it selects on test or fixes a setting the sweep searches."""
    from methods.registry import get

    config = apply_overrides(base_for(method, dataset), overrides)
    engine.check(config)
    if config.select_on != "val":
        raise UserError("a sweep selects on validation; drop select_on=test "
                        "(tuning on the test split would report an optimistic test figure)")
    searched = draw(optuna.create_study().ask(), get(method), config.train, config.backbone,
                    config.frames)
    if not searched:
        raise UserError(f"method {method!r} has nothing to search (no knobs, nothing trains); "
                        f"use `suite run`")
    clash = sorted(set(overrides) & set(searched))
    if clash:
        raise UserError(f"--set {', '.join(clash)} is searched by the sweep (searched: "
                        f"{', '.join(sorted(searched))}); drop it, or use `suite run`")
    return config


class Pruned(tracking.EndRun, optuna.TrialPruned):
    """A trial stopped by the pruner: PRUNED in Optuna, its MLflow run KILLED and tagged."""


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """Optuna's pruner ``name`` over the steps 1..``epochs`` (epochs trained): ``median`` with
    Optuna's defaults (no pruning before 5 trials have finished), ``hyperband`` from one
    epoch to all of them, reduction factor 3."""
    if name == "none":
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner()
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(epochs, 1))
    raise UserError(f"unknown --pruner {name!r}; valid: {', '.join(PRUNERS)}")


def sampler_for(seed: int | None, number: int, kind: str = "tpe") -> optuna.samplers.BaseSampler:
    """TPE (``kind="tpe"``, multi-objective TPE for several objectives) or NSGA-II
    (``"nsga2"``) for trial ``number``, seeded by (seed, number): the storage numbers each
    trial once, so concurrent workers draw different trials, and a rerun with the same history
    draws the same. The constant liar keeps TPE away from points that running trials already
    cover."""
    trial_seed = None if seed is None else int(np.random.SeedSequence([seed, number])
                                                .generate_state(1)[0])
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=trial_seed)
    if kind != "tpe":
        raise UserError(f"unknown --sampler {kind!r}; valid: {', '.join(SAMPLERS)}")
    return optuna.samplers.TPESampler(seed=trial_seed, constant_liar=True)


def open_storage(url: str) -> Any:
    """A journal file (a path) or a database (a URL with ``://``); the first use of a SQLite
    database is locked (suite.common.locks), so that two workers may start at once."""
    import sqlalchemy.exc

    try:
        if "://" not in url:
            from optuna.storages.journal import JournalFileBackend, JournalStorage

            return JournalStorage(JournalFileBackend(url))
        lock = locks.sqlite_lock_path(url)
        if lock is None:
            return optuna.storages.RDBStorage(url)
        with locks.held(lock, f"Optuna storage {url}"):
            return optuna.storages.RDBStorage(url)
    except (ImportError, ValueError, OSError, sqlalchemy.exc.SQLAlchemyError) as exc:
        raise UserError(f"cannot open Optuna storage {url!r}: {first_line(exc)}") from None


def open_study(name: str, storage: str, method: str, dataset: str,
               pruner: optuna.pruners.BasePruner | None = None,
               objectives: tuple[Objective, ...] = DEFAULT_OBJECTIVES) -> optuna.Study:
    """Create or resume the study, its objectives named (``metric_names``); a study of
    another method, dataset or objectives is refused."""
    import warnings

    import sqlalchemy.exc

    opened = open_storage(storage)
    try:
        study = optuna.create_study(storage=opened, study_name=name, pruner=pruner,
                                    directions=[o.direction for o in objectives],
                                    load_if_exists=True)
    except (ValueError, sqlalchemy.exc.SQLAlchemyError) as exc:
        raise UserError(f"cannot open Optuna storage {storage!r}: {first_line(exc)}") from None
    made_for = (study.user_attrs.get("method", method), study.user_attrs.get("dataset", dataset))
    directions = [optuna.study.StudyDirection[o.direction.upper()] for o in objectives]
    metrics = [o.metric for o in objectives]
    if study.directions != directions or made_for != (method, dataset) \
            or study.metric_names not in (None, metrics):
        raise UserError(f"study {name!r} in {storage} is not a sweep of {method} on {dataset} "
                        f"for {', '.join(metrics)}; choose another --study")
    if study.metric_names is None:
        with warnings.catch_warnings():  # set_metric_names is experimental in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(metrics)
    study.set_user_attr("method", method)
    study.set_user_attr("dataset", dataset)
    return study


def pruning_reporter(trial: optuna.Trial) -> Any:
    """The engine's per-epoch callback: report the validation R-Sum after ``epochs`` trained
    epochs and stop the run when the study's pruner says so."""

    def report(epoch: int, metrics: dict[str, float]) -> None:
        value, step = metrics["t2v_rsum"], epoch + 1
        trial.report(value, step)
        if trial.should_prune():
            raise Pruned(f"pruned after epoch {step}: val t2v R-Sum {value:.2f}",
                         tags={"pruned": "true", "pruned_after_epoch": str(step)})

    return report


def counted_costs(config: RunConfig) -> Any:
    """The run's model counted on the CPU with random weights, no data (suite.cost)."""
    import torch

    from suite.cost.profiling import build_for_profile, count_costs

    model, image_size, vocab = build_for_profile(config.method, config.backbone, config.frames,
                                                 torch.device("cpu"), config.method_options)
    return count_costs(model.fold(), config.frames, image_size, config.words, vocab)


def run_trial(trial: optuna.Trial, config: RunConfig, method: Any, study: str,
              uri: str | None, objectives: tuple[Objective, ...] = DEFAULT_OBJECTIVES,
              budget: Budget | None = None) -> tuple[list[float], str]:
    """One suite run with the trial's draw; its objective values and MLflow run id. Over the
    ``budget``, :class:`OverBudget` before anything trains. Trials keep no epoch checkpoints:
    a failed trial is not resumed, the sweep goes on. One objective: pruning as configured."""
    config = apply_overrides(config, draw(trial, method, config.train, config.backbone,
                                          config.frames))
    if budget is not None:
        value = getattr(counted_costs(config), COUNTED[budget.name])
        trial.set_user_attr(f"counted_{budget.name}", value)
        if value > budget.limit:
            raise OverBudget(budget, value)
    result = engine.run(config, uri, show_progress=False, checkpoints=None,
                        tags={"sweep": study, "trial": str(trial.number)},
                        on_epoch=pruning_reporter(trial) if len(objectives) == 1 else None,
                        on_open=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id))
    logged: dict[str, float] = {}
    if any(not o.metric.startswith("val/") for o in objectives):
        from mlflow.tracking import MlflowClient

        logged = MlflowClient(tracking.tracking_uri(uri)).get_run(result.run_id).data.metrics
    return [o.value(result.selection, logged) for o in objectives], result.run_id


def run_sweep(method: str, dataset: str, trials: int, overrides: dict[str, Any],
              storage: str | None = None, study_name: str | None = None,
              seed: int | None = 0, uri: str | None = None, pruner: str = "none",
              goal: int | None = None, objectives: tuple[Objective, ...] = DEFAULT_OBJECTIVES,
              sampler: str | None = None, budget: Budget | None = None) -> SweepSummary:
    """Run ``trials`` more trials of the study; user errors are raised before the first.

    ``goal`` (a worker of ``suite sweep --workers N``): instead, run trials until the study
    holds ``goal`` trials that count (:func:`counted`), shared with the other workers: a trial
    that a killed worker left is failed and replaced, and a worker that would go past the goal
    stops. Several ``objectives``: a multi-objective study (``sampler`` ``nsga2`` by default,
    or ``tpe``), no pruning."""
    from methods.registry import get

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if seed is not None and seed < 0:
        raise UserError(f"--seed {seed} is negative; give a seed >= 0")
    kind = check_objectives(objectives, sampler, pruner)
    storage = storage or DEFAULT_STORAGE
    name = study_name or f"{method}-{dataset}"
    config = base_config(method, dataset, overrides)
    study = open_study(name, storage, method, dataset, make_pruner(pruner, config.train.epochs),
                       objectives)
    aims = ", ".join(f"{o.direction[:-3]}ising {o.metric}" for o in objectives)
    limit = f" under {budget.text}" if budget is not None else ""
    say(f"sweep {name}: {trials} trials of {method} on {dataset}, {aims}{limit} ({kind}); "
        f"{len(study.trials)} trials already in {storage}")
    for number in fail_abandoned_trials(study, uri):
        say(f"trial {number} was RUNNING in a worker that is gone: marked failed")
    complete_now = pruned_now = 0
    for trial in (asked(study, trials) if goal is None else asked_until(study, goal, uri=uri)):
        study.sampler = sampler_for(seed, trial.number, kind)  # draws happen at suggest time
        try:
            with worker_heartbeat(trial):
                values, run_id = run_trial(trial, config, get(method), name, uri, objectives,
                                           budget)
        except OverBudget as exc:
            trial.set_user_attr("over_budget", exc.value)
            trial.set_user_attr("error", f"over budget: {exc}")
            study.tell(trial, state=TrialState.FAIL)
            say(f"trial {trial.number} refused, not trained: {exc}")
            continue
        except optuna.TrialPruned as exc:
            study.tell(trial, state=TrialState.PRUNED)
            pruned_now += 1
            say(f"trial {trial.number} {exc}")
            continue
        except Exception as exc:  # one bad trial (or knob combination) must not end the sweep
            line = f"{type(exc).__name__}: {first_line(exc)}"
            trial.set_user_attr("error", line)
            study.tell(trial, state=TrialState.FAIL)
            say(f"trial {trial.number} failed: {line}")
            continue
        except BaseException:  # Ctrl-C: the MLflow run ended KILLED; finished trials stay
            study.tell(trial, state=TrialState.FAIL)
            say(f"interrupted: trial {trial.number} marked failed; rerun with --study {name} "
                f"to resume")
            raise
        trial.set_user_attr("mlflow_run_id", run_id)
        study.tell(trial, values if len(values) > 1 else values[0])
        complete_now += 1
        if len(values) > 1:
            shown = ", ".join(f"{o.metric} {v:.4g}" for o, v in zip(objectives, values,
                                                                     strict=True))
            say(f"trial {trial.number}: {shown}, MLflow run {run_id}; Pareto front so far "
                f"{len(study.best_trials)} trials")
            continue
        best = study.best_trial
        say(f"trial {trial.number}: val t2v R-Sum {values[0]:.2f}, MLflow run {run_id}; "
            f"best so far trial {best.number} ({best.value:.2f})")
    return summarize(study, storage, complete_now, pruned_now)


def check_objectives(objectives: tuple[Objective, ...], sampler: str | None, pruner: str
                     ) -> str:
    """The sampler kind for ``objectives`` (default: TPE for one, NSGA-II for several);
    refuses repeated objectives and pruning of a multi-objective study (Optuna cannot)."""
    metrics = [o.metric for o in objectives]
    if not metrics or len(set(metrics)) != len(metrics):
        raise UserError(f"--objective: give each metric once, got {', '.join(metrics)}")
    if len(metrics) > 1 and pruner != "none":
        raise UserError("--pruner works with one --objective (Optuna prunes single-objective "
                        "studies only)")
    kind = sampler or ("tpe" if len(metrics) == 1 else "nsga2")
    if kind not in SAMPLERS:
        raise UserError(f"unknown --sampler {kind!r}; valid: {', '.join(SAMPLERS)}")
    if len(metrics) == 1 and kind != "tpe":
        raise UserError("--sampler nsga2 needs several --objective (one objective: TPE)")
    return kind


def fail_abandoned_trials(study: optuna.Study, uri: str | None = None) -> list[int]:
    """Mark FAIL the RUNNING trials whose worker is gone (killed outright): on this host its
    process no longer exists; on another, its heartbeat stopped (suite.job.ownership). They
    would stay RUNNING forever; they do not count toward a goal (:func:`counted`). The MLflow
    run of such a trial (user attr ``mlflow_run_id``, recorded as the run opens), still
    RUNNING in the store at ``uri``, ends KILLED with the tags ``abandoned=true`` and
    ``worker_gone`` (the worker, ``pid@host``)."""
    gone = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = ownership.Owner.from_tags(trial.user_attrs.get("worker", {}))
        if worker is not None and worker.gone():
            study.tell(trial.number, state=TrialState.FAIL, skip_if_finished=True)
            gone.append(trial.number)
            run_id = trial.user_attrs.get("mlflow_run_id")
            if run_id:
                ownership.end_left_running(
                    tracking.tracking_uri(uri), run_id, "KILLED",
                    {"abandoned": "true", "worker_gone": worker.tags()["owner"]})
    return gone


def counted(study: optuna.Study) -> int:
    """Trials that count toward a goal: COMPLETE, PRUNED, or FAIL by their own error (a bad
    knob combination); not those whose worker was killed, nor surplus ones."""
    return sum(1 for t in study.get_trials(deepcopy=False)
               if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and "error" in t.user_attrs))


def asked(study: optuna.Study, trials: int) -> Iterator[optuna.Trial]:
    """``trials`` new trials, each recorded with this process as its worker."""
    for _ in range(trials):
        trial = study.ask()
        trial.set_user_attr("worker", ownership.Owner.of_this_process().tags())
        yield trial


def asked_until(study: optuna.Study, goal: int, poll: float = 2.0, uri: str | None = None
                ) -> Iterator[optuna.Trial]:
    """New trials while the study counts fewer than ``goal`` (other workers' live trials
    included); waits while the goal is only reached with running trials, which may still fail.
    A trial asked after the others took the last places is a surplus: FAIL, tag ``surplus``.
    ``uri``: the tracking store where a gone worker's trial runs are ended."""
    import time

    while True:
        for number in fail_abandoned_trials(study, uri):
            say(f"trial {number} was RUNNING in a worker that is gone: marked failed, to be "
                f"replaced")
        done = counted(study)
        running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if done >= goal:
            return
        if done + len(running) >= goal:
            time.sleep(poll)
            continue
        trial = study.ask()
        trial.set_user_attr("worker", ownership.Owner.of_this_process().tags())
        ahead = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                 if t.number < trial.number]
        if counted(study) + len(ahead) >= goal:
            trial.set_user_attr("surplus", True)
            study.tell(trial, state=TrialState.FAIL)
            continue
        yield trial


@contextmanager
def worker_heartbeat(trial: optuna.Trial, interval: float = ownership.HEARTBEAT_SECONDS
                     ) -> Iterator[None]:
    """Refresh the trial's ``worker`` record while it runs, so that a worker on another host
    whose heartbeat stops is known to be gone (suite.job.ownership.Owner.gone)."""
    import threading

    stopped = threading.Event()

    def beat() -> None:
        while not stopped.wait(interval):
            try:
                trial.set_user_attr("worker", ownership.Owner.of_this_process().tags())
            except Exception:  # noqa: BLE001 - a busy storage: the next beat tries again
                continue

    thread = threading.Thread(target=beat, name=f"trial-{trial.number}-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stopped.set()
        thread.join(timeout=10)


def summarize(study: optuna.Study, storage: str, complete_now: int, pruned_now: int = 0
              ) -> SweepSummary:
    """Counts and the best trial of the whole study (its Pareto front: several objectives)."""
    states = [t.state for t in study.trials]
    metrics = study.metric_names or [OBJECTIVE]
    summary = SweepSummary(study.study_name, storage, metrics[0], len(states),
                           states.count(TrialState.COMPLETE), states.count(TrialState.FAIL),
                           complete_now, states.count(TrialState.PRUNED), pruned_now)
    summary.objectives = [f"{m}:{d.name.lower()[:3]}" for m, d in zip(metrics, study.directions,
                                                                      strict=True)]
    summary.over_budget = sum(1 for t in study.trials if "over_budget" in t.user_attrs)
    if summary.complete and len(study.directions) > 1:
        summary.front = [{"trial": t.number, "values": list(t.values), "params": t.params,
                          "mlflow_run_id": t.user_attrs.get("mlflow_run_id")}
                         for t in sorted(study.best_trials, key=lambda t: t.values[-1])]
    elif summary.complete:
        best = study.best_trial
        summary.best_trial, summary.best_value = best.number, best.value
        summary.best_params = best.params
        summary.best_mlflow_run_id = best.user_attrs.get("mlflow_run_id")
    return summary


def run_workers(method: str, dataset: str, trials: int, overrides: dict[str, Any],
                sets: list[str], workers: int, launcher: str, slurm: Any,
                storage: str | None = None, study_name: str | None = None,
                seed: int | None = 0, uri: str | None = None, pruner: str = "none",
                objectives: tuple[Objective, ...] = DEFAULT_OBJECTIVES,
                sampler: str | None = None, budget: Budget | None = None,
                study_options: list[str] | None = None) -> SweepSummary:
    """``suite sweep --workers N``: N workers share the study until it counts ``trials`` more
    trials (suite.orchestrate.workers); the summary of the study after all of them.
    ``study_options``: the --objective, --sampler and --budget options each worker repeats."""
    from pathlib import Path

    from suite.orchestrate import workers as pool

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = pool.absolute_storage(storage or DEFAULT_STORAGE)
    name = study_name or f"{method}-{dataset}"
    check_objectives(objectives, sampler, pruner)
    config = base_config(method, dataset, overrides)
    study = open_study(name, storage, method, dataset, make_pruner(pruner, config.train.epochs),
                       objectives)
    fail_abandoned_trials(study, uri)
    # The tracking store is made here, once: a worker killed while MLflow creates a new
    # store's tables would leave it half made for the others.
    tracking.open_experiment(tracking.tracking_uri(uri), config.experiment)
    before = [t.state for t in study.trials]
    goal = counted(study) + trials
    say(f"sweep {name}: {workers} workers ({launcher}) until the study counts {goal} trials "
        f"({trials} more) of {method} on {dataset}, in {storage}")
    commands = [pool.worker_command(method, dataset, goal, storage, name, seed, pruner, sets,
                                    overrides.get("experiment"), uri, study_options or [])
                for _ in range(workers)]
    folder = Path("sweeps") / name
    if launcher == "slurm":
        codes = pool.run_on_slurm(commands, folder, slurm)
    else:
        codes = pool.run_here(commands, folder)
    say(f"workers ended with exit codes {codes}; their logs are in {folder}")
    study = optuna.load_study(study_name=name, storage=open_storage(storage))
    after = [t.state for t in study.trials]
    return summarize(study, storage,
                     after.count(TrialState.COMPLETE) - before.count(TrialState.COMPLETE),
                     after.count(TrialState.PRUNED) - before.count(TrialState.PRUNED))
