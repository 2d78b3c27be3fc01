"""What a benchmark plan expects of its report, as plain values (:class:`PlanSpec`), made from
the plan file by :func:`plan_spec` (suite.orchestrate.plans): its rows, the config digest and
settings of every run, the knob values and (on the plan's own dataset) the published figures."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class PlanRow:
    """One row as the plan defines it; ``settings``: the params its runs log (as MLflow holds
    them, the settings of ``reports.runs.not_setting`` left out)."""

    label: str
    digests: tuple[str, ...]  # one per seed
    dataset: str
    backbone: str
    knobs: dict[str, str] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)  # column label -> figure
    source: str = ""
    settings: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class PlanSpec:
    """A plan for its report, as ``suite bench NAME [--dataset D] [--set k=v ...]`` ran it
    (``dataset``, ``overrides``: the values as typed); ``home``: the plan's own setting
    (dataset, backbone, preset) when those options move it; ``base_experiment``: the plan's
    experiment without ``--dataset``."""

    name: str
    description: str
    experiment: str
    kind: str  # "comparison" or "ablation"
    baseline: str | None
    knobs: tuple[str, ...]
    rows: tuple[PlanRow, ...]
    seeds: tuple[int, ...] = ()
    dataset: str | None = None
    overrides: tuple[tuple[str, str], ...] = ()
    home: str = ""
    base_experiment: str = ""

    @property
    def moved(self) -> str:
        """The options that moved the plan off its own setting ("" when none)."""
        return options(self.dataset, dict(self.overrides))

    def command(self, overrides: dict[str, str] | None = None, dataset: str | None = "") -> str:
        """The ``suite report`` command of this plan with other ``--set`` options or another
        ``--dataset`` (None: none; "": this spec's)."""
        chosen = self.dataset if dataset == "" else dataset
        given = options(chosen, dict(self.overrides) if overrides is None else overrides)
        return f"suite report --plan {self.name} {given}".strip()


def options(dataset: str | None, overrides: dict[str, str]) -> str:
    """``--dataset D --set k=v ...`` as typed on a command line."""
    given = ([f"--dataset {dataset}"] if dataset is not None else []) + [
        f"--set {shlex.quote(f'{k}={v}')}" for k, v in overrides.items()]
    return " ".join(given)


def logged(value: Any) -> str:
    """A setting's value as MLflow holds it (suite.job.tracking.log_params)."""
    return "None" if value is None else str(value)


def plan_spec(name: str, dataset: str | None = None,
              overrides: dict[str, Any] | None = None) -> PlanSpec:
    """What plan ``name`` expects, run by ``suite bench NAME [--dataset D] [--set ...]``."""
    from reports.runs import not_setting
    from suite.orchestrate.plans import expand, experiment_of, knob_value, load_plan

    loaded = load_plan(name)
    runs = expand(loaded, dict(overrides or {}), dataset, check="none")
    groups: dict[str, list] = {}
    for run in runs:
        groups.setdefault(run.row, []).append(run)
    ignored = not_setting()
    rows = []
    for label, group in groups.items():
        first = group[0]
        reference = loaded.row(first.base_row).reference
        on_paper = reference is not None and dataset is None
        rows.append(PlanRow(
            label, tuple(r.digest for r in group), first.config.dataset, first.config.backbone,
            {k: knob_value(first, k) for k in loaded.knobs},
            reference.figures() if on_paper and reference is not None else {},
            reference.source if on_paper and reference is not None else "",
            {k: logged(v) for k, v in first.config.flat().items() if k not in ignored}))
    home = ""
    if dataset is not None or overrides:
        configs = [r.config for r in expand(loaded, {}, None, check="none")]
        presets = sorted({c.preset for c in configs if c.preset})
        home = ", ".join([*dict.fromkeys(c.dataset for c in configs),
                          *dict.fromkeys(c.backbone for c in configs),
                          *(f"preset {p}" for p in presets)])
    return PlanSpec(loaded.name, loaded.description, experiment_of(loaded, dataset),
                    loaded.kind, loaded.baseline, tuple(loaded.knobs), tuple(rows),
                    tuple(loaded.seeds), dataset,
                    tuple((k, logged(v)) for k, v in (overrides or {}).items()), home,
                    loaded.experiment)
