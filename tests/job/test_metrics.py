"""Retrieval metrics against a brute-force reference (ties, several captions per video,
non-finite scores) and against CLIP4Clip's functions (the literature's figures)."""

import numpy as np
import pytest
import torch

from suite.job.metrics import query_ranks, retrieval_metrics


def brute_force_rank(scores: list[float], positive: list[bool]) -> int:
    """Rank of the best positive: 1 + candidates strictly higher + negatives tied with it."""
    best_index = max((i for i, p in enumerate(positive) if p), key=lambda i: scores[i])
    best = scores[best_index]
    rank = 1
    for i, s in enumerate(scores):
        if i == best_index:
            continue
        if s > best or (s == best and not positive[i]):
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


def test_ties_with_negatives_count_against_the_query():
    sims = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    pos = torch.tensor([[False, True, False, False]])
    assert query_ranks(sims, pos).tolist() == [3]


def test_a_tie_between_two_positives_costs_nothing():
    sims = torch.tensor([[0.5, 0.9, 0.9, 0.1]])
    pos = torch.tensor([[False, True, True, False]])
    assert query_ranks(sims, pos).tolist() == [1]
    pos_and_negative = torch.tensor([[False, True, True, False]])
    sims_tied_negative = torch.tensor([[0.9, 0.9, 0.9, 0.1]])
    assert query_ranks(sims_tied_negative, pos_and_negative).tolist() == [2]


def test_repeated_captions_do_not_cost_video_to_text_rank():
    """MSVD repeats sentences within a video; identical captions embed identically. A video
    whose two captions are the same text must still find them at rank 1."""
    rng = np.random.default_rng(3)
    videos = 50
    video_embs = rng.normal(size=(videos, 16))
    video_embs /= np.linalg.norm(video_embs, axis=1, keepdims=True)
    caption_video = np.repeat(np.arange(videos), 4)
    text = video_embs[caption_video] + 0.01 * rng.normal(size=(len(caption_video), 16))
    text[1::4] = text[0::4]  # every video's second caption repeats its first, bit-identically
    sims = torch.from_numpy(text @ video_embs.T).float()
    pos = torch.zeros(len(caption_video), videos, dtype=torch.bool)
    pos[torch.arange(len(caption_video)), torch.from_numpy(caption_video)] = True
    got = retrieval_metrics(sims, pos)
    assert got["v2t_R1"] == 100.0


def test_non_finite_similarities_rank_last():
    """A diverged model (NaN embeddings) must not score: NaN compares false with everything."""
    sims = torch.full((20, 20), float("nan"))
    got = retrieval_metrics(sims, torch.eye(20, dtype=torch.bool))
    assert got["t2v_R1"] == 0.0 and got["t2v_MdR"] == 20.0 and got["t2v_rsum"] == 0.0
    assert got["nonfinite_similarities"] == 400.0
    partly = torch.eye(4) * 0.5
    partly[0, 0] = float("nan")  # the positive is NaN: below every finite negative
    partly[1, 3] = float("inf")  # an infinite negative is not "higher" than a finite positive
    ranks = query_ranks(partly, torch.eye(4, dtype=torch.bool))
    assert ranks.tolist() == [4, 1, 1, 1]


def test_skipped_videos_count_as_misses():
    got = retrieval_metrics(torch.eye(4), torch.eye(4, dtype=torch.bool), missed_t2v=4,
                            missed_v2t=4)
    assert got["t2v_R1"] == 50.0 and got["v2t_R1"] == 50.0
    assert got["t2v_MnR"] == (4 * 1 + 4 * 8) / 8  # a miss ranks last of all 8 videos


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
    from suite.job.metrics import dual_softmax, dual_softmax_metrics

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


# --- CLIP4Clip's functions, written out from ArrowLuo/CLIP4Clip@508ffa3 metrics.py ------------


def clip4clip_compute_metrics(x: np.ndarray) -> dict[str, float]:
    """metrics.py lines 9-24: ``sx = np.sort(-x, axis=1)``, ``d = np.diag(-x)``, the rank is
    where ``sx - d == 0``; ``MR = np.median(ind) + 1``, ``MeanR = np.mean(ind) + 1``."""
    order = np.sort(-x, axis=1)
    ind = np.where(order - np.diag(-x)[:, None] == 0)[1]
    return {"R1": 100 * np.mean(ind == 0), "R5": 100 * np.mean(ind < 5),
            "R10": 100 * np.mean(ind < 10), "MdR": float(np.median(ind) + 1),
            "MnR": float(np.mean(ind) + 1)}


def clip4clip_padded(sims: np.ndarray, per_video: np.ndarray) -> np.ndarray:
    """main_task_retrieval.py lines 432-440: the (captions x videos) matrix cut per video and
    padded with -inf to (videos, max captions, videos)."""
    width = per_video.max()
    out = np.full((len(per_video), width, sims.shape[1]), -np.inf)
    start = 0
    for v, n in enumerate(per_video):
        out[v, :n] = sims[start:start + n]
        start += n
    return out


def clip4clip_text_to_video(padded: np.ndarray) -> dict[str, float]:
    """metrics.py lines 34-61: double argsort of ``sim_tensor.permute(1, 0, 2)``, the diagonal
    ranks, padding rows dropped, ``torch.median(valid_ranks + 1)`` (the lower middle)."""
    stacked = torch.from_numpy(padded).permute(1, 0, 2)
    second = torch.argsort(torch.argsort(stacked, dim=-1, descending=True), dim=-1)
    ranks = torch.flatten(torch.diagonal(second, dim1=1, dim2=2))
    valid = ~torch.isinf(torch.flatten(torch.diagonal(torch.from_numpy(padded), dim1=0, dim2=2)))
    r = ranks[valid]
    return {"R1": float(100 * (r < 1).double().mean()), "R5": float(100 * (r < 5).double().mean()),
            "R10": float(100 * (r < 10).double().mean()), "MdR": float(torch.median(r + 1)),
            "MnR": float((r + 1).double().mean())}


def clip4clip_video_to_text(padded: np.ndarray) -> dict[str, float]:
    """metrics.py lines 63-70: ``torch.max(sim_tensor, dim=1)`` (each caption group's best),
    transposed to (videos x groups), then ``compute_metrics``."""
    return clip4clip_compute_metrics(padded.max(axis=1).T)


@pytest.mark.parametrize("seed", range(4))
def test_literature_metrics_equal_clip4clip_single_caption(seed):
    from suite.job.metrics import literature_metrics

    rng = np.random.default_rng(seed)
    sims = rng.normal(size=(40, 40))  # continuous: no ties
    got = literature_metrics(torch.from_numpy(sims), torch.eye(40, dtype=torch.bool))
    for direction, matrix in (("t2v", sims), ("v2t", sims.T)):
        want = clip4clip_compute_metrics(matrix.astype(np.float32))
        for name, value in want.items():
            assert got[f"lit_{direction}_{name}"] == pytest.approx(value), (direction, name)


@pytest.mark.parametrize("seed", range(4))
def test_literature_metrics_equal_clip4clip_several_captions(seed):
    from suite.job.metrics import literature_metrics

    rng = np.random.default_rng(seed)
    videos = 37
    per_video = rng.integers(1, 6, size=videos)
    caption_video = np.repeat(np.arange(videos), per_video)
    sims = rng.normal(size=(len(caption_video), videos)).astype(np.float32)
    pos = np.zeros(sims.shape, dtype=bool)
    pos[np.arange(len(caption_video)), caption_video] = True
    got = literature_metrics(torch.from_numpy(sims), torch.from_numpy(pos))
    padded = clip4clip_padded(sims.astype(np.float64), per_video)
    for direction, want in (("t2v", clip4clip_text_to_video(padded)),
                            ("v2t", clip4clip_video_to_text(padded))):
        for name, value in want.items():
            assert got[f"lit_{direction}_{name}"] == pytest.approx(value), (direction, name)
    ours = retrieval_metrics(torch.from_numpy(sims), torch.from_numpy(pos))
    assert ours["t2v_R1"] == got["lit_t2v_R1"]  # same ranks, only the median differs
