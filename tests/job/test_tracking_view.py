"""What MLflow shows of a run: a training experiment, readable run names, no "None" strings,
ISO-8601 times, both directions' R-Sum."""

from datetime import datetime

import torch
from mlflow.tracking import MlflowClient

from suite.job import ownership, tracking
from suite.job.config import RunConfig, apply_overrides
from suite.job.engine import run_name
from suite.job.metrics import retrieval_metrics


def test_experiments_are_training_experiments_new_and_existing(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    new = tracking.open_experiment(uri, "new")
    old = client.create_experiment("old")  # made before the tag
    assert tracking.open_experiment(uri, "old") == old
    for experiment in (new, old):
        assert client.get_experiment(experiment).tags["mlflow.experimentKind"] == \
            "custom_model_development"


def test_unset_params_and_tags_are_left_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    with tracking.mlflow_run(uri, "e", "name", {"kept": "1", "unset": None}) as run:
        tracking.log_params({"preset": None, "frames": 12})
        tracking.set_tags({"other": None, "x": 2})
    data = MlflowClient(uri).get_run(run.info.run_id).data
    assert data.params == {"frames": "12"}
    assert {"kept", "x"} <= set(data.tags) and not {"unset", "other"} & set(data.tags)


def test_run_names_say_method_dataset_seed_or_trial():
    config = apply_overrides(RunConfig(method="tempme"), {"train.seed": 0})
    assert run_name(config, {}) == "tempme-synthetic-s0"
    assert run_name(config, {"sweep": "lora-synthetic", "trial": "3"}) == \
        "tempme-synthetic-trial3"
    assert run_name(config, {"plan_row": "TempMe, fp32 evaluation"}) == \
        "tempme-fp32-evaluation-synthetic-s0"


def test_owner_times_are_iso_and_read_back():
    owner = ownership.Owner(12, "host", 1_700_000_000.25, 1_700_000_100.0)
    tags = owner.tags()
    for key in ("owner_started", "heartbeat"):
        assert datetime.fromisoformat(tags[key]).utcoffset().total_seconds() == 0
    assert ownership.Owner.from_tags(tags) == owner
    legacy = {**tags, "owner_started": "1700000000.25", "heartbeat": "1700000100"}
    assert ownership.Owner.from_tags(legacy) == owner  # records written before


def test_video_to_text_rsum_is_reported():
    sims = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.1, 0.8], [0.0, 0.7, 0.3]])
    metrics = retrieval_metrics(sims, torch.eye(3, dtype=torch.bool))
    assert metrics["v2t_rsum"] == metrics["v2t_R1"] + metrics["v2t_R5"] + metrics["v2t_R10"]
    assert metrics["rsum_both"] == metrics["t2v_rsum"] + metrics["v2t_rsum"]
