"""Checkpoint and resume: an interrupted run continues in the same MLflow run and ends exactly
where an uninterrupted run ends."""

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from tiny_runs import TINY_DATA, json_summary
from typer.testing import CliRunner

from suite.cli import app
from suite.data.loading import TrainingBatches
from suite.job import checkpoint

runner = CliRunner()
TINY = ["--method", "tempme", "--pretrained", "none", "--epochs", "2", "--batch-size", "4",
        *TINY_DATA]


def invoke(store, *args):
    return runner.invoke(app, ["run", *args, "--tracking-uri", store, "--json"])


def summary(result):
    assert result.exit_code == 0, result.output
    return json_summary(result.stdout)


def interrupt_at_epoch(monkeypatch, stop_epoch):
    """Ctrl-C as the training loop starts ``stop_epoch`` (after the previous one's checkpoint)."""
    original = TrainingBatches.set_epoch

    def set_epoch(self, epoch):
        if epoch == stop_epoch:
            raise KeyboardInterrupt
        original(self, epoch)

    monkeypatch.setattr(TrainingBatches, "set_epoch", set_epoch)


@pytest.mark.slow
def test_resumed_run_equals_the_uninterrupted_run(store, tmp_path, monkeypatch):
    whole = summary(invoke(store, *TINY))
    client = MlflowClient(store)
    assert not (tmp_path / "checkpoints" / whole["run_id"]).exists()  # finished: removed

    with monkeypatch.context() as patch:
        interrupt_at_epoch(patch, 1)
        invoke(store, *TINY)
    stopped = next(r for r in client.search_runs(["1"]) if r.info.status == "KILLED")
    run_id = stopped.info.run_id
    saved = checkpoint.read(checkpoint.checkpoint_path(Path("checkpoints"), run_id))
    assert saved["epoch"] == 1 and saved["config"]["method"] == "tempme"
    assert "test/t2v_rsum" not in stopped.data.metrics

    resumed = summary(invoke(store, "--resume", run_id))
    assert resumed["run_id"] == run_id
    assert resumed["test"] == whole["test"] and resumed["best_epoch"] == whole["best_epoch"]
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.tags["resumed_after_epoch"] == "1"
    losses = client.get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in losses) == [0, 1]
    assert [m.value for m in sorted(losses, key=lambda m: m.step)] == pytest.approx(
        [m.value for m in sorted(client.get_metric_history(whole["run_id"], "train/loss"),
                                 key=lambda m: m.step)])
    weights = [torch.load(client.download_artifacts(r, "trained_weights.pt", str(tmp_path / r)))
               for r in (whole["run_id"], run_id)]
    for name, value in weights[0].items():
        torch.testing.assert_close(weights[1][name], value, rtol=0, atol=0)
    assert not (tmp_path / "checkpoints" / run_id).exists()


@pytest.mark.slow
def test_resume_errors_are_one_line(store, monkeypatch):
    result = invoke(store, "--resume", "0123abcd")
    assert result.exit_code == 2 and "not in the MLflow store" in result.output

    result = invoke(store, "--resume", "0123abcd", "--epochs", "3")
    assert result.exit_code == 2 and "--resume takes no other settings" in result.output

    with monkeypatch.context() as patch:
        interrupt_at_epoch(patch, 1)
        invoke(store, *TINY)
    run_id = MlflowClient(store).search_runs(["1"])[0].info.run_id
    other = f"sqlite:///{Path('other.db').resolve()}"
    result = runner.invoke(app, ["run", "--resume", run_id, "--tracking-uri", other])
    assert result.exit_code == 2 and "not in the MLflow store" in result.output


def complete_state(epoch: int) -> dict:
    return {key: None for key in checkpoint.KEYS} | {"epoch": epoch,
                                                      "model": {"w": torch.ones(3)}}


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "run" / "last.pt"
    checkpoint.save_atomic(complete_state(1), path)

    def broken_write(file):
        file.write(b"half")
        raise OSError("disk full")

    import suite.common.files

    original = suite.common.files.write_atomic
    monkeypatch.setattr(checkpoint, "write_atomic",
                        lambda target, data: original(target, broken_write))
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_atomic(complete_state(2), path)
    monkeypatch.undo()
    assert checkpoint.read(path)["epoch"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


class Payload:
    """A pickle that would create a file when unpickled."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (Path(self.target),))


def test_a_planted_checkpoint_runs_no_code(store, tmp_path):
    """``--resume`` reads the checkpoint with weights_only: a pickle payload never runs."""
    import hashlib
    import io
    import pickle

    target = tmp_path / "pwned"
    payload = pickle.dumps(complete_state(1) | {"run_id": Payload(target)})
    for body in (payload, _framed(payload, hashlib.sha256(payload).hexdigest())):
        path = tmp_path / "checkpoints" / "0123abcd" / "last.pt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        result = invoke(store, "--resume", "0123abcd")
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
        assert not target.exists()
    buffer = io.BytesIO()
    torch.save(complete_state(1) | {"run_id": Payload(target)}, buffer)
    with pytest.raises(checkpoint.UserError, match="unreadable"):
        checkpoint.read(_write(tmp_path / "t.pt", buffer.getvalue()))
    assert not target.exists()


def _framed(payload: bytes, digest: str) -> bytes:
    return checkpoint.MAGIC + digest.encode() + b"\n" + payload


def _write(path: Path, payload: bytes) -> Path:
    import hashlib

    path.write_bytes(_framed(payload, hashlib.sha256(payload).hexdigest()))
    return path


def test_a_damaged_or_incomplete_checkpoint_is_one_line(tmp_path):
    path = tmp_path / "last.pt"
    checkpoint.save_atomic(complete_state(1), path)
    data = bytearray(path.read_bytes())
    data[-40] ^= 0xFF  # one flipped byte in the tensor data
    path.write_bytes(bytes(data))
    with pytest.raises(checkpoint.UserError, match="damaged"):
        checkpoint.read(path)
    incomplete = complete_state(1)
    del incomplete["optimizer"]
    checkpoint.save_atomic(incomplete, path)
    with pytest.raises(checkpoint.UserError, match="lacks optimizer"):
        checkpoint.read(path)


@pytest.mark.slow
@pytest.mark.subprocess
def test_sigterm_ends_the_run_killed_and_resumable(store, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    args = [str(Path(sys.executable).parent / "suite"), "run", *TINY, "--epochs", "30",
            "--tracking-uri", store]
    process = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 300
    while not list(tmp_path.glob("checkpoints/*/last.pt")) and time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()[-2000:]
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode != 0
    run = MlflowClient(store).search_runs(["1"])[0]
    assert run.info.status == "KILLED"
    assert f"suite run --resume {run.info.run_id}" in stderr.replace("\n", " ")
    assert (tmp_path / "checkpoints" / run.info.run_id / "last.pt").is_file()


@pytest.mark.slow
def test_a_checkpoint_that_does_not_fit_the_model_is_refused_and_the_run_stays_killed(
        store, monkeypatch):
    """A checkpoint with a good signature but another model's tensors (a shape that would
    broadcast, a dtype that would be cast, a shape that would fail, Adam's moments) is refused
    in one line naming the tensor, before the MLflow run reopens: it stays KILLED."""
    with monkeypatch.context() as patch:
        interrupt_at_epoch(patch, 1)
        invoke(store, *TINY)
    client = MlflowClient(store)
    run_id = client.search_runs(["1"])[0].info.run_id
    assert client.get_run(run_id).info.status == "KILLED"
    path = checkpoint.checkpoint_path(Path("checkpoints"), run_id)
    saved = checkpoint.read(path)
    name, value = next((n, v) for n, v in saved["model"].items() if v.ndim >= 2)
    index, moments = next((i, s) for i, s in saved["optimizer"]["state"].items()
                          if s["exp_avg"].ndim >= 2)
    cases = [
        ({"model": saved["model"] | {name: value[:1]}}, f"tensor '{name}' is float32 [1, "),
        ({"model": saved["model"] | {name: value.double()}}, f"tensor '{name}' is float64"),
        ({"model": saved["model"] | {name: torch.zeros(3)}}, f"tensor '{name}' is float32 [3]"),
        ({"kept": saved["kept"] | {"weights": {}}}, f"kept (best) weights: no tensor '{name}'"),
        ({"optimizer": saved["optimizer"] | {"state": saved["optimizer"]["state"] | {
            index: moments | {"exp_avg": moments["exp_avg"].flatten()}}}},
         "optimizer: exp_avg of '"),
    ]
    for change, message in cases:
        checkpoint.save_atomic(saved | change, path)
        result = invoke(store, "--resume", run_id)
        assert result.exit_code == 2, result.output
        errors = [line for line in result.output.splitlines() if "error" in line.lower()]
        assert len(errors) == 1 and "Traceback" not in result.output, result.output
        assert "does not fit the model this run builds" in errors[0], errors[0]
        assert message in errors[0], errors[0]
        assert client.get_run(run_id).info.status == "KILLED"
    assert checkpoint.read(path)["epoch"] == 1  # the checkpoint is kept as it was given
