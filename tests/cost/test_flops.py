"""Multiply-add counting: fused attention handles, loud failure on uncounted work, and the
paper's figures for ViT-B/32 and ViT-B/16 with 12 frames."""

import open_clip
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from methods import registry
from suite.cost.flops import count_macs
from suite.cost.profiling import dummy_video, output_tokens
from suite.errors import UncountedOperatorError
from suite.models.embedded import quiet_logging


class ExplicitAttention(nn.Module):
    def forward(self, q, k, v):
        return torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v


class FusedAttention(nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def test_fused_attention_counts_like_its_explicit_matmuls():
    q, k, v = torch.randn(2, 3, 7, 8), torch.randn(2, 3, 5, 8), torch.randn(2, 3, 5, 4)
    explicit = count_macs(ExplicitAttention(), (q, k, v)).total
    assert explicit == 2 * 3 * 7 * 5 * (8 + 4)
    assert count_macs(FusedAttention(), (q, k, v)).total == explicit


def test_native_multi_head_attention_fast_path_is_counted():
    mha = nn.MultiheadAttention(16, 4, batch_first=True)

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    count = count_macs(SelfAttention(), (torch.randn(2, 10, 16),))
    in_proj, attention, out_proj = 2 * 10 * 16 * 48, 2 * 2 * 10 * 10 * 16, 2 * 10 * 16 * 16
    assert count.total == in_proj + attention + out_proj


def test_uncounted_real_work_fails_loudly():
    class Inverse(nn.Module):
        def forward(self, x):
            return torch.linalg.inv(x)

    with pytest.raises(UncountedOperatorError, match="linalg_inv"):
        count_macs(Inverse(), (torch.randn(4, 8, 8),))


def test_pairwise_distances_count_one_multiply_add_per_coordinate_pair():
    class Distances(nn.Module):
        def forward(self, x, y):
            return torch.cdist(x, y)

    count = count_macs(Distances(), (torch.randn(3, 16, 8), torch.randn(3, 5, 8)))
    assert count.total == 3 * 16 * 5 * 8


def video_cost(method: str, backbone: str) -> tuple[float, int]:
    with quiet_logging():
        clip = open_clip.create_model(backbone)
    spec = registry.get(method)
    model = spec.build(clip, spec.make_config(backbone, 12, {}), 12, backbone).fold()
    pixels, mask = dummy_video(1, 12, 224, torch.device("cpu"))
    gmacs = count_macs(model.video_encoder, (pixels, mask)).gmacs
    return gmacs, output_tokens(model.video_encoder, 12, 224)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["zeroshot", "lora"])
def test_vit_b_32_unmerged_cost(method):
    gmacs, tokens = video_cost(method, "ViT-B-32")
    assert 52.9 <= gmacs <= 53.0 and tokens == 600


@pytest.mark.slow
def test_vit_b_32_tempme_cost():
    gmacs, tokens = video_cost("tempme", "ViT-B-32")
    assert 34.7 <= gmacs <= 34.8 and tokens == 97


@pytest.mark.slow
def test_vit_b_16_costs():
    gmacs, tokens = video_cost("zeroshot", "ViT-B-16")
    assert 210.8 <= gmacs <= 211.3 and tokens == 12 * 197
    gmacs, tokens = video_cost("tempme", "ViT-B-16")
    assert abs(gmacs - 121.4) / 121.4 <= 0.01 and tokens == 127
