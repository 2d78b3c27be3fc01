"""The first methods on real open_clip models with random weights."""

import open_clip
import pytest
import torch

from methods import registry
from methods.base import encode_text_tokens


def build(name, clip, frames=4):
    method = registry.get(name)
    return method.build(clip, method.make_config("tiny-clip", frames, {}), frames, "tiny-clip")


def test_lora_trains_491520_parameters_on_vit_b_32():
    clip = open_clip.create_model("ViT-B-32", pretrained=None)
    model = build("lora", clip)
    assert sum(p.numel() for p in model.trainable_parameters()) == 491_520
    new, pretrained = model.parameter_groups()
    assert pretrained == [] and len(new) == 2 * 24  # A and B in 12 + 12 attention layers


def test_zeroshot_trains_nothing_and_full_trains_everything_but_the_temperature(tiny_clip):
    assert build("zeroshot", tiny_clip).trainable_parameters() == []
    full = build("full", tiny_clip)
    new, pretrained = full.parameter_groups()
    assert new == []
    assert len(pretrained) == len(list(tiny_clip.parameters())) - 1  # logit_scale is frozen


def test_short_context_text_matches_open_clip_full_context(tiny_clip):
    tokenizer = open_clip.get_tokenizer("tiny-clip")
    texts = ["a red square slides left", "then a blue circle appears after a green triangle"]
    short = encode_text_tokens(tiny_clip, tokenizer(texts, context_length=12))
    full = tiny_clip.encode_text(tokenizer(texts))
    torch.testing.assert_close(short, full, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_folded_lora_equals_unfolded(tiny_clip):
    model = build("lora", tiny_clip).eval()
    frames = torch.randn(2, 4, 3, 48, 48)
    mask = torch.ones(2, 4, dtype=torch.bool)
    ids = open_clip.get_tokenizer("tiny-clip")(["a red square", "a blue circle"], context_length=16)
    with torch.no_grad():
        untouched = model.encode_video(frames, mask)  # B = 0: LoRA starts as the identity
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
        before = model.encode_video(frames, mask), model.encode_text(ids)
        model.fold()
        after = model.encode_video(frames, mask), model.encode_text(ids)
    assert model.trainable_parameters() == []
    for b, a in zip(before, after, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(untouched, after[0], atol=1e-3)  # LoRA really changed the model
