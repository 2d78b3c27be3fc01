"""Benchmark: video-tower throughput of each method against this machine's matmul peak, fp32 and
bf16, LoRA folded; optionally the training step and the torch.compile-d tower.

ViT-B/32, 12 frames of 224 x 224, random weights (speed does not depend on them), batch 4. In
every round, one after the other: the matmul peaks (suite.cost.peak: fp32 through each GEMM library,
bf16), then every method in every precision (median of ``--repeats`` timed batches after warm-up)
and, with ``--train``, one training step per method (forward + backward of the InfoNCE loss).
Rounds alternate so that drift in the machine's speed hits every figure alike; the table gives
medians over rounds, the ratios their median, min and max. FLOP/s = 2 x the video multiply-adds
(suite.cost.flops) x videos/s; "of peak" divides by the peak measured in the same round and
precision.
Runs with the suite's CPU kernel settings (suite.cost.cpu), as ``suite run`` does.

``--clock thread`` times this thread's CPU time instead of wall time: on a machine shared with
other programs it measures the work, not the waiting (needs ``--threads 1``).

    python benchmarks/throughput.py [--rounds 5] [--batch 4] [--threads N] [--clock thread]
        [--precisions fp32 bf16] [--routes onednn torch] [--train] [--compile]
        [--decode-rates FILE] [--out FILE]

``--routes onednn torch`` times fp32 through both GEMM libraries side by side (suite.cost.cpu).
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
import torch.nn.functional as F

from suite.cost import cpu
from suite.cost.device import autocast, cast_weights_once, resolve_device
from suite.cost.peak import cpu_identity, measure_route, routes_of
from suite.cost.profiling import (
    NOTED_FLAGS,
    build_for_profile,
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
    parser.add_argument("--routes", nargs="+", choices=["onednn", "torch"],
                        help="fp32 GEMM routes to compare (default: this machine's, "
                             "suite.cost.cpu)")
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

    models, counts, steps, compiled = {}, {}, {}, {}
    for method in args.methods:
        model, image_size, vocab = build_for_profile(method, args.backbone, args.frames, device)
        models[method] = model.fold().eval()
        counts[method] = count_costs(model, args.frames, image_size, 32, vocab).video_gmacs
        if args.compile:  # compiled once, in the first round's warm-up
            compiled[method] = CompiledTower(torch.compile(model.video_encoder))
        if args.train:  # a second, unfolded model: the training step trains the LoRA factors
            trainee = build_for_profile(method, args.backbone, args.frames, device)[0]
            steps[method] = training_step(trainee, args.frames, image_size, 32, device, batch,
                                          vocab, "fp32")
    pixels, mask = dummy_video(batch, args.frames, image_size, device)
    route = cpu.gemm_route(device, models[args.methods[0]])

    variants = args.routes or [route]
    configs = [(m, p, v) for m in args.methods for p in args.precisions
               for v in (variants if p == "fp32" else [route])]  # the route is fp32's
    configs += [(m, "fp32", "compiled") for m in compiled]
    rates: dict[Key, list[float]] = {c: [] for c in configs}
    shares: dict[Key, list[float]] = {c: [] for c in configs}
    peaks: dict[str, list[float]] = {r: [] for r in routes_of(device)}
    train_rates: dict[str, list[float]] = {m: [] for m in steps}
    for round_ in range(args.rounds):
        for name in peaks:
            peaks[name].append(measure_route(name, device, clock=clock))
        fp32_peak = max(v[-1] for k, v in peaks.items() if k.startswith("fp32/"))
        for method, precision, variant in configs:
            model = compiled[method] if variant == "compiled" else models[method]
            step = video_step(model, pixels, mask, device, precision)
            with cast_weights_once(models[method], precision), autocast(device, precision), \
                    cpu.kernels(device, "torch" if variant == "compiled" else variant):
                rate = batch / median_seconds(step, device, args.repeats, clock)
            rates[method, precision, variant].append(rate)
            peak = fp32_peak if precision == "fp32" else peaks[precision][-1]
            shares[method, precision, variant].append(2 * counts[method] * 1e9 * rate / peak)
        for method, train_step in steps.items():
            with cpu.kernels(device, route):
                train_rates[method].append(1 / median_seconds(train_step, device,
                                                              max(args.repeats // 2, 2), clock))
        print(f"round {round_ + 1}: " + ", ".join(
            f"{m} {p} {v} {rates[m, p, v][-1]:.2f}" for m, p, v in configs) + " videos/s",
            flush=True)

    text = report(args, device, batch, route, configs, rates, shares, peaks, train_rates,
                  counts, load_decode_rates(args.decode_rates))
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


Key = tuple[str, str, str]  # method, precision, variant (a GEMM route, or "compiled")


class CompiledTower:
    """``encode_video`` through a compiled video tower (what the timed step calls)."""

    def __init__(self, tower: Any) -> None:
        self.tower = tower

    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.tower(frames, mask), dim=-1)


def report(args: argparse.Namespace, device: torch.device, batch: int, route: str,
           configs: list[Key], rates: dict[Key, list[float]], shares: dict[Key, list[float]],
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
        f"{env['threads']}, torch {env['torch']}; this machine's fp32 GEMM route {route}, "
        f"flush denormals {env['flush_denormal']}, reuse memory {env['reuse_memory']}; clock "
        f"{args.clock}; {args.rounds} alternating rounds x {args.repeats} timed batches "
        f"(median per round).",
        "",
        "Matmul peak (median of rounds): " + ", ".join(
            f"{name} {med(v) / 1e9:,.1f} GFLOP/s" for name, v in peaks.items()) + ".",
        "",
        f"| method | precision | kernels | rate | GFLOP/s | of peak | vs {BASELINE} | vs fp32 |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]

    def ratio(key: Key, other: Key) -> str:
        return f"{med(rate_ratio(rates[key], rates[other])):.3f}" if other in rates else "-"

    for method, precision, variant in configs:
        key = (method, precision, variant)
        rate = med(rates[key])
        lines.append(f"| {method} | {precision} | {variant} | {rate:.2f} videos/s | "
                     f"{2 * counts[method] * rate:,.1f} | {med(shares[key]):.1%} | "
                     f"{ratio(key, (BASELINE, precision, variant))} | "
                     f"{ratio(key, (method, 'fp32', variant))} |")
    for method, values in train_rates.items():
        base = train_rates.get(BASELINE)
        vs_base = f"{med(rate_ratio(values, base)):.3f}" if base else "-"
        lines.append(f"| {method} training step | fp32 | {route} | {med(values):.3f} steps/s | "
                     f"- | - | {vs_base} | - |")
    for row in decode:
        lines.append(f"| decode: {row['source']} | - | - | {row['videos_per_second']:.1f} "
                     f"videos/s | - | - | - | - |")
    lines += ["", "Ratios over rounds (each round's own figures):", ""]
    for method, precision, variant in configs:
        key = (method, precision, variant)
        pairs = [(f"{method}/{BASELINE} {precision} {variant}", (BASELINE, precision, variant)),
                 (f"{method} {precision}/fp32 {variant}", (method, "fp32", variant)),
                 (f"{method} {precision} {variant}/{route}", (method, precision, route))]
        for label, other in pairs:
            if other != key and other in rates:
                lines.append(f"- {label}: " + spread(rate_ratio(rates[key], rates[other])))
    for method, values in train_rates.items():
        if method != BASELINE and BASELINE in train_rates:
            lines.append(f"- {method}/{BASELINE} training step: "
                         + spread(rate_ratio(values, train_rates[BASELINE])))
    lines += ["", "GFLOP/s = 2 x video multiply-adds x videos/s (multiply-adds per video: "
              + ", ".join(f"{m} {g:.2f} G" for m, g in counts.items()) + "); of peak: against "
              "the peak measured in the same round and precision (fp32: the faster route).", ""]
    return "\n".join(lines)


def rate_ratio(a: list[float], b: list[float]) -> list[float]:
    return [x / y for x, y in zip(a, b, strict=True)]


if __name__ == "__main__":
    main()
