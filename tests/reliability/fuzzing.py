"""What the fuzz tests share: the invariant every command keeps on any input, the value
strategies, and the Hypothesis settings of the fast and the long part.

The invariant (docs/reliability.md): a command exits 0, or prints one line and exits 2 (bad
input) or 1 (a fault of the machine); never a traceback, never a run left RUNNING, nothing
written outside the run's own folders.

The fast part (in the default test run) is derandomised: it sees the same cases each time, so
a red run is reproducible. The long part (marker ``slow``) draws new cases on every run, except
under CI (``CI`` set), where it too is fixed: a change lands or not on its own merits, and new
cases are for a developer's long runs (docs/reliability.md).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st

from methods import registry
from suite.job import config as cfg

# No "explain" phase: it reruns a failing case hundreds of times to say which parts matter.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
QUIET = [HealthCheck.too_slow, HealthCheck.data_too_large]
FAST = settings(phases=PHASES, derandomize=True, database=None, deadline=None,
                max_examples=int(os.environ.get("SUITE_FUZZ_EXAMPLES", "60")),
                suppress_health_check=QUIET)
LONG = settings(phases=PHASES, derandomize="CI" in os.environ, database=None, deadline=None,
                max_examples=int(os.environ.get("SUITE_FUZZ_LONG_EXAMPLES", "400")),
                suppress_health_check=QUIET)

# Text a user can type on a command line: any character but NUL and lone surrogates.
TYPED = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")

# A place in a file, as a fraction of its length.
POSITION = st.floats(0, 1, allow_subnormal=False)

# Values as a user would write them after ``--set key=``.
SET_VALUES = st.one_of(
    st.integers(-10**15, 10**15).map(str),
    st.floats(allow_nan=True, allow_infinity=True, allow_subnormal=False).map(repr),
    st.sampled_from(["true", "false", "null", "none", "[]", "[1, 2]", "{}", '{"a": 1}', "1e999",
                     "-0", "nan", "inf", "0", "1", "-1", "2", "0.5", "''", '""', " ", "=",
                     "tempme", "fp32", "bf16", "val", "test", "last", "skip", "fail"]),
    st.text(TYPED, max_size=30),
)


METHODS = sorted(registry.discover())


def known_defaults() -> dict[str, object]:
    """Every setting a user can name (the run's, each method's options, the data options) and
    a default value of it."""
    from suite.data.real import DataOptions
    from suite.data.synthetic import SyntheticConfig

    defaults: dict[str, object] = {}
    for method in METHODS:
        base = cfg.base_for(method, "synthetic")
        defaults.update(base.flat())
        defaults.update({f"method.{k}": v
                         for k, v in dataclasses.asdict(cfg.method_config(base)).items()})
    for options in (SyntheticConfig(), DataOptions()):
        defaults.update({f"data.{k}": v for k, v in dataclasses.asdict(options).items()})
    return dict(sorted(defaults.items()))


DEFAULTS = known_defaults()
KNOWN_KEYS = list(DEFAULTS)


def near(value: object) -> st.SearchStrategy[str]:
    """Values of the kind a setting's default has, around it: what a user would try."""
    if isinstance(value, bool):
        return st.sampled_from(["true", "false"])
    if isinstance(value, int):
        return st.integers(0, min(max(2 * value, 4), 64)).map(str)  # runs stay short
    if isinstance(value, float):
        return st.floats(0, max(2 * value, 1.0), allow_subnormal=False).map(repr)
    if isinstance(value, list | tuple):
        return st.lists(st.integers(0, 6), max_size=4).map(str)
    return st.sampled_from([str(value), "none", "x"])


PLAUSIBLE_SET = st.sampled_from(KNOWN_KEYS).flatmap(
    lambda key: near(DEFAULTS[key]).map(lambda value: (key, value)))

# Values of another kind than any setting's default, or negative: a whole run may try them
# (a valid but large value, a million training videos, would make a valid and very long run).
OTHER_KIND_VALUES = st.one_of(
    st.integers(-10**15, -1).map(str),
    st.sampled_from(["null", "[]", "{}", '{"a": 1}', "nan", "-inf", "''", " ", "="]),
    st.text(TYPED, max_size=30).filter(lambda text: not text.strip().isdigit()),
)


def one_line_failure(output: str, exit_code: int) -> str | None:
    """What breaks the invariant in a command's output and exit code; None when it holds."""
    if "Traceback" in output:
        return "a traceback"
    if exit_code == 0:
        return None
    if exit_code not in (1, 2):
        return f"exit code {exit_code}"
    lines = [line for line in output.strip().splitlines() if line.strip()]
    if len(lines) != 1 or not lines[0].startswith("error: "):
        return f"{len(lines)} lines instead of one 'error: ...' line"
    return None


def files_under(folder: Path) -> set[str]:
    """Every file and folder below ``folder``, as paths relative to it."""
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def fast_and_long(check, **strategies):
    """Two tests of one property: the fast one (default run, fixed cases) and the long one
    (marker ``slow``, new cases each run)."""
    import pytest
    from hypothesis import given

    return (FAST(given(**strategies)(check)),
            pytest.mark.slow(LONG(given(**strategies)(check))))
