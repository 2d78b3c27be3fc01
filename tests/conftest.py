"""Shared fixtures: tiny models with random weights, isolated cache and MLflow store."""

import os

import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """No test touches the user's cache of pre-trained tiny backbones."""
    monkeypatch.setenv("SUITE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "cache"))
    # mlflow.set_tracking_uri also sets this variable; it must not leak into later tests'
    # subprocesses, module fixtures included (they would log to an earlier test's store).
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


@pytest.fixture
def tiny_clip():
    import open_clip
    import torch

    from suite.models.embedded import register_embedded_configs

    register_embedded_configs()
    torch.manual_seed(0)
    return open_clip.create_model("tiny-clip", pretrained=None)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A fresh MLflow SQLite store; the test runs in its folder (checkpoints land there)."""
    monkeypatch.chdir(tmp_path)
    return f"sqlite:///{tmp_path / 'mlflow.db'}"
