"""Every mistake a user can make in a `suite run` is refused up front: exit code 2, one line,
no MLflow run, no file written (issue: "every mistake refused before anything is written")."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_runs import TINY_DATA
from typer.testing import CliRunner

from suite.cli import app

runner = CliRunner()
RUN = ["run", "--method", "lora", "--epochs", "1", "--batch-size", "4", *TINY_DATA]

BAD = [
    (["--set", "train.batch_size=0"], "train.batch_size: must be greater than or equal to 1"),
    (["--set", "train.batch_size=abc"], "train.batch_size: must be a valid integer"),
    (["--set", "train.epochs=abc"], "train.epochs: must be a valid integer"),
    (["--set", "train.lr=abc"], "train.lr: must be a valid number"),
    (["--set", "train.lr=-1"], "train.lr: must be greater than 0"),
    (["--set", "train.epochs=-1"], "train.epochs: must be greater than or equal to 0"),
    (["--set", "train.grad_clip=-1"], "train.grad_clip: must be greater than 0"),
    (["--set", "train.weight_decay=-1"], "train.weight_decay: must be greater than or equal"),
    (["--set", "train.warmup=2"], "train.warmup: must be less than 1"),
    (["--set", "train.eval_batch_size=0"], "train.eval_batch_size: must be greater than"),
    (["--set", "train.num_workers=-1"], "train.num_workers: must be greater than or equal"),
    (["--set", "train.precision=fp8"], "train.precision: must be 'auto', 'fp32'"),
    (["--set", "train.optimizer=sgd"], "train.optimizer: must be 'adamw'"),
    (["--set", "method.rank=0"], "method.rank: must be greater than or equal to 1"),
    (["--set", "method.rank=-3"], "method.rank: must be greater than or equal to 1"),
    (["--set", "method.rank=2.5"], "method.rank: must be a valid integer"),
    (["--set", "method.rank=true"], "method.rank: must be a number, not true"),
    (["--set", "method.alpha=2"], "method 'lora' has no option alpha"),
    (["--set", "data.num_test=0"], "data.num_test: must be greater than or equal to 1"),
    (["--set", "data.num_train=0"], "data.num_train is 0: there is nothing to train on"),
    (["--set", "data.num_train=3"], "batch size 4 exceeds the 3 training samples"),
    (["--set", "data.num_val=0"], "data.num_val is 0: there is no validation split"),
    (["--set", "data.size=x"], "data.size: must be a valid integer"),
    (["--set", "data.num_train=10000000"], "data.num_train: must be less than or equal to"),
    (["--set", "data.colour=red"], "synthetic has no option colour"),
    (["--set", "words=0"], "words: must be greater than or equal to 2"),
    (["--set", "bogus=1"], "unknown setting 'bogus'"),
    (["--seed", "-1"], "train.seed: must be greater than or equal to 0"),
    (["--experiment", ""], "experiment: must not be empty"),
    (["--select-on", "best"], "select_on: must be 'val', 'test' or 'last'"),
    (["--preset", "imaginary"], "unknown preset 'imaginary'"),
    (["--tracking-uri", "foo://bar"], "unknown tracking URI scheme 'foo'"),
    (["--pretrained", "/no/such/weights.pt"], "checkpoint file /no/such/weights.pt does not exist"),
    (["--device", "tpu"], "unknown device 'tpu'"),
    (["--dataset", "kinetics"], "unknown dataset 'kinetics'"),
]


def only_file_names(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(("args", "message"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_settings_are_one_line_exit_2_and_write_nothing(tmp_path, monkeypatch, args,
                                                             message):
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, [*RUN, *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert only_file_names(tmp_path) == []  # no mlflow.db, no checkpoints/, no artifacts


def test_a_damaged_store_and_a_junk_checkpoint_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlflow.db").write_text("not a database")
    result = runner.invoke(app, RUN)
    assert result.exit_code == 2 and "is not a SQLite database" in result.output
    assert len(result.output.strip().splitlines()) == 1
    (tmp_path / "mlflow.db").unlink()
    (tmp_path / "junk.pt").write_bytes(b"\x00" * 64)
    result = runner.invoke(app, [*RUN, "--pretrained", str(tmp_path / "junk.pt")])
    assert result.exit_code == 2 and "cannot read checkpoint" in result.output
    assert only_file_names(tmp_path) == ["junk.pt"]


def test_a_cache_folder_that_is_a_file_fails_before_pre_training(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache").write_text("")
    monkeypatch.setenv("SUITE_CACHE_DIR", str(tmp_path / "cache"))
    result = runner.invoke(app, RUN)  # the tiny CLIP is not cached there: it would pre-train
    assert result.exit_code == 2, result.output
    assert "the backbone cache (SUITE_CACHE_DIR)" in result.output
    assert "pre-training" not in result.output
    assert only_file_names(tmp_path) == ["cache"]


@pytest.mark.slow
@pytest.mark.subprocess
def test_a_read_only_working_folder_is_one_line():
    """/proc refuses new files even to root: the default store (./mlflow.db) cannot be made."""
    bin_dir = Path(sys.executable).parent
    done = subprocess.run([str(bin_dir / "suite"), *RUN], cwd="/proc", capture_output=True,
                          text=True, timeout=300, env={**os.environ, "MLFLOW_TRACKING_URI": ""})
    assert done.returncode == 2, done.stderr[-2000:]
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith("error: the folder of the MLflow store /proc is not writable")


def test_report_out_into_a_file_is_one_line(tmp_path):
    (tmp_path / "taken").write_text("")
    result = runner.invoke(app, ["report", "--out", str(tmp_path / "taken"), "--tracking-uri",
                                 f"sqlite:///{tmp_path / 'none.db'}"])
    assert result.exit_code == 2 and "--out" in result.output and "is a file" in result.output


def test_ctrl_c_exits_130(monkeypatch):
    import suite.job.engine

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(suite.job.engine, "run", interrupted)
    result = runner.invoke(app, RUN)
    assert result.exit_code == 130
