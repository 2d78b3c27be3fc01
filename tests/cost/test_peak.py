"""suite.cost.peak: matmul peaks measured once per machine (processor, flags, threads, torch) and
cached; a slow route is not timed at full size."""

import math

import pytest
import torch

from suite.cost import peak
from suite.cost.peak import Peaks

CPU = torch.device("cpu")


def test_a_measured_rate_is_flop_over_the_best_time(monkeypatch):
    times = iter([0.5, 0.25])  # best times of the probe, then of the full-size product
    monkeypatch.setattr(peak, "_seconds", lambda fn, device, repeats, clock: next(times))
    monkeypatch.setattr(peak, "BUDGET_SECONDS", 1e9)
    assert peak.measure_route("fp32/torch", CPU, size=1024) == 2 * 1024**3 / 0.25


def test_a_slow_route_keeps_the_probes_rate(monkeypatch):
    sizes = []
    real = peak._product

    def recording(route, n, device):
        sizes.append(n)
        return real(route, n, device)

    monkeypatch.setattr(peak, "_product", recording)
    monkeypatch.setattr(peak, "BUDGET_SECONDS", 0.0)  # the full size would take too long
    rate = peak.measure_route("bf16", CPU)
    assert sizes == [peak.PROBE] and math.isfinite(rate) and rate > 0


def test_real_routes_give_positive_rates():
    for route in peak.routes_of(CPU):
        assert peak.measure_route(route, CPU, size=256, repeats=1) > 0


def test_peaks_are_cached_per_machine_and_thread_count(monkeypatch, tmp_path):
    monkeypatch.setenv("SUITE_CACHE_DIR", str(tmp_path))
    measured = []

    def fake_measure(device):
        measured.append(torch.get_num_threads())
        return Peaks("cpu", torch.get_num_threads(), torch.__version__,
                     {"fp32/torch": 1e11, "fp32/onednn": 2e11, "bf16": 3e11})

    monkeypatch.setattr(peak, "measure", fake_measure)
    threads = torch.get_num_threads()
    try:
        first = peak.machine_peaks(CPU)
        assert peak.machine_peaks(CPU) == first and measured == [threads]  # read back
        torch.set_num_threads(threads + 1)
        assert peak.machine_peaks(CPU).threads == threads + 1  # another key
        assert measured == [threads, threads + 1]
    finally:
        torch.set_num_threads(threads)
    peak.machine_peaks(CPU, refresh=True)
    assert len(measured) == 3
    assert first.fp32 == 2e11 and first.of("bf16") == 3e11 and first.of("fp32") == 2e11
    assert len(list((tmp_path / "peaks").glob("*.json"))) == 2


def test_the_key_names_the_processor_flags_threads_and_torch():
    key = peak.machine_key(CPU, threads=3)
    assert key["threads"] == "3" and key["torch"] == torch.__version__
    assert key["model"] and key["flags"]


def test_unknown_precision_has_no_peak():
    peaks = Peaks("cpu", 1, "x", {"fp32/torch": 1.0, "bf16": 2.0})
    with pytest.raises(KeyError, match="no fp16 peak"):
        peaks.of("fp16")


def test_a_refresh_keeps_the_higher_rate_per_route(tmp_path, monkeypatch):
    """A measurement on a busy machine comes out low: it never lowers the cached peak."""
    monkeypatch.setenv("SUITE_CACHE_DIR", str(tmp_path))
    rates = iter([{"fp32/torch": 1e11, "fp32/onednn": 4e11, "bf16": 8e11},
                  {"fp32/torch": 2e11, "fp32/onednn": 1e11, "bf16": 2e11}])
    monkeypatch.setattr(peak, "measure", lambda device: Peaks(
        "cpu", torch.get_num_threads(), torch.__version__, next(rates)))
    assert peak.machine_peaks(CPU).fp32 == 4e11
    refreshed = peak.machine_peaks(CPU, refresh=True)
    assert refreshed.routes == {"fp32/torch": 2e11, "fp32/onednn": 4e11, "bf16": 8e11}
    assert peak.machine_peaks(CPU) == refreshed  # what the cache now holds
