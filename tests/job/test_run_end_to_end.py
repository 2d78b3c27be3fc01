"""End to end: tiny runs that log to a real MLflow SQLite store, read back from it."""


import pytest
from mlflow.tracking import MlflowClient
from tiny_runs import TINY_DATA, json_summary
from typer.testing import CliRunner

from suite.cli import app
from suite.job import engine

runner = CliRunner()
TINY = ["--pretrained", "none", "--epochs", "1", "--batch-size", "4", *TINY_DATA]


def run_cli(store, *args):
    result = runner.invoke(app, ["run", *args, "--tracking-uri", store, "--json"])
    assert result.exit_code == 0, result.output
    return json_summary(result.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["lora", "tempme"])
def test_run_logs_params_metrics_artifacts_and_tags(store, method):
    summary = run_cli(store, "--method", method, *TINY)
    client = MlflowClient(store)
    run = client.get_run(summary["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["method"] == method and run.data.params["train.epochs"] == "1"
    for direction in ("t2v", "v2t"):
        for name in ("R1", "R5", "R10", "MdR", "MnR"):
            assert f"test/{direction}_{name}" in run.data.metrics
    assert run.data.metrics["test/t2v_rsum"] == pytest.approx(summary["test"]["t2v_rsum"])
    assert "test/dsl_t2v_rsum" in run.data.metrics  # dual softmax: beside, not instead
    assert not any(name.startswith("val/dsl") for name in run.data.metrics)
    assert "val/t2v_rsum" in run.data.metrics and "train/loss" in run.data.metrics
    assert {"method", "dataset", "backbone", "git_commit", "device", "torch"} <= set(run.data.tags)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.json", "metrics.json", "trained_weights.pt"} <= artifacts


@pytest.mark.slow
def test_logged_config_replays_to_the_same_result(store, tmp_path):
    first = run_cli(store, "--method", "lora", *TINY)
    config = MlflowClient(store).download_artifacts(first["run_id"], "config.json", str(tmp_path))
    second = run_cli(store, "--config", config)
    assert second["test"] == first["test"]


@pytest.mark.slow
def test_zeroshot_trains_nothing_and_still_evaluates(store):
    summary = run_cli(store, "--method", "zeroshot", *TINY)
    assert summary["best_epoch"] is None
    # Nothing trains, so the learning rates and epochs cannot change a figure.
    other = run_cli(store, "--method", "zeroshot", *TINY, "--epochs", "3", "--set",
                    "train.lr=1", "--set", "train.lr_pretrained=1")
    assert other["test"] == summary["test"]
    metrics = MlflowClient(store).get_run(summary["run_id"]).data.metrics
    assert "train/loss" not in metrics and metrics["cost/params_trainable"] == 0


def test_a_run_that_raises_ends_failed(store, monkeypatch):
    def broken(self, *args):
        raise RuntimeError("boom")

    monkeypatch.setattr(engine.Trainer, "fit", broken)
    result = runner.invoke(app, ["run", "--method", "lora", *TINY, "--tracking-uri", store])
    assert result.exit_code != 0
    runs = MlflowClient(store).search_runs(["1"])
    assert [r.info.status for r in runs] == ["FAILED"]


def test_ctrl_c_ends_killed(store, monkeypatch):
    def interrupted(self, *args):
        raise KeyboardInterrupt

    monkeypatch.setattr(engine.Trainer, "fit", interrupted)
    runner.invoke(app, ["run", "--method", "lora", *TINY, "--tracking-uri", store])
    runs = MlflowClient(store).search_runs(["1"])
    assert [r.info.status for r in runs] == ["KILLED"]
