"""``suite prepare``: counts against the card, missing and unreadable videos, the frame cache,
resuming after an interruption, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner
from video_fixtures import frame_indices, make_activitynet, make_msrvtt, write_video

import suite.data.cards
import suite.data.prepare
from suite.cli import app
from suite.data.cards import load_card
from suite.data.prepare import prepare
from suite.data.registry import load_split
from suite.data.video import read_clip
from suite.job.config import RunConfig

runner = CliRunner()
OPTS = {"size": 32}  # small frames; the frame cache key includes the size


def run_config(root, **options):
    return RunConfig(method="zeroshot", dataset="msrvtt", backbone="tiny-clip", frames=4,
                     data_root=str(root), on_bad_video="skip",
                     data_options={**OPTS, "val_fraction": 0.25, **options})


def test_report_counts_missing_and_unreadable_videos(tmp_path):
    fx = make_msrvtt(tmp_path / "msrvtt")
    report = prepare("msrvtt", str(fx.root), OPTS, frames=4, show_progress=False)
    parts = {p.name: p for p in report.parts}
    assert [p.name for p in report.parts] == ["train", "train_7k", "test"]
    assert (parts["train"].expected, parts["train"].annotated, parts["train"].captions,
            parts["train"].present) == (9000, 8, 24, 7)
    assert parts["train"].missing == ["video7"] and parts["train"].unreadable == []
    assert (parts["train_7k"].annotated, parts["train_7k"].present) == (6, 6)
    assert (parts["test"].annotated, parts["test"].present) == (4, 4)
    assert parts["test"].unreadable == ["video11"] and not parts["test"].count_ok
    assert report.missing == {"video7": str(fx.videos / "video7.*")}
    assert list(report.unreadable) == ["video11"]
    assert "Invalid data" in report.unreadable["video11"]
    assert report.checked == 11 and report.resumed == 0 and report.cached == 0
    assert report.problems == 2 + 3  # two bad videos, three counts that differ from the card
    text = "\n".join(report.lines())
    for fragment in ("train           9000         8        24        7        1          0",
                     "video7: ", "video11: ", "5 problems",
                     "val <- 5% of train (seeded)"):
        assert fragment in text
    again = prepare("msrvtt", str(fx.root), OPTS, frames=4, show_progress=False)
    assert (again.checked, again.resumed) == (0, 11)  # nothing changed: nothing decoded


def test_cache_is_written_and_used_by_runs_automatically(tmp_path, monkeypatch):
    fx = make_msrvtt(tmp_path / "msrvtt")
    report = prepare("msrvtt", str(fx.root), OPTS, frames=4, backbone="tiny-clip", cache=True,
                     show_progress=False)
    assert report.cached == 10 and report.cache_dir is not None  # 12 videos, 2 bad
    split = load_split(load_card("msrvtt"), "test", run_config(fx.root))
    assert split.cache is not None and str(split.cache.directory) == report.cache_dir
    expected = read_clip(fx.videos / "video8.mp4", 4, "tempme", 32)

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded although the frame cache holds the video")

    monkeypatch.setattr("suite.data.real.read_clip", no_decoding)
    monkeypatch.setattr("suite.data.real.probe", no_decoding)  # the scan journal answers
    clip = split.load(split.video_ids.index("video8"))
    assert np.array_equal(clip.frames, expected) and frame_indices(clip.frames) == [0, 8, 16, 24]
    train = load_split(load_card("msrvtt"), "train", run_config(fx.root))
    assert set(train.skipped_videos) <= {"video7"}  # built from the journal, nothing probed
    other = load_split(load_card("msrvtt"), "test", run_config(fx.root, policy="clip4clip"))
    assert other.cache is None  # another policy samples other frames: another cache


def test_interrupted_prepare_resumes_where_it_stopped(tmp_path, monkeypatch):
    fx = make_activitynet(tmp_path / "anet")
    real_check, calls = suite.data.prepare._check, []

    def interrupted(*args):
        calls.append(args[0])
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_check(*args)

    monkeypatch.setattr(suite.data.prepare, "_check", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare("activitynet", str(fx.root), OPTS, frames=4, cache=True, show_progress=False)
    monkeypatch.setattr(suite.data.prepare, "_check", real_check)
    report = prepare("activitynet", str(fx.root), OPTS, frames=4, cache=True,
                     show_progress=False)
    assert report.resumed == 3 and report.checked == 11 - 3  # 12 videos listed, one missing
    assert report.cached == 10 and list(report.unreadable) == fx.corrupt
    assert {p.name: p.annotated for p in report.parts} == {"train": 8, "val_1": 4}
    assert {p.name: p.expected for p in report.parts} == {"train": 10009, "val_1": 4917}
    write_video(fx.videos / f"{fx.corrupt[0][2:]}.mp4", 12)  # the broken file gets replaced
    fixed = prepare("activitynet", str(fx.root), OPTS, frames=4, cache=True, workers=2,
                    show_progress=False)
    assert fixed.checked == 1 and not fixed.unreadable and fixed.cached == 11


def test_missing_annotation_file_is_reported_per_part(tmp_path):
    fx = make_msrvtt(tmp_path / "msrvtt")
    (fx.root / "MSRVTT_train.7k.csv").unlink()
    report = prepare("msrvtt", str(fx.root), OPTS, frames=4, show_progress=False)
    part = next(p for p in report.parts if p.name == "train_7k")
    assert "MSRVTT_train.7k.csv does not exist" in part.error
    assert report.checked == 11


def test_cli_prepare_exits_1_on_problems_unless_allowed(tmp_path):
    fx = make_msrvtt(tmp_path / "msrvtt")
    args = ["prepare", "--dataset", "msrvtt", "--data-root", str(fx.root), "--frames", "4",
            "--set", "data.size=32"]
    text = runner.invoke(app, args)
    assert text.exit_code == 1, text.output
    assert "missing videos (1):" in text.stdout and "unreadable videos (1):" in text.stdout
    last = text.stdout.strip().splitlines()[-1]
    assert last.startswith("5 problems;") and f"--data-root {fx.root}" in last
    allowed = runner.invoke(app, [*args, "--allow-problems", "--json"])
    assert allowed.exit_code == 0, allowed.output
    data = json.loads(allowed.stdout)
    assert data["problems"] == 5 and data["missing"] == {"video7": str(fx.videos / "video7.*")}
    assert [p["annotated"] for p in data["parts"]] == [8, 6, 4]


def test_cli_prepare_exits_0_when_everything_is_there(tmp_path, monkeypatch):
    """Counts as the card says (a card whose expected counts are the fixture's), no bad video."""
    import shutil
    import tomllib

    fx = make_activitynet(tmp_path / "anet")
    write_video(fx.videos / f"{fx.corrupt[0][2:]}.mp4", 12)
    write_video(fx.videos / f"{fx.missing[0][2:]}.mp4", 12)
    cards = tmp_path / "cards"
    shutil.copytree(suite.data.cards.cards_dir(), cards)
    text = (cards / "activitynet.toml").read_text()
    splits = tomllib.loads(text)["splits"]
    for part, count in splits.items():
        text = text.replace(f"{part} = {count}", f"{part} = {len(fx.parts[part])}")
    (cards / "activitynet.toml").write_text(text)
    monkeypatch.setenv("SUITE_DATASETS_DIR", str(cards))
    result = runner.invoke(app, ["prepare", "--dataset", "activitynet", "--data-root",
                                 str(fx.root), "--frames", "4", "--set", "data.size=32"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == "OK"


def test_prepare_decodes_and_caches_with_the_runs_window(tmp_path):
    """Under clip4clip, ActivityNet is read up to its annotated duration (3.1 s -> 4 s): the
    cached frames are the run's (0 10 20 40 of a 64-frame video at 10 fps, not 0 20 40 60)."""
    fx = make_activitynet(tmp_path / "anet")
    opts = {**OPTS, "policy": "clip4clip"}
    report = prepare("activitynet", str(fx.root), opts, frames=4, backbone="tiny-clip",
                     cache=True, show_progress=False)
    assert report.cache_dir is not None and report.cache_dir != prepare(
        "activitynet", str(fx.root), OPTS, frames=4, cache=True, show_progress=False).cache_dir
    config = RunConfig(method="zeroshot", dataset="activitynet", backbone="tiny-clip", frames=4,
                       data_root=str(fx.root), on_bad_video="skip", select_on="last",
                       data_options=opts)
    split = load_split(load_card("activitynet"), "train", config)
    assert split.cache is not None and str(split.cache.directory) == report.cache_dir
    first = fx.parts["train"][0]
    assert frame_indices(split.cache.get(first)) == [0, 10, 20, 40]
    assert frame_indices(split.load(0).frames) == [0, 10, 20, 40]


@pytest.mark.parametrize("args, fragment", [
    (["--dataset", "synthetic"], "has no files to prepare; valid: msrvtt"),
    (["--dataset", "msrvtt", "--set", "train.lr=1"], "prepare takes only --set data.NAME"),
    (["--dataset", "msrvtt", "--set", "data.polcy=x"], "no option polcy; valid:"),
])
def test_cli_prepare_user_errors_are_one_line(tmp_path, args, fragment):
    result = runner.invoke(app, ["prepare", "--data-root", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and fragment in lines[0], result.output


def test_split_sources_say_where_each_split_comes_from():
    from suite.data.prepare import split_sources

    assert split_sources("msrvtt", "train", 0.05) == {
        "train": "train minus 5% held out", "val": "5% of train (seeded)", "test": "test"}
    assert split_sources("activitynet", "train", 0) == {
        "train": "train", "val": "none (data.val_fraction=0)", "test": "val_1"}
    assert split_sources("msvd", "train", 0) == {"train": "train", "val": "val", "test": "test"}
