"""Fuzzing the checkpoint a run resumes from: its state is altered (a key dropped or given
another kind of value, a tensor reshaped, cast or replaced, the epoch moved, the config's values
broken) and written with a correct signature, or its bytes are damaged. ``suite run --resume``
then continues the run, or refuses in one line before the run changes: a refused run stays
KILLED, as it was, and no run is left RUNNING."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from fuzzing import POSITION, SET_VALUES, fast_and_long, files_under, one_line_failure
from hypothesis import event
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient
from tiny_runs import TINY_DATA
from typer.testing import CliRunner

from suite.cli import app
from suite.data.loading import TrainingBatches
from suite.job import checkpoint
from suite.job.config import parse_value

TINY = ["--method", "tempme", "--pretrained", "none", "--epochs", "2", "--batch-size", "4",
        *TINY_DATA]
OUTSIDE_THE_RUN = {"mlflow.db", "mlflow.db.lock", "checkpoints", "mlartifacts"}


class Stopped(dict):
    """A run interrupted after its first epoch: its folder, run id and checkpoint state."""

    def __repr__(self) -> str:
        return f"Stopped({self['run_id']})"


@pytest.fixture(scope="module")
def stopped():
    """A tiny run stopped (Ctrl-C) after epoch 1 of 2: KILLED, with its checkpoint."""
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp)
        original = TrainingBatches.set_epoch

        def set_epoch(self, epoch):
            if epoch == 1:
                raise KeyboardInterrupt
            original(self, epoch)

        with pytest.MonkeyPatch.context() as interrupt:
            interrupt.setattr(TrainingBatches, "set_epoch", set_epoch)
            result = CliRunner().invoke(app, ["run", *TINY, "--tracking-uri",
                                              f"sqlite:///{Path(tmp) / 'mlflow.db'}"])
        assert result.exit_code == 130, result.output
        run = MlflowClient(f"sqlite:///{Path(tmp) / 'mlflow.db'}").search_runs(["1"])[0]
        assert run.info.status == "KILLED"
        run_id = run.info.run_id
        state = checkpoint.read(checkpoint.checkpoint_path(Path("checkpoints"), run_id))
        yield Stopped(folder=Path(tmp), run_id=run_id, state=state)


def plain_value(text: str):
    return parse_value(text)


TOP_KEYS = st.sampled_from(checkpoint.KEYS)
OTHER_KIND = st.one_of(st.text(max_size=20), st.integers(-10**9, -1), st.none(),
                       st.sampled_from([[], {}, [1, 2], {"a": 1}, True, float("nan")]))
ALTERATIONS = st.one_of(
    st.tuples(st.just("drop"), TOP_KEYS),
    st.tuples(st.just("replace"), TOP_KEYS, SET_VALUES.map(plain_value)),
    st.tuples(st.just("epoch"), st.integers(-3, 4)),
    st.tuples(st.just("tensor"), st.integers(0, 50), st.sampled_from(
        ["reshape", "float64", "int64", "float16", "scalar", "text", "drop", "extra", "nan"])),
    # Values of another kind only: a valid but larger setting (a million training videos)
    # resumes into a valid and very long run.
    st.tuples(st.just("config"), st.integers(0, 80), OTHER_KIND),
    st.tuples(st.just("optimizer"), st.integers(0, 50), st.sampled_from(
        ["reshape", "drop", "text"])),
    st.tuples(st.just("bytes"), POSITION, st.binary(min_size=1, max_size=16)),
)


def altered_tensor(value: torch.Tensor, how: str):
    if how == "reshape":
        return torch.zeros(value.numel() + 1)
    if how in ("float64", "int64", "float16"):
        return value.to(getattr(torch, how))
    if how == "scalar":
        return torch.tensor(1.0)
    if how == "nan":
        return torch.full_like(value, float("nan")) if value.is_floating_point() else value
    return "not a tensor"


def alter(state: dict, alteration: tuple) -> dict | bytes:
    """A copy of ``state`` altered as ``alteration`` says (bytes: the file's payload)."""
    state = {**state, "model": dict(state["model"]), "config": {**state["config"]}}
    kind = alteration[0]
    if kind == "drop":
        state.pop(alteration[1], None)
    elif kind == "replace":
        state[alteration[1]] = alteration[2]
    elif kind == "epoch":
        state["epoch"] = alteration[1]
    elif kind == "tensor":
        names = sorted(state["model"])
        name = names[alteration[1] % len(names)]
        if alteration[2] == "drop":
            del state["model"][name]
        elif alteration[2] == "extra":
            state["model"][name + ".extra"] = torch.zeros(3)
        else:
            state["model"][name] = altered_tensor(state["model"][name], alteration[2])
    elif kind == "config":
        flat = sorted(state["config"])
        key = flat[alteration[1] % len(flat)]
        if isinstance(state["config"][key], dict) and state["config"][key]:
            inner = dict(state["config"][key])
            inner[sorted(inner)[alteration[1] % len(inner)]] = alteration[2]
            state["config"][key] = inner
        else:
            state["config"][key] = alteration[2]
    elif kind == "optimizer":
        optimizer = {**state["optimizer"], "state": dict(state["optimizer"]["state"])}
        slots = sorted(optimizer["state"])
        if slots:
            slot = slots[alteration[1] % len(slots)]
            inner = dict(optimizer["state"][slot])
            key = sorted(inner)[alteration[1] % len(inner)]
            if alteration[2] == "drop":
                del inner[key]
            elif alteration[2] == "text":
                inner[key] = "not a tensor"
            else:
                inner[key] = torch.zeros(7, 3)
            optimizer["state"][slot] = inner
        state["optimizer"] = optimizer
    return state


def check_resume_from_an_altered_checkpoint_continues_or_refuses_in_one_line(stopped,
                                                                            alteration):
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        folder = Path(tmp)
        shutil.copy(stopped["folder"] / "mlflow.db", folder / "mlflow.db")
        shutil.copytree(stopped["folder"] / "checkpoints", folder / "checkpoints")
        patch.chdir(folder)
        path = checkpoint.checkpoint_path(Path("checkpoints"), stopped["run_id"])
        if alteration[0] == "bytes":
            data = path.read_bytes()
            at = int(alteration[1] * len(data))
            path.write_bytes(data[:at] + alteration[2] + data[at + len(alteration[2]):])
        else:
            checkpoint.save_atomic(alter(stopped["state"], alteration), path)
        # An absolute store: MLflow keeps one database engine per URI in a process
        store = f"sqlite:///{folder / 'mlflow.db'}"
        result = CliRunner().invoke(app, ["run", "--resume", stopped["run_id"], "--json",
                                          "--tracking-uri", store])
        status = MlflowClient(store).get_run(stopped["run_id"]).info.status
        # refused: one line; resumed and then stopped (diverged): its progress, a last line
        shown = result.output if status == "KILLED" else result.output.splitlines()[-1]
        problem = one_line_failure(shown, result.exit_code)
        assert problem is None, (problem, alteration, result.output[-3000:])
        assert "Traceback" not in result.output
        event(f"exit {result.exit_code}, run {status}")
        if result.exit_code == 0:
            assert status == "FINISHED"
        else:
            assert status in ("KILLED", "FAILED"), status
            if result.exit_code == 2 and "training diverged" not in result.output:
                assert status == "KILLED", (alteration, result.output)  # nothing ran
        assert {p.split("/")[0] for p in files_under(folder)} <= OUTSIDE_THE_RUN


# The property, on fixed cases (default run) and on new cases (slow).
test_fixed_cases, test_new_cases = fast_and_long(
    check_resume_from_an_altered_checkpoint_continues_or_refuses_in_one_line,
    alteration=ALTERATIONS,
)
