"""The report's statistics (reports.stats) against scipy and brute-force loops on fixed inputs,
and the intervals and marks they put in the tables (reports.uncertainty)."""

from __future__ import annotations

import io
import itertools
import math
import re

import numpy as np
import pandas as pd
import pytest
import scipy.stats
import torch

from reports import stats
from reports.uncertainty import QueryRanks, with_intervals
from suite.job.metrics import summarise

RANKS = np.random.default_rng(7).geometric(0.15, 300)  # one run's ranks, fixed
PER_QUERY = {  # (per-query value of one seed, statistic of scipy's sample)
    "R@1": (lambda r: (r <= 1) * 100.0, np.mean),
    "R@10": (lambda r: (r <= 10) * 100.0, np.mean),
    "MdR": (lambda r: r.astype(float), np.median),
    "MnR": (lambda r: r.astype(float), np.mean),
    "R-Sum": (lambda r: 100.0 * sum((r <= k).astype(float) for k in (1, 5, 10)), np.mean),
}


def test_figures_of_one_run_are_the_protocols():
    """One seed pooled: the figures the metrics log for the same ranks."""
    shown = stats.figures(stats.pool(RANKS))
    logged = summarise(torch.from_numpy(RANKS))
    for label, key in [("R@1", "R1"), ("R@5", "R5"), ("R@10", "R10"), ("MdR", "MdR"),
                       ("MnR", "MnR")]:
        assert float(shown[label]) == pytest.approx(logged[key], abs=1e-9)
    assert float(shown["R-Sum"]) == pytest.approx(logged["R1"] + logged["R5"] + logged["R10"])


@pytest.mark.parametrize("label", list(PER_QUERY))
def test_bootstrap_interval_equals_scipys(label):
    """The same seeded draws: scipy.stats.bootstrap's percentile interval to rounding."""
    value, statistic = PER_QUERY[label]
    ours = stats.bootstrap(stats.pool(RANKS), resamples=1000, seed=3)[label]
    theirs = scipy.stats.bootstrap((value(RANKS),), statistic, n_resamples=1000,
                                   method="percentile", rng=np.random.default_rng(3),
                                   vectorized=True).confidence_interval
    assert ours == pytest.approx((theirs.low, theirs.high), abs=1e-9)


def test_pooled_bootstrap_equals_a_loop_over_resamples():
    """Three seeds pooled per query, every figure, against a plain loop over the same draws."""
    ranks = np.random.default_rng(1).geometric(0.2, (3, 50))
    intervals = stats.bootstrap(stats.pool(ranks), resamples=200, seed=5)
    draws = np.random.default_rng(5).integers(0, 50, (200, 50))
    values: dict[str, list[float]] = {label: [] for label in stats.LABELS}
    for draw in draws:
        hits = {k: [np.mean([ranks[s, q] <= k for s in range(3)]) for q in draw] for k in stats.KS}
        mean_rank = [np.mean(ranks[:, q]) for q in draw]
        recall = {k: 100 * sum(hits[k]) / len(draw) for k in stats.KS}
        for label, v in [("R@1", recall[1]), ("R@5", recall[5]), ("R@10", recall[10]),
                         ("MdR", float(np.median(mean_rank))), ("MnR", sum(mean_rank) / 50),
                         ("R-Sum", recall[1] + recall[5] + recall[10])]:
            values[label].append(v)
    for label in stats.LABELS:
        expected = np.percentile(values[label], [2.5, 97.5])
        assert intervals[label] == pytest.approx(tuple(expected), abs=1e-9), label


def exact_p(a: np.ndarray, b: np.ndarray, statistic) -> float:
    """Brute force: every one of the 2^n swaps, scipy's two-sided p of an exact test."""
    observed = statistic(a) - statistic(b)
    null = []
    for swaps in itertools.product([False, True], repeat=len(a)):
        s = np.array(swaps)
        null.append(statistic(np.where(s, b, a)) - statistic(np.where(s, a, b)))
    null = np.array(null)
    gamma = 1e-12 * abs(observed)
    less, greater = np.mean(null <= observed + gamma), np.mean(null >= observed - gamma)
    return min(1.0, 2 * min(less, greater))


@pytest.mark.parametrize("label", ["R@1", "R-Sum", "MnR", "MdR"])
def test_paired_test_against_scipy_and_every_permutation(label):
    """10 queries: the exact p (brute force over 1,024 swaps) equals scipy's exact
    permutation_test, and ours with 20,000 random swaps is within its Monte Carlo error."""
    rng = np.random.default_rng(11)
    a, b = rng.geometric(0.3, 10), rng.geometric(0.15, 10)
    value, statistic = PER_QUERY[label]
    exact = exact_p(value(a), value(b), statistic)
    scipy_p = scipy.stats.permutation_test(
        (value(a), value(b)), lambda x, y, axis: statistic(x, axis=axis) - statistic(y, axis=axis),
        permutation_type="samples", vectorized=True, n_resamples=math.inf).pvalue
    assert exact == pytest.approx(scipy_p, abs=1e-12)
    ours = stats.paired_test(stats.pool(a), stats.pool(b), resamples=20_000, seed=2)[label]
    assert ours == pytest.approx(exact, abs=4 * math.sqrt(exact * (1 - exact) / 20_000) + 2e-3)


def test_paired_test_against_scipy_on_many_queries():
    """300 queries, random swaps: ours and scipy's p agree within Monte Carlo error."""
    other = np.random.default_rng(8).geometric(0.17, 300)
    ours = stats.paired_test(stats.pool(RANKS), stats.pool(other), resamples=5000, seed=1)
    for label, (value, statistic) in PER_QUERY.items():
        theirs = scipy.stats.permutation_test(
            (value(RANKS), value(other)),
            lambda x, y, axis, f=statistic: f(x, axis=axis) - f(y, axis=axis),
            permutation_type="samples", vectorized=True, n_resamples=5000,
            rng=np.random.default_rng(0)).pvalue
        assert ours[label] == pytest.approx(theirs, abs=0.035), label


def test_same_ranks_are_not_significant_and_far_ranks_are():
    pooled = stats.pool(RANKS)
    assert set(stats.paired_test(pooled, pooled).values()) == {1.0}
    better = stats.pool(np.maximum(RANKS // 3, 1))
    p = stats.paired_test(better, pooled)
    assert p["R@1"] < 0.01 and p["MnR"] < 0.01


def test_table_gets_intervals_p_values_and_leaves_old_runs_alone():
    """Rows pool their runs per query and pair with the baseline by query id (in another
    order); a row with a run that has no ranks (an older run) gets no interval."""
    ids = np.array([f"v{i}#0" for i in range(300)])
    rng = np.random.default_rng(4)
    ranks = {"a": QueryRanks(ids, RANKS), "b": QueryRanks(ids, np.maximum(RANKS - 1, 1)),
             "c": QueryRanks(ids[::-1], rng.geometric(0.15, 300))}
    table = pd.DataFrame({"method": ["base", "mine", "old", "other"],
                          "runs": ["a", "b c", "a old", "c"]})
    out = with_intervals(table, ranks, base=0)
    assert out["R@1 ci_low"].isna().tolist() == [False, False, True, False]
    assert out["R@1 p (vs baseline)"].isna().tolist() == [True, False, True, False]
    order = np.argsort(ids)  # rows pool and pair in the order of sorted query ids
    low, high = stats.bootstrap(stats.pool(RANKS[order]))["R-Sum"]
    assert (out.at[0, "R-Sum ci_low"], out.at[0, "R-Sum ci_high"]) == (low, high)
    c = ranks["c"].ranks[::-1][order]  # run c's ranks by the ids of run a
    pooled = stats.pool(np.stack([np.maximum(RANKS - 1, 1)[order], c]))
    assert out.at[1, "MnR ci_low"] == stats.bootstrap(pooled)["MnR"][0]
    assert out.at[3, "R@1 p (vs baseline)"] == stats.paired_test(
        stats.pool(c), stats.pool(RANKS[order]))["R@1"]
    assert with_intervals(table, {}, base=0).equals(table)


def test_plan_report_shows_intervals_and_marks_in_every_format(tmp_path):
    """A plan's runs with ranks.npz (one row without: an older run): intervals in the cells,
    "(n.s.)" on Δ cells not significant at 5%, the bounds and p-values as CSV columns."""
    from mlflow.tracking import MlflowClient
    from report_runs import PLAN, log_plan

    from reports.plan import plan_report

    uri = log_plan(tmp_path)
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(f"plan-{PLAN}-synthetic")
    ids = np.array([f"v{i:03d}#0" for i in range(200)])  # sorted as numbered
    base = np.random.default_rng(0).geometric(0.1, 200)
    rows = {"LoRA": base, "TempMe": np.maximum(base // 4, 1),  # far better: significant
            "ImgMe only": np.where(np.arange(200) == 0, 1, base)}  # one query better: not
    for run in client.search_runs([experiment.experiment_id]):
        ranks = rows.get(run.data.tags["plan_row"])
        if ranks is not None:
            path = tmp_path / run.info.run_id / "ranks.npz"
            path.parent.mkdir()
            np.savez(path, t2v=ranks, v2t=ranks[:10], t2v_ids=ids, v2t_ids=ids[:10])
            client.log_artifact(run.info.run_id, str(path))
    made = plan_report(PLAN, "synthetic", {}, uri)
    table = made.table.set_index("row")
    assert table.loc["TempMe", "R@1 p (vs baseline)"] < 0.05
    assert table.loc["ImgMe only", "R@1 p (vs baseline)"] >= 0.05
    assert np.isnan(table.loc["LoRA", "R@1 p (vs baseline)"])
    assert np.isnan(table.loc["Token reduction only", "R@1 ci_low"])
    low, high = stats.bootstrap(stats.pool(base))["R@1"]
    assert (table.loc["LoRA", "R@1 ci_low"], table.loc["LoRA", "R@1 ci_high"]) == (low, high)
    md = made.render("md")
    line = {row.split(" | ")[0].strip("| "): row for row in md.splitlines()}
    assert f"[{low:.1f}, {high:.1f}]" in line["LoRA"]
    assert line["ImgMe only"].count("(n.s.)") == 2 and "(n.s.)" not in line["TempMe"]
    interval = re.compile(r"\[[-\d.]+, [-\d.]+\]")
    assert interval.search(line["LoRA"])
    assert not interval.search(line["Token reduction only"])  # no ranks: shown as before
    assert "not significant at 5%" in md and "percentile bootstrap" in md
    assert r"(n.s.)" in made.render("latex") and "(n.s.)" in made.render("html")
    csv = pd.read_csv(io.StringIO(made.render("csv")))
    assert {"R@1 ci_low", "R@1 ci_high", "R-Sum p (vs baseline)"} <= set(csv.columns)
