"""The fully resolved configuration of one run, and how it is built from defaults and overrides.

Precedence, lowest first: protocol defaults (the dataclass defaults below), the dataset card,
a replayed config file (``--config``), command-line flags, ``--set key=value``. The resolved
config is logged to MLflow and replays with ``suite run --config FILE``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from suite.errors import UserError


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, per protocol.md (TempMe's protocol)."""

    epochs: int = 5
    batch_size: int = 128
    lr: float = 6e-4  # LoRA, clip position embeddings and other new parameters
    lr_pretrained: float = 1e-5  # backbone weights, when a method trains them
    weight_decay: float = 0.2
    warmup: float = 0.1  # fraction of steps
    grad_clip: float = 1.0
    seed: int = 42
    num_workers: int = 0
    eval_batch_size: int = 64
    precision: str = "auto"  # fp16 autocast on CUDA, fp32 on CPU; or fp32, fp16, bf16


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what a run computes."""

    method: str
    dataset: str = "synthetic"
    backbone: str = "tiny-clip"
    pretrained: str | None = "synthetic"
    frames: int = 12
    words: int = 32
    data_root: str | None = None
    select_on: str = "val"  # "val" (the suite's default) or "test" (the papers' practice)
    on_bad_video: str = "fail"  # "fail": stop on a missing/undecodable video; "skip": count it
    device: str = "auto"
    experiment: str = "tvr-suite"
    train: TrainConfig = field(default_factory=TrainConfig)
    method_options: dict[str, Any] = field(default_factory=dict)
    data_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def flat(self) -> dict[str, Any]:
        """Dotted keys, for MLflow params."""
        out: dict[str, Any] = {}
        for key, value in self.to_dict().items():
            if isinstance(value, dict):
                prefix = {"train": "train", "method_options": "method", "data_options": "data"}[key]
                out.update({f"{prefix}.{k}": v for k, v in value.items()})
            else:
                out[key] = value
        return out

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")


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
        if not sep or not key:
            raise UserError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


_TOP = {f.name for f in fields(RunConfig)} - {"train", "method_options", "data_options"}
_TRAIN = {f.name for f in fields(TrainConfig)}


def apply_overrides(config: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """Apply dotted overrides: ``train.X``, ``method.X``, ``data.X`` or a top-level field."""
    top: dict[str, Any] = {}
    train: dict[str, Any] = {}
    method = dict(config.method_options)
    data = dict(config.data_options)
    for key, value in overrides.items():
        section, _, name = key.partition(".")
        if not name and key in _TOP:
            top[key] = value
        elif section == "train" and name in _TRAIN:
            train[name] = value
        elif section == "method" and name:
            method[name] = value
        elif section == "data" and name:
            data[name] = value
        else:
            raise UserError(
                f"unknown setting {key!r}; valid: {', '.join(sorted(_TOP))}, "
                f"train.{{{','.join(sorted(_TRAIN))}}}, method.NAME, data.NAME"
            )
    return replace(config, **top, train=replace(config.train, **train),
                   method_options=method, data_options=data)


def from_dict(raw: dict[str, Any]) -> RunConfig:
    """A config from its JSON form (a file logged by an earlier run)."""
    raw = dict(raw)
    train = TrainConfig(**raw.pop("train", {}))
    unknown = sorted(set(raw) - {f.name for f in fields(RunConfig)})
    if unknown:
        raise UserError(f"config has unknown keys {', '.join(unknown)}")
    return RunConfig(**raw, train=train)


def load_file(path: Path) -> RunConfig:
    """Read a config written by ``RunConfig.save`` (the ``config.json`` artifact of a run)."""
    if not path.is_file():
        raise UserError(f"config file {path} does not exist")
    try:
        return from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise UserError(f"config file {path} is not a run config: {exc}") from None


def base_for(method: str, dataset: str) -> RunConfig:
    """Protocol defaults with the dataset card's defaults applied."""
    from suite.data.cards import load_card

    card = load_card(dataset)
    defaults = {f"train.{k}": v for k, v in card.train.items()}
    config = apply_overrides(RunConfig(method=method), defaults)
    return replace(config, dataset=dataset, backbone=card.backbone, pretrained=card.pretrained,
                   frames=card.frames, words=card.words)
