"""Benchmark plans: a table or an ablation of the paper as one TOML file, expanded into runs.

A plan (``plans/NAME.toml``, shipped in the package as ``suite/plans``; the folder can be moved
with ``SUITE_PLANS_DIR``, as ``SUITE_DATASETS_DIR`` moves the dataset cards) names its rows
(label, method, dataset, backbone, preset, ``set`` overrides, optional grid axes), the seeds,
the MLflow experiment its runs go to, a baseline row for deltas, optional reference numbers per
row with their source, and for ablations the knob columns a report shows.

:func:`load_plan` parses a file into typed, frozen objects (pydantic, like the run config) and
refuses every mistake in one line: an unknown key, method, dataset or preset, a duplicate
label, a baseline or knob that is not there. :func:`expand` resolves each row, grid point and
seed into a :class:`PlannedRun`: a full :class:`~suite.job.config.RunConfig` built exactly as
``suite run`` builds one (card, preset, then overrides), checked as a run checks it, with the
digest that tells a later invocation whether it would compute the same thing.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from suite.errors import UserError
from suite.job.config import (
    NOT_COMPUTING,
    RunConfig,
    apply_overrides,
    base_for,
    first_problem,
    method_config,
    trains,
)
from suite.orchestrate.slurm import SlurmSettings

#: What a planned run's digest leaves out, so that a run finished with other values of these
#: still counts as done: the settings that do not change what a run computes
#: (suite.job.config.NOT_COMPUTING), less ``trust_torchscript``, which digests have always
#: included (leaving it out would change every digest and run finished plans again).
DIGEST_IGNORES = tuple(k for k in NOT_COMPUTING if k != "trust_torchscript")
#: Reference figures a row may carry, by the report column they sit beside.
REFERENCE_FIELDS = {"R1": "R@1", "R5": "R@5", "R10": "R@10", "MdR": "MdR", "MnR": "MnR",
                    "rsum": "R-Sum", "gflops": "GFLOPs (MACs)"}
#: What a plan may not set per row: the plan owns the seed and the experiment.
PLAN_OWNED = ("train.seed", "experiment")
#: The most runs a plan expands into unless it says otherwise (``max_runs = N`` in the plan,
#: ``suite bench --max-runs N``): every run is a resolved config held in memory and a line of
#: the dry run, so a grid written by mistake (10 axes of 10 values) is refused at once instead
#: of expanding for minutes. The paper's tables and ablations are a few hundred runs at most.
DEFAULT_MAX_RUNS = 10_000
#: The largest plan file read: plans are a few KB of TOML; this is far beyond any real one.
MAX_PLAN_BYTES = 1 << 20


def plans_dir() -> Path:
    """Where the plans live: ``suite/plans``, in the repository a link to the top-level
    ``plans/``, in an installed wheel copies of them; ``SUITE_PLANS_DIR`` moves it."""
    env = os.environ.get("SUITE_PLANS_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "plans"


def available() -> list[str]:
    return sorted(p.stem for p in plans_dir().glob("*.toml"))


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """TOML's dotted keys nest (``method.rank = 4`` is ``{"method": {"rank": 4}}``): back to
    the dotted form ``--set`` uses."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


class Reference(_Strict):
    """Published figures of a row (text-to-video on the test split) and where they are."""

    source: str = Field(min_length=1)
    R1: float | None = None
    R5: float | None = None
    R10: float | None = None
    MdR: float | None = None
    MnR: float | None = None
    rsum: float | None = None
    gflops: float | None = None

    def figures(self) -> dict[str, float]:
        """Report column -> published figure, for the figures given."""
        return {label: getattr(self, name) for name, label in REFERENCE_FIELDS.items()
                if getattr(self, name) is not None}


class Settings(_Strict):
    """What rows share (``[defaults]``) or a row sets: dataset, backbone, preset, overrides."""

    dataset: str | None = None
    backbone: str | None = None
    preset: str | None = None
    settings: dict[str, Any] = Field(default_factory=dict, alias="set")
    # Overrides that apply only when the run's backbone is the key: schedule knobs name layers,
    # and the tiny CLIP of the embedded default has 6 blocks where ViT-B/32 has 12.
    backbone_settings: dict[str, dict[str, Any]] = Field(default_factory=dict,
                                                          alias="backbone_set")

    @field_validator("settings", mode="before")
    @classmethod
    def _dotted(cls, value: Any) -> Any:
        return _flatten(value) if isinstance(value, dict) else value

    @field_validator("backbone_settings", mode="before")
    @classmethod
    def _dotted_per_backbone(cls, value: Any) -> Any:
        if not isinstance(value, dict):
            return value
        return {k: _flatten(v) if isinstance(v, dict) else v for k, v in value.items()}


class Row(Settings):
    """One row of the plan's table: a method and its settings, optionally over grid axes."""

    label: str = Field(min_length=1)
    method: str = Field(min_length=1)
    grid: dict[str, list[Any]] = Field(default_factory=dict)
    reference: Reference | None = None
    note: str = ""  # how the row is built (shown by --dry-run)

    @field_validator("grid", mode="before")
    @classmethod
    def _dotted_grid(cls, value: Any) -> Any:
        return _flatten(value) if isinstance(value, dict) else value

    @field_validator("grid")
    @classmethod
    def _non_empty_axes(cls, value: dict[str, list[Any]]) -> dict[str, list[Any]]:
        for key, values in value.items():
            if not values:
                raise ValueError(f"grid axis {key!r} has no values")
        return value


class Plan(_Strict):
    """A parsed plan file."""

    # Letters, digits, '.', '_', '-': the name goes into MLflow tags and search filters.
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9._-]+$")
    description: str = Field(min_length=1)
    experiment: str = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    kind: Literal["comparison", "ablation"] = "comparison"
    knobs: list[str] = Field(default_factory=list)  # ablation columns: dotted settings
    baseline: str | None = None  # label of the row deltas are taken against
    defaults: Settings = Field(default_factory=Settings)
    rows: list[Row] = Field(min_length=1)
    slurm: SlurmSettings = Field(default_factory=SlurmSettings)  # sbatch options of its jobs
    # The most runs it may expand into (default DEFAULT_MAX_RUNS; suite bench --max-runs wins).
    max_runs: int | None = Field(None, ge=1)
    path: str = ""  # where it was read from (set by load_plan)

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: list[int]) -> list[int]:
        if any(s < 0 for s in value) or len(set(value)) != len(value):
            raise ValueError(f"seeds must be distinct integers >= 0, got {value}")
        return value

    def row(self, label: str) -> Row:
        for row in self.rows:
            if row.label == label:
                return row
        raise KeyError(label)


def find_plan(name_or_path: str) -> Path:
    """A plan file by path (``plans/x.toml``) or by name (``x``, looked up in plans_dir)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or os.sep in name_or_path:
        if not path.is_file():
            raise UserError(f"plan file {path} does not exist")
        return path
    found = plans_dir() / f"{name_or_path}.toml"
    if not found.is_file():
        raise UserError(f"unknown plan {name_or_path!r}; valid: {', '.join(available())} "
                        f"(or a path to a .toml file)")
    return found


def load_plan(name_or_path: str) -> Plan:
    """Read and check a plan; every mistake is a one-line UserError naming the file."""
    path = find_plan(name_or_path)
    raw = _read_toml(path)
    raw.setdefault("name", path.stem)
    try:
        plan = Plan.model_validate({**raw, "path": str(path)})
    except ValidationError as exc:
        raise UserError(f"plan {path}: {_problem(exc)}") from None
    check_plan(plan)
    return plan


def _read_toml(path: Path) -> dict[str, Any]:
    """The TOML table of plan file ``path``: at most MAX_PLAN_BYTES of UTF-8 text (as TOML
    requires); anything else is one UserError naming the file and where it goes wrong."""
    with path.open("rb") as file:
        data = file.read(MAX_PLAN_BYTES + 1)
    if len(data) > MAX_PLAN_BYTES:
        raise UserError(f"plan {path} is larger than {MAX_PLAN_BYTES >> 20} MiB: not a plan "
                        f"file (plans are a few KB of TOML); check the path")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise UserError(f"plan {path}: not UTF-8 text (byte 0x{data[exc.start]:02x} on line "
                        f"{line}); TOML files are UTF-8: save it as UTF-8") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"plan {path}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses into nested arrays and tables
        raise UserError(f"plan {path}: not valid TOML: arrays or tables nested too "
                        f"deeply") from None


def _problem(exc: ValidationError) -> str:
    """``rows.2.methd: is not a setting`` -> ``rows[2].methd: unknown key``."""
    line = first_problem(exc)
    return (line.replace(": is not a setting", ": unknown key")
            .replace("Value error, ", ""))


def check_plan(plan: Plan) -> None:
    """What the types cannot say: names that must exist, labels that must be unique."""
    from methods.registry import discover
    from suite.data.cards import available as datasets
    from suite.job.presets import names as presets

    where = f"plan {plan.path or plan.name}"
    labels = [row.label for row in plan.rows]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise UserError(f"{where}: duplicate row label {duplicates[0]!r}")
    if plan.baseline is not None and plan.baseline not in labels:
        raise UserError(f"{where}: baseline {plan.baseline!r} is not a row; rows: "
                        f"{', '.join(labels)}")
    for owner, settings in [("defaults", plan.defaults), *((f"row {r.label!r}", r)
                                                          for r in plan.rows)]:
        if settings.dataset is not None and settings.dataset not in datasets():
            raise UserError(f"{where}: {owner}: unknown dataset {settings.dataset!r}; valid: "
                            f"{', '.join(datasets())}")
        if settings.preset is not None and settings.preset not in presets():
            raise UserError(f"{where}: {owner}: unknown preset {settings.preset!r}; valid: "
                            f"{', '.join(presets())}")
        sets = [settings.settings, *settings.backbone_settings.values()]
        if isinstance(settings, Row):
            sets.append(settings.grid)
        for values in sets:
            owned = sorted(set(values) & set(PLAN_OWNED))
            if owned:
                raise UserError(f"{where}: {owner}: {owned[0]} is the plan's (seeds = [...], "
                                f"experiment = ...); remove it from the row")
    for row in plan.rows:
        if row.method not in discover():
            raise UserError(f"{where}: row {row.label!r}: unknown method {row.method!r}; "
                            f"valid: {', '.join(discover())}")
    for knob in plan.knobs:
        if "." not in knob and knob not in RunConfig.model_fields:
            raise UserError(f"{where}: knob column {knob!r} is not a setting (e.g. "
                            f"method.ratio_cross, frames)")


@dataclass(frozen=True)
class PlannedRun:
    """One run of a plan: which row (and grid point) and seed, its resolved config and digest."""

    plan: str
    row: str  # the row's label, with the grid point when the row has axes
    base_row: str  # the row's label as written
    seed: int
    config: RunConfig
    digest: str
    explicit: dict[str, Any] = field(default_factory=dict)  # the row's own overrides

    def tags(self) -> dict[str, str]:
        return {"plan": self.plan, "plan_row": self.row, "config_digest": self.digest}


def row_points(row: Row) -> int:
    """How many grid points ``row`` has (1 without axes), counted without making them."""
    return math.prod(len(values) for values in row.grid.values())


def count_runs(plan: Plan) -> int:
    """How many runs :func:`expand` makes of ``plan``: every grid point of every row, once per
    seed; counted from the sizes alone, so it costs nothing however large the grids."""
    return len(plan.seeds) * sum(row_points(row) for row in plan.rows)


def check_size(plan: Plan, max_runs: int | None = None) -> int:
    """``count_runs(plan)``, refused when above the limit (``max_runs``, else the plan's
    ``max_runs``, else DEFAULT_MAX_RUNS) in one line that names the largest row and the way to
    raise the limit."""
    limit = max_runs or plan.max_runs or DEFAULT_MAX_RUNS
    total = count_runs(plan)
    if total > limit:
        largest = max(plan.rows, key=row_points)
        raise UserError(
            f"plan {plan.name} expands to {total:,} runs ({len(plan.seeds)} seed(s); row "
            f"{largest.label!r} alone has {row_points(largest):,} grid points), more than "
            f"the limit of {limit:,}: shrink its grids, or raise the limit with suite bench "
            f"--max-runs N (or max_runs = N in the plan)")
    return total


def grid_points(row: Row) -> list[dict[str, Any]]:
    """Every combination of the row's grid axes (in the order written); ``[{}]`` without."""
    if not row.grid:
        return [{}]
    keys = list(row.grid)
    return [dict(zip(keys, values, strict=True))
            for values in itertools.product(*(row.grid[k] for k in keys))]


def point_label(row: Row, point: dict[str, Any]) -> str:
    if not point:
        return row.label
    return f"{row.label} [" + ", ".join(f"{k}={_show(v)}" for k, v in point.items()) + "]"


def _show(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_show(v) for v in value) + "]"
    return str(value)


def experiment_of(plan: Plan, dataset: str | None = None) -> str:
    """The plan's experiment; runs moved to another dataset (``--dataset``) get their own."""
    return plan.experiment if dataset is None else f"{plan.experiment}-{dataset}"


def expand(plan: Plan, overrides: dict[str, Any] | None = None, dataset: str | None = None,
           check: Literal["full", "config", "none"] = "full",
           max_runs: int | None = None) -> list[PlannedRun]:
    """Every run of the plan, row by row (grid points in order), seed by seed.

    ``overrides`` (``suite bench --set``) apply to every run, last. ``dataset`` runs every row on
    that card with its own defaults instead (its backbone, frames, training settings; the plan's
    dataset, backbone and preset are dropped; the rows' ``set``, their ``backbone_set`` for the
    card's backbone and their grids still apply): the way to run a paper plan on the embedded
    default. ``check="full"`` checks each distinct config as ``suite run`` would (method
    options, schedule, backbone, and the data files, once per dataset and data settings), so a
    bad plan stops before anything runs; ``"config"`` leaves the data files out (a dry run).
    A plan of more runs than ``max_runs`` (see :func:`check_size`) is refused before any run
    is made.
    """
    check_size(plan, max_runs)
    overrides = dict(overrides or {})
    owned = sorted(set(overrides) & set(PLAN_OWNED))
    if owned:
        raise UserError(f"--set {owned[0]} is the plan's; the plan sets seeds and experiment")
    if dataset is not None:
        from suite.data.cards import available as datasets

        if dataset not in datasets():
            raise UserError(f"unknown dataset {dataset!r}; valid: {', '.join(datasets())}")
    runs: list[PlannedRun] = []
    checked: set[str] = set()
    files_checked: set[str] = set()
    for row in plan.rows:
        for point in grid_points(row):
            label = point_label(row, point)
            config, explicit = _resolve(plan, row, point, overrides, dataset, label,
                                        check_axes=check != "none")
            for seed in plan.seeds:
                seeded = apply_overrides(config, {"train.seed": seed,
                                                  "experiment": experiment_of(plan, dataset)})
                digest = seeded.digest(ignore=DIGEST_IGNORES)
                key = config.digest(ignore=(*DIGEST_IGNORES, "train.seed"))
                if check != "none" and key not in checked:
                    data = json.dumps([seeded.dataset, seeded.data_root, seeded.select_on,
                                       seeded.data_options, trains(seeded)], sort_keys=True,
                                      default=str)
                    try:
                        check_config(seeded, check == "full" and data not in files_checked)
                    except UserError as exc:
                        raise UserError(f"plan {plan.name}, row {label!r}: {exc}") from None
                    checked.add(key)
                    files_checked.add(data)
                runs.append(PlannedRun(plan.name, label, row.label, seed, seeded, digest,
                                       explicit))
    return runs


def check_config(config: RunConfig, files: bool) -> None:
    """``suite run``'s checks of ``config`` (suite.job.engine.check), with the data files' probe
    only when ``files`` (it reads every video of a real dataset: once per dataset is enough)."""
    from suite.job import engine

    if files:
        engine.check(config)
    else:
        engine.check_method(config)


def _resolve(plan: Plan, row: Row, point: dict[str, Any], overrides: dict[str, Any],
             dataset: str | None, label: str, check_axes: bool = True
             ) -> tuple[RunConfig, dict[str, Any]]:
    """The row's config before the seed: card and preset, then defaults, row, per-backbone
    settings, grid point and the invocation's overrides (grid axes checked against the method's
    options when ``check_axes``; that imports the method)."""
    where = f"plan {plan.name}, row {label!r}"
    if dataset is None:
        chosen = row.dataset or plan.defaults.dataset or "synthetic"
        preset = row.preset or plan.defaults.preset
        backbone = row.backbone or plan.defaults.backbone
    else:
        chosen, preset, backbone = dataset, None, None
    explicit: dict[str, Any] = {}
    if backbone is not None:
        explicit["backbone"] = backbone
    explicit.update(plan.defaults.settings)
    explicit.update(row.settings)
    if str(explicit.get("pretrained", "")).lower() == "none":  # TOML has no null
        explicit["pretrained"] = None
    try:
        config = base_for(row.method, chosen, preset)
        resolved_backbone = explicit.get("backbone", config.backbone)
        explicit.update(plan.defaults.backbone_settings.get(resolved_backbone, {}))
        explicit.update(row.backbone_settings.get(resolved_backbone, {}))
        config = apply_overrides(config, explicit)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    for key in point if check_axes else ():
        _check_axis(where, key, config)
    try:
        config = apply_overrides(config, {**point, **overrides})
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    return config, {**explicit, **point}


def _check_axis(where: str, key: str, config: RunConfig) -> None:
    """A grid axis must be a setting: a run-config field or an option of the row's method."""
    section, _, name = key.partition(".")
    if section == "method" and name:
        from methods.registry import get

        options = set(get(config.method).config_cls.__dataclass_fields__)
        if name not in options:
            raise UserError(f"{where}: grid axis {key!r} is not a setting of method "
                            f"{config.method!r}; its options: {', '.join(sorted(options))}")
        return
    try:
        apply_overrides(config, {key: _current(config, key)})
    except UserError:
        raise UserError(f"{where}: grid axis {key!r} is not a setting") from None


def _current(config: RunConfig, key: str) -> Any:
    flat = config.flat()
    if key in flat:
        return flat[key]
    if key.startswith("data."):  # a loader option not set yet: validated when it is set
        return None
    raise UserError(f"grid axis {key!r} is not a setting")


def knob_value(run: PlannedRun, knob: str) -> str:
    """What an ablation column shows for a run: the row's own value of the knob, else the
    method's resolved default, else ``-`` (the knob does not apply to the row's method)."""
    if knob in run.explicit:
        return _show(run.explicit[knob])
    flat = run.config.flat()
    if knob in flat and not knob.startswith("method."):
        return _show(flat[knob])
    section, _, name = knob.partition(".")
    if section == "method":
        resolved = method_config(run.config)
        value = getattr(resolved, name, "-")
        if value is None:
            from methods.tempme import ScheduleConfig, schedule_of

            if isinstance(resolved, ScheduleConfig):  # TempMe: the backbone's default schedule
                schedule = schedule_of(resolved, run.config.backbone, run.config.frames)
                value = schedule.as_dict().get(name)
        return "default" if value is None else _show(value)
    return "-"
