"""Real-format datasets on generated fixtures: loaders, splits, bad-video policy, workers,
end-to-end runs, and local checkpoints through ``--pretrained PATH``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_runs import json_summary
from typer.testing import CliRunner
from video_fixtures import MAKERS, frame_indices, read_code, write_corrupt, write_video

from suite.cli import app
from suite.data.cards import load_card
from suite.data.registry import load_split
from suite.errors import BadVideoError, UserError
from suite.job.config import RunConfig, TrainConfig

runner = CliRunner()
DATASETS = list(MAKERS)
TEST_PART = {"activitynet": "val_1"}
HELD_OUT = {"msrvtt", "activitynet"}  # no official validation split


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    base = tmp_path_factory.mktemp("datasets")
    return {name: make(base / name) for name, make in MAKERS.items()}


def config(fx, name, mode="skip", seed=42, select_on="val", **options):
    """A run config for fixture ``fx`` (or a data root path)."""
    root = fx if isinstance(fx, Path) else fx.root
    return RunConfig(method="zeroshot", dataset=name, backbone="tiny-clip", pretrained=None,
                     frames=4, words=32, data_root=str(root), on_bad_video=mode,
                     select_on=select_on, train=TrainConfig(seed=seed),
                     data_options={"val_fraction": 0.25, **options})


def copy_fixture(fx, folder: Path) -> Path:
    """A private copy of a generated dataset that a test may change."""
    import shutil

    shutil.copytree(fx.root, folder, symlinks=True)
    return folder


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


def test_skipped_test_videos_stay_in_the_test_as_misses(fixtures, tmp_path):
    """A missing and a corrupt MSVD test video (2 captions each): the test split owes their
    2 videos and 4 captions as queries that found nothing; training splits just drop theirs."""
    fx, card = fixtures["msvd"], load_card("msvd")
    root = copy_fixture(fx, tmp_path / "msvd")
    gone = fx.parts["test"][1]
    (root / "videos" / f"{gone}.avi").unlink()
    test = load_split(card, "test", config(root, "msvd"))
    assert test.skipped_videos == {fx.corrupt[0]: test.skipped_videos[fx.corrupt[0]],
                                   gone: "missing"}
    assert test.skipped_videos[fx.corrupt[0]].startswith("unreadable: ")
    assert (test.missed_videos, test.missed_captions) == (2, 4)
    assert len(test) == 1 and len(test.captions) == 2  # what is left to embed
    assert len(test) + test.missed_videos == len(fx.parts["test"])
    assert len(test.captions) + test.missed_captions == sum(
        len(fx.captions[v]) for v in fx.parts["test"])
    train = load_split(card, "train", config(root, "msvd"))
    assert train.skipped == 1 and (train.missed_videos, train.missed_captions) == (0, 0)
    whole = load_split(card, "test", config(fixtures["msvd"], "msvd"))
    assert (whole.missed_videos, whole.missed_captions) == (1, 2)
    didemo = load_split(load_card("didemo"), "test", config(fixtures["didemo"], "didemo"))
    assert (didemo.missed_videos, didemo.missed_captions) == (1, 1)  # one paragraph per video


@pytest.mark.parametrize("name", sorted(HELD_OUT))
def test_whole_training_part_when_no_selection_needs_validation(fixtures, name):
    fx, card = fixtures[name], load_card(name)
    bad = set(fx.missing) | set(fx.corrupt)
    everything = [v for v in fx.parts["train"] if v not in bad]
    held = load_split(card, "train", config(fx, name))
    assert len(held) < len(everything)  # select_on val: 25% held out for validation
    for select_on in ("last", "test"):
        train = load_split(card, "train", config(fx, name, select_on=select_on))
        assert train.video_ids == everything
        with pytest.raises(UserError, match=f"{name} has no validation split when a run trains "
                                            f"on the whole training part .--select-on "
                                            f"{select_on}"):
            load_split(card, "val", config(fx, name, select_on=select_on))
    zero = config(fx, name, val_fraction=0)
    assert load_split(card, "train", zero).video_ids == everything
    with pytest.raises(UserError, match="no validation split with data.val_fraction=0; use "
                                        "--select-on last or --select-on test"):
        load_split(card, "val", zero)
    with pytest.raises(UserError, match="val_fraction must be at least 0 and below 1"):
        load_split(card, "train", config(fx, name, val_fraction=1))


def test_official_validation_splits_do_not_change_with_select_on(fixtures):
    fx, card = fixtures["lsmdc"], load_card("lsmdc")
    for split in ("train", "val"):
        ids = {load_split(card, split, config(fx, "lsmdc", select_on=s)).video_ids[0]
               for s in ("val", "last", "test")}
        assert len(ids) == 1


def test_clip4clip_windows_didemo_at_31_seconds_and_activitynet_at_its_duration(fixtures,
                                                                                tmp_path):
    """DiDeMo: a 40 s video at 2 fps is read as seconds 0-31 under clip4clip only (TempMe has
    no DiDeMo loader: whole file). ActivityNet: "duration": 3.1 -> seconds 0-4 of a 6.4 s
    video at 10 fps (candidates 0 10 20 30 40; linspace(0, 4, 4) -> 0 1 2 4)."""
    fx = fixtures["didemo"]
    root = copy_fixture(fx, tmp_path / "didemo")
    video = fx.parts["test"][0]
    write_video(root / "videos" / video, 80, fps=2, tag=fx.tags[video])
    card = load_card("didemo")
    c4c = load_split(card, "test", config(root, "didemo", policy="clip4clip", cache=False))
    assert c4c.ends[video] == 31
    assert frame_indices(c4c.load(c4c.video_ids.index(video)).frames) == [0, 20, 40, 62]
    tempme = load_split(card, "test", config(root, "didemo", cache=False))
    assert tempme.ends == {}
    assert frame_indices(tempme.load(tempme.video_ids.index(video)).frames) == [0, 26, 52, 78]

    anet, card = fixtures["activitynet"], load_card("activitynet")
    first = anet.parts["train"][0]  # 64 frames at 10 fps
    split = load_split(card, "train", config(anet, "activitynet", policy="clip4clip",
                                             select_on="last", cache=False))
    assert split.ends[first] == 4
    assert frame_indices(split.load(0).frames) == [0, 10, 20, 40]
    whole = load_split(card, "train", config(anet, "activitynet", select_on="last",
                                             cache=False))
    assert frame_indices(whole.load(0).frames) == [0, 20, 40, 60]  # tempme: 0..60, the whole


def test_activitynet_window_follows_clip4clip_rounding():
    from suite.data.real import activitynet_end

    assert [activitynet_end(d) for d in (3.1, 3.0, 0.2, 0, -2.5, "12.01", None, "x")] == [
        4, 3, 1, 1, 1, 13, None, None]


class Planted:
    """A pickled object that runs a shell command when unpickled by ``pickle.load``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_msvd_captions_pickle_with_a_payload_is_refused_and_not_run(fixtures, tmp_path,
                                                                    protocol):
    import pickle

    fx, card = fixtures["msvd"], load_card("msvd")
    root = copy_fixture(fx, tmp_path / "msvd")
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(Planted(live), protocol))  # the payload does run with pickle
    assert live.exists()
    marker = tmp_path / "pwned"
    captions = {v: [c.split() for c in fx.captions[v]] for v in fx.captions}
    captions[fx.parts["test"][0]] = Planted(marker)
    (root / "raw-captions.pkl").write_bytes(pickle.dumps(captions, protocol))
    with pytest.raises(UserError) as info:
        load_split(card, "test", config(root, "msvd"))
    message = str(info.value)
    assert "\n" not in message
    assert "raw-captions.pkl is not a pickle of plain data, refused" in message
    assert "system" in message
    result = runner.invoke(app, ["prepare", "--dataset", "msvd", "--data-root", str(root),
                                 "--frames", "4", "--set", "data.size=32", "--json"])
    assert result.exit_code == 1 and "refused" in result.stdout
    assert not marker.exists()


def test_plain_pickles_load_and_extension_codes_are_refused(tmp_path):
    import copyreg
    import os
    import pickle
    import pickletools

    from suite.data.safe_pickle import load_plain, loads_plain

    data = {"v1": [["a", "man"], "a woman"], "v2": ((1, 2.5), None, True, -3)}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        assert loads_plain(pickle.dumps(data, protocol)) == data
    modern = {"x": {"set"}, "y": b"raw"}
    assert loads_plain(pickle.dumps(modern, 4)) == modern
    with pytest.raises(pickle.UnpicklingError, match="builtins.set"):
        loads_plain(pickle.dumps({"set"}, 3))  # older protocols name set(): refused too
    copyreg.add_extension(os.system.__module__, "system", 0x7F5A)
    try:
        planted = pickle.dumps({"v1": Planted(tmp_path / "pwned")}, 2)
        # EXT2: the callable comes from the extension registry, not a named global
        assert [op.name for op, _, _ in pickletools.genops(planted) if "EXT" in op.name or
                "GLOBAL" in op.name] == ["EXT2"]
        (tmp_path / "ext.pkl").write_bytes(planted)
        with pytest.raises(UserError, match="refused: it names .*system"):
            load_plain(tmp_path / "ext.pkl")
    finally:
        copyreg.remove_extension(os.system.__module__, "system", 0x7F5A)
    assert not (tmp_path / "pwned").exists()
    (tmp_path / "cut.pkl").write_bytes(pickle.dumps(data)[:20])
    with pytest.raises(UserError, match="cut.pkl is not a pickle of plain data"):
        load_plain(tmp_path / "cut.pkl")


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
                                        "cache_format, policy, size, train_split, "
                                        "val_fraction, videos"):
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


def test_fail_policy_stops_on_an_unreadable_video_when_the_split_is_built(fixtures):
    fx = fixtures["msvd"]
    with pytest.raises(BadVideoError) as info:
        load_split(load_card("msvd"), "test", config(fx, "msvd", mode="fail"))
    message = str(info.value)
    assert "\n" not in message and message.startswith("msvd test: video ")
    assert f"{fx.videos / fx.corrupt[0]}.avi cannot be decoded" in message
    assert "1 of 3 unreadable" in message and f"--data-root {fx.root}" in message


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_workers_and_a_video_that_breaks_after_the_check(fixtures, tmp_path,
                                                                     workers):
    from suite.data.loading import ImageSpec, Videos, loader, make_collate, to_pixels

    fx = fixtures["msvd"]
    root = copy_fixture(fx, tmp_path / "msvd")
    broken = root / "videos" / f"{fx.corrupt[0]}.avi"
    write_video(broken, 25, tag=fx.tags[fx.corrupt[0]])  # readable when the split is built
    split = load_split(load_card("msvd"), "test", config(root, "msvd", mode="fail"))
    assert fx.corrupt[0] in split.video_ids
    write_corrupt(broken)  # ... and broken before it is decoded
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
    assert fx.corrupt[0] in message and f"--data-root {root}" in message


def test_user_errors_for_data_root_and_video_folder(fixtures, tmp_path):
    card = load_card("msrvtt")
    with pytest.raises(UserError, match="needs --data-root"):
        load_split(card, "test", RunConfig(method="zeroshot", dataset="msrvtt"))
    (tmp_path / "videos").mkdir()
    with pytest.raises(UserError, match="annotation file .*MSRVTT_JSFUSION_test.csv does not"):
        load_split(card, "test", config(tmp_path, "msrvtt"))
    with pytest.raises(UserError, match="video folder .*elsewhere does not exist"):
        load_split(card, "test", config(fixtures["msrvtt"], "msrvtt", videos="elsewhere"))


def test_a_caption_of_a_megabyte_is_read_and_the_csv_limit_is_put_back(fixtures, tmp_path):
    """csv's default field limit is 131072 characters: a longer caption is read whole (a
    field can be as long as its file), and the process-wide limit is as it was afterwards."""
    import csv

    fx, card = fixtures["msrvtt"], load_card("msrvtt")
    root = copy_fixture(fx, tmp_path / "msrvtt")
    long = "a dog, \"quoted\", runs\n" + "and runs " * 120_000  # about 1 MB, over two lines
    first = fx.parts["test"][0]
    rows = [["key", "vid_key", "video_id", "sentence"]] + [
        [f"ret{i}", f"msr{v[5:]}", v, long if v == first else fx.captions[v][0]]
        for i, v in enumerate(fx.parts["test"])]
    with (root / "MSRVTT_JSFUSION_test.csv").open("w", newline="") as file:
        csv.writer(file).writerows(rows)
    limit = csv.field_size_limit()
    split = load_split(card, "test", config(root, "msrvtt"))
    assert split.captions[split.caption_video.index(split.video_ids.index(first))] == long.strip()
    assert len(long) > 8 * limit and csv.field_size_limit() == limit


def _latin1(text: str) -> bytes:
    return text.replace("caption", "capti\xf3n").encode("latin-1")


def _nul_on_line_2(text: str) -> bytes:
    lines = text.encode().split(b"\n")
    return b"\n".join([lines[0], lines[1][:5] + b"\0" + lines[1][5:], *lines[2:]])


# (dataset, annotation file, how it is broken, what the one line says)
BROKEN_FILES = [
    ("msrvtt", "MSRVTT_JSFUSION_test.csv", _latin1, "is not UTF-8 text (byte 0xf3 on line 2)"),
    ("msrvtt", "MSRVTT_JSFUSION_test.csv", _nul_on_line_2, "has a NUL byte on line 2"),
    ("msrvtt", "MSRVTT_JSFUSION_test.csv", lambda t: t.encode() + b"ret9,msr9\n",
     "line 6: fewer values than the columns of its header"),
    ("msrvtt", "MSRVTT_data.json", lambda t: t.encode()[:-30],
     "is not valid JSON: Unterminated string starting at: line 1 column"),
    ("msvd", "test_list.txt", lambda t: t.encode("utf-16"),
     "is not UTF-8 text (byte 0xff on line 1)"),
    ("lsmdc", "LSMDC16_challenge_1000_publictect.csv", _nul_on_line_2,
     "has a NUL byte on line 2"),
    ("didemo", "test_data.json", lambda t: t.encode().replace(b'"video"', b'"video', 1),
     "is not valid JSON: Expecting ':' delimiter: line 1 column"),
    ("activitynet", "val_1.json", lambda t: b"[" * 200_000 + b"]" * 200_000,
     "is not valid JSON: nested too deeply"),
]


@pytest.mark.parametrize(("name", "file", "damage", "message"), BROKEN_FILES,
                         ids=[f"{n}-{f}-{m.split('(')[0][:20]}" for n, f, _, m in BROKEN_FILES])
def test_annotation_files_in_another_encoding_binary_or_malformed_are_one_line(
        fixtures, tmp_path, name, file, damage, message):
    from suite.errors import DataError

    root = copy_fixture(fixtures[name], tmp_path / name)
    path = root / file
    path.write_bytes(damage(path.read_text()))
    part = "train" if file == "MSRVTT_data.json" else "test"  # read for the training lists
    with pytest.raises(DataError) as info:
        load_split(load_card(name), part, config(root, name))
    text = str(info.value)
    assert "\n" not in text and f"annotation file {path} " in text and message in text, text


def test_a_broken_annotation_file_stops_a_run_before_anything_is_logged(fixtures, tmp_path):
    fx = fixtures["msrvtt"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    root = copy_fixture(fx, tmp_path / "msrvtt")
    data = root / "MSRVTT_JSFUSION_test.csv"
    data.write_bytes(_latin1(data.read_text()))
    line = one_line_error(runner.invoke(app, [
        "run", "--method", "lora", "--dataset", "msrvtt", "--data-root", str(root),
        "--tracking-uri", uri, *BASE]))
    assert line.startswith(f"error: annotation file {data} is not UTF-8 text")
    assert runs_in(uri) == 0 and not (tmp_path / "mlflow.db").exists()


@pytest.mark.slow
@pytest.mark.parametrize("augment", [True, "rand-m7-n4-mstd0.5-inc1"])
def test_training_augmentation_keeps_shapes(fixtures, augment):
    fx = fixtures["lsmdc"]
    split = load_split(load_card("lsmdc"), "train", config(fx, "lsmdc", augment=augment))
    assert split.augment is not None
    clip = split.load(0)
    assert clip.frames.shape == (4, 48, 48, 3) and clip.frames.dtype == np.uint8
    test = load_split(load_card("lsmdc"), "test", config(fx, "lsmdc", augment=augment))
    assert test.augment is None


def test_skipped_videos_are_logged_to_mlflow(fixtures, mlflow_uri):
    from mlflow.tracking import MlflowClient

    from suite.job import tracking
    from suite.job.skipped import log_skipped_videos

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


@pytest.mark.slow
def test_run_end_to_end_on_msrvtt_with_skipped_bad_videos(fixtures, mlflow_uri):

    result = runner.invoke(app, ["run", "--method", "tempme", "--dataset", "msrvtt", "--data-root",
                                 str(fixtures["msrvtt"].root), "--on-bad-video", "skip",
                                 "--tracking-uri", mlflow_uri, "--set", "data.val_fraction=0.25",
                                 *BASE])
    assert result.exit_code == 0, result.output
    summary = json_summary(result.stdout)
    assert summary["best_epoch"] == 0
    from mlflow.tracking import MlflowClient

    metrics = MlflowClient(mlflow_uri).get_run(summary["run_id"]).data.metrics
    assert metrics["data/test_skipped_videos"] == 1  # video11, corrupt
    assert metrics["data/train_skipped_videos"] + metrics["data/val_skipped_videos"] == 1
    # The skipped test video's caption stays a query, ranked last of all 4 videos: at most the
    # kept share of the queries can be found, and the summary says what was skipped.
    assert summary["skipped_videos"]["test"] == 1
    kept = metrics["data/test_videos"]
    assert kept + 1 == len(fixtures["msrvtt"].parts["test"])
    for key in ("test/t2v_R1", "test/v2t_R1", "test/lit_t2v_R1", "test/dsl_t2v_R1"):
        assert metrics[key] <= 100 * kept / (kept + 1), key


def test_run_end_to_end_on_didemo_paragraphs(fixtures, mlflow_uri):
    args = ["run", "--method", "tempme", "--dataset", "didemo", "--data-root",
            str(fixtures["didemo"].root), "--on-bad-video", "skip", "--tracking-uri", mlflow_uri,
            *BASE]
    line = one_line_error(runner.invoke(app, args))  # the card's 64 words, tiny-clip takes 32
    assert "words 64 exceeds the text context of tiny-clip (32)" in line
    result = runner.invoke(app, [*args, "--set", "words=32"])
    assert result.exit_code == 0, result.output


def runs_in(uri: str) -> int:
    """How many MLflow runs a store holds (0 when it was never created)."""
    from mlflow.tracking import MlflowClient

    if not Path(uri.removeprefix("sqlite:///")).exists():
        return 0
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(ids)) if ids else 0


def test_bad_videos_stop_a_run_before_anything_trains_or_is_logged(fixtures, tmp_path):
    """The undecodable test video is found by the file check before the MLflow run opens: one
    line naming it, no run in the store; with the test video fixed, the missing training video
    is found the same way."""
    fx = fixtures["msrvtt"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    root = copy_fixture(fx, tmp_path / "msrvtt")
    args = ["run", "--method", "lora", "--dataset", "msrvtt", "--data-root", str(root),
            "--tracking-uri", uri, *BASE]
    line = one_line_error(runner.invoke(app, args))
    assert f"msrvtt test: video {root / 'videos' / fx.corrupt[0]}.mp4 cannot be decoded" in line
    assert f"suite prepare --dataset msrvtt --data-root {root}" in line
    assert runs_in(uri) == 0
    write_video(root / "videos" / f"{fx.corrupt[0]}.mp4", 12)
    line = one_line_error(runner.invoke(app, args))
    # (held out into val or in train, depending on the seed's draw)
    assert f"video file {root / 'videos' / fx.missing[0]}.* is missing" in line
    assert runs_in(uri) == 0


def test_check_files_reads_only_the_splits_a_run_needs(fixtures, tmp_path):
    from suite.data.real import check_files

    fx, card = fixtures["msrvtt"], load_card("msrvtt")
    root = copy_fixture(fx, tmp_path / "msrvtt")
    write_video(root / "videos" / f"{fx.corrupt[0]}.mp4", 12)  # the test split is whole
    # Nothing trains and nothing selects on validation: only the test videos are read.
    assert check_files(card, config(root, "msrvtt", mode="fail", select_on="test"),
                       trains=False) == {"test": 0}
    with pytest.raises(BadVideoError, match="msrvtt train: video file .*video7.* is missing"):
        check_files(card, config(root, "msrvtt", mode="fail", select_on="last"), trains=True)
    counts = check_files(card, config(fx, "msrvtt", mode="skip"), trains=True)
    assert sum(counts.values()) == 2 and counts["test"] == 1 and list(counts)[0] == "test"
    assert check_files(load_card("synthetic"), RunConfig(method="zeroshot")) == {}


# ----------------------------------------------------------------------------- weights


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    """A tiny CLIP, its reference embeddings, and the model saved in three formats."""
    import open_clip
    import torch

    from suite.models.embedded import register_embedded_configs

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

    from suite.models.backbone import load_backbone

    paths, images, ids, reference = saved_model
    if kind == "openai_jit":
        with pytest.raises(UserError, match="TorchScript archive: loading it runs the code"):
            load_backbone("tiny-clip", str(paths[kind]))
    backbone = load_backbone("tiny-clip", str(paths[kind]), trust_torchscript=True)
    with torch.no_grad():
        got = (backbone.model.eval().encode_image(images), backbone.model.encode_text(ids))
    for a, b in zip(got, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_bad_pretrained_paths_are_one_line_errors(saved_model, tmp_path, mlflow_uri):
    from suite.models.backbone import load_backbone

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
