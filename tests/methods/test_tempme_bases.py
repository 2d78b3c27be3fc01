"""TempMe's merging on top of prompt and adapter tuning (``method.base``), and the schedules the
component ablation builds its rows from (tempme-ablation-components): each patched model equals
its unpatched reference where it must, and the token calculator equals the model."""

import pytest
import torch

from methods.adapter import add_adapters
from methods.base import MeanPoolVideoEncoder
from methods.prompt import PromptedVideoEncoder
from methods.registry import get
from methods.tempme import PromptedTempMeEncoder
from tempme.encoder import TempMeVideoEncoder
from tempme.schedule import TempMeSchedule

FRAMES = 4


def video(batch=2, size=48):
    g = torch.Generator().manual_seed(1)
    return torch.randn(batch, FRAMES, 3, size, size, generator=g), torch.ones(batch, FRAMES,
                                                                              dtype=torch.bool)


def test_prompted_tempme_without_merging_equals_vpt_deep(tiny_clip):
    """No merging: the prompts attended and dropped after attention give exactly what VPT-deep
    (methods.prompt, which also runs the MLP on its prompts) gives with the same prompts."""
    tiny_clip.eval()
    frames, mask = video()
    merged = PromptedTempMeEncoder(tiny_clip.visual, TempMeSchedule.no_merging(), FRAMES, 3)
    reference = PromptedVideoEncoder(tiny_clip.visual, 3)
    with torch.no_grad():
        reference.prompts.copy_(merged.prompts)
        torch.testing.assert_close(merged(frames, mask), reference(frames, mask),
                                   atol=1e-5, rtol=1e-5)
        # and the prompts matter: other prompts, another embedding
        merged.prompts.mul_(-3)
        assert not torch.allclose(merged(frames, mask), reference(frames, mask), atol=1e-3)


def test_adapters_inside_tempme_without_merging_equal_the_adapter_method(tiny_clip):
    tiny_clip.eval()
    frames, mask = video()
    params = add_adapters(tiny_clip.visual.transformer, 8)
    with torch.no_grad():
        for p in params:  # non-zero adapters, so that they change the output
            p.normal_(0, 0.05)
        merged = TempMeVideoEncoder(tiny_clip.visual, TempMeSchedule.no_merging(), FRAMES)
        torch.testing.assert_close(merged(frames, mask),
                                   MeanPoolVideoEncoder(tiny_clip.visual)(frames, mask),
                                   atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("base, trained", [
    ("prompt", {"video_encoder.prompts"}),
    ("adapter", {"adapter"}),
])
def test_bases_train_what_their_methods_train(base, trained):
    from suite.models.backbone import load_backbone

    spec = get("tempme")
    clip = load_backbone("tiny-clip", None, "cpu", show_progress=False).model
    model = spec.build(clip, spec.make_config("tiny-clip", 12, {"base": base}), 12, "tiny-clip")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(n.startswith("video_encoder.clip_pos_embed") for n in names)
    assert any(any(t in n for t in trained) for n in names)
    if base == "prompt":  # LoRA on the text tower only
        lora = [n for n in names if "lora" in n]
        assert lora and all(".visual." not in n for n in lora)
    else:
        assert not any("lora" in n for n in names)
        assert any(".visual." in n and "adapter" in n for n in names)
    frames = torch.randn(2, 12, 3, 48, 48)
    mask = torch.ones(2, 12, dtype=torch.bool)
    table = model.video_encoder.token_table()
    out = model.video_encoder.forward_with_trace(frames, mask)
    assert out.trace == table


@pytest.mark.parametrize("options, fragment", [
    ({"num_prompts": 4}, "with method.base=prompt"),
    ({"base": "adapter", "num_prompts": 4}, "with method.base=prompt"),
    ({"bottleneck": 4}, "with method.base=adapter"),
    ({"base": "nothing"}, "method.base"),
])
def test_base_options_belong_to_their_base(options, fragment):
    from suite.models.backbone import check_backbone_name

    check_backbone_name("tiny-clip")
    with pytest.raises(ValueError, match=fragment):
        get("tempme").make_config("tiny-clip", 12, options)


# The component ablation's rows (plans/tempme-ablation-components.toml) on the tiny CLIP.
COMPONENT_ROWS = {
    "imgme only": dict(imgme_r=(2, 2, 2, 0, 0, 0), clip_layers=(), clip_groups=(),
                       clip_pos_embed=False),
    "temporal only": dict(imgme_r=0, clip_layers=(3, 4, 5), clip_groups=(2, 2, 3),
                          ratio_cross=0.0, ratio_intra=0.0, clip_pos_embed=False),
    "reduction only": dict(imgme_r=2, clip_layers=(3, 4, 5), clip_groups=(1, 1, 1),
                           clip_pos_embed=False),
}


@pytest.mark.parametrize("row", sorted(COMPONENT_ROWS))
def test_component_rows_token_calculator_equals_the_model(tiny_clip, row):
    schedule = TempMeSchedule(**COMPONENT_ROWS[row])
    encoder = TempMeVideoEncoder(tiny_clip.visual, schedule, 12)
    frames, mask = torch.randn(2, 12, 3, 48, 48), torch.ones(2, 12, dtype=torch.bool)
    with torch.no_grad():
        trace = encoder.forward_with_trace(frames, mask).trace
    assert trace == encoder.token_table()
    assert not encoder.clip_position_parameters()


def test_temporal_only_attends_across_frames_and_merges_nothing(tiny_clip):
    """Both ratios and r at 0: every token survives (12 x 37), but the joined clips attend
    across frames, so the embedding differs from per-frame CLIP; a single-frame change moves
    every other frame's CLS."""
    tiny_clip.eval()
    schedule = TempMeSchedule(**COMPONENT_ROWS["temporal only"])
    encoder = TempMeVideoEncoder(tiny_clip.visual, schedule, 12)
    frames, mask = torch.randn(1, 12, 3, 48, 48), torch.ones(1, 12, dtype=torch.bool)
    with torch.no_grad():
        out = encoder.forward_with_trace(frames, mask)
        assert out.trace[-1].sequences * out.trace[-1].after_intra == 12 * 37
        changed = frames.clone()
        changed[0, 0] = torch.randn(3, 48, 48)
        other = encoder.forward_with_trace(changed, mask)
    assert not torch.allclose(out.frame_embeddings[0, 5], other.frame_embeddings[0, 5],
                              atol=1e-4)


def test_reduction_only_never_mixes_frames(tiny_clip):
    """Groups of 1: merging stays inside each frame, so changing frame 0 leaves every other
    frame's embedding exactly as it was (no cross-frame attention), and it equals the frames
    encoded one at a time."""
    tiny_clip.eval()
    schedule = TempMeSchedule(**COMPONENT_ROWS["reduction only"])
    encoder = TempMeVideoEncoder(tiny_clip.visual, schedule, 12)
    frames, mask = torch.randn(1, 12, 3, 48, 48), torch.ones(1, 12, dtype=torch.bool)
    with torch.no_grad():
        out = encoder.forward_with_trace(frames, mask)
        changed = frames.clone()
        changed[0, 0] = torch.randn(3, 48, 48)
        other = encoder.forward_with_trace(changed, mask)
        alone = TempMeVideoEncoder(tiny_clip.visual, schedule, 1)
        one_by_one = torch.cat([alone.forward_with_trace(frames[:, k:k + 1], mask[:, :1])
                                .frame_embeddings for k in range(12)], dim=1)
    torch.testing.assert_close(out.frame_embeddings[0, 1:], other.frame_embeddings[0, 1:],
                               atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(out.frame_embeddings, one_by_one, atol=1e-5, rtol=1e-5)


def test_prompted_merging_is_counted_and_costs_more_than_plain_tempme():
    """The dry run's cost figure: multiply-adds of TempMe on prompt tuning, merging included,
    are counted (no uncounted operator) and exceed plain TempMe's by the prompts' attention."""
    from suite.cost.flops import count_macs
    from suite.models.backbone import load_backbone

    costs = {}
    for base in ("lora", "prompt"):
        spec = get("tempme")
        clip = load_backbone("tiny-clip", None, "cpu", show_progress=False).model
        model = spec.build(clip, spec.make_config("tiny-clip", 12, {"base": base}), 12,
                           "tiny-clip").fold().eval()
        frames, mask = torch.randn(1, 12, 3, 48, 48), torch.ones(1, 12, dtype=torch.bool)
        with torch.no_grad():
            costs[base] = count_macs(model.video_encoder, (frames, mask)).gmacs
    assert costs["prompt"] > costs["lora"]
