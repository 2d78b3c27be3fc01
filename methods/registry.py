"""Method registry: built-in methods in this package, plug-ins through entry points, both
found without importing them and imported lazily.

Where methods come from:

- Built-ins: a module of this package (``methods/NAME.py``) that assigns ``METHOD = Method(...)``
  at its top level. Which modules those are is read from their source with ``ast``; nothing
  is imported (``base`` and ``registry`` define no ``METHOD``, so they are no methods).
- Plug-ins: other distributions declare entry points in the group ``tvr_suite.methods``, the
  entry-point name being the method name and the value ``"pkg.module:METHOD"`` (or
  ``"pkg.module"``, which means its ``METHOD``). ``pip install`` such a package and
  ``suite run --method NAME`` finds it.
- ``register(method)`` adds a method at run time.

A name given by two sources (a plug-in and a built-in, two plug-ins) is a
``DuplicateMethodError`` naming both, raised when that name is asked for (``get``) or when all
are listed (``discover``, ``describe``, ``all_methods``). A plug-in that fails to import is a
one-line ``MethodError`` naming its distribution and the error, raised when it is imported
(``get``, ``all_methods``; ``describe`` only when its module cannot be found or read).

``describe()`` answers ``suite list methods`` fast: it reads ``name``, ``description`` and
``reference`` from each module's source with ``ast`` (the string literals given to the
``Method(...)`` assigned to ``METHOD``: built-ins from the files of this package, plug-ins
from ``importlib.util.find_spec(module).origin``), without importing torch or the method.
Only a method whose values are not string literals is imported to read them.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import pkgutil
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from typing import Any

import methods as _package
from suite.common.typed import typed
from suite.errors import DuplicateMethodError, MethodError, UnknownMethodError

ENTRY_POINT_GROUP = "tvr_suite.methods"
_FIELDS = ("name", "description", "reference")


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
    search_space: Callable[..., dict[str, Any]] = field(default=lambda trial: {})
    defaults_for: Callable[[str, int], dict[str, Any]] = field(default=lambda backbone, frames: {})
    validate: Callable[[Any, str, int], None] = field(default=lambda config, backbone, frames: None)
    learning_rates: tuple[str, ...] = ("lr",)
    accepts_padding: bool = True

    def draw(self, trial: Any, backbone: str, frames: int) -> dict[str, Any]:
        """``search_space(trial)``, or ``search_space(trial, backbone, frames)`` when the
        method's space depends on them (TempMe's ClipMe layers and groups)."""
        import inspect

        if len(inspect.signature(self.search_space).parameters) >= 3:
            return self.search_space(trial, backbone, frames)
        return self.search_space(trial)

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


@dataclass(frozen=True)
class MethodInfo:
    """What ``suite list methods`` shows of a method; ``source`` says where it comes from."""

    name: str
    description: str
    reference: str
    source: str


@dataclass(frozen=True)
class _Source:
    """Where method ``name`` is declared: attribute ``attr`` of ``module``, from plug-in
    ``distribution`` ("name version"), or a built-in when that is None."""

    name: str
    module: str
    attr: str = "METHOD"
    distribution: str | None = None

    def __str__(self) -> str:
        if self.distribution is None:
            return f"built-in module {self.module}"
        return f"plug-in {self.module}:{self.attr} of distribution {self.distribution}"

    def origin(self) -> str | None:
        """The module's source file, found without importing the module itself (a plug-in's
        parent package is imported); None if it cannot be found."""
        try:
            spec = importlib.util.find_spec(self.module)
        except Exception:  # a parent package that fails to import: load() reports it
            return None
        return spec.origin if spec is not None else None

    def load(self) -> Method:
        """Import the module and return its method; a plug-in that fails is one MethodError."""
        try:
            module = importlib.import_module(self.module)
        except Exception as exc:
            if self.distribution is None:
                raise  # a broken built-in is a bug: keep the traceback
            raise MethodError(f"method {self.name!r} (distribution {self.distribution}) "
                              f"failed to import: {_one_line(exc)}") from None
        method = getattr(module, self.attr, None)
        if not isinstance(method, Method) or method.name != self.name:
            raise MethodError(f"{self} is no Method named {self.name!r}")
        return method


def _one_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


def _literal(node: ast.expr) -> str | None:
    """The value of a string literal (implicit or ``+`` concatenation included), else None."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _literal(node.left), _literal(node.right)
        return None if left is None or right is None else left + right
    return None


def _method_call(value: ast.expr) -> ast.Call | None:
    """The ``Method(...)`` call in the value assigned to ``METHOD`` (also inside a wrapper such
    as ``register(Method(...))``)."""
    for node in ast.walk(value):
        if isinstance(node, ast.Call):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if called == "Method":
                return node
    return None


@lru_cache(maxsize=256)
def _parse(path: str, mtime_ns: int) -> dict[str, str | None] | None:
    """Read the file's top-level ``METHOD = ...``: None if it has none, else ``name``,
    ``description`` and ``reference`` where they are string literals (None where not)."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if "METHOD" not in text:
        return None
    for statement in ast.parse(text, filename=path).body:
        if isinstance(statement, ast.Assign):
            targets, value = statement.targets, statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            targets, value = [statement.target], statement.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == "METHOD" for t in targets):
            fields: dict[str, str | None] = dict.fromkeys(_FIELDS)
            call = _method_call(value)
            if call is not None:
                bound = [*zip(_FIELDS, call.args, strict=False),
                         *((k.arg, k.value) for k in call.keywords if k.arg in _FIELDS)]
                fields.update({key: _literal(node) for key, node in bound})
            return fields
    return None


def _declaration(path: str) -> dict[str, str | None] | None:
    """``_parse`` of the file at ``path``, cached while the file is unchanged."""
    return _parse(path, os.stat(path).st_mtime_ns)


def _builtins() -> list[_Source]:
    """The modules of this package that assign ``METHOD``, read with ``ast``, not imported."""
    found = []
    for info in pkgutil.iter_modules(_package.__path__):
        module = f"{_package.__name__}.{info.name}"
        origin = _Source(info.name, module).origin()
        declared = _declaration(origin) if origin and origin.endswith(".py") else None
        if declared is not None:
            found.append(_Source(declared["name"] or info.name.replace("_", "-"), module))
    return found


def _plugins() -> list[_Source]:
    """The entry points of group ``tvr_suite.methods`` of every installed distribution."""
    found = []
    for entry in metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = entry.dist
        label = f"{dist.name} {dist.version}" if dist is not None else "(unknown)"
        found.append(_Source(entry.name, entry.module, entry.attr or "METHOD", label))
    return found


def _sources() -> dict[str, list[_Source]]:
    """Every declared method name and the sources that declare it (two or more: a clash)."""
    table: dict[str, list[_Source]] = {}
    for source in (*_builtins(), *_plugins()):
        table.setdefault(source.name, []).append(source)
    return table


def _single(name: str, sources: list[_Source]) -> _Source:
    """The one source of ``name``; two are a DuplicateMethodError naming both."""
    if len(sources) > 1:
        raise DuplicateMethodError(f"method {name!r} is declared twice, by {sources[0]} and by "
                                   f"{sources[1]}; uninstall one")
    return sources[0]


def register(method: Method) -> Method:
    """Add ``method`` to the registry; a second method with the same name (registered, or
    declared by another built-in module or plug-in) is an error."""
    existing = _registry.get(method.name)
    if existing is method:
        return method
    declared = _sources().get(method.name, [])
    module = getattr(method.build, "__module__", None)
    if declared and all(source.module != module for source in declared):
        raise DuplicateMethodError(f"method {method.name!r} is already declared by "
                                   f"{declared[0]}")
    if existing is not None:
        raise DuplicateMethodError(f"method {method.name!r} is already registered")
    _registry[method.name] = method
    return method


def discover() -> list[str]:
    """Names of every method (built-in, plug-in, registered), without importing any."""
    table = _sources()
    for name, sources in table.items():
        _single(name, sources)
    return sorted(set(table) | set(_registry))


def get(name: str) -> Method:
    """The method called ``name``, importing its module on first use."""
    if name not in _registry:
        table = _sources()
        if name not in table:
            valid = ", ".join(sorted(set(table) | set(_registry)))
            raise UnknownMethodError(f"unknown method {name!r}; valid: {valid}")
        method = _single(name, table[name]).load()
        _registry.setdefault(name, method)  # the module may have registered itself
    return _registry[name]


def all_methods() -> list[Method]:
    """Every method, importing all modules (``suite profile --all``)."""
    return [get(name) for name in discover()]


def describe() -> list[MethodInfo]:
    """Name, description, reference and source of every method, sorted by name, read from the
    modules' source (see the module docstring): no torch, no method imported unless its
    values are not string literals."""
    infos = {}
    for name, sources in _sources().items():
        source = _single(name, sources)
        infos[name] = _info(source)
    for name, method in _registry.items():
        infos.setdefault(name, MethodInfo(name, method.description, method.reference,
                                          "registered at run time"))
    return [infos[name] for name in sorted(infos)]


def _info(source: _Source) -> MethodInfo:
    """``source``'s listing, from its file's literals or, failing that, by importing it."""
    origin = source.origin()
    fields: dict[str, str | None] = {}
    if origin is not None and origin.endswith(".py"):
        with suppress(OSError, SyntaxError, UnicodeDecodeError):  # get() below says what
            fields = _declaration(origin) or {}
    description, reference = fields.get("description"), fields.get("reference")
    if fields.get("name") != source.name or description is None or reference is None:
        method = get(source.name)
        description, reference = method.description, method.reference
    return MethodInfo(source.name, description, reference, str(source))
