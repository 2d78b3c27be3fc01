"""Training augmentation: TempMe's RandAugment policy (one draw for all frames of a video)
against timm's transform of the same string and a stored fixture of TempMe's own code."""

from __future__ import annotations

import base64
import hashlib
import json
import pickle
import random
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from suite.data.augment import (
    TEMPME_POLICY,
    VideoPolicyAugment,
    VideoRandAugment,
    make_augment,
    timm_transform,
)
from suite.errors import UserError

FIXTURE = Path(__file__).parent.parent / "fixtures" / "tempme_randaugment.json"


def seed(value: int) -> None:
    random.seed(value)
    np.random.seed(value)


def recording(transform) -> list[list]:
    """Record (op name, arguments) of every op timm's ``transform`` applies, image by image."""
    applied: list[list] = []
    for op in transform.ops:
        def record(img, *args, _fn=op.aug_fn, _name=op.name, **kwargs):
            applied.append([_name, list(args)])
            return _fn(img, *args, **kwargs)
        op.aug_fn = record
    return applied


def timm_reference(policy: str, size: int = 224):
    """timm's own transform of ``policy`` with TempMe's arguments (video_transforms.py
    create_random_augment, lines 641-653), built here without the suite."""
    from PIL import Image
    from timm.data.auto_augment import rand_augment_transform

    return rand_augment_transform(policy, {"translate_const": int(0.45 * size),
                                           "interpolation": Image.Resampling.BICUBIC})


@pytest.fixture(scope="module")
def official():
    data = json.loads(FIXTURE.read_text())
    clip = np.frombuffer(base64.b64decode(data["frames"]), dtype=np.uint8)
    return data, clip.reshape(data["shape"])


def test_identical_frames_stay_identical_under_every_draw(official):
    frame = official[1][0]
    clip = np.stack([frame] * 5)
    augment = VideoPolicyAugment(TEMPME_POLICY)
    changed = 0
    for s in range(12):
        seed(s)
        out = augment(clip)
        assert out.shape == clip.shape and out.dtype == np.uint8
        assert all(np.array_equal(out[0], out[i]) for i in range(1, 5))
        changed += not np.array_equal(out[0], frame)
    assert changed >= 8  # the draws do augment


def test_every_frame_gets_timms_one_draw_of_ops_and_magnitudes(official):
    """Per seed: the ops applied to each frame of a video are the ops (names and arguments)
    timm's transform draws for one image under that seed, and the generators end where that
    one call leaves them."""
    clip = official[1]
    ours = VideoPolicyAugment(TEMPME_POLICY)
    ours_applied = recording(ours.transform)
    reference = timm_reference(TEMPME_POLICY)
    timm_applied = recording(reference)
    seen = set()
    for s in range(40):
        ours_applied.clear()
        timm_applied.clear()
        seed(s)
        ours(clip)
        after = random.random(), np.random.random()
        seed(s)
        reference(Image.fromarray(clip[0]))
        assert (random.random(), np.random.random()) == after
        # frame by frame, each frame gets timm's whole sequence
        assert ours_applied == timm_applied * len(clip)
        seen.update(name for name, _ in timm_applied)
    assert len(seen) >= 12  # most of the 15 operations were drawn


@pytest.mark.parametrize("policy", [TEMPME_POLICY, "rand-m9-n3-mstd0.5", "rand-m5-n2-p1.0"])
def test_one_image_equals_timms_transform_of_the_same_string(official, policy):
    frame = official[1][1]
    ours, reference = VideoPolicyAugment(policy), timm_reference(policy)
    for s in range(16):
        seed(s)
        got = ours(frame[None])[0]
        seed(s)
        assert np.array_equal(got, np.asarray(reference(Image.fromarray(frame)))), s


def test_video_equals_tempmes_own_transform(official):
    """TempMe's ``rand_augment.py`` applied to the list of a video's frames (the fixture):
    the same ops and arguments for every frame, and the same output pixels. The official code
    maps each op over the frames (op-major record), the suite runs each frame through the ops
    (frame-major record)."""
    data, clip = official
    assert data["policy"] == TEMPME_POLICY
    frames = len(clip)
    augment = VideoPolicyAugment(TEMPME_POLICY, size=224)
    applied = recording(augment.transform)
    for case in data["cases"]:
        applied.clear()
        seed(case["seed"])
        out = augment(clip)
        reference = case["ops"]
        per_op = [reference[i:i + frames] for i in range(0, len(reference), frames)]
        assert all(group == [group[0]] * frames for group in per_op)
        assert applied == [group[0] for group in per_op] * frames, case["seed"]
        assert hashlib.sha256(out.tobytes()).hexdigest() == case["sha256"], case["seed"]


def test_a_worker_copy_draws_the_same():
    clip = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    augment = VideoPolicyAugment(TEMPME_POLICY)
    copy = pickle.loads(pickle.dumps(augment))
    seed(3)
    a = augment(clip)
    seed(3)
    assert np.array_equal(a, copy(clip))


@pytest.mark.parametrize("bad", ["", "rand-m7-x4", "augmix-m5", "rand-mfoo", "rand-inc2",
                                 "rand-m7-n4.5", "rand-m7-n4-", "rand-tnope", 3, None])
def test_a_bad_policy_is_a_one_line_user_error(bad):
    from suite.data.cards import load_card
    from suite.data.real import resolve_options

    with pytest.raises(UserError) as err:
        resolve_options(load_card("msrvtt"), {"augment": bad})
    message = str(err.value)
    assert "\n" not in message and "data.augment" in message
    assert repr(bad) in message or str(bad) in message


def test_good_values_pass_the_check():
    from suite.data.cards import load_card
    from suite.data.real import resolve_options

    for value in (True, False, TEMPME_POLICY, "rand", "rand-m9-n3-mstd0.5-inc0-tweights"):
        assert resolve_options(load_card("msrvtt"), {"augment": value}).augment == value


def test_missing_timm_names_the_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm.data.auto_augment", None)
    with pytest.raises(UserError, match=r"needs timm: pip install timm$"):
        timm_transform(TEMPME_POLICY, 224)


def test_make_augment_keeps_true_as_torchvisions_randaugment():
    assert isinstance(make_augment(True, 224), VideoRandAugment)
    assert make_augment(False, 224) is None
    policy = make_augment(TEMPME_POLICY, 160)
    assert isinstance(policy, VideoPolicyAugment) and policy.size == 160


def test_the_tempme_preset_uses_the_policy_and_lists_it():
    from typer.testing import CliRunner

    from suite.cli import app
    from suite.job.config import base_for

    config = base_for("tempme", "msrvtt", preset="tempme-official")
    assert config.data_options["augment"] == TEMPME_POLICY
    # The generated default reads no video files and takes no data.augment.
    assert "augment" not in base_for("tempme", "synthetic", "tempme-official").data_options
    result = CliRunner().invoke(app, ["list", "presets"])
    assert result.exit_code == 0, result.output
    assert f"data.augment = {TEMPME_POLICY}" in result.output
    assert "RandAugment acts on the cached" in result.output  # its departure is listed
