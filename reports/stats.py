"""Uncertainty of the retrieval figures from per-query ranks: a percentile bootstrap over queries
for each figure's 95% interval, and a paired permutation test of a row against the baseline.

Ranks come as ``(seeds, queries)`` arrays (one row per run of a setting, same queries in the
same order). Several seeds are pooled per query: each query's hit@1, hit@5, hit@10 and rank are
averaged over the seeds, and the bootstrap resamples queries (the test set is the sample; the
seeds' spread is the table's ± std). With one seed every figure equals the run's own; with
several, R@k, MnR and R-Sum equal the mean over seeds, and MdR is the median of the per-query
mean rank. Everything is vectorised numpy, seeded, and matches ``scipy.stats.bootstrap``
(``method="percentile"``) and ``scipy.stats.permutation_test`` (``permutation_type="samples"``)
(tests/reports/test_stats.py).
"""

from __future__ import annotations

import numpy as np

#: The figures computed from ranks, in the table's labels.
LABELS = ("R@1", "R@5", "R@10", "MdR", "MnR", "R-Sum")
KS = (1, 5, 10)
RESAMPLES = 1000
LEVEL = 0.95
SEED = 0


def pool(ranks: np.ndarray) -> np.ndarray:
    """(4, queries): per query, over the seeds (rows of ``ranks``; a 1-d array is one seed),
    the mean of hit@1, hit@5, hit@10 (rank <= k, as 0/1) and the mean rank."""
    r = np.atleast_2d(np.asarray(ranks, dtype=np.float64))
    return np.stack([*((r <= k).mean(axis=0) for k in KS), r.mean(axis=0)])


def figures(pooled: np.ndarray) -> dict[str, np.ndarray]:
    """The figures of pooled queries, reduced over the last axis (so ``pooled`` may be
    (4, queries) or (4, resamples, queries)): R@k in percent, MdR (interpolated median), MnR,
    R-Sum = R@1 + R@5 + R@10."""
    recall = 100.0 * pooled[:3].mean(axis=-1)
    return {"R@1": recall[0], "R@5": recall[1], "R@10": recall[2],
            "MdR": np.median(pooled[3], axis=-1), "MnR": pooled[3].mean(axis=-1),
            "R-Sum": recall.sum(axis=0)}


def bootstrap(pooled: np.ndarray, resamples: int = RESAMPLES, level: float = LEVEL,
              seed: int = SEED) -> dict[str, tuple[float, float]]:
    """Per figure, the percentile bootstrap interval at ``level`` over queries: ``resamples``
    draws of as many queries with replacement (one index matrix for all figures)."""
    queries = pooled.shape[-1]
    index = np.random.default_rng(seed).integers(0, queries, (resamples, queries))
    drawn = figures(pooled[:, index])
    tail = 100 * (1 - level) / 2
    return {label: (float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail)))
            for label, values in drawn.items()}


def paired_test(pooled: np.ndarray, baseline: np.ndarray, resamples: int = RESAMPLES,
                seed: int = SEED) -> dict[str, float]:
    """Per figure, the two-sided p-value of a paired permutation test of ``pooled`` against
    ``baseline`` on the same queries (same order): under the null the two figures of a query
    are exchangeable, so each resample swaps them on a random half of the queries. p is
    ``min(1, 2 min(P(T* <= t), P(T* >= t)))`` with the observed statistic counted once, as
    ``scipy.stats.permutation_test`` computes it for random permutations."""
    if pooled.shape != baseline.shape:
        raise ValueError(f"paired figures differ in shape: {pooled.shape} {baseline.shape}")
    observed = {k: v - figures(baseline)[k] for k, v in figures(pooled).items()}
    swap = np.random.default_rng(seed).random((resamples, pooled.shape[-1])) < 0.5
    a = np.where(swap, baseline[:, None, :], pooled[:, None, :])
    b = np.where(swap, pooled[:, None, :], baseline[:, None, :])
    drawn_a, drawn_b = figures(a), figures(b)
    p = {}
    for label, t in observed.items():
        null = drawn_a[label] - drawn_b[label]
        gamma = 1e-12 * abs(float(t))  # a null value equal to t up to rounding counts (scipy)
        less = (np.count_nonzero(null <= t + gamma) + 1) / (resamples + 1)
        greater = (np.count_nonzero(null >= t - gamma) + 1) / (resamples + 1)
        p[label] = float(min(1.0, 2 * min(less, greater)))
    return p
