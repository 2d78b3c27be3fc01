"""Retrieval metrics from a similarity matrix and a boolean positive-pair matrix.

Ground truth is a (captions x videos) boolean matrix, so several captions per video and
paragraph datasets need no special case. A query's rank is 1 + the number of candidates scored
strictly higher than its best positive + the number of other candidates scored equal to it: ties
count against the query (protocol.md). Dual softmax (DSL), which uses the whole query set, is
reported beside the raw figures under its own names, never instead of them.
"""

from __future__ import annotations

import torch

CHUNK = 1024


def query_ranks(sims: torch.Tensor, positives: torch.Tensor, chunk: int = CHUNK) -> torch.Tensor:
    """1-based rank of each row's best positive column, ties counted against the query.

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
        s = sims[start:start + chunk]
        p = positives[start:start + chunk]
        best = s.masked_fill(~p, float("-inf")).max(dim=1, keepdim=True).values
        # The best positive itself is tied with itself, hence the -1 among the ties.
        higher = (s > best).sum(dim=1)
        tied = (s == best).sum(dim=1) - 1
        ranks.append(1 + higher + tied)
    return torch.cat(ranks)


def summarise(ranks: torch.Tensor) -> dict[str, float]:
    """R@1/5/10 (percent), median and mean rank."""
    r = ranks.double()
    return {
        "R1": 100.0 * float((r <= 1).double().mean()),
        "R5": 100.0 * float((r <= 5).double().mean()),
        "R10": 100.0 * float((r <= 10).double().mean()),
        "MdR": float(r.quantile(0.5)),
        "MnR": float(r.mean()),
    }


def retrieval_metrics(sims: torch.Tensor, positives: torch.Tensor) -> dict[str, float]:
    """Both directions from a (captions x videos) similarity matrix.

    Keys: ``t2v_R1 ... t2v_MnR``, ``v2t_...``, ``t2v_rsum`` (R@1+R@5+R@10 of text-to-video, the
    paper's R-Sum) and ``rsum_both`` (the same summed over both directions).
    """
    sims = sims.float()
    positives = positives.bool()
    t2v = summarise(query_ranks(sims, positives))
    v2t = summarise(query_ranks(sims.t(), positives.t()))
    out = {f"t2v_{k}": v for k, v in t2v.items()}
    out.update({f"v2t_{k}": v for k, v in v2t.items()})
    out["t2v_rsum"] = t2v["R1"] + t2v["R5"] + t2v["R10"]
    out["rsum_both"] = out["t2v_rsum"] + v2t["R1"] + v2t["R5"] + v2t["R10"]
    return out


def dual_softmax(sims: torch.Tensor, temperature: float = 100.0) -> torch.Tensor:
    """CAMoE's dual softmax inference for a (queries x candidates) matrix: every similarity
    times the softmax, over all queries, of the candidate's column (at CLIP's logit scale)."""
    return sims * torch.softmax(sims * temperature, dim=0)


def dual_softmax_metrics(sims: torch.Tensor, positives: torch.Tensor) -> dict[str, float]:
    """``retrieval_metrics`` after dual softmax in each direction, every key prefixed ``dsl_``."""
    sims = sims.float()
    positives = positives.bool()
    t2v = summarise(query_ranks(dual_softmax(sims), positives))
    v2t = summarise(query_ranks(dual_softmax(sims.t()), positives.t()))
    out = {f"dsl_t2v_{k}": v for k, v in t2v.items()}
    out.update({f"dsl_v2t_{k}": v for k, v in v2t.items()})
    out["dsl_t2v_rsum"] = t2v["R1"] + t2v["R5"] + t2v["R10"]
    return out
