"""The peak-memory estimate of a run (suite.cost.memory) against the peak measured on the CPU.

For each configuration: the estimate ``suite run`` checks (suite.job.resources.run_estimate,
training peak), then two real training steps of the run's own ``Trainer`` (forward, InfoNCE
loss, backward, gradient clip, AdamW step) on random weights and a synthetic-sized batch,
measured as ``suite.cost.profiling.PeakMemory`` measures (the process's resident high-water
mark, reset at the start) less the resident memory before the model was built, so both sides
count the same things: weights, gradients, optimiser states, activations and the batch.

Each configuration runs in a process of its own (a fresh resident set):

    .venv/bin/python benchmarks/memory_estimate.py
    .venv/bin/python benchmarks/memory_estimate.py --only lora   # one row
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

#: name -> (method, backbone, frames, batch)
CONFIGS: dict[str, tuple[str, str, int, int]] = {
    "lora": ("lora", "tiny-clip", 12, 8),
    "tempme": ("tempme", "tiny-clip", 12, 8),
    "full": ("full", "tiny-clip", 12, 32),
    "lora-b32": ("lora", "ViT-B-32", 12, 4),
}


def measure(method: str, backbone: str, frames: int, batch: int, configure: bool = True
            ) -> dict[str, Any]:
    """Estimated and measured training peak (MiB) of one configuration, in this process;
    ``configure``: with the CPU settings of a run (``suite.cost.cpu.configure_process``,
    which a process takes once, before torch's thread pool starts)."""
    import numpy as np
    import torch

    from suite.cost import cpu
    from suite.cost.device import resolve_device
    from suite.cost.profiling import PeakMemory, _status_mib, dummy_text
    from suite.data.cards import load_card
    from suite.job.config import build, method_config
    from suite.job.engine import Trainer, build_model, make_optimizer
    from suite.job.resources import run_estimate
    from suite.models.backbone import load_backbone

    if configure:
        cpu.configure_process()
    torch.manual_seed(0)
    config = build({"method": method, "backbone": backbone, "pretrained": None,
                    "frames": frames, "train": {"batch_size": batch}})
    knobs = method_config(config)
    card = load_card(config.dataset)
    device = resolve_device("cpu")
    found = run_estimate(config, knobs, card, device)
    assert found is not None and found.training is not None
    size = int(card.options["size"])
    rng = np.random.default_rng(0)
    frames_u8 = torch.from_numpy(rng.integers(0, 256, (batch, frames, size, size, 3),
                                              dtype=np.uint8))
    mask = torch.ones(batch, frames, dtype=torch.bool)
    cpu.release_free_memory()
    before = _status_mib("VmRSS")  # the process before the model: imports, the batch
    loaded = load_backbone(backbone, None, "cpu", show_progress=False)
    model = build_model(config, loaded, knobs)
    ids = dummy_text(batch, config.words, int(loaded.model.vocab_size), device)
    trainer = Trainer(model, config, card, loaded, device, show_progress=False)
    optimizer, scheduler = make_optimizer(model, config, 10)
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    params = model.trainable_parameters()
    model.train()
    with cpu.kernels(device, model=model), PeakMemory(device) as memory:
        for _ in range(2):
            trainer.train_step(ids, frames_u8, mask, optimizer, scaler, scheduler, params)
    return {"estimated_mib": found.training / 2**20, "measured_mib": memory.peak_mib - before,
            "parts_mib": {k: round(v / 2**20, 1) for k, v in found.parts.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=sorted(CONFIGS), help="one configuration")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # one measurement, JSON out
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*CONFIGS[args.child])))
        return
    print("| configuration | method | backbone | frames | batch | estimated MiB | measured MiB "
          "| estimated / measured |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name in [args.only] if args.only else list(CONFIGS):
        done = subprocess.run([sys.executable, __file__, "--child", name], check=True,
                              capture_output=True, text=True)
        row = json.loads(done.stdout.strip().splitlines()[-1])
        method, backbone, frames, batch = CONFIGS[name]
        est, got = row["estimated_mib"], row["measured_mib"]
        print(f"| {name} | {method} | {backbone} | {frames} | {batch} | {est:,.0f} | "
              f"{got:,.0f} | {est / got:.2f} |", flush=True)


if __name__ == "__main__":
    main()
