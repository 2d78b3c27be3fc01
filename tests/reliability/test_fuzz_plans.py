"""Fuzzing plan files: a shipped plan altered line by line (a value replaced by any TOML value
or any text, a line dropped or repeated, bytes inserted, the file re-encoded) or given grids of
any size. ``suite bench PLAN --dry-run`` then lists the plan's runs (the cost estimate is left
out here: it is the same for any plan) or refuses it in one line, exit 2."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from fuzzing import POSITION, SET_VALUES, fast_and_long, files_under, one_line_failure
from hypothesis import event
from hypothesis import strategies as st
from typer.testing import CliRunner

import suite.cli.bench
from suite.cli import app
from suite.orchestrate.plans import available, find_plan

PLANS = {name: find_plan(name).read_text(encoding="utf-8") for name in available()}
GRID_KEYS = ["train.seed", "train.lr", "method.rank", "frames", "train.batch_size",
             "method.ratio_cross"]


def toml_value(text: str) -> str:
    """A value as it may stand after ``key = `` in a plan: as typed, or quoted."""
    return text if text and text[0] in "-0123456789[{tfn\"'" else '"' + text.replace(
        "\\", "\\\\").replace('"', '\\"') + '"'


LINE_EDITS = st.one_of(
    st.tuples(st.just("value"), st.integers(0, 200), SET_VALUES.map(toml_value)),
    st.tuples(st.just("drop"), st.integers(0, 200)),
    st.tuples(st.just("repeat"), st.integers(0, 200)),
    st.tuples(st.just("bytes"), POSITION, st.binary(min_size=1, max_size=8)),
    st.tuples(st.just("encode"), st.sampled_from(["utf-16", "latin-1", "cp1252"])),
    st.tuples(st.just("grid"), st.lists(st.integers(1, 10_000), min_size=1, max_size=6)),
)


def edited(text: str, edit: tuple) -> bytes:
    """The plan ``text`` with one ``edit``, as the bytes of a file."""
    lines = text.splitlines()
    kind = edit[0]
    if kind in ("value", "drop", "repeat"):
        at = edit[1] % len(lines)
        if kind == "value" and "=" in lines[at]:
            lines[at] = lines[at].split("=", 1)[0] + "= " + edit[2]
        elif kind == "drop":
            del lines[at]
        elif kind == "repeat":
            lines.insert(at, lines[at])
        return "\n".join(lines).encode()
    if kind == "bytes":
        data = text.encode()
        at = int(edit[1] * len(data))
        return data[:at] + edit[2] + data[at:]
    if kind == "encode":
        return (text + "\n# é, ü, ß\n").encode(edit[1], errors="replace")
    sizes = edit[1]  # a grid of these many values on the first row: their product of runs
    axes = ", ".join(f"{GRID_KEYS[i]} = {list(range(1, n + 1))}" for i, n in enumerate(sizes))
    return text.replace("[[rows]]", f"[[rows]]\ngrid = {{ {axes} }}", 1).encode()


def check_an_altered_plan_is_listed_or_refused_in_one_line(plan, edit, on_synthetic):
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        folder = Path(tmp)
        path = folder / "plan.toml"
        path.write_bytes(edited(PLANS[plan], edit))
        patch.chdir(folder)
        listed = []
        patch.setattr(suite.cli.bench, "show_dry_run",
                      lambda plan, runs, *args: listed.append(len(runs)))
        args = ["bench", str(path), "--dry-run", *(["--dataset", "synthetic"] * on_synthetic)]
        result = CliRunner().invoke(app, args)
        event("listed" if result.exit_code == 0 else "refused")
        problem = one_line_failure(result.output, result.exit_code)
        assert problem is None, (problem, edit, result.output[-3000:])
        assert result.exit_code in (0, 2), result.output
        assert result.exit_code != 0 or listed, result.output
        assert files_under(folder) == {"plan.toml"}


# The property, on fixed cases (default run) and on new cases (slow).
test_fixed_cases, test_new_cases = fast_and_long(
    check_an_altered_plan_is_listed_or_refused_in_one_line,
    plan=st.sampled_from(sorted(PLANS)),
    edit=LINE_EDITS,
    on_synthetic=st.booleans(),
)
