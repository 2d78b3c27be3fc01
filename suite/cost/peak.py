"""This machine's matrix-multiply peak: the FLOP/s every cost figure is set against.

Measured, never inferred from the processor's name: a large square matrix product (2048 x 2048)
after one warm-up call, best of a few timed calls, at the thread count in use, for fp32 through
every GEMM library torch offers on the device and for the lower precisions. On the CPU that is
torch's default BLAS (``torch.mm``; MKL on x86 builds, which runs its AVX2 code on AMD
processors) and oneDNN (``torch.ops.mkldnn._linear_pointwise``, AVX-512 where the CPU has it),
and bf16 (oneDNN: AMX, AVX512-BF16, or a slow emulation); on CUDA fp32 (TF32 as configured),
fp16 and bf16. A FLOP is a multiply or an add, so a product of (n x n) matrices is 2 n^3 FLOP.

The figures are cached per machine under the suite cache folder (``SUITE_CACHE_DIR``), keyed by
processor model, CPU flags, thread count and torch version, so a machine measures once; a lock
keeps processes started together from measuring at the same time.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

SIZE = 2048  # the timed square product
PROBE = 512  # a first, small product: a very slow route is not timed at full size
BUDGET_SECONDS = 2.0  # a route whose full-size product would take longer keeps the probe's rate
REPEATS = 5
VERSION = 1  # of the measurement; part of the cache key


@dataclass(frozen=True)
class Peaks:
    """Measured matmul rates of one machine, FLOP/s by route: ``fp32/torch`` (torch's default
    BLAS), ``fp32/onednn`` (CPU only), ``bf16``, and ``fp16`` on CUDA."""

    machine: str  # processor or GPU name
    threads: int
    torch: str
    routes: dict[str, float]

    @property
    def fp32(self) -> float:
        """The fp32 peak: the fastest fp32 route."""
        return max(v for k, v in self.routes.items() if k.startswith("fp32/"))

    def of(self, precision: str) -> float:
        """Peak FLOP/s of a resolved precision (``fp32``, ``bf16``, ``fp16``)."""
        if precision == "fp32":
            return self.fp32
        if precision not in self.routes:
            raise KeyError(f"no {precision} peak measured on {self.machine}")
        return self.routes[precision]

    def describe(self) -> str:
        """One line: what was measured where."""
        rates = ", ".join(f"{k} {v / 1e9:,.0f}" for k, v in self.routes.items())
        return f"{self.machine}, {self.threads} threads, torch {self.torch}: {rates} GFLOP/s"


def cpu_identity() -> dict[str, str]:
    """Processor model and CPU flags (``/proc/cpuinfo`` on Linux; elsewhere the platform's
    processor string and torch's vector capability)."""
    model, flags = platform.processor() or platform.machine(), ""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                key, _, value = line.partition(":")
                if key.strip() == "model name":
                    model = value.strip()
                elif key.strip() == "flags":
                    flags = " ".join(sorted(value.split()))
                    break
    except OSError:
        pass
    if not flags:
        flags = f"capability:{torch.backends.cpu.get_cpu_capability()}"
    return {"model": model, "flags": flags}


def machine_key(device: torch.device, threads: int | None = None) -> dict[str, str]:
    """What a cached peak belongs to."""
    threads = torch.get_num_threads() if threads is None else threads
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        ident = {"model": torch.cuda.get_device_name(device), "flags": f"sm_{major}{minor}"}
    else:
        ident = cpu_identity()
    return {**ident, "device": device.type, "threads": str(threads), "torch": torch.__version__,
            "version": str(VERSION)}


def _cache_path(key: dict[str, str]) -> Path:
    from suite.common.paths import cache_dir

    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / "peaks" / f"{key['device']}-{digest}.json"


def _seconds(fn: Callable[[], Any], device: torch.device, repeats: int,
             clock: Callable[[], float] = time.perf_counter) -> float:
    """Best of ``repeats`` timed calls after one warm-up call."""
    from suite.cost.timing import time_calls

    return min(time_calls(fn, device, 1, repeats, clock))


def _product(route: str, n: int, device: torch.device) -> Callable[[], Any]:
    """A call computing one (n x n) @ (n x n) product through ``route``."""
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(route, torch.float32)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    if route == "fp32/onednn":
        linear = torch.ops.mkldnn._linear_pointwise  # a @ b.T, oneDNN's fp32 GEMM
        return lambda: linear(a, b, None, "none", [], "")
    return lambda: torch.mm(a, b)


def measure_route(route: str, device: torch.device, size: int = SIZE,
                  repeats: int = REPEATS, clock: Callable[[], float] = time.perf_counter
                  ) -> float:
    """FLOP/s of one route: a small probe first; the full-size product only when the probe
    says it takes less than ``BUDGET_SECONDS`` (bf16 without hardware support is ~100x slower
    than fp32). ``clock``: as in :func:`suite.cost.timing.time_calls`."""
    from torch.utils._python_dispatch import _disable_current_modes

    with torch.no_grad(), _disable_current_modes():  # no kernel routing (suite.cost.cpu) inside
        probe = _seconds(_product(route, PROBE, device), device, 2, clock)
        if probe * (size / PROBE) ** 3 > BUDGET_SECONDS:
            return 2 * PROBE**3 / probe
        return 2 * size**3 / _seconds(_product(route, size, device), device, repeats, clock)


def routes_of(device: torch.device) -> list[str]:
    """The routes measured on ``device``."""
    if device.type == "cuda":
        return ["fp32/torch", "bf16", "fp16"]
    routes = ["fp32/torch"]
    if torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"):
        routes.append("fp32/onednn")
    return [*routes, "bf16"]


def measure(device: torch.device) -> Peaks:
    """Measure every route now (a few seconds)."""
    key = machine_key(device)
    rates = {route: measure_route(route, device) for route in routes_of(device)}
    return Peaks(key["model"], int(key["threads"]), torch.__version__, rates)


def machine_peaks(device: torch.device, refresh: bool = False) -> Peaks:
    """This machine's peaks, from the cache or measured once. ``refresh``: measure again and
    keep, per route, the higher of the new and the cached rate: a peak only rises, because a
    measurement taken while other work shares the cores comes out low, never high (one taken
    on a busy machine had cached a quarter of the real fp32 peak)."""
    from suite.common.locks import held

    key = machine_key(device)
    path = _cache_path(key)
    with held(path.with_suffix(".lock"), "the matmul peak cache (SUITE_CACHE_DIR)"):
        cached = None
        if path.is_file():
            try:
                stored = json.loads(path.read_text())
                if stored.get("key") == key:
                    cached = Peaks(**stored["peaks"])
            except (OSError, ValueError, TypeError):
                pass  # unreadable: measure again
        if cached is not None and not refresh:
            return cached
        peaks = measure(device)
        if cached is not None:
            routes = {route: max(rate, cached.routes.get(route, 0.0))
                      for route, rate in peaks.routes.items()}
            peaks = Peaks(peaks.machine, peaks.threads, peaks.torch, routes)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        partial.write_text(json.dumps({"key": key, "peaks": asdict(peaks)}, indent=2))
        partial.replace(path)
    return peaks
