"""The adapter and prompt-tuning baselines on open_clip models with random weights."""

import copy

import open_clip
import pytest
import torch
from typer.testing import CliRunner

from methods import registry
from methods.adapter import AdaptedMLP, remove_adapters
from methods.base import encode_text_tokens
from suite.cli import app
from suite.models.loss import symmetric_infonce


def build(name, clip, backbone="tiny-clip", frames=4, **options):
    method = registry.get(name)
    config = method.make_config(backbone, frames, options)
    return method.build(clip, config, frames, backbone)


def inputs(words=12):
    g = torch.Generator().manual_seed(1)
    frames = torch.randn(2, 4, 3, 48, 48, generator=g)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    ids = torch.randint(1, 49000, (2, words), generator=g)
    ids[:, -1] = 49407  # EOT, the largest id
    return frames, mask, ids


def frozen_copy(clip):
    """The unpatched reference, frozen like the patched model (the same attention code path)."""
    return copy.deepcopy(clip).requires_grad_(False).eval()


def one_step(model, lr=1e-2):
    frames, mask, ids = inputs()
    optimiser = torch.optim.SGD(model.trainable_parameters(), lr=lr)
    model.train()
    loss = symmetric_infonce(model.encode_text(ids), model.encode_video(frames, mask),
                             model.logit_scale)
    loss.backward()
    optimiser.step()
    optimiser.zero_grad()
    model.eval()


def test_adapter_at_init_is_the_unpatched_clip_then_one_step_changes_both_towers(tiny_clip):
    reference = frozen_copy(tiny_clip)
    model = build("adapter", tiny_clip).eval()
    images, _, ids = inputs()
    images = images.flatten(0, 1)
    with torch.no_grad():
        torch.testing.assert_close(tiny_clip.visual(images), reference.visual(images),
                                   atol=1e-6, rtol=0)
        torch.testing.assert_close(encode_text_tokens(tiny_clip, ids),
                                   encode_text_tokens(reference, ids), atol=1e-6, rtol=0)
    one_step(model)
    ups = [m.adapter.up.weight for m in model.modules() if isinstance(m, AdaptedMLP)]
    assert len(ups) == 6 + 4 and all(w.abs().sum() > 0 for w in ups)
    with torch.no_grad():
        assert not torch.allclose(tiny_clip.visual(images), reference.visual(images), atol=1e-4)
        assert not torch.allclose(encode_text_tokens(tiny_clip, ids),
                                  encode_text_tokens(reference, ids), atol=1e-4)


@pytest.mark.slow
def test_adapter_trains_only_adapters_counted_by_the_formula_on_vit_b_32():
    clip = open_clip.create_model("ViT-B-32", pretrained=None)
    model = build("adapter", clip, backbone="ViT-B-32")
    b = 64

    def tower(layers, d):
        return layers * (d * b + b + b * d + d)

    trainable = model.trainable_parameters()
    assert sum(p.numel() for p in trainable) == tower(12, 768) + tower(12, 512) == 1_982_976
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert all(".mlp.adapter." in n for n in names) and len(names) == 4 * 24
    new, pretrained = model.parameter_groups()
    assert pretrained == [] and len(new) == 4 * 24
    # The backbone keeps its parameter names (checkpoints still load) and open_clip's cast dtype.
    assert "visual.transformer.resblocks.0.mlp.c_fc.weight" in dict(clip.named_parameters())
    assert clip.transformer.get_cast_dtype() == torch.float32


def test_adapter_bottleneck_option_and_removal(tiny_clip):
    reference = frozen_copy(tiny_clip)
    build("adapter", tiny_clip, bottleneck=8)
    adapter = tiny_clip.visual.transformer.resblocks[0].mlp.adapter
    assert adapter.down.out_features == 8 and adapter.up.in_features == 8
    for tower in (tiny_clip.visual.transformer, tiny_clip.transformer):
        remove_adapters(tower)
    assert not any(isinstance(m, AdaptedMLP) for m in tiny_clip.modules())
    assert tiny_clip.state_dict().keys() == reference.state_dict().keys()


@pytest.mark.slow
def test_prompt_with_no_prompts_is_the_unpatched_visual(tiny_clip):
    with torch.no_grad():
        for p in tiny_clip.visual.parameters():  # no zero biases or unit norms left
            p.add_(0.02 * torch.randn_like(p))
    reference = frozen_copy(tiny_clip)
    model = build("prompt", tiny_clip, num_prompts=0)
    images = inputs()[0].flatten(0, 1)
    for train in (False, True):
        model.train(train)
        reference.train(train)
        with torch.no_grad():
            torch.testing.assert_close(model.video_encoder.encode_images(images),
                                       reference.visual(images), atol=1e-5, rtol=0)


def test_prompts_change_the_output_and_receive_gradients(tiny_clip):
    model = build("prompt", tiny_clip)
    encoder = model.video_encoder
    assert encoder.prompts.shape == (6, 8, 64)
    frames, mask, ids = inputs()
    loss = symmetric_infonce(model.encode_text(ids), model.encode_video(frames, mask),
                             model.logit_scale)
    loss.backward()
    assert encoder.prompts.grad is not None
    assert (encoder.prompts.grad.flatten(1).abs().sum(1) > 0).all()  # every block's prompts
    model.eval()
    with torch.no_grad():
        before = model.encode_video(frames, mask)
        encoder.prompts.normal_()
        assert not torch.allclose(before, model.encode_video(frames, mask), atol=1e-4)


def test_prompt_trains_prompts_and_text_lora_only_on_vit_b_32():
    clip = open_clip.create_model("ViT-B-32", pretrained=None)
    model = build("prompt", clip, backbone="ViT-B-32")
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names[-1] == "video_encoder.prompts"
    assert all(n.startswith("clip.transformer.") and "lora_" in n for n in names[:-1])
    lora = 12 * (8 * 512 + 3 * 512 * 8)
    assert sum(p.numel() for p in model.trainable_parameters()) == 12 * 8 * 768 + lora
    new, pretrained = model.parameter_groups()
    assert pretrained == [] and len(new) == 1 + 2 * 12


def test_prompt_text_lora_folds_and_prompts_stay(tiny_clip):
    model = build("prompt", tiny_clip).eval()
    frames, mask, ids = inputs()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
        before = model.encode_video(frames, mask), model.encode_text(ids)
        model.fold()
        after = model.encode_video(frames, mask), model.encode_text(ids)
    for b, a in zip(before, after, strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-5)
    assert [n for n, _ in model.named_parameters() if "prompts" in n] == ["video_encoder.prompts"]


@pytest.mark.parametrize(("method", "option", "message"), [
    ("adapter", "bottleneck=0", "method.bottleneck: must be greater than or equal to 1 (got 0)"),
    ("adapter", "bottleneck=-4", "method.bottleneck: must be greater than or equal to 1"),
    ("prompt", "num_prompts=-1", "method.num_prompts: must be greater than or equal to 0"),
    ("prompt", "rank=0", "method.rank: must be greater than or equal to 1 (got 0)"),
])
def test_invalid_configs_are_one_line_user_errors(method, option, message):
    key, value = option.split("=")
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        registry.get(method).make_config("tiny-clip", 4, {key: int(value)})
    result = CliRunner().invoke(app, ["profile", "--method", method, "--backbone", "tiny-clip",
                                      "--device", "cpu", "--set", f"method.{option}"])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
