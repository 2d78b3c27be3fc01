"""The TempMe video encoder on open_clip towers with random weights: token trace, equivalence
with per-frame CLIP when merging is off, LoRA through the patched attention, reversibility."""

from pathlib import Path

import open_clip
import pytest
import torch

from cliptools.lora import add_lora, fold_lora
from cliptools.tokens import LayerTokens
from cliptools.towers import masked_mean
from tempme.defaults import default_schedule
from tempme.encoder import TempMeVideoEncoder, baseline_video_embedding
from tempme.schedule import ScheduleError, TempMeSchedule

TINY_CONFIG = Path(__file__).resolve().parents[2] / "suite" / "model_configs" / "tiny-clip.json"

VIT_B_32_TABLE = [
    *(LayerTokens(i, "imgme", 12, 50 - 2 * i, None, 48 - 2 * i) for i in range(8)),
    LayerTokens(8, "clipme", 6, 68, 48, 44),
    LayerTokens(9, "clipme", 3, 88, 62, 56),
    LayerTokens(10, "clipme", 1, 168, 118, 107),
    LayerTokens(11, "later", 1, 107, None, 97),
]


def make_tiny(seed: int = 0):
    open_clip.add_model_config(TINY_CONFIG)
    torch.manual_seed(seed)
    return open_clip.create_model("tiny-clip", pretrained=None).eval()


def video(batch: int, frames: int, size: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, frames, 3, size, size, generator=gen)
    mask = torch.ones(batch, frames, dtype=torch.bool)
    if batch > 1:
        mask[-1, frames // 2:] = False  # a shorter video, padded
    return x, mask


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: on a small, shared CPU, OpenMP spinning makes 2 threads far slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def vit_b_32(one_thread):
    torch.manual_seed(0)
    return open_clip.create_model("ViT-B-32", pretrained=None).eval()


def test_tiny_without_merging_equals_per_frame_clip():
    clip = make_tiny()
    frames, mask = video(2, 4, 48)
    encoder = TempMeVideoEncoder(clip.visual, TempMeSchedule.no_merging(), 4)
    with torch.no_grad():
        got = encoder(frames, mask)
        expected = baseline_video_embedding(clip.visual, frames, mask)
    assert (got - expected).abs().max().item() <= 1e-5
    assert encoder.clip_position_parameters() == []


def test_vit_b_32_without_merging_equals_per_frame_clip(vit_b_32):
    frames, mask = video(2, 2, 224, seed=1)
    encoder = TempMeVideoEncoder(vit_b_32.visual, TempMeSchedule.no_merging(), 2)
    with torch.no_grad():
        got = encoder(frames, mask)
        expected = baseline_video_embedding(vit_b_32.visual, frames, mask)
    assert (got - expected).abs().max().item() <= 1e-5


def test_vit_b_32_trace_is_the_table_of_the_spec(vit_b_32):
    encoder = TempMeVideoEncoder(vit_b_32.visual, default_schedule("ViT-B-32", 12), 12)
    frames, mask = video(1, 12, 224, seed=2)
    with torch.no_grad():
        out = encoder.forward_with_trace(frames, mask)
    assert out.trace == VIT_B_32_TABLE
    assert out.trace == encoder.token_table()
    assert out.sizes.shape == (1, 1, 97) and out.sizes.sum().item() == 600
    assert out.embedding.shape == (1, 512)


def test_trainable_parameters_of_frozen_vit_b_32_with_lora_and_clip_pos_embeds():
    torch.manual_seed(0)
    clip = open_clip.create_model("ViT-B-32", pretrained=None)
    add_lora(clip)
    encoder = TempMeVideoEncoder(clip.visual, default_schedule("ViT-B-32", 12), 12)
    trainable = {id(p): p for p in [*clip.parameters(), *encoder.parameters()] if p.requires_grad}
    assert sum(p.numel() for p in trainable.values()) == 507_648
    assert sum(p.numel() for p in encoder.clip_position_parameters()) == 16_128
    assert all(not p.any() for p in encoder.clip_position_parameters())  # zero at start


def test_lora_trains_through_the_patched_attention_and_folds_exactly():
    clip = make_tiny(seed=1)
    peft_model = add_lora(clip)
    gen = torch.Generator().manual_seed(5)
    lora = {n: p for n, p in clip.visual.named_parameters() if "lora_" in n}
    assert len(lora) == 2 * 6
    with torch.no_grad():
        for name, p in lora.items():
            if "lora_B" in name:
                p.copy_(0.05 * torch.randn(p.shape, generator=gen))
    encoder = TempMeVideoEncoder(clip.visual, default_schedule("tiny-clip", 12), 12)
    with torch.no_grad():
        for p in encoder.clip_position_parameters():
            p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    frames, mask = video(2, 12, 48, seed=3)

    out = encoder(frames, mask)
    out.pow(2).sum().backward()
    for name, p in lora.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    for p in encoder.clip_position_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0

    fold_lora(peft_model)
    assert not any("lora_" in n for n, _ in clip.visual.named_parameters())
    with torch.no_grad():
        folded = encoder(frames, mask)
    assert (out.detach() - folded).abs().max().item() <= 1e-5


def test_the_open_clip_tower_is_left_untouched():
    clip = make_tiny(seed=2)
    visual = clip.visual
    images = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        before = visual(images)
    state = {k: v.clone() for k, v in visual.state_dict().items()}
    modules = list(visual.modules())

    encoder = TempMeVideoEncoder(visual, default_schedule("tiny-clip", 4), 4)
    encoder.train()
    frames, mask = video(2, 4, 48)
    encoder(frames, mask).sum().backward()  # a training step's forward and backward
    encoder.eval()

    assert encoder.visual is visual
    assert list(visual.modules()) == modules
    assert all(torch.equal(state[k], v) for k, v in visual.state_dict().items())
    assert "forward" not in vars(visual)
    with torch.no_grad():
        after = visual(images)
    assert torch.equal(before, after)


def test_sources_sizes_and_cls_tokens_are_tracked():
    clip = make_tiny()
    encoder = TempMeVideoEncoder(clip.visual, default_schedule("tiny-clip", 12), 12)
    frames, mask = video(2, 12, 48)
    with torch.no_grad():
        out = encoder.forward_with_trace(frames, mask, track_sources=True)
    sources = out.sources
    assert sources is not None and sources.shape == (2, 1, 98, 12 * 37)
    assert torch.equal(sources.sum(dim=2), torch.ones(2, 1, 12 * 37))  # every token once
    assert torch.equal(sources.sum(dim=-1), out.sizes)
    cls_columns = [f * 37 for f in range(12)]
    assert torch.equal(sources[:, 0, :12].argmax(-1), torch.tensor([cls_columns] * 2))
    assert out.sizes[:, 0, :12].eq(1).all()


def test_videos_in_a_batch_are_independent_and_pooling_follows_the_mask():
    clip = make_tiny()
    encoder = TempMeVideoEncoder(clip.visual, default_schedule("tiny-clip", 4), 4)
    frames, mask = video(3, 4, 48)
    with torch.no_grad():
        out = encoder.forward_with_trace(frames, mask)
        alone = torch.cat([encoder(frames[i:i + 1], mask[i:i + 1]) for i in range(3)])
    torch.testing.assert_close(out.embedding, alone, atol=1e-5, rtol=1e-5)
    last = out.frame_embeddings[-1, :2].mean(0)  # only the real frames of the padded video
    torch.testing.assert_close(out.embedding[-1], last)
    torch.testing.assert_close(out.embedding, masked_mean(out.frame_embeddings, mask))
    assert out.embedding.norm(dim=-1).max() < 1.0  # the mean is not renormalised


def test_bad_schedules_and_frame_counts_are_refused():
    clip = make_tiny()
    with pytest.raises(ScheduleError, match="valid groups there"):
        TempMeVideoEncoder(clip.visual, TempMeSchedule(2, (3, 4, 5), (2, 2, 3)), 8)
    encoder = TempMeVideoEncoder(clip.visual, default_schedule("tiny-clip", 4), 4)
    with pytest.raises(ValueError, match="built for 4 frames, got 2"):
        encoder(*video(1, 2, 48))


@pytest.mark.slow
def test_vit_b_16_defaults_leave_1_x_127_tokens():
    torch.manual_seed(0)
    visual = open_clip.create_model("ViT-B-16", pretrained=None).visual.eval()
    encoder = TempMeVideoEncoder(visual, default_schedule("ViT-B-16", 12), 12)
    with torch.no_grad():
        out = encoder.forward_with_trace(*video(1, 12, 224, seed=4))
    assert out.trace == encoder.token_table()
    assert (out.trace[-1].sequences, out.trace[-1].after_intra) == (1, 127)


@pytest.mark.slow
def test_vit_b_32_bf16_embeddings_stay_close_to_fp32(vit_b_32):
    """What bf16 evaluation changes: the merging encoder under bf16 autocast (random weights)
    gives embeddings within cosine 0.999 of fp32's, though merges may pick other pairs."""
    encoder = TempMeVideoEncoder(vit_b_32.visual, default_schedule("ViT-B-32", 12), 12)
    frames, mask = video(2, 12, 224, seed=5)
    mask[:] = True
    with torch.no_grad():
        full = encoder(frames, mask)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = encoder(frames, mask)
    assert half.dtype == torch.bfloat16  # the projection ran in bf16
    cosine = torch.nn.functional.cosine_similarity(full, half.float(), dim=-1)
    assert 0.999 < cosine.min() < 1.0
