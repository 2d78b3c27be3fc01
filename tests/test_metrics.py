"""Retrieval metrics against a brute-force reference, with ties and several captions per video."""

import numpy as np
import pytest
import torch

from suite.metrics import query_ranks, retrieval_metrics


def brute_force_rank(scores: list[float], positive: list[bool]) -> int:
    """Rank of the best positive: 1 + strictly higher + other candidates tied with it."""
    best_index = max((i for i, p in enumerate(positive) if p), key=lambda i: scores[i])
    best = scores[best_index]
    rank = 1
    for i, s in enumerate(scores):
        if i == best_index:
            continue
        if s > best or s == best:
            rank += 1
    return rank


def brute_force_metrics(sims: np.ndarray, pos: np.ndarray) -> dict[str, float]:
    out = {}
    for prefix, s, p in (("t2v", sims, pos), ("v2t", sims.T, pos.T)):
        ranks = np.array([brute_force_rank(list(s[i]), list(p[i])) for i in range(len(s))])
        out[f"{prefix}_R1"] = 100 * np.mean(ranks <= 1)
        out[f"{prefix}_R5"] = 100 * np.mean(ranks <= 5)
        out[f"{prefix}_R10"] = 100 * np.mean(ranks <= 10)
        out[f"{prefix}_MdR"] = float(np.median(ranks))
        out[f"{prefix}_MnR"] = float(np.mean(ranks))
    out["t2v_rsum"] = out["t2v_R1"] + out["t2v_R5"] + out["t2v_R10"]
    return out


@pytest.mark.parametrize("seed", range(5))
def test_metrics_match_brute_force_with_ties_and_multiple_captions(seed):
    rng = np.random.default_rng(seed)
    videos = 30
    per_video = rng.integers(1, 4, size=videos)  # 1-3 captions per video
    caption_video = np.repeat(np.arange(videos), per_video)
    pos = np.zeros((len(caption_video), videos), dtype=bool)
    pos[np.arange(len(caption_video)), caption_video] = True
    # Coarse integer scores make many exact ties.
    sims = rng.integers(0, 6, size=pos.shape).astype(np.float32)
    got = retrieval_metrics(torch.from_numpy(sims), torch.from_numpy(pos))
    want = brute_force_metrics(sims, pos)
    for key, value in want.items():
        assert got[key] == pytest.approx(value), key


def test_ties_count_against_the_query():
    sims = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    pos = torch.tensor([[False, True, False, False]])
    assert query_ranks(sims, pos).tolist() == [3]


def test_chunked_ranks_equal_unchunked():
    g = torch.Generator().manual_seed(0)
    sims = torch.randn(257, 40, generator=g)
    pos = torch.zeros(257, 40, dtype=torch.bool)
    pos[torch.arange(257), torch.arange(257) % 40] = True
    assert torch.equal(query_ranks(sims, pos, chunk=16), query_ranks(sims, pos, chunk=10_000))


def test_perfect_scores_give_rank_one_everywhere():
    got = retrieval_metrics(torch.eye(12), torch.eye(12, dtype=torch.bool))
    assert got["t2v_R1"] == 100.0 and got["v2t_MdR"] == 1.0 and got["t2v_rsum"] == 300.0


def test_query_without_positive_is_an_error():
    with pytest.raises(ValueError, match="positive"):
        query_ranks(torch.zeros(2, 2), torch.tensor([[True, False], [False, False]]))


def brute_force_dual_softmax(sims: np.ndarray, temperature: float = 100.0) -> np.ndarray:
    """Each similarity times exp(t s) over the sum of exp(t s') down its column, in float64."""
    out = np.zeros_like(sims, dtype=np.float64)
    for j in range(sims.shape[1]):
        column = [np.exp(temperature * float(sims[k, j])) for k in range(sims.shape[0])]
        for i in range(sims.shape[0]):
            out[i, j] = sims[i, j] * column[i] / sum(column)
    return out


def test_dual_softmax_equals_a_float64_loop_and_is_reported_apart():
    from suite.metrics import dual_softmax, dual_softmax_metrics

    rng = np.random.default_rng(5)
    sims = rng.uniform(-0.2, 0.4, (14, 9))
    torch.testing.assert_close(dual_softmax(torch.from_numpy(sims)),
                               torch.from_numpy(brute_force_dual_softmax(sims)),
                               rtol=1e-12, atol=1e-12)
    positives = np.zeros((14, 9), dtype=bool)
    positives[np.arange(14), np.arange(14) % 9] = True
    dsl = dual_softmax_metrics(torch.from_numpy(sims), torch.from_numpy(positives))
    assert all(key.startswith("dsl_") for key in dsl)
    expected = brute_force_metrics(brute_force_dual_softmax(sims).astype(np.float32), positives)
    expected_v2t = brute_force_metrics(
        brute_force_dual_softmax(sims.T).astype(np.float32).T, positives)
    for name in ("R1", "R5", "R10", "MdR", "MnR"):
        assert dsl[f"dsl_t2v_{name}"] == pytest.approx(expected[f"t2v_{name}"])
        assert dsl[f"dsl_v2t_{name}"] == pytest.approx(expected_v2t[f"v2t_{name}"])
    raw = retrieval_metrics(torch.from_numpy(sims), torch.from_numpy(positives))
    assert raw["t2v_R1"] != dsl["dsl_t2v_R1"] or raw["t2v_MnR"] != dsl["dsl_t2v_MnR"]
