"""Timing that is honest on every device: CUDA work is waited for before the clock is read.

The bottom of the cost layer: the peak measurement and the profiler both time calls this way.
"""

from __future__ import annotations

import time
from typing import Any

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a clock read after it is honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn: Any, device: torch.device, warmup: int, repeats: int,
               clock: Any = time.perf_counter) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls, by
    ``clock`` (wall time; ``time.thread_time`` counts only this thread's CPU time, robust on a
    shared machine when torch runs one thread)."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = clock()
        fn()
        synchronize(device)
        seconds.append(clock() - start)
    return seconds
