"""Checkpoint and resume: an interrupted run continues in the same MLflow run and ends exactly
where an uninterrupted run ends."""

from pathlib import Path

import pytest
import torch
from mlflow.tracking import MlflowClient
from tiny_runs import TINY_DATA, json_summary
from typer.testing import CliRunner

from suite import checkpoint
from suite.cli import app
from suite.data.loading import TrainingBatches

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


def test_resumed_run_equals_the_uninterrupted_run(store, tmp_path, monkeypatch):
    whole = summary(invoke(store, *TINY))
    client = MlflowClient(store)
    assert not (tmp_path / "checkpoints" / whole["run_id"]).exists()  # finished: removed

    with monkeypatch.context() as patch:
        interrupt_at_epoch(patch, 1)
        invoke(store, *TINY)
    stopped = next(r for r in client.search_runs(["1"]) if r.info.status == "KILLED")
    run_id = stopped.info.run_id
    saved = torch.load(checkpoint.checkpoint_path(Path("checkpoints"), run_id),
                       weights_only=False)
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


def test_resume_errors_are_one_line(store, monkeypatch):
    result = invoke(store, "--resume", "0123abcd")
    assert result.exit_code == 2 and "no checkpoint for run 0123abcd" in result.output

    result = invoke(store, "--resume", "0123abcd", "--epochs", "3")
    assert result.exit_code == 2 and "--resume takes no other settings" in result.output

    with monkeypatch.context() as patch:
        interrupt_at_epoch(patch, 1)
        invoke(store, *TINY)
    run_id = MlflowClient(store).search_runs(["1"])[0].info.run_id
    other = f"sqlite:///{Path('other.db').resolve()}"
    result = runner.invoke(app, ["run", "--resume", run_id, "--tracking-uri", other])
    assert result.exit_code == 2 and "not in the MLflow store" in result.output


def test_a_crash_while_writing_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "run" / "last.pt"
    checkpoint.save_atomic({"epoch": 1}, path)

    def broken_save(state, file):
        Path(file).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_atomic({"epoch": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"epoch": 1}
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]


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
