"""The methods `tempme` and `tempme-full` built through the registry."""

import open_clip
import pytest
import torch

from methods import registry
from tempme.encoder import TempMeVideoEncoder
from tempme.schedule import ScheduleError


def build(name, clip, backbone, frames, **options):
    method = registry.get(name)
    return method.build(clip, method.make_config(backbone, frames, options), frames, backbone)


@pytest.mark.slow
def test_tempme_trains_507648_parameters_on_vit_b_32():
    model = build("tempme", open_clip.create_model("ViT-B-32"), "ViT-B-32", 12)
    assert isinstance(model.video_encoder, TempMeVideoEncoder)
    assert sum(p.numel() for p in model.trainable_parameters()) == 507_648
    new, pretrained = model.parameter_groups()
    assert pretrained == []


def test_tempme_full_trains_the_backbone_with_the_same_merging(tiny_clip):
    model = build("tempme-full", tiny_clip, "tiny-clip", 12)
    new, pretrained = model.parameter_groups()
    assert len(pretrained) == len(list(tiny_clip.parameters())) - 1  # all but the temperature
    assert sum(p.numel() for p in new) == (12 + 6 + 3) * 64  # clip position embeddings
    tempme = build("tempme", open_clip.create_model("tiny-clip"), "tiny-clip", 12)
    assert model.video_encoder.schedule == tempme.video_encoder.schedule


def test_schedule_knobs_override_the_defaults(tiny_clip):
    model = build("tempme", tiny_clip, "tiny-clip", 12, imgme_r=1, ratio_intra=0.0)
    assert model.video_encoder.schedule.imgme_r == 1
    assert model.video_encoder.schedule.ratio_intra == 0.0


@pytest.mark.parametrize("options, fragment", [
    ({"clip_groups": [5, 2, 3]}, "divide"),
    ({"clip_layers": [3, 4, 9]}, "valid layers"),
])
def test_invalid_schedules_are_refused_before_building(options, fragment):
    with pytest.raises(ScheduleError, match=fragment):
        registry.get("tempme").make_config("tiny-clip", 12, options)


def test_tempme_lora_folds_without_changing_embeddings(tiny_clip):
    model = build("tempme", tiny_clip, "tiny-clip", 12).eval()
    frames, mask = torch.randn(2, 12, 3, 48, 48), torch.ones(2, 12, dtype=torch.bool)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or "clip_pos" in name:
                p.normal_(0, 0.05)
        before = model.encode_video(frames, mask)
        model.fold()
        after = model.encode_video(frames, mask)
    torch.testing.assert_close(before, after, atol=1e-5, rtol=1e-5)
