"""Benchmark: where a method's inference time goes, operator by operator (torch.profiler).

    python benchmarks/ops.py --methods lora tempme [--backbone ViT-B-32] [--precision fp32]

Each method's folded video tower runs on random weights at ``suite profile``'s batch, with the
suite's CPU kernel settings, under ``torch.profiler`` after a warm-up; operators are grouped
into matrix products (what the matmul peak measures) and the rest, whose share is the time a
method spends away from the peak. Prints one Markdown table per method and the split.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from suite.cost import cpu
from suite.cost.device import autocast, cast_weights_once, resolve_device
from suite.cost.peak import cpu_identity
from suite.cost.profiling import build_for_profile, default_batch, dummy_video, video_step

#: Operators that are matrix products (directly or as oneDNN / attention kernels).
PRODUCTS = ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::matmul",
            "aten::linear", "mkldnn::_linear_pointwise", "aten::_convolution",
            "aten::mkldnn_convolution", "aten::_native_multi_head_attention",
            "aten::_scaled_dot_product_flash_attention_for_cpu")


def self_times(method: str, backbone: str, frames: int, precision: str, calls: int
               ) -> dict[str, float]:
    """Self CPU time in ms per call of the video tower, by operator name."""
    device = resolve_device("cpu")
    model, image_size, _ = build_for_profile(method, backbone, frames, device)
    model = model.fold().eval()
    pixels, mask = dummy_video(default_batch(device), frames, image_size, device)
    step = video_step(model, pixels, mask, device, precision)
    with cast_weights_once(model, precision), autocast(device, precision), \
            cpu.kernels(device, cpu.gemm_route(device, model)):
        step()  # warm-up
        with profile(activities=[ProfilerActivity.CPU]) as trace:
            for _ in range(calls):
                step()
    times: dict[str, float] = defaultdict(float)
    for event in trace.key_averages():
        times[event.key] += event.self_cpu_time_total / 1e3 / calls
    return dict(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", nargs="+", default=["lora", "tempme"])
    parser.add_argument("--backbone", default="ViT-B-32")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--top", type=int, default=12)
    args = parser.parse_args()
    cpu.configure_process()
    print(f"{cpu_identity()['model']}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, {args.backbone}, {args.frames} frames, "
          f"{args.precision}\n")
    for method in args.methods:
        times = self_times(method, args.backbone, args.frames, args.precision, args.calls)
        total = sum(times.values())
        products = sum(t for name, t in times.items() if name in PRODUCTS)
        print(f"{method}: {total:.0f} ms per batch; matrix products {products / total:.1%}, "
              f"the rest {1 - products / total:.1%}\n")
        print("| operator | ms per batch | share |\n|---|---:|---:|")
        for name, t in sorted(times.items(), key=lambda item: -item[1])[:args.top]:
            print(f"| {name} | {t:.1f} | {t / total:.1%} |")
        print()


if __name__ == "__main__":
    main()
