"""The fully resolved configuration of one run, typed and range-checked, and how it is built.

Precedence, lowest first: protocol defaults (the field defaults below), the dataset card, a
preset (``--preset``, suite.job.presets), a replayed config file (``--config``), command-line flags,
``--set key=value``. Every value is checked (type and range, by pydantic) when the config is
built, before any run is opened or file written; a bad one is a one-line ``UserError``. The
resolved config is logged to MLflow and replays with ``suite run --config FILE``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from suite.errors import UserError
from suite.job import presets

Precision = Literal["auto", "fp32", "fp16", "bf16"]
Optimizer = Literal["adamw", "tempme-adamw", "bertadam"]
SelectOn = Literal["val", "test", "last"]

#: The sections of a run config: the dotted prefix a setting takes (``--set method.rank=4``)
#: -> the field that holds the section.
SECTIONS = {"train": "train", "method": "method_options", "data": "data_options"}
_PREFIXES = {field: prefix for prefix, field in SECTIONS.items()}

#: Settings that do not change what a run computes (where it runs and logs, how fast it reads
#: and evaluates, whether a TorchScript file may be loaded): runs that differ only in these are
#: the same computation. Plan digests (suite.orchestrate.plans) and report groups
#: (reports.runs) leave them out.
NOT_COMPUTING = ("experiment", "device", "data_root", "train.num_workers",
                 "train.eval_batch_size", "trust_torchscript", "train.memory_check")


class _Strict(BaseModel):
    """Frozen, no unknown keys, no silent coercion ("abc" is not a number, 2.5 not an int)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class TrainConfig(_Strict):
    """Optimisation, per protocol.md (TempMe's protocol), and the reference-practice options
    that presets set (suite.job.presets)."""

    epochs: int = Field(5, ge=0)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(6e-4, gt=0)  # LoRA, clip position embeddings and other new parameters
    lr_pretrained: float = Field(1e-5, gt=0)  # backbone weights, when a method trains them
    weight_decay: float = Field(0.2, ge=0)
    warmup: float = Field(0.1, ge=0, lt=1)  # fraction of the steps
    grad_clip: float = Field(1.0, gt=0)  # global gradient-norm clip
    seed: int = Field(42, ge=0, lt=2**32)
    num_workers: int = Field(0, ge=0)
    eval_batch_size: int = Field(64, ge=1)
    precision: Precision = "auto"  # fp16 on CUDA; CPU: fp32, bf16 evaluation if much faster
    # torch's AdamW (default); TempMe's own AdamW (tvr/models/optimization_adamw.py); or
    # CLIP4Clip's BertAdam (modules/optimization.py): see suite.job.optim.
    optimizer: Optimizer = "adamw"
    # Which parameters weight decay spares: "1d" (biases, norms, class embeddings), "bias"
    # (names containing "bias", CLIP4Clip) or "none" (the official TempMe decays everything).
    no_decay: Literal["1d", "bias", "none"] = "1d"
    # The gradient actually applied is the true gradient of the global-batch loss divided by
    # this, whatever the number of processes: the official TempMe and CLIP4Clip runs (4 GPUs,
    # an all-gather whose backward keeps only the local slice, DDP averaging) train with 4.
    grad_divisor: float = Field(1.0, gt=0)
    select_metric: Literal["t2v_rsum", "t2v_R1"] = "t2v_rsum"
    select_ties: Literal["earlier", "later"] = "earlier"  # which evaluation a tie keeps
    # Also evaluate the selection split every N steps (and after the first step, as the
    # official TempMe does); 0: after every epoch only.
    eval_steps: int = Field(0, ge=0)
    # Refuse, before anything runs, a run whose estimated peak memory exceeds what the
    # machine has available (suite.job.resources); false: run anyway.
    memory_check: bool = True


class RunConfig(_Strict):
    """Everything that decides what a run computes."""

    method: str = Field(min_length=1)
    dataset: str = Field("synthetic", min_length=1)
    backbone: str = Field("tiny-clip", min_length=1)
    pretrained: str | None = "synthetic"
    # A local --pretrained TorchScript archive runs code when loaded: only when asked for.
    trust_torchscript: bool = False
    frames: int = Field(12, ge=1)
    words: int = Field(32, ge=2)  # start and end tokens take two
    data_root: str | None = None
    # "val" (the suite's default), "last" (train on the whole split, keep the final epoch) or
    # "test" (the papers' practice, tagged)
    select_on: SelectOn = "val"
    on_bad_video: Literal["fail", "skip"] = "fail"
    device: str = Field("auto", min_length=1)
    experiment: str = Field("tvr-suite", min_length=1)
    preset: str | None = None  # the reference practice applied (suite.job.presets), if any
    train: TrainConfig = Field(default_factory=TrainConfig)
    method_options: dict[str, Any] = Field(default_factory=dict)
    data_options: dict[str, Any] = Field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump()

    def flat(self) -> dict[str, Any]:
        """Dotted keys, for MLflow params."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                out.update({f"{_PREFIXES[key]}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out

    def digest(self, ignore: tuple[str, ...] = ()) -> str:
        """A stable hash of what the run computes (dotted keys in ``ignore`` left out), so that
        two invocations can tell whether they would run the same thing."""
        flat = {k: v for k, v in self.flat().items() if k not in ignore}
        text = json.dumps(flat, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def save(self, path: Path) -> None:
        from suite.common.files import write_atomic

        write_atomic(path, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


def first_problem(exc: ValidationError, prefix: str = "") -> str:
    """One line naming the first bad setting, what it got and what is valid."""
    error = exc.errors()[0]
    key = ".".join(_PREFIXES.get(str(p), str(p)) for p in error["loc"])
    got = error.get("input")
    text = json.dumps(got) if _jsonable(got) else repr(got)
    shown = f" (got {text})" if "input" in error else ""
    message = error["msg"].replace("Input should be", "must be").replace(
        "String should have at least 1 character", "must not be empty")
    if error["type"] == "extra_forbidden":
        message = "is not a setting"
    return f"{prefix}{key}: {message}{shown}"


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def build(raw: dict[str, Any]) -> RunConfig:
    """A RunConfig from plain values; the first bad one is a one-line UserError."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise UserError(f"bad setting {first_problem(exc)}") from None


def parse_value(text: str) -> Any:
    """``--set`` values: JSON when it parses (numbers, true/false, null, lists), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["train.lr=1e-4", "method.rank=4"]`` -> ``{"train.lr": 1e-4, "method.rank": 4}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


_TOP = set(RunConfig.model_fields) - set(SECTIONS.values())
_TRAIN = set(TrainConfig.model_fields)


def _float_fields(model: type[BaseModel]) -> set[str]:
    return {name for name, field in model.model_fields.items() if field.annotation is float}


def _widen(name: str, value: Any, floats: set[str]) -> Any:
    """JSON gives ``1`` for ``1.0``: a whole number is a valid float setting."""
    if name in floats and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def apply_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Apply dotted overrides: ``train.X``, ``method.X``, ``data.X`` or a top-level field; the
    result is checked as a whole."""
    raw = config.to_dict()
    train_floats = _float_fields(TrainConfig)
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if not name and key in _TOP:
            raw[key] = value
        elif section == "train" and name in _TRAIN:
            raw["train"][name] = _widen(name, value, train_floats)
        elif section in ("method", "data") and name:
            raw[SECTIONS[section]][name] = value
        else:
            raise UserError(
                f"unknown setting {key!r}; valid: {', '.join(sorted(_TOP))}, "
                f"train.{{{','.join(sorted(_TRAIN))}}}, method.NAME, data.NAME")
    return build(raw)


def from_dict(raw: dict[str, Any]) -> RunConfig:
    """A config from its JSON form (a file logged by an earlier run)."""
    if not isinstance(raw, dict):
        raise UserError("a run config must be a JSON object")
    return build(raw)


def load_file(path: Path) -> RunConfig:
    """Read a config written by ``RunConfig.save`` (the ``config.json`` artifact of a run)."""
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"config file {path} is not JSON: {exc}") from None
    try:
        return from_dict(raw)
    except UserError as exc:
        raise UserError(f"config file {path}: {exc}") from None


def base_for(method: str, dataset: str, preset: str | None = None) -> RunConfig:
    """Protocol defaults, then the dataset card's defaults, then a preset's settings."""
    from suite.data.cards import load_card

    card = load_card(dataset)
    defaults: dict[str, Any] = {f"train.{k}": v for k, v in card.train.items()}
    defaults.update(dataset=dataset, backbone=card.backbone, pretrained=card.pretrained,
                    frames=card.frames, words=card.words)
    config = apply_overrides(build({"method": method}), defaults)
    if preset is not None:
        config = apply_preset(config, preset)
    return config


def apply_preset(config: Any, name: str) -> Any:
    """``config`` with the preset's settings, tagged with its name."""
    from suite.data.cards import load_card

    preset = presets.get(name)
    reads_videos = load_card(config.dataset).loader != "synthetic"
    video = preset.video_settings if reads_videos else {}
    return apply_overrides(config, {**preset.settings, **video, "preset": name})


def method_config(config: RunConfig) -> Any:
    """The run's method config (its knobs resolved for the run's backbone and frames); an
    unknown method or backbone and a bad option are one-line UserErrors. A job resolves it once
    (``suite.job.engine.check``) and builds its model from it."""
    from suite.models.method import resolve_method_config

    return resolve_method_config(config.method, config.backbone, config.frames,
                                 config.method_options)


def trains(config: RunConfig) -> bool:
    """Whether the run trains: its method has parameters to train (``Method.learning_rates``
    names their rates) and ``train.epochs > 0``. It decides whether a run reads its training
    split, which files its check probes and what a plan's dry run counts."""
    from methods.registry import get

    return bool(get(config.method).learning_rates) and config.train.epochs > 0
