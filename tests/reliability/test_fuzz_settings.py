"""Fuzzing ``suite run --set KEY=VALUE``: any key, any value, any method. The command either
accepts the run (its checks pass; the training itself is left out here, the long part trains)
or refuses it in one line with exit 2, before anything is written."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from fuzzing import (
    KNOWN_KEYS,
    METHODS,
    PLAUSIBLE_SET,
    SET_VALUES,
    TYPED,
    fast_and_long,
    files_under,
    one_line_failure,
)
from hypothesis import event
from hypothesis import strategies as st
from tiny_runs import TINY_DATA
from typer.testing import CliRunner

from suite.cli import app
from suite.job import engine

KEYS = st.one_of(st.sampled_from(KNOWN_KEYS), st.text(TYPED, min_size=1, max_size=20),
                 st.sampled_from(KNOWN_KEYS).map(lambda k: k + ".x"))
SETS = st.lists(st.one_of(PLAUSIBLE_SET, st.tuples(KEYS, SET_VALUES)), min_size=1, max_size=3)


def checked_only(config, *args, **kwargs):
    """``engine.run`` without the training: the checks a run makes before it writes."""
    engine.check(config)
    return engine.RunResult("accepted", {"t2v_R1": 0.0}, None)


def check_any_set_is_accepted_or_refused_in_one_line(method, sets):
    args = [a for key, value in sets for a in ("--set", f"{key}={value}")]
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp)
        patch.setattr(engine, "run", checked_only)
        result = CliRunner().invoke(app, ["run", "--method", method, *TINY_DATA, *args,
                                          "--json"])
        event("accepted" if result.exit_code == 0 else "refused")
        problem = one_line_failure(result.output, result.exit_code)
        assert problem is None, (problem, args, result.output[-2000:])
        assert result.exit_code in (0, 2), result.output
        assert not isinstance(result.exception, Exception) or isinstance(
            result.exception, SystemExit), result.exception
        assert files_under(Path(tmp)) == set(), args
        assert os.getcwd() == tmp


# The property, on fixed cases (default run) and on new cases (slow).
test_fixed_cases, test_new_cases = fast_and_long(
    check_any_set_is_accepted_or_refused_in_one_line,
    method=st.sampled_from(METHODS),
    sets=SETS,
)
