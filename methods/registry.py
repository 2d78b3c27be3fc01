"""Method registry: one module per method in this package, found by name and imported lazily.

A method module defines ``METHOD = Method(...)``. ``discover()`` lists the module names without
importing them (``--help`` and error messages stay fast); ``get(name)`` imports one module.
``register`` refuses duplicate names, so a plugin cannot silently replace a built-in method.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import methods as _package
from suite.common.typed import typed
from suite.errors import DuplicateMethodError, UnknownMethodError

_NOT_METHODS = {"registry", "base", "common"}


@dataclass(frozen=True)
class Method:
    """A registered method: what it is, its knobs, and how to build it.

    ``config_cls`` is a dataclass of the method's knobs with defaults; ``defaults_for`` gives
    per-backbone overrides; ``validate(config, backbone, frames)`` refuses bad combinations
    before any model is built; ``search_space(trial)`` draws knobs for an Optuna sweep;
    ``build(clip, config, frames, backbone)`` turns an open_clip model into a retrieval model.
    ``learning_rates`` names the ``train.*`` rates that reach the trainable parameters (``lr``
    for new ones, ``lr_pretrained`` for backbone weights): the ones a sweep searches.

    Hooks of the retrieval model ``build`` returns (``methods.base.RetrievalModel``; override
    them in a subclass, the defaults do nothing): ``extra_loss()`` returns a term the engine adds
    to the contrastive loss of every training step, after the forward (DiffRate's FLOPs penalty
    while it searches); ``search_phase()`` returns a ``SearchPhase`` that the engine runs on the
    training split before training, with its own optimiser, epochs and per-epoch hook, whose
    ``finish()`` fixes what was learned and returns figures logged as ``search/*`` (DiffRate's
    rate search; not run when a run resumes); ``named_parameter_groups()`` routes trainable
    parameters to ``train.lr`` (new) or ``train.lr_pretrained`` (backbone); ``trainable_state()``
    and ``load_trainable_state()`` carry what a checkpoint must keep (DiffRate adds its
    schedule); ``fold()`` readies inference (LoRA folded; DGL computes its prompts once).
    ``accepts_padding``: whether the video tower keeps padding frames (a frame mask with zeros)
    out of everything that reaches the embedding; a method that cannot is refused with a data
    policy that pads (``padding_refusal``) and raises if padding reaches it anyway.
    """

    name: str
    description: str
    reference: str
    config_cls: Any  # a dataclass type
    build: Callable[..., Any]
    search_space: Callable[[Any], dict[str, Any]] = field(default=lambda trial: {})
    defaults_for: Callable[[str, int], dict[str, Any]] = field(default=lambda backbone, frames: {})
    validate: Callable[[Any, str, int], None] = field(default=lambda config, backbone, frames: None)
    learning_rates: tuple[str, ...] = ("lr",)
    accepts_padding: bool = True

    def make_config(self, backbone: str, frames: int, overrides: dict[str, Any]) -> Any:
        """The method's config: dataclass defaults, then backbone defaults, then ``overrides``."""
        known = set(self.config_cls.__dataclass_fields__)
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ValueError(
                f"method {self.name!r} has no option {', '.join(unknown)}; "
                f"valid: {', '.join(sorted(known)) or '(none)'}"
            )
        values = {**self.defaults_for(backbone, frames), **overrides}
        config = typed("method.", self.config_cls, values)
        self.validate(config, backbone, frames)
        return config


# Data policies that pad short clips with masked black frames (suite.data.video).
PADDING_POLICIES = ("clip4clip",)


def padding_refusal(name: str, policy: Any) -> str | None:
    """Why method ``name`` cannot run under data policy ``policy`` (it pads short clips and the
    method cannot keep padding out), or None."""
    if policy in PADDING_POLICIES and not get(name).accepts_padding:
        return (f"method {name!r} cannot take padded clips (data.policy={policy} pads short "
                f"videos with masked frames); use data.policy=tempme, which repeats frames")
    return None


_registry: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to the registry; a second method with the same name is an error."""
    existing = _registry.get(method.name)
    if existing is not None and existing is not method:
        raise DuplicateMethodError(f"method {method.name!r} is already registered")
    _registry[method.name] = method
    return method


def _module_name(method_name: str) -> str:
    return method_name.replace("-", "_")


def discover() -> list[str]:
    """Names of the methods in this package, without importing their modules."""
    names = {m.name.replace("_", "-") for m in pkgutil.iter_modules(_package.__path__)}
    return sorted((names - _NOT_METHODS) | set(_registry))


def get(name: str) -> Method:
    """The method called ``name``, importing its module on first use."""
    if name not in _registry:
        if name not in discover():
            raise UnknownMethodError(f"unknown method {name!r}; valid: {', '.join(discover())}")
        module = importlib.import_module(f"methods.{_module_name(name)}")
        method = getattr(module, "METHOD", None)
        if not isinstance(method, Method) or method.name != name:
            raise UnknownMethodError(
                f"module methods.{_module_name(name)} defines no METHOD {name!r}")
        register(method)
    return _registry[name]


def all_methods() -> list[Method]:
    """Every method, importing all modules (for ``suite list methods`` and ``--all``)."""
    return [get(name) for name in discover()]
