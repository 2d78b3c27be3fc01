"""Cost figures, measured the same way for every method (protocol.md, "Efficiency figures").

- multiply-adds of the video tower per video and of the text tower per caption (suite.cost.flops),
  with LoRA folded;
- output tokens per video (tokens leaving the last visual block, summed over sequences);
- trainable and total parameters;
- inference throughput: videos per second of the video encoder in eval mode on inputs already on
  the device, after warm-up, median (and quartiles) over at least 10 timed batches;
- the FLOP/s that throughput achieves (2 x video multiply-adds x videos/s) and its share of this
  machine's measured matmul peak in the same precision (suite.cost.peak), so that figures from
  different machines compare;
- training seconds per step and peak memory (CUDA allocated on GPU, process resident on CPU).

Timed work runs with the suite's CPU kernel settings (suite.cost.cpu: the fp32 GEMM library, flushed
denormals, reused memory), as runs do; counting runs without them.
"""

from __future__ import annotations

import statistics
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from suite.cost import cpu
from suite.cost.device import autocast, cast_weights_once, resolve_precision
from suite.cost.flops import count_macs
from suite.cost.timing import synchronize, time_calls


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
            return self
        cpu.release_free_memory()  # memory kept for reuse (suite.cost.cpu) is not this block's
        if not _reset_high_water_mark():
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
    """Tokens leaving the last visual block for one video, summed over its sequences: the
    analytic token table where the encoder has one (TempMe's, tested equal to its trace),
    else counted in a forward."""
    if hasattr(encoder, "token_table"):
        last = encoder.token_table()[-1]
        return last.sequences * last.after_intra
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
class Counts:
    """What a model costs without timing it: multiply-adds, tokens and parameters."""

    video_gmacs: float
    text_gmacs: float
    output_tokens: int
    params_total: int


def count_costs(model: Any, frames: int, image_size: int, words: int,
                vocab: int = 49408) -> Counts:
    """Multiply-adds (video per video, text per caption), output tokens and parameters of a
    folded model, counted on the CPU (seconds: one traced forward per tower)."""
    model.eval()
    device = next(model.parameters()).device
    model.to("cpu")
    cpu_pixels, cpu_mask = dummy_video(1, frames, image_size, torch.device("cpu"))
    video = count_macs(model.video_encoder, (cpu_pixels, cpu_mask))
    text = count_macs(_TextTower(model), (dummy_text(1, words, vocab, torch.device("cpu")),))
    tokens = output_tokens(model.video_encoder, frames, image_size)
    model.to(device)
    return Counts(video.gmacs, text.gmacs, tokens, sum(p.numel() for p in model.parameters()))


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
    # 2 x video multiply-adds x videos/s, and its share of the machine's measured peak
    gflop_per_second: float = float("nan")
    peak_gflop_per_second: float = float("nan")
    peak_share: float = float("nan")


@dataclass(frozen=True)
class TrainingCost:
    params_trainable: int
    seconds_per_step: float
    training_peak_mib: float


def achieved(gmacs: float, videos_per_second: float, device: torch.device, precision: str
             ) -> tuple[float, float, float]:
    """(GFLOP/s achieved, the machine's peak GFLOP/s in ``precision``, share of that peak)."""
    from suite.cost.peak import machine_peaks

    flops = 2 * gmacs * videos_per_second
    peak = machine_peaks(device).of(precision) / 1e9
    return flops, peak, flops / peak


def video_step(model: Any, pixels: torch.Tensor, mask: torch.Tensor, device: torch.device,
               precision: str) -> Any:
    """One inference call of the video tower in ``precision`` (the timed unit)."""
    def step() -> None:
        with torch.no_grad(), autocast(device, precision):
            model.encode_video(pixels, mask)

    return step


@contextmanager
def compiled_video_tower(model: Any, enabled: bool = True, **options: Any) -> Iterator[None]:
    """``torch.compile`` (with ``options``) the video tower of ``model`` for the block (the
    first call compiles); the eager tower is put back after."""
    if not enabled:
        yield
        return
    eager = model.video_encoder
    model.video_encoder = torch.compile(eager, **options)
    try:
        yield
    finally:
        model.video_encoder = eager


def measure_inference(model: Any, frames: int, image_size: int, words: int,
                      device: torch.device, batch: int, repeats: int = 10, warmup: int = 2,
                      vocab: int = 49408, precision: str = "auto",
                      compile_video: bool = False) -> InferenceCost:
    """Cost of a folded model at inference (call after ``model.fold()``), timed in
    ``precision`` (``auto``: the protocol's, fp32 on the CPU and fp16 on CUDA) with frozen
    weights cast once (suite.cost.device.cast_weights_once); ``compile_video``: the video tower
    compiled by ``torch.compile`` (inductor picks its own kernels: no GEMM route; the compile
    happens in the warm-up and is not timed)."""
    counts = count_costs(model, frames, image_size, words, vocab)
    model.to(device)
    pixels, mask = dummy_video(batch, frames, image_size, device)
    resolved = resolve_precision(precision, device)
    step = video_step(model, pixels, mask, device, resolved)
    route = "torch" if compile_video else None
    # one autocast block around every call: each frozen weight is cast once, then cached
    with cast_weights_once(model, resolved), autocast(device, resolved), \
            compiled_video_tower(model, compile_video), cpu.kernels(device, route, model), \
            PeakMemory(device) as memory:
        seconds = time_calls(step, device, max(warmup, 1), repeats)
    timing = Timing.of([batch / s for s in seconds])
    flops, peak, share = achieved(counts.video_gmacs, timing.median, device, resolved)
    return InferenceCost(
        video_gmacs=counts.video_gmacs, text_gmacs=counts.text_gmacs,
        output_tokens=counts.output_tokens, params_total=counts.params_total,
        videos_per_second=timing.median, videos_per_second_q1=timing.q1,
        videos_per_second_q3=timing.q3, inference_peak_mib=memory.peak_mib,
        gflop_per_second=flops, peak_gflop_per_second=peak, peak_share=share)


def measure_training_step(model: Any, frames: int, image_size: int, words: int,
                          device: torch.device, batch: int, repeats: int = 3, warmup: int = 1,
                          vocab: int = 49408, precision: str = "auto") -> TrainingCost:
    """Seconds and peak memory of forward + backward of the InfoNCE loss (no optimiser step:
    the weights stay as they are), in the training ``precision``."""
    model.train()
    params = model.trainable_parameters()
    if not params:  # nothing trains (zero-shot): no training cost to measure
        return TrainingCost(params_trainable=0, seconds_per_step=float("nan"),
                            training_peak_mib=float("nan"))
    step = training_step(model, frames, image_size, words, device, batch, vocab, precision)
    with cpu.kernels(device, model=model), PeakMemory(device) as memory:
        seconds = time_calls(step, device, warmup, repeats)
    return TrainingCost(params_trainable=sum(p.numel() for p in params),
                        seconds_per_step=statistics.median(seconds),
                        training_peak_mib=memory.peak_mib)


def training_step(model: Any, frames: int, image_size: int, words: int, device: torch.device,
                  batch: int, vocab: int = 49408, precision: str = "auto") -> Any:
    """One forward + backward of the InfoNCE loss on dummy inputs (the timed unit)."""
    from suite.models.loss import symmetric_infonce

    pixels, mask = dummy_video(batch, frames, image_size, device)
    ids = dummy_text(batch, words, vocab, device)
    params = model.trainable_parameters()

    def step() -> None:
        with autocast(device, precision):
            loss = symmetric_infonce(model.encode_text(ids), model.encode_video(pixels, mask),
                                     model.logit_scale)
        loss.backward()
        for p in params:
            p.grad = None

    return step


def as_metrics(*costs: Any) -> dict[str, float]:
    """``cost/...`` metric names for MLflow."""
    out: dict[str, float] = {}
    for cost in costs:
        out.update({f"cost/{k}": float(v) for k, v in asdict(cost).items()})
    return out


def environment(device: torch.device, model: Any = None) -> dict[str, str]:
    """What every cost figure is recorded with: device, torch version, threads, the CPU kernel
    settings (suite.cost.cpu, for ``model``) and, on the CPU, the processor and its vector
    extensions."""
    from suite.cost.peak import cpu_identity

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    out = {"device": name, "torch": torch.__version__, "threads": str(torch.get_num_threads()),
           **cpu.settings(device, model)}
    if device.type == "cpu":
        ident = cpu_identity()
        out["cpu"] = ident["model"]
        out["cpu_flags"] = " ".join(f for f in ident["flags"].split() if f in NOTED_FLAGS)
    return out


# The CPU flags a cost figure notes: the vector and matrix extensions matmuls run on.
NOTED_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16",
               "amx_tile", "amx_bf16", "amx_int8", "amx_fp16", "asimd", "sve", "sve2")


def default_batch(device: torch.device) -> int:
    """protocol.md: batch 32 (fp16 autocast) on CUDA, batch 4 (fp32) on the CPU."""
    return 32 if device.type == "cuda" else 4


def build_for_profile(method: str, backbone: str, frames: int, device: torch.device,
                      options: dict[str, Any] | None = None) -> tuple[Any, int, int]:
    """``method`` on ``backbone`` with random weights (enough for cost): (model, image size,
    text vocabulary)."""
    from methods import registry
    from suite.models.backbone import load_backbone
    from suite.models.method import resolve_method_config

    config = resolve_method_config(method, backbone, frames, options or {})
    loaded = load_backbone(backbone, None, "cpu", show_progress=False)
    vocab = int(loaded.model.vocab_size) if hasattr(loaded.model, "vocab_size") else 49408
    model = registry.get(method).build(loaded.model, config, frames, backbone).to(device)
    return model, loaded.image_size, vocab


def profile_method(method: str, backbone: str, frames: int, words: int, device: torch.device,
                   batch: int, train_batch: int, options: dict[str, Any] | None = None,
                   repeats: int = 10, counts_only: bool = False, precision: str = "auto",
                   compile_video: bool = False) -> dict[str, Any]:
    """Every cost figure of ``method`` on ``backbone`` with random weights (enough for cost);
    ``counts_only``: multiply-adds, tokens and parameters alone, no timed runs. Inference is
    timed in ``precision`` (``auto``: the protocol's), the training step in the protocol's;
    ``compile_video``: inference through the ``torch.compile``-d video tower."""
    cpu.configure_process()
    model, image_size, vocab = build_for_profile(method, backbone, frames, device, options)
    head = {"method": method, "backbone": backbone, "frames": frames, "words": words}
    if counts_only:
        trainable = sum(p.numel() for p in model.trainable_parameters())
        counts = count_costs(model.fold(), frames, image_size, words, vocab)
        return {**head, **asdict(counts), "params_trainable": trainable}
    training = measure_training_step(model, frames, image_size, words, device, train_batch,
                                     vocab=vocab)
    model.fold()
    inference = measure_inference(model, frames, image_size, words, device, batch,
                                  repeats=repeats, vocab=vocab, precision=precision,
                                  compile_video=compile_video)
    env = environment(device, model)
    if compile_video:
        env["cpu_gemm"] = "inductor"
    return {**head, "batch": batch, "train_batch": train_batch,
            "precision": resolve_precision(precision, device), "compiled": compile_video,
            **asdict(training), **asdict(inference), **env}


def method_options(sets: dict[str, Any]) -> dict[str, Any]:
    """``method.NAME=VALUE`` settings as method options; any other section is refused."""
    from suite.errors import UserError

    options = {}
    for key, value in sets.items():
        if not key.startswith("method."):
            raise UserError(f"profile takes only method.NAME settings, got {key!r}")
        options[key.removeprefix("method.")] = value
    return options


def profile_methods(names: list[str], backbone: str, frames: int, words: int, device: str,
                    batch: int | None, train_batch: int | None, options: dict[str, Any],
                    counts_only: bool = False, precision: str = "auto",
                    compile_video: bool = False) -> list[dict[str, Any]]:
    """``suite profile``: every method of ``names`` checked first (a bad option or backbone is
    an error before any work), the machine's peak measured now (unless ``counts_only``), then
    one row of cost figures per method, as :func:`profile_method`."""
    from suite.cost.device import resolve_device
    from suite.models.method import resolve_method_config

    torch_device = resolve_device(device)
    resolve_precision(precision, torch_device)  # a bad one is a user error before any work
    batch = batch or default_batch(torch_device)
    for name in names:
        resolve_method_config(name, backbone, frames, options)
    if not counts_only:  # the shares of peak against a measurement taken now (suite.cost.peak)
        from suite.cost.peak import machine_peaks

        cpu.configure_process()  # before torch's thread pool starts
        machine_peaks(torch_device, refresh=True)
    return [profile_method(name, backbone, frames, words, torch_device, batch,
                           train_batch or batch, options, counts_only=counts_only,
                           precision=precision, compile_video=compile_video)
            for name in names]
