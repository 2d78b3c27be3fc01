"""Merge maps: every patch is assigned to the one final token that absorbed it, and drawn."""


import os

import numpy as np
import open_clip
import pytest
import torch
from tiny_runs import json_summary
from typer.testing import CliRunner

from methods import registry
from suite.cli import app
from suite.job.merges import merge_map, overlay
from tempme.encoder import TempMeVideoEncoder
from tempme.schedule import TempMeSchedule

runner = CliRunner()
TINY_DATA = ["--set", "pretrained=null", "--set", "data.num_train=4", "--set", "data.num_val=2",
             "--set", "data.num_test=3"]


def build(name, clip, **options):
    method = registry.get(name)
    return method.build(clip, method.make_config("tiny-clip", 12, options), 12, "tiny-clip")


def one_video(seed=0):
    g = torch.Generator().manual_seed(seed)
    pixels = torch.randn(1, 12, 3, 48, 48, generator=g)
    frames = np.zeros((12, 48, 48, 3), dtype=np.uint8)
    return frames, pixels, torch.ones(1, 12, dtype=torch.bool)


def frames_of_each_token(owner):
    return [len(np.unique(np.nonzero(owner == token)[0])) for token in np.unique(owner)]


def test_without_merging_every_patch_is_its_own_token(tiny_clip):
    encoder = TempMeVideoEncoder(tiny_clip.visual, TempMeSchedule.no_merging(), 12).eval()
    merges = merge_map(encoder, *one_video())
    assert merges.owner.shape == (12, 6, 6)
    assert merges.patch_groups == 12 * 36 and merges.output_tokens == 12 * 37


@pytest.mark.slow
def test_tempme_merges_across_frames_and_tome_never_does(tiny_clip):
    tempme = merge_map(build("tempme", tiny_clip).video_encoder.eval(), *one_video())
    assert tempme.output_sequences == 1
    assert tempme.patch_groups == tempme.output_tokens - 12  # all but the 12 CLS tokens
    assert max(frames_of_each_token(tempme.owner)) > 1  # ClipMe merged over time
    fresh = open_clip.create_model("tiny-clip", pretrained=None)  # LoRA goes on a clean model
    tome = merge_map(build("tome", fresh, r=3).video_encoder.eval(), *one_video())
    assert tome.output_sequences == 12
    assert max(frames_of_each_token(tome.owner)) == 1
    assert tome.patch_groups == tome.output_tokens - 12


@pytest.mark.slow
def test_owner_agrees_with_a_brute_force_reading_of_the_sources(tiny_clip):
    encoder = build("tempme", tiny_clip).video_encoder.eval()
    frames, pixels, mask = one_video(seed=3)
    with torch.no_grad():
        sources = encoder.forward_with_trace(pixels, mask, track_sources=True).sources[0]
    flat = sources.reshape(-1, 12 * 37)
    assert torch.equal(flat.sum(0), torch.ones(12 * 37))  # each original token in one final
    owner = merge_map(encoder, frames, pixels, mask).owner
    for frame in range(12):
        for patch in range(36):
            token = owner[frame, patch // 6, patch % 6]
            assert flat[token, frame * 37 + 1 + patch] == 1


def test_overlay_tints_by_token_and_outlines_token_borders():
    owner = np.array([[0, 0], [1, 0]])
    image = np.full((4, 4, 3), 100, dtype=np.uint8)
    out = overlay(image, owner, alpha=0.5)
    assert out.shape == (4, 4, 3)
    assert np.allclose(out[0, 0], out[0, 3])  # same token, same colour
    assert not np.allclose(out[0, 0], out[3, 0])
    assert np.allclose(out[2, 0], 1.0)  # first row of token 1 borders token 0 above it: white


@pytest.mark.slow
def test_cli_draws_an_untrained_method_and_refuses_methods_that_do_not_merge(tmp_path):
    out = tmp_path / "maps" / "tempme.png"
    result = runner.invoke(app, ["merges", "--method", "tempme", *TINY_DATA, "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "1 sequence(s)" in result.stdout
    result = runner.invoke(app, ["merges", "--method", "lora", *TINY_DATA,
                                 "--out", str(tmp_path / "lora.png")])
    assert result.exit_code == 2 and "does not merge tokens" in result.output
    assert not (tmp_path / "lora.png").exists()


@pytest.mark.parametrize("args, fragment", [
    ([], "give either --method M or --run RUN_ID"),
    (["--method", "tempme", "--run", "abc"], "give either --method M or --run RUN_ID"),
    (["--method", "tempme", *TINY_DATA, "--video", "3"], "outside the test split; valid: 0..2"),
])
def test_cli_errors_are_one_line(tmp_path, args, fragment):
    result = runner.invoke(app, ["merges", *args, "--out", str(tmp_path / "m.png")])
    assert result.exit_code == 2, result.output
    assert fragment in result.output and len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_cli_reads_a_runs_config_and_trained_weights(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    result = runner.invoke(app, ["run", "--method", "tome", "--pretrained", "none", "--epochs",
                                 "1", "--batch-size", "4", *TINY_DATA[2:],
                                 "--tracking-uri", store, "--json"])
    assert result.exit_code == 0, result.output
    run_id = json_summary(result.stdout)["run_id"]
    out = tmp_path / "run.png"
    result = runner.invoke(app, ["merges", "--run", run_id, "--tracking-uri", store,
                                 "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "12 sequence(s)" in result.stdout and out.stat().st_size > 0
    result = runner.invoke(app, ["merges", "--run", "0" * 32, "--tracking-uri", store])
    assert result.exit_code == 2 and "cannot read config.json" in result.output
    # A run whose trained weights are gone is refused, not drawn untrained under its name.
    from pathlib import Path

    from mlflow.tracking import MlflowClient

    artifacts = MlflowClient(store).get_run(run_id).info.artifact_uri.removeprefix("file://")
    (Path(artifacts) / "trained_weights.pt").unlink()
    result = runner.invoke(app, ["merges", "--run", run_id, "--tracking-uri", store,
                                 "--out", str(tmp_path / "gone.png")])
    assert result.exit_code == 2 and "has no trained_weights.pt" in result.output
    assert not (tmp_path / "gone.png").exists()


class Payload:
    """A pickle that creates a file when it is unpickled by a plain ``torch.load``."""

    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        from pathlib import Path

        return (Path.touch, (Path(self.target),))


def test_a_planted_trained_weights_file_runs_no_code_even_when_torch_is_told_to(
        tmp_path, monkeypatch):
    """``suite merges --run`` reads the run's trained_weights.pt through the one safe loader:
    under TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 (which makes a plain torch.load run the payload)
    the file is refused in one line and nothing in it runs."""
    from mlflow.tracking import MlflowClient

    from suite.job import config as cfg

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(store)
    run_id = client.create_run(client.create_experiment("planted")).info.run_id
    config = cfg.apply_overrides(cfg.base_for("tome", "synthetic"), cfg.parse_sets(
        [s for s in TINY_DATA if s != "--set"]))
    config.save(tmp_path / "config.json")
    marker = tmp_path / "pwned"
    torch.save({"weight": Payload(marker)}, tmp_path / "trained_weights.pt")
    with pytest.warns(UserWarning, match="TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"):
        torch.load(tmp_path / "trained_weights.pt")  # the payload does run this way
    assert marker.exists()
    marker.unlink()
    for name in ("config.json", "trained_weights.pt"):
        client.log_artifact(run_id, str(tmp_path / name))
    result = runner.invoke(app, ["merges", "--run", run_id, "--tracking-uri", store,
                                 "--out", str(tmp_path / "m.png")])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "trained_weights.pt is unreadable" in lines[0], result.output
    assert "refused, nothing in it was run" in lines[0] and "weights_only" not in lines[0]
    assert not marker.exists() and not (tmp_path / "m.png").exists()
    assert os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] == "1"  # put back after the call
