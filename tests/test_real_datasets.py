"""Real-format datasets on generated fixtures: loaders, splits, bad-video policy, workers,
end-to-end runs, and local checkpoints through ``--pretrained PATH``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_runs import json_summary
from typer.testing import CliRunner
from video_fixtures import MAKERS, frame_indices, read_code

from suite.cli import app
from suite.config import RunConfig, TrainConfig
from suite.data.cards import load_card
from suite.data.registry import load_split
from suite.data.video import BadVideoError
from suite.errors import UserError

runner = CliRunner()
DATASETS = list(MAKERS)
TEST_PART = {"activitynet": "val_1"}
HELD_OUT = {"msrvtt", "activitynet"}  # no official validation split


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    base = tmp_path_factory.mktemp("datasets")
    return {name: make(base / name) for name, make in MAKERS.items()}


def config(fx, name, mode="skip", seed=42, **options):
    """A run config for fixture ``fx`` (or a data root path)."""
    root = fx if isinstance(fx, Path) else fx.root
    return RunConfig(method="zeroshot", dataset=name, backbone="tiny-clip", pretrained=None,
                     frames=4, words=32, data_root=str(root), on_bad_video=mode,
                     train=TrainConfig(seed=seed),
                     data_options={"val_fraction": 0.25, **options})


def one_line_error(result) -> str:
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


# ----------------------------------------------------------------------------- cards


def test_cards_have_the_protocol_defaults_and_expected_counts():
    expected = {"msrvtt": {"train": 9000, "train_7k": 7010, "test": 1000},
                "msvd": {"train": 1200, "val": 100, "test": 670},
                "lsmdc": {"train": 101079, "val": 7408, "test": 1000},
                "didemo": {"train": 8395, "val": 1065, "test": 1004},
                "activitynet": {"train": 10009, "val_1": 4917}}
    for name, splits in expected.items():
        card = load_card(name)
        assert card.splits == splits
        assert (card.backbone, card.pretrained) == ("ViT-B-32", "openai")
        paragraph = name in ("didemo", "activitynet")
        assert (card.frames, card.words) == ((64, 64) if paragraph else (12, 32))
        assert card.caption_mode == ("paragraph" if paragraph else "multi")
        assert "http" in card.source


# ----------------------------------------------------------------------------- loaders


@pytest.mark.parametrize("name", DATASETS)
def test_splits_read_the_real_formats_and_skip_bad_videos(fixtures, name):
    fx = fixtures[name]
    card = load_card(name)
    bad = set(fx.missing) | set(fx.corrupt)
    splits = {s: load_split(card, s, config(fx, name)) for s in ("train", "val", "test")}
    test_ids = fx.parts[TEST_PART.get(name, "test")]
    assert splits["test"].video_ids == [v for v in test_ids if v not in bad]
    if name in HELD_OUT:  # val is held out of train: together they are the training part
        train_ids = fx.parts["train"]
        assert not set(splits["train"].video_ids) & set(splits["val"].video_ids)
        assert set(splits["train"].video_ids) | set(splits["val"].video_ids) == set(
            train_ids) - bad
    else:
        assert splits["train"].video_ids == [v for v in fx.parts["train"] if v not in bad]
        assert splits["val"].video_ids == [v for v in fx.parts["val"] if v not in bad]
    skipped = {v for s in splits.values() for v in s.skipped_videos}
    assert skipped == bad and sum(s.skipped for s in splits.values()) == len(bad)
    for split in splits.values():
        for i, video in enumerate(split.video_ids):
            assert split.captions_of(i) == fx.captions[video]
        clip = split.load(0)
        assert clip.frames.shape == (4, 48, 48, 3) and clip.mask.all()
        assert {read_code(f)[0] for f in clip.frames} == {fx.tags[split.video_ids[0]]}
    if card.caption_mode == "paragraph":
        assert all(len(s.captions) == len(s) for s in splits.values())


def test_msrvtt_7k_split_clip4clip_policy_and_option_errors(fixtures):
    fx, card = fixtures["msrvtt"], load_card("msrvtt")
    train = load_split(card, "train", config(fx, "msrvtt", train_split="7k", val_fraction=0.2))
    val = load_split(card, "val", config(fx, "msrvtt", train_split="7k", val_fraction=0.2))
    assert sorted(train.video_ids + val.video_ids) == sorted(fx.parts["train_7k"])
    assert len(train.captions) == 3 * len(train)  # every training caption is a sample
    test = load_split(card, "test", config(fx, "msrvtt", policy="clip4clip"))
    clip = test.load(0)  # video8: 25 frames at 10 fps -> 3 candidates, padded to 4
    assert frame_indices(clip.frames[:3]) == [0, 10, 20]
    assert clip.mask.tolist() == [True, True, True, False] and not clip.frames[3].any()
    assert frame_indices(load_split(card, "test", config(fx, "msrvtt")).load(0).frames) == [
        0, 8, 16, 24]
    with pytest.raises(UserError, match="no option nope; valid: augment, cache, cache_dir, "
                                        "policy, size, train_split, val_fraction, videos"):
        load_split(card, "test", config(fx, "msrvtt", nope=1))
    with pytest.raises(UserError, match="train_split '8k'; valid: 9k, 7k"):
        load_split(card, "test", config(fx, "msrvtt", train_split="8k"))
    with pytest.raises(UserError, match="msvd has no option train_split"):
        load_split(load_card("msvd"), "test", config(fixtures["msvd"], "msvd", train_split="7k"))


def test_held_out_validation_is_deterministic_from_the_seed(fixtures):
    fx, card = fixtures["activitynet"], load_card("activitynet")
    first = load_split(card, "val", config(fx, "activitynet", seed=1)).video_ids
    assert load_split(card, "val", config(fx, "activitynet", seed=1)).video_ids == first
    others = {tuple(load_split(card, "val", config(fx, "activitynet", seed=s)).video_ids)
              for s in range(2, 8)}
    assert len(others | {tuple(first)}) > 1


def test_didemo_list_files_restrict_a_split(fixtures, tmp_path):
    import shutil

    root = tmp_path / "didemo"
    shutil.copytree(fixtures["didemo"].root, root, symlinks=True)
    keep = fixtures["didemo"].parts["test"][0]
    (root / "test_list.txt").write_text(keep + "\n")
    split = load_split(load_card("didemo"), "test", config(root, "didemo"))
    assert split.video_ids == [keep]


def test_fail_policy_stops_on_a_missing_video_naming_the_file(fixtures):
    fx = fixtures["msvd"]
    with pytest.raises(BadVideoError, match=f"video file {fx.videos / fx.missing[0]}.* is "
                                            "missing") as info:
        load_split(load_card("msvd"), "train", config(fx, "msvd", mode="fail"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_workers_and_a_corrupt_video_under_the_fail_policy(fixtures, workers):
    from suite.data.loading import ImageSpec, Videos, loader, make_collate, to_pixels

    fx = fixtures["msvd"]
    split = load_split(load_card("msvd"), "test", config(fx, "msvd", mode="fail"))
    assert fx.corrupt[0] in split.video_ids  # "fail" does not probe: found when decoded
    good = [i for i, v in enumerate(split.video_ids) if v not in fx.corrupt]
    collate = make_collate(lambda texts: None)
    from torch.utils.data import Subset

    batches = list(loader(Subset(Videos(split), good), 2, collate, False, 0, workers))
    assert sum(b[1].shape[0] for b in batches) == len(good)
    assert batches[0][1].shape[1:] == (4, 48, 48, 3) and batches[0][1].dtype == torch.uint8
    pixels = to_pixels(batches[0][1], ImageSpec(48, (0.5,) * 3, (0.5,) * 3), torch.device("cpu"))
    assert pixels.shape[1:] == (4, 3, 48, 48)
    with pytest.raises(BadVideoError) as info:
        list(loader(Videos(split), 2, collate, False, 0, workers))
    message = str(info.value)
    assert "\n" not in message and message.startswith("cannot decode video ")
    assert fx.corrupt[0] in message


def test_user_errors_for_data_root_and_video_folder(fixtures, tmp_path):
    card = load_card("msrvtt")
    with pytest.raises(UserError, match="needs --data-root"):
        load_split(card, "test", RunConfig(method="zeroshot", dataset="msrvtt"))
    (tmp_path / "videos").mkdir()
    with pytest.raises(UserError, match="annotation file .*MSRVTT_JSFUSION_test.csv does not"):
        load_split(card, "test", config(tmp_path, "msrvtt"))
    with pytest.raises(UserError, match="video folder .*elsewhere does not exist"):
        load_split(card, "test", config(fixtures["msrvtt"], "msrvtt", videos="elsewhere"))


def test_training_augmentation_keeps_shapes(fixtures):
    fx = fixtures["lsmdc"]
    split = load_split(load_card("lsmdc"), "train", config(fx, "lsmdc", augment=True))
    assert split.augment is not None
    clip = split.load(0)
    assert clip.frames.shape == (4, 48, 48, 3) and clip.frames.dtype == np.uint8
    assert load_split(load_card("lsmdc"), "test", config(fx, "lsmdc", augment=True)).augment is None


def test_skipped_videos_are_logged_to_mlflow(fixtures, mlflow_uri):
    from mlflow.tracking import MlflowClient

    from suite import tracking
    from suite.data.skipped import log_skipped_videos

    fx = fixtures["didemo"]
    split = load_split(load_card("didemo"), "test", config(fx, "didemo"))
    with tracking.mlflow_run(mlflow_uri, "skips", "run", {}) as run:
        assert log_skipped_videos(split) == 1
    client = MlflowClient(mlflow_uri)
    assert client.get_run(run.info.run_id).data.metrics["data/test_skipped_videos"] == 1
    assert [a.path for a in client.list_artifacts(run.info.run_id, "data")] == [
        "data/skipped_test.tsv"]


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory):
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


BASE = ["--backbone", "tiny-clip", "--pretrained", "none", "--epochs", "1", "--batch-size", "2",
        "--frames", "4", "--json"]


def test_run_end_to_end_on_msrvtt_with_skipped_bad_videos(fixtures, mlflow_uri):

    result = runner.invoke(app, ["run", "--method", "tempme", "--dataset", "msrvtt", "--data-root",
                                 str(fixtures["msrvtt"].root), "--on-bad-video", "skip",
                                 "--tracking-uri", mlflow_uri, "--set", "data.val_fraction=0.25",
                                 *BASE])
    assert result.exit_code == 0, result.output
    summary = json_summary(result.stdout)
    assert summary["best_epoch"] == 0 and 0 <= summary["test"]["t2v_R1"] <= 100


def test_run_end_to_end_on_didemo_paragraphs(fixtures, mlflow_uri):
    args = ["run", "--method", "tempme", "--dataset", "didemo", "--data-root",
            str(fixtures["didemo"].root), "--on-bad-video", "skip", "--tracking-uri", mlflow_uri,
            *BASE]
    line = one_line_error(runner.invoke(app, args))  # the card's 64 words, tiny-clip takes 32
    assert "words 64 exceeds the text context of tiny-clip (32)" in line
    result = runner.invoke(app, [*args, "--set", "words=32"])
    assert result.exit_code == 0, result.output


def test_run_fails_in_one_line_on_a_missing_video(fixtures, mlflow_uri):
    fx = fixtures["msrvtt"]
    line = one_line_error(runner.invoke(app, [
        "run", "--method", "lora", "--dataset", "msrvtt", "--data-root", str(fx.root),
        "--tracking-uri", mlflow_uri, *BASE]))
    assert f"{fx.videos / fx.missing[0]}.* is missing" in line


# ----------------------------------------------------------------------------- weights


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny CLIP, its reference embeddings, and the model saved in three formats."""
    import open_clip
    import torch

    from suite.backbone import register_embedded_configs

    register_embedded_configs()
    torch.manual_seed(3)
    model = open_clip.create_model("tiny-clip", pretrained=None).eval()
    images = torch.randn(2, 3, 48, 48)
    ids = open_clip.get_tokenizer("tiny-clip")(["a dog runs", "a red car"])
    with torch.no_grad():
        reference = (model.encode_image(images), model.encode_text(ids))
    folder = tmp_path_factory.mktemp("weights")
    paths = {"open_clip": folder / "open_clip.pt", "openai_state_dict": folder / "openai.pt",
             "openai_jit": folder / "openai_jit.pt"}
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()},
                "epoch": 3}, paths["open_clip"])
    extras = {"input_resolution": torch.tensor(48), "context_length": torch.tensor(77),
              "vocab_size": torch.tensor(49408)}
    torch.save({**model.state_dict(), **extras}, paths["openai_state_dict"])
    # OpenAI released TorchScript archives whose state dict carries the extra entries too.
    for key, value in extras.items():
        if hasattr(model, key):
            delattr(model, key)
        model.register_buffer(key, value)
    traced = torch.jit.trace_module(model, {"encode_image": images, "encode_text": ids},
                                    strict=False, check_trace=False)
    traced.save(str(paths["openai_jit"]))
    return paths, images, ids, reference


@pytest.mark.parametrize("kind", ["open_clip", "openai_state_dict", "openai_jit"])
def test_local_checkpoint_gives_the_same_embeddings(saved_model, kind):
    import torch

    from suite.backbone import load_backbone

    paths, images, ids, reference = saved_model
    backbone = load_backbone("tiny-clip", str(paths[kind]))
    with torch.no_grad():
        got = (backbone.model.eval().encode_image(images), backbone.model.encode_text(ids))
    for a, b in zip(got, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_bad_pretrained_paths_are_one_line_errors(saved_model, tmp_path, mlflow_uri):
    from suite.backbone import load_backbone

    with pytest.raises(UserError, match="checkpoint file /no/such/weights.pt does not exist"):
        load_backbone("tiny-clip", "/no/such/weights.pt")
    with pytest.raises(UserError, match="does not fit backbone ViT-S-32"):
        load_backbone("ViT-S-32", str(saved_model[0]["open_clip"]))
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot read checkpoint"):
        load_backbone("tiny-clip", str(tmp_path / "junk.pt"))
    line = one_line_error(runner.invoke(app, [
        "run", "--method", "zeroshot", "--backbone", "tiny-clip", "--pretrained", "/no/such/w.pt",
        "--tracking-uri", mlflow_uri]))
    assert "checkpoint file /no/such/w.pt does not exist" in line
