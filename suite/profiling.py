"""Cost figures, measured the same way for every method (protocol.md, "Efficiency figures").

- multiply-adds of the video tower per video and of the text tower per caption (suite.flops),
  with LoRA folded;
- output tokens per video (tokens leaving the last visual block, summed over sequences);
- trainable and total parameters;
- inference throughput: videos per second of the video encoder in eval mode on inputs already on
  the device, after warm-up, median (and quartiles) over at least 10 timed batches;
- training seconds per step and peak memory (CUDA allocated on GPU, process resident on CPU).
"""

from __future__ import annotations

import statistics
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from suite.device import autocast, synchronize
from suite.flops import count_macs


class PeakMemory:
    """Peak memory in MiB over a ``with`` block: CUDA allocated, or resident set on the CPU.

    On Linux the CPU figure is the kernel's own high-water mark (``VmHWM``), reset on entry
    through ``/proc/self/clear_refs``, so a short-lived allocation is never missed. Elsewhere a
    thread samples the resident set every ``interval`` seconds.
    """

    def __init__(self, device: torch.device, interval: float = 0.002) -> None:
        self.device = device
        self.interval = interval
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample_once(self) -> None:
        import psutil

        self.peak_mib = max(self.peak_mib, psutil.Process().memory_info().rss / 2**20)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample_once()

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        elif not _reset_high_water_mark():
            self._sample_once()  # a block shorter than one interval still gets a figure
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif self._thread is None:
            self.peak_mib = _high_water_mark_mib()
        else:
            self._stop.set()
            self._thread.join()
            self._sample_once()


def _reset_high_water_mark() -> bool:
    """Reset the kernel's peak resident set of this process to its current size (Linux 4.0+);
    False where that is not possible or does not take effect."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
        return _high_water_mark_mib() <= _status_mib("VmRSS") + 16  # the reset took effect
    except (OSError, ValueError):
        return False


def _high_water_mark_mib() -> float:
    return _status_mib("VmHWM")


def _status_mib(field: str) -> float:
    """A ``kB`` field of ``/proc/self/status`` in MiB."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    raise ValueError(f"no {field} line in /proc/self/status")


@dataclass(frozen=True)
class Timing:
    """Median and quartiles of repeated measurements."""

    median: float
    q1: float
    q3: float

    @classmethod
    def of(cls, values: list[float]) -> Timing:
        q1, median, q3 = statistics.quantiles(values, n=4, method="inclusive")
        return cls(median, q1, q3)


def time_calls(fn: Any, device: torch.device, warmup: int, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    seconds = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    return seconds


def dummy_video(batch: int, frames: int, image_size: int, device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    pixels = torch.randn(batch, frames, 3, image_size, image_size, generator=g).to(device)
    return pixels, torch.ones(batch, frames, dtype=torch.bool, device=device)


def dummy_text(batch: int, words: int, vocab: int, device: torch.device) -> torch.Tensor:
    """Token ids with an EOT (the largest id) at the end, as the CLIP tokenizer makes them."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab - 2, (batch, words), generator=g)
    ids[:, 0], ids[:, -1] = vocab - 2, vocab - 1
    return ids.to(device)


class _TextTower(nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(ids)


def output_tokens(encoder: Any, frames: int, image_size: int) -> int:
    """Tokens leaving the last visual block for one video, summed over its sequences."""
    pixels, mask = dummy_video(1, frames, image_size, torch.device("cpu"))
    pixels = pixels.to(next(encoder.parameters()).device)
    mask = mask.to(pixels.device)
    with torch.no_grad():
        if hasattr(encoder, "forward_with_trace"):
            last = encoder.forward_with_trace(pixels, mask).trace[-1]
            return last.sequences * last.after_intra
        shapes: list[torch.Size] = []
        blocks = encoder.visual.transformer.resblocks
        hook = blocks[-1].register_forward_hook(lambda m, i, o: shapes.append(o.shape))
        try:
            encoder(pixels, mask)
        finally:
            hook.remove()
        return shapes[-1][0] * shapes[-1][1]


@dataclass(frozen=True)
class InferenceCost:
    video_gmacs: float
    text_gmacs: float
    output_tokens: int
    params_total: int
    videos_per_second: float
    videos_per_second_q1: float
    videos_per_second_q3: float
    inference_peak_mib: float


@dataclass(frozen=True)
class TrainingCost:
    params_trainable: int
    seconds_per_step: float
    training_peak_mib: float


def measure_inference(model: Any, frames: int, image_size: int, words: int,
                      device: torch.device, batch: int, repeats: int = 10, warmup: int = 2,
                      vocab: int = 49408) -> InferenceCost:
    """Cost of a folded model at inference (call after ``model.fold()``)."""
    model.eval()
    cpu_pixels, cpu_mask = dummy_video(1, frames, image_size, torch.device("cpu"))
    encoder = model.video_encoder
    on_cpu = encoder.to("cpu") if device.type != "cpu" else encoder
    video = count_macs(on_cpu, (cpu_pixels, cpu_mask))
    text = count_macs(_TextTower(model.to("cpu") if device.type != "cpu" else model),
                      (dummy_text(1, words, vocab, torch.device("cpu")),))
    model.to(device)
    tokens = output_tokens(model.video_encoder, frames, image_size)
    pixels, mask = dummy_video(batch, frames, image_size, device)

    def step() -> None:
        with torch.no_grad(), autocast(device):
            model.encode_video(pixels, mask)

    with PeakMemory(device) as memory:
        seconds = time_calls(step, device, warmup, repeats)
    timing = Timing.of([batch / s for s in seconds])
    return InferenceCost(
        video_gmacs=video.gmacs, text_gmacs=text.gmacs, output_tokens=tokens,
        params_total=sum(p.numel() for p in model.parameters()),
        videos_per_second=timing.median, videos_per_second_q1=timing.q1,
        videos_per_second_q3=timing.q3, inference_peak_mib=memory.peak_mib)


def measure_training_step(model: Any, frames: int, image_size: int, words: int,
                          device: torch.device, batch: int, repeats: int = 3, warmup: int = 1,
                          vocab: int = 49408) -> TrainingCost:
    """Seconds and peak memory of forward + backward of the InfoNCE loss (no optimiser step:
    the weights stay as they are)."""
    from suite.loss import symmetric_infonce

    model.train()
    pixels, mask = dummy_video(batch, frames, image_size, device)
    ids = dummy_text(batch, words, vocab, device)
    params = model.trainable_parameters()
    if not params:  # nothing trains (zero-shot): no training cost to measure
        return TrainingCost(params_trainable=0, seconds_per_step=float("nan"),
                            training_peak_mib=float("nan"))

    def step() -> None:
        with autocast(device):
            loss = symmetric_infonce(model.encode_text(ids), model.encode_video(pixels, mask),
                                     model.logit_scale)
        loss.backward()
        for p in params:
            p.grad = None

    with PeakMemory(device) as memory:
        seconds = time_calls(step, device, warmup, repeats)
    return TrainingCost(params_trainable=sum(p.numel() for p in params),
                        seconds_per_step=statistics.median(seconds),
                        training_peak_mib=memory.peak_mib)


def as_metrics(*costs: Any) -> dict[str, float]:
    """``cost/...`` metric names for MLflow."""
    out: dict[str, float] = {}
    for cost in costs:
        out.update({f"cost/{k}": float(v) for k, v in asdict(cost).items()})
    return out


def environment(device: torch.device) -> dict[str, str]:
    """What every cost figure is recorded with: device, torch version, threads."""
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device": name, "torch": torch.__version__, "threads": str(torch.get_num_threads())}


def default_batch(device: torch.device) -> int:
    """protocol.md: batch 32 (fp16 autocast) on CUDA, batch 4 (fp32) on the CPU."""
    return 32 if device.type == "cuda" else 4


def profile_method(method: str, backbone: str, frames: int, words: int, device: torch.device,
                   batch: int, train_batch: int, options: dict[str, Any] | None = None,
                   repeats: int = 10) -> dict[str, Any]:
    """Every cost figure of ``method`` on ``backbone`` with random weights (enough for cost)."""
    from methods import registry
    from suite.backbone import check_backbone_name, load_backbone

    check_backbone_name(backbone)  # registers the embedded configs methods read
    spec = registry.get(method)
    config = spec.make_config(backbone, frames, options or {})
    loaded = load_backbone(backbone, None, "cpu", show_progress=False)
    vocab = int(loaded.model.vocab_size) if hasattr(loaded.model, "vocab_size") else 49408
    model = spec.build(loaded.model, config, frames, backbone).to(device)
    training = measure_training_step(model, frames, loaded.image_size, words, device,
                                     train_batch, vocab=vocab)
    model.fold()
    inference = measure_inference(model, frames, loaded.image_size, words, device, batch,
                                  repeats=repeats, vocab=vocab)
    return {"method": method, "backbone": backbone, "frames": frames, "words": words,
            "batch": batch, "train_batch": train_batch, **asdict(training), **asdict(inference),
            **environment(device)}
