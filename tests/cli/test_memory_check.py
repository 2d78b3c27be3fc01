"""`suite run` refuses a run that would not fit in memory as it refuses any mistake: exit code
2, one line with the estimate and the memory available, no MLflow run, no file written
(issue on reliability: bounded resources)."""

from pathlib import Path

import pytest
import torch
from tiny_runs import TINY_DATA
from typer.testing import CliRunner

from suite.cli import app
from suite.cost.memory import available_memory
from suite.job import resources

runner = CliRunner()

# The run of the issue: 1000 frames of the 12-frame synthetic default grew to 23 GB and was
# killed, leaving its MLflow run RUNNING.
THOUSAND_FRAMES = ["run", "--method", "lora", "--frames", "1000", "--epochs", "1", "--set",
                   "data.num_train=64", "--set", "data.num_val=16", "--set", "data.num_test=32"]
NORMAL = ["run", "--method", "lora", "--epochs", "1", "--batch-size", "4", *TINY_DATA]
# what the machine has free: None is this machine's, capped so that a large one refuses too
CASES = [(THOUSAND_FRAMES, None, "(training, batch 32, 1000 frames, eval batch 64)"),
         (NORMAL, 32 * 2**20, "exceeds the 32 MiB of available host memory")]


@pytest.mark.parametrize(("args", "free", "message"), CASES, ids=["1000-frames", "32-MiB-free"])
def test_a_run_that_does_not_fit_is_one_line_exit_2_and_writes_nothing(
        tmp_path, monkeypatch, args, free, message):
    if free is None:
        free = min(available_memory(torch.device("cpu"))[0], 16 * 2**30)
    monkeypatch.setattr(resources, "available_memory",
                        lambda device: (free, "available host memory"))
    monkeypatch.chdir(tmp_path)
    store = tmp_path / "mlflow.db"
    result = runner.invoke(app, [*args, "--tracking-uri", f"sqlite:///{store}"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: estimated peak memory "), lines
    assert message in lines[0] and "lower --batch-size, --frames or train.eval_batch_size" \
        in lines[0]
    assert not Path(store).exists()  # no MLflow run
    assert list(tmp_path.iterdir()) == []  # no store, no checkpoints/, no artifacts
