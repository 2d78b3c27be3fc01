"""Retrieval metrics from a similarity matrix and a boolean positive-pair matrix.

Ground truth is a (captions x videos) boolean matrix, so several captions per video and
paragraph datasets need no special case. The suite's figures (protocol.md) under the standard
names ``t2v_R1 ... v2t_MnR``:

- a query's rank is 1 + the candidates scored strictly higher than its best positive + the
  *negatives* scored equal to it: ties with negatives count against the query, ties among
  positives cost nothing (MSVD repeats sentences; identical captions embed identically);
- non-finite similarities (a diverged model) rank below every finite one, so a model whose
  embeddings are NaN scores chance or worse, never perfectly;
- video-to-text ranks a video's best positive caption among all captions;
- MdR is the interpolated median.

The CLIP4Clip family of code (CLIP4Clip, TempMe, CenterCLIP, DGL print these) computes some
figures differently; ``literature_metrics`` reproduces them under ``lit_`` names (see its
docstring). Dual softmax (DSL), which uses the whole query set, is reported beside the raw
figures under ``dsl_`` names, never instead of them.
"""

from __future__ import annotations

import torch

CHUNK = 1024


def _finite_or_lowest(sims: torch.Tensor) -> torch.Tensor:
    """Non-finite similarities become -inf: below every finite score (a NaN compares false
    with everything and would otherwise give rank 1)."""
    return sims.masked_fill(~torch.isfinite(sims), float("-inf"))


def query_ranks(sims: torch.Tensor, positives: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """1-based rank of each row's best positive column (see the module docstring for ties and
    non-finite scores).

    ``sims`` (Q x C) float, ``positives`` (Q x C) bool; every row needs at least one positive.
    Works in row chunks so a 10k x 10k problem does not allocate several Q x C temporaries.
    """
    if sims.shape != positives.shape:
        raise ValueError(
            f"similarity {tuple(sims.shape)} and positives {tuple(positives.shape)} differ")
    if not bool(positives.any(dim=1).all()):
        raise ValueError("every query needs at least one positive")
    ranks = []
    for start in range(0, sims.shape[0], chunk):
        s = _finite_or_lowest(sims[start:start + chunk])
        p = positives[start:start + chunk]
        best = s.masked_fill(~p, float("-inf")).max(dim=1, keepdim=True).values
        higher = (s > best).sum(dim=1)
        tied_negatives = ((s == best) & ~p).sum(dim=1)
        ranks.append(1 + higher + tied_negatives)
    return torch.cat(ranks)


def summarise(ranks: torch.Tensor, median: str = "interpolated") -> dict[str, float]:
    """R@1/5/10 (percent), median and mean rank. ``median="lower"`` takes the lower middle
    value of an even count, as ``torch.median`` does."""
    r = ranks.double()
    middle = r.quantile(0.5) if median == "interpolated" else r.median()
    return {
        "R1": 100.0 * float((r <= 1).double().mean()),
        "R5": 100.0 * float((r <= 5).double().mean()),
        "R10": 100.0 * float((r <= 10).double().mean()),
        "MdR": float(middle),
        "MnR": float(r.mean()),
    }


def with_misses(ranks: torch.Tensor, misses: int, worst: int) -> torch.Tensor:
    """``ranks`` plus ``misses`` queries that found nothing (rank ``worst``): queries whose
    positive is absent from the candidates (a skipped test video) count as failures instead of
    silently leaving the test set."""
    if misses <= 0:
        return ranks
    return torch.cat([ranks, torch.full((misses,), worst, dtype=ranks.dtype)])


def retrieval_metrics(sims: torch.Tensor, positives: torch.Tensor, missed_t2v: int = 0,
                      missed_v2t: int = 0) -> dict[str, float]:
    """Both directions from a (captions x videos) similarity matrix.

    Keys: ``t2v_R1 ... t2v_MnR``, ``v2t_...``, ``t2v_rsum`` (R@1+R@5+R@10 of text-to-video, the
    paper's R-Sum), ``v2t_rsum`` (the same of video-to-text) and ``rsum_both`` (their sum).
    ``missed_t2v`` and ``missed_v2t`` add queries that count as misses, ranked last among all
    candidates, the left-out ones included (their positives were left out of the split), and
    ``nonfinite_similarities`` says how many scores were NaN or infinite.
    """
    sims = sims.float()
    positives = positives.bool()
    captions, videos = sims.shape
    t2v = summarise(with_misses(query_ranks(sims, positives), missed_t2v, videos + missed_v2t))
    v2t = summarise(with_misses(query_ranks(sims.t(), positives.t()), missed_v2t,
                                captions + missed_t2v))
    out = {f"t2v_{k}": v for k, v in t2v.items()}
    out.update({f"v2t_{k}": v for k, v in v2t.items()})
    out["t2v_rsum"] = t2v["R1"] + t2v["R5"] + t2v["R10"]
    out["v2t_rsum"] = v2t["R1"] + v2t["R5"] + v2t["R10"]
    out["rsum_both"] = out["t2v_rsum"] + out["v2t_rsum"]
    out["nonfinite_similarities"] = float((~torch.isfinite(sims)).sum())
    return out


def literature_metrics(sims: torch.Tensor, positives: torch.Tensor, missed_t2v: int = 0,
                       missed_v2t: int = 0) -> dict[str, float]:
    """The figures as the CLIP4Clip family of code computes them, under ``lit_`` names.

    CLIP4Clip ``metrics.py`` (ArrowLuo/CLIP4Clip@508ffa3), which TempMe copies as
    ``tvr/utils/metrics.py``:

    - one caption per video (MSR-VTT 1k-A, paragraph datasets): ``compute_metrics`` (lines 9-24)
      on the matrix and its transpose; MdR is ``np.median(ind) + 1``, interpolated;
    - several captions per video (MSVD): text-to-video with ``tensor_text_to_video_metrics``
      (lines 34-61), whose MdR is ``torch.median``, the lower middle rank; video-to-text with
      ``tensor_video_to_text_sim`` (lines 63-70): every video ranks the caption *groups* (the
      captions of one video) by each group's best caption, then ``compute_metrics``.

    Each caption must belong to exactly one video. Ties and non-finite scores follow the
    suite's rule (the references break ties by sort order or count a row per tie); on tie-free
    matrices the figures equal the references'. Misses count as in ``retrieval_metrics``.
    """
    sims = sims.float()
    positives = positives.bool()
    if not bool((positives.sum(dim=1) == 1).all()):
        raise ValueError("literature metrics need exactly one video per caption")
    caption_video = positives.float().argmax(dim=1)
    per_video = torch.bincount(caption_video, minlength=positives.shape[1])
    captions, videos = sims.shape
    t2v_ranks = with_misses(query_ranks(sims, positives), missed_t2v, videos + missed_v2t)
    if bool((per_video == 1).all()):
        t2v = summarise(t2v_ranks)
        v2t_ranks = query_ranks(sims.t(), positives.t())
        v2t = summarise(with_misses(v2t_ranks, missed_v2t, captions + missed_t2v))
    else:
        t2v = summarise(t2v_ranks, median="lower")
        groups = group_best(_finite_or_lowest(sims), caption_video, positives.shape[1])
        diagonal = torch.eye(len(groups), dtype=torch.bool)
        v2t_ranks = query_ranks(groups.t(), diagonal)
        v2t = summarise(with_misses(v2t_ranks, missed_v2t, videos + missed_v2t))
    out = {f"lit_t2v_{k}": v for k, v in t2v.items()}
    out.update({f"lit_v2t_{k}": v for k, v in v2t.items()})
    out["lit_t2v_rsum"] = t2v["R1"] + t2v["R5"] + t2v["R10"]
    return out


def group_best(sims: torch.Tensor, caption_video: torch.Tensor, videos: int) -> torch.Tensor:
    """(videos x videos): entry [g, v] is the best score of video g's captions for video v."""
    out = torch.full((videos, sims.shape[1]), float("-inf"))
    return out.scatter_reduce(0, caption_video[:, None].expand_as(sims), sims, reduce="amax")


def dual_softmax(sims: torch.Tensor, temperature: float = 100.0) -> torch.Tensor:
    """CAMoE's dual softmax inference for a (queries x candidates) matrix: every similarity
    times the softmax, over all queries, of the candidate's column (at CLIP's logit scale)."""
    return sims * torch.softmax(sims * temperature, dim=0)


def dual_softmax_metrics(sims: torch.Tensor, positives: torch.Tensor, missed_t2v: int = 0,
                         missed_v2t: int = 0) -> dict[str, float]:
    """``retrieval_metrics`` after dual softmax in each direction, every key prefixed ``dsl_``."""
    sims = sims.float()
    positives = positives.bool()
    captions, videos = sims.shape
    t2v = summarise(with_misses(query_ranks(dual_softmax(sims), positives), missed_t2v,
                                videos + missed_v2t))
    v2t = summarise(with_misses(query_ranks(dual_softmax(sims.t()), positives.t()), missed_v2t,
                                captions + missed_t2v))
    out = {f"dsl_t2v_{k}": v for k, v in t2v.items()}
    out.update({f"dsl_v2t_{k}": v for k, v in v2t.items()})
    out["dsl_t2v_rsum"] = t2v["R1"] + t2v["R5"] + t2v["R10"]
    return out


def both_query_ranks(sims: torch.Tensor, positives: torch.Tensor, missed_t2v: int = 0,
                     missed_v2t: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-query ranks behind ``retrieval_metrics``: text-to-video (one per caption, then
    ``missed_t2v`` misses) and video-to-text (one per video, then ``missed_v2t`` misses)."""
    sims = sims.float()
    positives = positives.bool()
    captions, videos = sims.shape
    t2v = with_misses(query_ranks(sims, positives), missed_t2v, videos + missed_v2t)
    v2t = with_misses(query_ranks(sims.t(), positives.t()), missed_v2t, captions + missed_t2v)
    return t2v, v2t
