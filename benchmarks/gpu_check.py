"""One-shot GPU check: on a machine with a CUDA GPU, in a few minutes, TempMe and LoRA
inference on ViT-B/32 and ViT-B/16 in fp16 (videos/s and peak memory; the paper reports 45.1
videos/s for TempMe on ViT-B/16 on one A100), a 20-step training-step time for each, and a
1-GPU DDP smoke run of the engine; all in one JSON file.

    python benchmarks/gpu_check.py [--out benchmarks/results/gpu_check.json]

Without a CUDA GPU it says so in one line and exits 0. ``--device cpu`` runs the same code on
the CPU with a tiny backbone (what the tests do), so the script is known to work before it
meets a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

PAPER_TEMPME_B16_A100 = 45.1  # videos/s, Shen et al. (ICLR 2025), one A100


def inference_row(method: str, backbone: str, device: torch.device, batch: int,
                  frames: int, precision: str) -> dict[str, Any]:
    """Videos/s and peak memory of the folded model's video tower, random weights."""
    from suite.cost.profiling import build_for_profile, measure_inference

    model, image_size, vocab = build_for_profile(method, backbone, frames, device)
    model.eval().fold()
    cost = measure_inference(model, frames, image_size, 32, device, batch, repeats=10,
                             vocab=vocab, precision=precision)
    return {"method": method, "backbone": backbone, "precision": precision, "batch": batch,
            "frames": frames, "videos_per_second": round(cost.videos_per_second, 2),
            "inference_peak_mib": round(cost.inference_peak_mib, 1),
            "video_gmacs": round(cost.video_gmacs, 3), "output_tokens": cost.output_tokens}


def training_row(method: str, backbone: str, device: torch.device, batch: int,
                 frames: int, steps: int) -> dict[str, Any]:
    """Median seconds per forward+backward step over ``steps`` steps (after one warm-up)."""
    from suite.cost.profiling import build_for_profile, measure_training_step

    model, image_size, vocab = build_for_profile(method, backbone, frames, device)
    cost = measure_training_step(model, frames, image_size, 32, device, batch,
                                 repeats=steps, warmup=1, vocab=vocab)
    return {"method": method, "backbone": backbone, "batch": batch, "steps": steps,
            "seconds_per_step": round(cost.seconds_per_step, 4),
            "training_peak_mib": round(cost.training_peak_mib, 1)}


def ddp_smoke(device: torch.device, folder: Path) -> dict[str, Any]:
    """A tiny TempMe run started by torchrun with one process per GPU (here one), as a
    multi-GPU SLURM job starts it; its test R-Sum shows the run finished."""
    import subprocess

    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc_per_node=1", "-m", "suite.cli", "run", "--method", "tempme", "--dataset",
               "synthetic", "--pretrained", "none", "--epochs", "1", "--batch-size", "8",
               "--device", device.type, "--json", "--tracking-uri",
               f"sqlite:///{folder / 'gpu_check.db'}", "--set", "data.num_train=32",
               "--set", "data.num_val=8", "--set", "data.num_test=16"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    ok = done.returncode == 0
    return {"ok": ok, "seconds": round(seconds, 1),
            "test_t2v_rsum": json.loads(done.stdout)["test"]["t2v_rsum"] if ok else None,
            "error": "" if ok else (done.stderr.strip().splitlines() or [""])[-1]}


def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"host": socket.gethostname(), "python": platform.python_version(),
                            "torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        info.update(gpu=torch.cuda.get_device_name(device), cuda=torch.version.cuda,
                    gpus=torch.cuda.device_count())
    return info


def check(device: torch.device, backbones: list[str], methods: list[str], batch: int,
          train_batch: int, frames: int, steps: int, folder: Path) -> dict[str, Any]:
    """Every figure of the check, as one JSON-ready dict."""
    precision = "fp16" if device.type == "cuda" else "fp32"
    started = time.perf_counter()
    inference = [inference_row(m, b, device, batch, frames, precision)
                 for b in backbones for m in methods]
    training = [training_row(m, b, device, train_batch, frames, steps)
                for b in backbones for m in methods]
    result = {"machine": machine(device), "inference": inference, "training": training,
              "ddp": ddp_smoke(device, folder)}
    tempme_b16 = [r["videos_per_second"] for r in inference
                  if r["method"] == "tempme" and r["backbone"] == "ViT-B-16"]
    if tempme_b16:
        result["tempme_b16_vs_paper_a100"] = round(statistics.mean(tempme_b16)
                                                   / PAPER_TEMPME_B16_A100, 3)
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), or cpu to try it")
    parser.add_argument("--backbones", nargs="+", default=["ViT-B-32", "ViT-B-16"])
    parser.add_argument("--methods", nargs="+", default=["tempme", "lora"])
    parser.add_argument("--batch", type=int, default=32, help="inference batch")
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--steps", type=int, default=20, help="timed training steps")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/gpu_check.json"))
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_check: no CUDA GPU on this machine; nothing to measure")
        return 0
    device = torch.device(args.device)
    folder = args.out.resolve().parent
    folder.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", f"sqlite:///{folder / 'gpu_check.db'}")
    result = check(device, args.backbones, args.methods, args.batch, args.train_batch,
                   args.frames, args.steps, folder)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"gpu_check: {args.out} ({result['seconds']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
