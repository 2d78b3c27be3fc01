"""The schedule value: analytic token table, defaults per backbone, validation messages."""

import re

import pytest

from cliptools.tokens import LayerTokens
from tempme.defaults import (
    VIT_B_16_CHOICE,
    clip_groups_for,
    default_schedule,
    generic_schedule,
    known_backbones,
)
from tempme.schedule import ScheduleError, TempMeSchedule, ratio_count

# tempme.md, "Tokens per sequence for ViT-B/32, 12 frames"
VIT_B_32_TABLE = [
    *(LayerTokens(i, "imgme", 12, 50 - 2 * i, None, 48 - 2 * i) for i in range(8)),
    LayerTokens(8, "clipme", 6, 68, 48, 44),
    LayerTokens(9, "clipme", 3, 88, 62, 56),
    LayerTokens(10, "clipme", 1, 168, 118, 107),
    LayerTokens(11, "later", 1, 107, None, 97),
]


def test_vit_b_32_table_of_the_spec():
    schedule = default_schedule("ViT-B-32", 12)
    assert schedule == TempMeSchedule(imgme_r=2, clip_layers=(8, 9, 10), clip_groups=(2, 2, 3),
                                      ratio_cross=0.30, ratio_intra=0.10, clip_pos_embed=True)
    assert schedule.token_table(50, 12, 12) == VIT_B_32_TABLE
    assert schedule.output_shape(50, 12, 12) == (1, 97)
    assert schedule.output_tokens(50, 12, 12) == 97


def test_unmerged_output_tokens_match_the_paper():
    off = TempMeSchedule.no_merging()
    assert off.output_tokens(50, 12, 12) == 600
    assert off.output_tokens(197, 12, 12) == 2364
    assert all(row.after_intra == row.tokens_in for row in off.token_table(50, 12, 12))


def test_vit_b_16_defaults_give_1_x_127():
    schedule = default_schedule("ViT-B-16", 12)
    assert schedule.imgme_r == VIT_B_16_CHOICE.imgme_r == 10
    assert schedule.clip_layers == (8, 9, 10) and schedule.clip_groups == (2, 2, 3)
    assert schedule.output_shape(197, 12, 12) == (1, 127)


def test_long_videos_and_the_tiny_backbone():
    long = default_schedule("ViT-B-32", 64)
    assert long.clip_groups == (4, 4, 4) and long.clip_layers == (8, 9, 10)
    assert [row.sequences for row in long.token_table(50, 64, 12)][7:] == [64, 16, 4, 1, 1]
    tiny = default_schedule("tiny-clip", 12)
    assert (tiny.imgme_r, tiny.clip_layers, tiny.clip_groups) == (2, (3, 4, 5), (2, 2, 3))
    assert tiny.output_shape(37, 12, 6) == (1, 98)
    assert default_schedule("tiny-clip", 64).clip_groups == (4, 4, 4)
    assert default_schedule("tiny-clip", 4).clip_layers == (3, 4)


def test_clip_groups_for_other_frame_counts():
    assert clip_groups_for(12) == (2, 2, 3)
    assert clip_groups_for(64) == (4, 4, 4)
    assert clip_groups_for(8) == (2, 2, 2)
    assert clip_groups_for(4) == (2, 2)
    assert clip_groups_for(32) == (2, 4, 4)
    assert clip_groups_for(7) == (7,)
    assert clip_groups_for(1) == (1,)


def test_clip_position_vectors_per_layer():
    schedule = default_schedule("ViT-B-32", 12)
    assert schedule.clip_input_sequences(12) == (12, 6, 3)
    assert sum(schedule.clip_input_sequences(12)) * 768 == 16_128


def test_per_layer_r_and_ratio_rounding():
    schedule = TempMeSchedule(imgme_r=[4, 0, 2], clip_layers=[3], clip_groups=[2])
    assert schedule.imgme_r == (4, 0, 2) and schedule.clip_layers == (3,)
    rows = schedule.token_table(37, 2, 5)
    assert [r.after_intra for r in rows[:3]] == [33, 33, 31]
    assert rows[3].tokens_in == 62 and rows[3].kind == "clipme"
    assert [r.kind for r in rows[4:]] == ["later"]
    assert ratio_count(0.29, 100) == 29  # 0.29 * 100 == 28.999999999999996 in floating point
    assert ratio_count(0.3, 68) == 20
    assert hash(schedule) == hash(TempMeSchedule.from_dict(schedule.as_dict()))


def test_merge_counts_are_capped_at_half_the_patch_tokens():
    greedy = TempMeSchedule(imgme_r=40, clip_layers=(2,), clip_groups=(2,), ratio_cross=1.0,
                            ratio_intra=1.0)
    rows = greedy.token_table(10, 2, 4)
    assert rows[0].after_intra == 6  # 9 patches -> at most 4 merges
    assert rows[2].tokens_in == 8 and rows[2].after_cross == 5 and rows[2].after_intra == 4


def test_generic_schedule_from_depth():
    schedule = generic_schedule(24, 12)
    assert schedule.clip_layers == (16, 17, 18)
    assert default_schedule("ViT-L-14", 12, depth=24) == schedule


@pytest.mark.parametrize(
    ("schedule", "frames", "depth", "expected"),
    [
        (TempMeSchedule(2, (8, 9, 10), (2, 5, 3)), 12, 12, "valid groups there: 1, 2, 3, 6"),
        (TempMeSchedule(2, (8, 9, 10), (2, 2, 3)), 10, 12, "does not divide the 5 sequences"),
        (TempMeSchedule(2, (9, 8, 10), (2, 2, 3)), 12, 12, "strictly ascending"),
        (TempMeSchedule(2, (8, 9, 12), (2, 2, 3)), 12, 12, "valid layers: 0..11"),
        (TempMeSchedule(2, (-1,), (2,)), 12, 12, "valid layers: 0..11"),
        (TempMeSchedule(2, (8, 9), (2, 2, 3)), 12, 12, "one group size per ClipMe layer"),
        (TempMeSchedule((2, 2), (8,), (12,)), 12, 12, "there are 8 ImgMe layers"),
        (TempMeSchedule(-1), 12, 12, "imgme_r must be >= 0"),
        (TempMeSchedule(2, ratio_cross=1.5), 12, 12, "ratio_cross must be within [0, 1]"),
        (TempMeSchedule(2, (8,), (0,)), 12, 12, "valid groups there"),
        (TempMeSchedule(2), 0, 12, "num_frames must be >= 1"),
    ],
)
def test_invalid_schedules_say_what_is_wrong_and_what_is_valid(schedule, frames, depth,
                                                               expected):
    with pytest.raises(ScheduleError, match=re.escape(expected)) as err:
        schedule.validate(frames, depth)
    assert isinstance(err.value, ValueError)
    assert "\n" not in str(err.value)


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(ScheduleError) as err:
        default_schedule("RN50", 12)
    for name in known_backbones():
        assert name in str(err.value)
    with pytest.raises(ScheduleError, match="depth 12"):
        default_schedule("ViT-B-32", 12, depth=6)
