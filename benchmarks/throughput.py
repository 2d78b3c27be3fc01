"""Benchmark: inference throughput of `tempme` against `lora` (LoRA folded), same process.

ViT-B/32, 12 frames of 224 x 224, random weights. The two encoders are timed alternately, round
after round, so that drift in the machine's speed affects both alike. Each round times at least
10 batches after warm-up and keeps the median; the table gives the median over rounds and the
spread (min-max) of the per-round speed-up.

    python benchmarks/throughput.py [--rounds 5] [--batch 4] [--device cpu] [--out FILE]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from methods import registry
from suite.backbone import load_backbone
from suite.device import autocast, resolve_device
from suite.profiling import default_batch, dummy_video, environment, time_calls


def build(method: str, backbone: str, frames: int, device: torch.device):
    loaded = load_backbone(backbone, None, "cpu", show_progress=False)
    spec = registry.get(method)
    model = spec.build(loaded.model, spec.make_config(backbone, frames, {}), frames, backbone)
    return model.fold().to(device).eval(), loaded.image_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="ViT-B-32")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--batch", type=int)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/throughput.md"))
    args = parser.parse_args()

    device = resolve_device(args.device)
    batch = args.batch or default_batch(device)
    methods = ("lora", "tempme")
    models = {m: build(m, args.backbone, args.frames, device) for m in methods}
    pixels, mask = dummy_video(batch, args.frames, models["lora"][1], device)
    speeds: dict[str, list[float]] = {m: [] for m in methods}
    for round_ in range(args.rounds):
        for method in methods:
            model = models[method][0]

            def step(model=model) -> None:
                with torch.no_grad(), autocast(device):
                    model.encode_video(pixels, mask)

            seconds = time_calls(step, device, warmup=2, repeats=args.repeats)
            speeds[method].append(batch / statistics.median(seconds))
        print(f"round {round_ + 1}: " + ", ".join(
            f"{m} {speeds[m][-1]:.2f} videos/s" for m in methods), flush=True)

    ratios = [t / lo for t, lo in zip(speeds["tempme"], speeds["lora"], strict=True)]
    env = environment(device)
    lines = [
        f"# Inference throughput, {args.backbone}, {args.frames} frames, batch {batch}",
        "",
        f"device {env['device']}, torch {env['torch']}, {env['threads']} threads, "
        f"{args.rounds} alternating rounds x {args.repeats} timed batches (median per round)",
        "",
        "| method | videos/s (median of rounds) | min | max |",
        "|---|---|---|---|",
        *(f"| {m} | {statistics.median(speeds[m]):.2f} | {min(speeds[m]):.2f} | "
          f"{max(speeds[m]):.2f} |" for m in methods),
        "",
        f"speed-up tempme / lora: median {statistics.median(ratios):.3f}, "
        f"min {min(ratios):.3f}, max {max(ratios):.3f}",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
