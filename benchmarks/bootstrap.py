"""The report's bootstrap on 1,000 queries with 1,000 resamples: every figure's 95% interval
(reports.stats.bootstrap) and the paired test against a baseline (reports.stats.paired_test),
each timed as the best of a few repeats, with the machine's CPU and its vector flags.

    .venv/bin/python benchmarks/bootstrap.py [--queries 1000] [--resamples 1000] [--seeds 3]

A figure, not a timed test (benchmarks/results/bootstrap.md).
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from reports import stats

FLAGS = ("avx2", "avx512f", "avx512_bf16", "avx512_vnni", "fma", "amx_tile")


def cpu() -> str:
    """The CPU's model name and which of ``FLAGS`` it has (Linux's /proc/cpuinfo)."""
    info = Path("/proc/cpuinfo")
    if not info.is_file():
        return platform.processor() or "unknown"
    text = info.read_text()
    model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines()
                  if ln.startswith("model name")), "unknown")
    flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines()
                  if ln.startswith("flags")), [])
    found = " ".join(f for f in FLAGS if f in flags) or "none of " + " ".join(FLAGS)
    return f"{model} with {found}" + ("" if "amx_tile" in flags else ", no AMX")


def best_of(repeats: int, work: Callable[[], object]) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=3, help="runs pooled per query")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    ranks = rng.geometric(0.15, (args.seeds, args.queries))
    base = stats.pool(rng.geometric(0.12, (args.seeds, args.queries)))
    pooled = stats.pool(ranks)
    interval = best_of(args.repeats, lambda: stats.bootstrap(pooled, args.resamples))
    test = best_of(args.repeats, lambda: stats.paired_test(pooled, base, args.resamples))
    print(f"cpu: {cpu()}")
    print(f"numpy {np.__version__}, python {platform.python_version()}")
    print(f"{args.queries} queries x {args.resamples} resamples, {args.seeds} seeds pooled")
    print(f"bootstrap intervals (6 figures): {interval:.3f} s")
    print(f"paired permutation test (6 figures): {test:.3f} s")
    print(f"both, one table row: {interval + test:.3f} s")


if __name__ == "__main__":
    main()
