"""Device and precision choice, and the CUDA-only pieces (synchronise), kept in one place."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext

import torch
from torch import nn

from suite.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError("--device cuda asked for, but torch sees no CUDA device; valid: auto, cpu")
    if name != "cpu" and not name.startswith("cuda"):
        raise UserError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")
    return torch.device(name)


PRECISIONS = ("auto", "fp32", "fp16", "bf16")
PHASES = ("train", "eval")
BF16_MARGIN = 1.5  # "much faster": the measured bf16 matmul peak over the fp32 one


def resolve_precision(precision: str, device: torch.device, phase: str = "train") -> str:
    """The precision a phase runs in. ``auto`` is fp16 autocast on CUDA (protocol.md); on the
    CPU it trains in fp32 and evaluates in bf16 where this machine's measured bf16 matmul peak
    is at least ``BF16_MARGIN`` times its fp32 peak (:func:`bf16_is_faster`), else in fp32.
    fp16 needs CUDA (its gradient scaler is CUDA's), bf16 runs on both."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, got {phase!r}")
    if precision == "auto":
        if device.type == "cuda":
            return "fp16"
        return "bf16" if phase == "eval" and bf16_is_faster(device) else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise UserError("precision fp16 needs a CUDA device; on the CPU use bf16 or fp32")
    return precision


def bf16_is_faster(device: torch.device) -> bool:
    """Whether bf16 matrix products run at least ``BF16_MARGIN`` times as fast as fp32 ones
    here, by this machine's measured peaks (:mod:`suite.cost.peak`; never by the processor's name):
    true with AMX or AVX512-BF16, false where bf16 is emulated."""
    from suite.cost.peak import machine_peaks

    peaks = machine_peaks(device)
    return peaks.routes["bf16"] >= BF16_MARGIN * peaks.fp32


def autocast(device: torch.device, precision: str = "auto",
             phase: str = "train") -> AbstractContextManager:
    """Mixed precision for the forward pass: fp16 or bf16 autocast, or none for fp32."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        resolve_precision(precision, device, phase))
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


@contextmanager
def cast_weights_once(model: nn.Module, precision: str) -> Iterator[None]:
    """Under bf16 or fp16 autocast, cast each frozen fp32 weight once per autocast block instead
    of once per call. Autocast caches the cast of a leaf tensor that requires grad, so frozen
    parameters are marked as requiring grad for the block (inference only: run it under
    ``torch.no_grad``). The products see the very same lower-precision weights, so the results
    equal plain autocast's."""
    frozen = []
    if precision in ("bf16", "fp16"):
        frozen = [p for p in model.parameters()
                  if not p.requires_grad and p.dtype == torch.float32]
    for p in frozen:
        p.requires_grad_(True)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(False)


def grad_scaler(device: torch.device, precision: str = "auto") -> torch.amp.GradScaler:
    """Loss scaling, on only for fp16 (bf16 has fp32's exponent range and needs none)."""
    enabled = resolve_precision(precision, device) == "fp16"
    return torch.amp.GradScaler("cuda", enabled=enabled)
