"""Benchmark: video-tower throughput of each method against this machine's matmul peak, fp32 and
bf16, LoRA folded; optionally the training step and the torch.compile-d tower.

ViT-B/32, 12 frames of 224 x 224, random weights (speed does not depend on them), batch 4. In
every round, one after the other: the matmul peaks (suite.peak: fp32 through each GEMM library,
bf16), then every method in every precision (median of ``--repeats`` timed batches after warm-up)
and, with ``--train``, one training step per method (forward + backward of the InfoNCE loss).
Rounds alternate so that drift in the machine's speed hits every figure alike; the table gives
medians over rounds, the ratios their median, min and max. FLOP/s = 2 x the video multiply-adds
(suite.flops) x videos/s; "of peak" divides by the peak measured in the same round and precision.
Runs with the suite's CPU kernel settings (suite.cpu), as ``suite run`` does.

``--clock thread`` times this thread's CPU time instead of wall time: on a machine shared with
other programs it measures the work, not the waiting (needs ``--threads 1``).

    python benchmarks/throughput.py [--rounds 5] [--batch 4] [--threads N] [--clock thread]
        [--precisions fp32 bf16] [--train] [--compile] [--decode-rates FILE] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from suite import cpu
from suite.device import autocast, cast_weights_once, resolve_device
from suite.peak import cpu_identity, measure_route, routes_of
from suite.profiling import (
    NOTED_FLAGS,
    build_for_profile,
    compiled_video_tower,
    count_costs,
    default_batch,
    dummy_video,
    environment,
    time_calls,
    training_step,
    video_step,
)

BASELINE = "lora"


def median_seconds(fn: Callable[[], None], device: torch.device, repeats: int,
                   clock: Callable[[], float]) -> float:
    return statistics.median(time_calls(fn, device, 2, repeats, clock))


def spread(values: list[float]) -> str:
    return (f"median {statistics.median(values):.3f}, min {min(values):.3f}, "
            f"max {max(values):.3f}")


def load_decode_rates(path: Path | None) -> list[dict[str, Any]]:
    """Decoder rows (``[{"source": ..., "videos_per_second": ...}]``, written by
    benchmarks/decode.py) to show in the same table; none when the file is absent."""
    if path is None or not path.is_file():
        return []
    return list(json.loads(path.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["lora", "tempme"])
    parser.add_argument("--precisions", nargs="+", default=["fp32", "bf16"])
    parser.add_argument("--backbone", default="ViT-B-32")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=5, help="timed batches per round")
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    parser.add_argument("--clock", choices=["wall", "thread"], default="wall")
    parser.add_argument("--train", action="store_true", help="also time the training step")
    parser.add_argument("--compile", action="store_true",
                        help="also time the torch.compile-d video tower (fp32)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--decode-rates", type=Path,
                        help="JSON rows of benchmarks/decode.py to add to the table")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/throughput.md"))
    args = parser.parse_args()

    cpu.configure_process()  # before the thread pool starts
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.clock == "thread" and torch.get_num_threads() != 1:
        parser.error("--clock thread measures one thread's CPU time: use it with --threads 1")
    clock = time.thread_time if args.clock == "thread" else time.perf_counter
    device = resolve_device(args.device)
    batch = args.batch or default_batch(device)
    route = cpu.gemm_route(device)

    models, counts, steps = {}, {}, {}
    for method in args.methods:
        model, image_size, vocab = build_for_profile(method, args.backbone, args.frames, device)
        models[method] = model.fold().eval()
        counts[method] = count_costs(model, args.frames, image_size, 32, vocab).video_gmacs
        if args.train:  # a second, unfolded model: the training step trains the LoRA factors
            trainee = build_for_profile(method, args.backbone, args.frames, device)[0]
            steps[method] = training_step(trainee, args.frames, image_size, 32, device, batch,
                                          vocab, "fp32")
    pixels, mask = dummy_video(batch, args.frames, image_size, device)

    configs = [(m, p, False) for m in args.methods for p in args.precisions]
    if args.compile:
        configs += [(m, "fp32", True) for m in args.methods]
    rates: dict[tuple[str, str, bool], list[float]] = {c: [] for c in configs}
    shares: dict[tuple[str, str, bool], list[float]] = {c: [] for c in configs}
    peaks: dict[str, list[float]] = {r: [] for r in routes_of(device)}
    train_rates: dict[str, list[float]] = {m: [] for m in steps}
    for round_ in range(args.rounds):
        for name in peaks:
            peaks[name].append(measure_route(name, device, clock=clock))
        fp32_peak = max(v[-1] for k, v in peaks.items() if k.startswith("fp32/"))
        for method, precision, compiled in configs:
            model = models[method]
            step = video_step(model, pixels, mask, device, precision)
            with cast_weights_once(model, precision), autocast(device, precision), \
                    compiled_video_tower(model, compiled), \
                    cpu.kernels(device, "torch" if compiled else route):
                rate = batch / median_seconds(step, device, args.repeats, clock)
            rates[method, precision, compiled].append(rate)
            peak = fp32_peak if precision == "fp32" else peaks[precision][-1]
            shares[method, precision, compiled].append(2 * counts[method] * 1e9 * rate / peak)
        for method, train_step in steps.items():
            with cpu.kernels(device, route):
                train_rates[method].append(1 / median_seconds(train_step, device,
                                                              max(args.repeats // 2, 2), clock))
        print(f"round {round_ + 1}: " + ", ".join(
            f"{m}{' compiled' if c else ''} {p} {rates[m, p, c][-1]:.2f}"
            for m, p, c in configs) + " videos/s", flush=True)

    text = report(args, device, batch, route, configs, rates, shares, peaks, train_rates,
                  counts, load_decode_rates(args.decode_rates))
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


def report(args: argparse.Namespace, device: torch.device, batch: int, route: str,
           configs: list[tuple[str, str, bool]], rates: dict, shares: dict,
           peaks: dict[str, list[float]], train_rates: dict[str, list[float]],
           counts: dict[str, float], decode: list[dict[str, Any]]) -> str:
    env = environment(device)
    flags = " ".join(f for f in cpu_identity()["flags"].split() if f in NOTED_FLAGS)
    med = statistics.median
    lines = [
        f"# Throughput against the matmul peak: {args.backbone}, {args.frames} frames, "
        f"batch {batch}",
        "",
        f"{env.get('cpu', env['device'])} ({flags or 'no flags read'}), torch threads "
        f"{env['threads']}, torch {env['torch']}; fp32 GEMM {route}, flush denormals "
        f"{env['flush_denormal']}, reuse memory {env['reuse_memory']}; clock {args.clock}; "
        f"{args.rounds} alternating rounds x {args.repeats} timed batches (median per round).",
        "",
        "Matmul peak (median of rounds): " + ", ".join(
            f"{name} {med(v) / 1e9:,.1f} GFLOP/s" for name, v in peaks.items()) + ".",
        "",
        f"| method | precision | rate | GFLOP/s | of peak | vs {BASELINE} | vs fp32 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for method, precision, compiled in configs:
        rate = med(rates[method, precision, compiled])
        base = rates.get((BASELINE, precision, compiled))
        fp32 = rates.get((method, "fp32", compiled))
        vs_base = f"{med(rate_ratio(rates[method, precision, compiled], base)):.3f}" \
            if base else "-"
        vs_fp32 = f"{med(rate_ratio(rates[method, precision, compiled], fp32)):.3f}" \
            if fp32 else "-"
        name = f"{method} (compiled)" if compiled else method
        lines.append(f"| {name} | {precision} | {rate:.2f} videos/s | "
                     f"{2 * counts[method] * rate:,.1f} | "
                     f"{med(shares[method, precision, compiled]):.1%} | {vs_base} | {vs_fp32} |")
    for method, values in train_rates.items():
        base = train_rates.get(BASELINE)
        vs_base = f"{med(rate_ratio(values, base)):.3f}" if base else "-"
        lines.append(f"| {method} training step | fp32 | {med(values):.3f} steps/s | - | - | "
                     f"{vs_base} | - |")
    for row in decode:
        lines.append(f"| decode: {row['source']} | - | {row['videos_per_second']:.1f} "
                     f"videos/s | - | - | - | - |")
    lines += ["", "Ratios over rounds (each round's own figures):", ""]
    for method, precision, compiled in configs:
        base = rates.get((BASELINE, precision, compiled))
        if method != BASELINE and base:
            lines.append(f"- {method}/{BASELINE} {precision}{' compiled' if compiled else ''}: "
                         + spread(rate_ratio(rates[method, precision, compiled], base)))
        fp32 = rates.get((method, "fp32", compiled))
        if precision != "fp32" and fp32:
            lines.append(f"- {method} {precision}/fp32: "
                         + spread(rate_ratio(rates[method, precision, compiled], fp32)))
    for method, values in train_rates.items():
        if method != BASELINE and BASELINE in train_rates:
            lines.append(f"- {method}/{BASELINE} training step: "
                         + spread(rate_ratio(values, train_rates[BASELINE])))
    lines += ["", "GFLOP/s = 2 x video multiply-adds x videos/s (multiply-adds per video: "
              + ", ".join(f"{m} {g:.2f} G" for m, g in counts.items()) + ").", ""]
    return "\n".join(lines)


def rate_ratio(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True)]


if __name__ == "__main__":
    main()
