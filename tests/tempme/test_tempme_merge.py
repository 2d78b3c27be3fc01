"""Merge primitives against a brute-force pure-Python reference, and proportional attention."""

import math
import random

import pytest
import torch

from tempme.merge import (
    bipartite_soft_matching,
    max_merge,
    merge_sources,
    merge_tokens,
    proportional_attention,
    split_positions,
)


def reference_merge(x, sizes, metric, sources, r, protected):
    """One sequence, plain Python lists: the rules of tempme.md written as loops."""
    n = len(x)
    r = min(r, (n - protected) // 2)
    if r <= 0:
        return x, sizes, sources
    src = [p for p in range(protected, n) if p % 2 == 0]
    dst = [p for p in range(protected, n) if p % 2 == 1]

    def cosine(a, b):
        dot = sum(u * v for u, v in zip(a, b, strict=True))
        return dot / (math.sqrt(sum(u * u for u in a)) * math.sqrt(sum(v * v for v in b)))

    best = {}
    for s in src:
        scores = [cosine(metric[s], metric[d]) for d in dst]
        j = max(range(len(dst)), key=lambda i, sc=scores: sc[i])
        best[s] = (scores[j], dst[j])
    ranked = sorted(src, key=lambda s: -best[s][0])  # stable: ties keep the original order
    merged = set(ranked[:r])
    members = {d: [d] for d in dst}
    for s in merged:
        members[best[s][1]].append(s)
    keep = [p for p in range(protected)] + [s for s in src if s not in merged]
    out_x = [x[p] for p in keep]
    out_sizes = [sizes[p] for p in keep]
    out_sources = [sources[p] for p in keep]
    for d in dst:
        total = sum(sizes[m] for m in members[d])
        out_x.append([sum(x[m][c] * sizes[m] for m in members[d]) / total
                      for c in range(len(x[d]))])
        out_sizes.append(total)
        out_sources.append([sum(sources[m][c] for m in members[d])
                            for c in range(len(sources[d]))])
    return out_x, out_sizes, out_sources


CASES = [
    (n, protected, r)
    for n in (9, 12, 17)
    for protected in (0, 1, 2, 3, 4)
    for r in (0, 1, 3, 100)
]


@pytest.mark.parametrize(("n", "protected", "r"), CASES)
def test_merge_matches_brute_force_reference(n, protected, r):
    gen = torch.Generator().manual_seed(n * 100 + protected * 10 + r)
    batch, channels = 3, 5
    x = torch.randn(batch, n, channels, generator=gen, dtype=torch.float64)
    metric = torch.randn(batch, n, 4, generator=gen, dtype=torch.float64)
    sizes = torch.randint(1, 5, (batch, n), generator=gen).double()
    sources = torch.randint(0, 2, (batch, n, 2 * n), generator=gen).double()

    m = bipartite_soft_matching(metric, r, protected)
    got_x, got_sizes = merge_tokens(m, x, sizes)
    got_sources = merge_sources(m, sources)
    expected_len = n - min(r, (n - protected) // 2)
    assert got_x.shape == (batch, expected_len, channels)
    for b in range(batch):
        ref_x, ref_sizes, ref_sources = reference_merge(
            x[b].tolist(), sizes[b].tolist(), metric[b].tolist(), sources[b].tolist(), r,
            protected)
        torch.testing.assert_close(got_x[b], torch.tensor(ref_x, dtype=torch.float64),
                                   rtol=0, atol=1e-10)
        assert got_sizes[b].tolist() == ref_sizes
        assert got_sources[b].tolist() == ref_sources


def test_merge_float32_batched_equals_reference():
    """Batched fp32 (the encoder's case) agrees with the reference within fp32 precision."""
    rng = random.Random(0)
    x = torch.tensor([[[rng.gauss(0, 1) for _ in range(8)] for _ in range(26)] for _ in range(4)])
    m = bipartite_soft_matching(x, 6, 2)
    got, got_sizes = merge_tokens(m, x, torch.ones(4, 26))
    for b in range(4):
        ref, ref_sizes, _ = reference_merge(x[b].tolist(), [1.0] * 26, x[b].tolist(),
                                            [[0.0]] * 26, 6, 2)
        torch.testing.assert_close(got[b], torch.tensor(ref), rtol=0, atol=1e-5)
        assert got_sizes[b].tolist() == ref_sizes


def test_parity_uses_absolute_positions():
    assert split_positions(7, 1) == ([2, 4, 6], [1, 3, 5])
    assert split_positions(7, 2) == ([2, 4, 6], [3, 5])
    assert split_positions(7, 3) == ([4, 6], [3, 5])
    assert split_positions(5, 0) == ([0, 2, 4], [1, 3])
    assert max_merge(50, 1) == 24 and max_merge(68, 2) == 33 and max_merge(3, 3) == 0


def test_worked_example_order_and_weighted_average():
    """CLS | a b c d: sources are b (pos 2) and d (pos 4); b is most like c, so b joins c."""
    metric = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [1.0, 0.0], [0.0, -1.0]]])
    x = torch.arange(5.0).view(1, 5, 1)
    sizes = torch.tensor([[1.0, 1.0, 3.0, 1.0, 1.0]])
    m = bipartite_soft_matching(metric, 1, protected=1)
    out, out_sizes = merge_tokens(m, x, sizes)
    # CLS, unmerged source d, then destinations a and c (c absorbed b: (3*2 + 1*3) / 4)
    assert out.flatten().tolist() == [0.0, 4.0, 1.0, (3 * 2 + 3) / 4]
    assert out_sizes.flatten().tolist() == [1.0, 1.0, 1.0, 4.0]


def test_protected_tokens_never_merge_and_r_is_capped():
    metric = torch.ones(2, 6, 3)  # everything identical, CLS included
    x = torch.randn(2, 6, 3)
    m = bipartite_soft_matching(metric, 10, protected=2)
    assert m is not None and m.r == 2  # 4 patch tokens -> at most 2 merges
    out, sizes = merge_tokens(m, x, torch.ones(2, 6))
    assert torch.equal(out[:, :2], x[:, :2]) and sizes[:, :2].eq(1).all()
    assert sizes.sum().item() == 12
    assert bipartite_soft_matching(metric, 0, 2) is None
    assert bipartite_soft_matching(metric[:, :3], 5, 2) is None  # one patch token: nothing to do


def test_unmerged_sources_keep_original_order():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(1, 21, 4, generator=gen)
    m = bipartite_soft_matching(x, 4, protected=1)
    assert m is not None
    kept_positions = m.src_pos[m.kept[0]].tolist()
    assert kept_positions == sorted(kept_positions)


def test_proportional_attention_adds_log_size():
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=gen) for _ in range(3))
    sizes = torch.randint(1, 6, (2, 5), generator=gen).float()
    logits = q @ k.transpose(-1, -2) / 2.0 + sizes.log()[:, None, None, :]
    expected = logits.softmax(-1) @ v
    torch.testing.assert_close(proportional_attention(q, k, v, sizes), expected)
    plain = (q @ k.transpose(-1, -2) / 2.0).softmax(-1) @ v
    torch.testing.assert_close(proportional_attention(q, k, v, None), plain)


def test_a_merged_token_draws_attention_like_its_members():
    """A key of size 2 weighs exactly like the same key present twice."""
    gen = torch.Generator().manual_seed(2)
    q = torch.randn(1, 1, 3, 4, generator=gen)
    k = torch.randn(1, 1, 2, 4, generator=gen)
    v = torch.randn(1, 1, 2, 4, generator=gen)
    merged = proportional_attention(q, k, v, torch.tensor([[1.0, 2.0]]))
    duplicated = proportional_attention(q, k[:, :, [0, 1, 1]], v[:, :, [0, 1, 1]], None)
    torch.testing.assert_close(merged, duplicated)


def test_merge_gradients_are_those_of_the_weighted_average():
    """Several sources joining one destination (duplicate targets) under autograd: the
    additive update's gradients equal numerical ones (float64)."""
    gen = torch.Generator().manual_seed(7)
    metric = torch.ones(2, 11, 3, dtype=torch.float64)  # all alike: every source -> first dst
    metric[:, :, 0] += 1e-3 * torch.arange(11)
    x = torch.randn(2, 11, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    sizes = torch.randint(1, 4, (2, 11), generator=gen).double()
    m = bipartite_soft_matching(metric, 4, protected=1)
    assert m is not None and bool((m.target[:, :1] == m.target).any())
    assert torch.autograd.gradcheck(lambda t: merge_tokens(m, t, sizes)[0], (x,))


def test_destinations_that_receive_nothing_are_copied_exactly():
    gen = torch.Generator().manual_seed(8)
    x, metric = torch.randn(3, 21, 6, generator=gen), torch.randn(3, 21, 5, generator=gen)
    sizes = torch.randint(1, 9, (3, 21), generator=gen).float()
    m = bipartite_soft_matching(metric, 3, protected=1)
    out, new_sizes = merge_tokens(m, x, sizes)
    for b in range(3):
        untouched = sorted(set(range(m.dst_pos.numel())) - set(m.target[b].tolist()))
        first = 1 + m.kept.shape[1]
        rows = [first + d for d in untouched]
        assert torch.equal(out[b, rows], x[b, m.dst_pos[untouched]])
        assert torch.equal(new_sizes[b, rows], sizes[b, m.dst_pos[untouched]])
