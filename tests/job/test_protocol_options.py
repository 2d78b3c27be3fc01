"""Protocol choices end to end: reference presets, training on the whole split, evaluation
between epochs, the selection rule, and a diverged run that stops instead of scoring."""

import pytest
import torch
from mlflow.tracking import MlflowClient
from tiny_runs import TINY_DATA, json_summary
from typer.testing import CliRunner

from suite.cli import app
from suite.job.selection import Selection

runner = CliRunner()
TINY = ["--pretrained", "none", "--epochs", "2", "--batch-size", "4", *TINY_DATA, "--json"]


def run(store, *args):
    result = runner.invoke(app, ["run", *args, "--tracking-uri", store])
    return result


@pytest.mark.slow
def test_tempme_official_preset_runs_on_the_synthetic_default_and_is_tagged(store):
    result = run(store, "--preset", "tempme-official", "--method", "tempme", *TINY)
    assert result.exit_code == 0, result.output
    run_id = json_summary(result.stdout)["run_id"]
    client = MlflowClient(store)
    data = client.get_run(run_id).data
    assert data.tags["preset"] == "tempme-official" and data.tags["selected_on"] == "test"
    assert data.tags["select_metric"] == "t2v_R1"
    assert data.params["train.optimizer"] == "tempme-adamw"
    assert data.params["train.grad_divisor"] == "4.0" and data.params["train.no_decay"] == "none"
    assert data.params["train.epochs"] == "2"  # flags still beat the preset
    # The official code evaluates after the first step too (and every 150 steps).
    steps = [m.step for m in client.get_metric_history(run_id, "test_epoch_step/t2v_R1")]
    assert steps == [1]
    assert sorted(m.step for m in client.get_metric_history(run_id, "test_epoch/t2v_R1")) == [0, 1]
    assert "val/t2v_rsum" not in data.metrics  # no validation split needed


@pytest.mark.slow
def test_select_on_last_trains_on_every_training_video_and_keeps_the_final_epoch(store):
    result = run(store, "--method", "lora", "--select-on", "last", *TINY, "--set",
                 "data.num_val=0")
    assert result.exit_code == 0, result.output
    summary = json_summary(result.stdout)
    data = MlflowClient(store).get_run(summary["run_id"]).data
    assert data.metrics["data/train_videos"] == 8  # every training video of TINY_DATA
    assert summary["best_epoch"] == 1 and data.metrics["selected/epoch"] == 1
    assert not any(k.startswith(("val/", "test_epoch/")) for k in data.metrics)
    assert data.tags["selected_on"] == "last"


def test_validation_split_of_size_zero_needs_another_selection(store):
    result = run(store, "--method", "lora", *TINY, "--set", "data.num_val=0")
    assert result.exit_code == 2 and "--select-on last" in result.output


@pytest.mark.slow
def test_a_diverged_run_stops_failed_instead_of_scoring(store):
    """lr 1e4 sends the embeddings to NaN: the run ends FAILED with one line, and the report
    never sees it (today's bug: NaN similarities ranked first, R-Sum 300)."""
    result = run(store, "--method", "full", *TINY, "--set", "train.lr_pretrained=1e4",
                 "--set", "train.warmup=0.0", "--epochs", "3")
    assert result.exit_code == 2, result.output
    assert "training diverged: the loss is nan" in result.output
    runs = MlflowClient(store).search_runs(["1"])
    assert [r.info.status for r in runs] == ["FAILED"] and runs[0].data.tags["diverged"] == "true"
    assert "test/t2v_rsum" not in runs[0].data.metrics


def offers(selection, values):
    for epoch, value in enumerate(values):
        selection.offer({"t2v_R1": value}, epoch, epoch * 10, {"w": torch.tensor(float(epoch))})
    return selection.kept.epoch


def test_selection_keeps_the_best_with_each_tie_rule():
    assert offers(Selection("t2v_R1", "earlier"), [40.0, 42.0, 42.0, 41.0]) == 1
    assert offers(Selection("t2v_R1", "later"), [40.0, 42.0, 42.0, 41.0]) == 2
    with pytest.raises(KeyError):
        offers(Selection("t2v_rsum", "earlier"), [1.0, 2.0])
