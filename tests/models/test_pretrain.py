"""Pre-training of the embedded tiny CLIP: deterministic, cached by config and recipe, reused."""

import pytest
import torch

from suite.models.backbone import load_backbone
from suite.models.pretrain import PretrainRecipe, checkpoint_path, pretrain, pretrained_checkpoint

QUICK = PretrainRecipe(steps=3, batch_size=16, images=64)


@pytest.mark.slow
def test_pretraining_is_deterministic_and_changes_the_weights():
    first = pretrain("tiny-clip", QUICK, show_progress=False)
    second = pretrain("tiny-clip", QUICK, show_progress=False)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    other = pretrain("tiny-clip", PretrainRecipe(steps=3, batch_size=16, images=64, seed=1),
                     show_progress=False)
    assert not torch.equal(first["visual.conv1.weight"], other["visual.conv1.weight"])


@pytest.mark.slow
def test_checkpoint_is_cached_by_recipe_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("SUITE_CACHE_DIR", str(tmp_path))
    path = pretrained_checkpoint("tiny-clip", QUICK, show_progress=False)
    assert path.is_file() and path.is_relative_to(tmp_path)
    stamp = path.stat().st_mtime_ns
    assert pretrained_checkpoint("tiny-clip", QUICK, show_progress=False) == path
    assert path.stat().st_mtime_ns == stamp  # reused, not trained again
    assert checkpoint_path("tiny-clip", PretrainRecipe(steps=4)) != path
    assert not list(tmp_path.rglob("*.tmp*"))  # written atomically


@pytest.mark.slow
def test_synthetic_tag_loads_the_cached_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("SUITE_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr("suite.models.pretrain.PretrainRecipe", lambda: QUICK)
    backbone = load_backbone("tiny-clip", "synthetic", show_progress=False)
    saved = torch.load(checkpoint_path("tiny-clip", QUICK), weights_only=True)
    assert torch.equal(backbone.model.visual.conv1.weight, saved["visual.conv1.weight"])
