"""Device and precision choice, and the CUDA-only pieces (synchronise), kept in one place."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

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


def resolve_precision(precision: str, device: torch.device) -> str:
    """``auto`` is fp16 autocast on CUDA (protocol.md) and fp32 on the CPU; fp16 needs CUDA
    (its gradient scaler is CUDA's), bf16 runs on both."""
    if precision not in PRECISIONS:
        raise UserError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision == "fp16" and device.type != "cuda":
        raise UserError("precision fp16 needs a CUDA device; on the CPU use bf16 or fp32")
    return precision


def autocast(device: torch.device, precision: str = "auto") -> AbstractContextManager:
    """Mixed precision for the forward pass: fp16 or bf16 autocast, or none for fp32."""
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(
        resolve_precision(precision, device))
    return nullcontext() if dtype is None else torch.autocast(device.type, dtype=dtype)


def grad_scaler(device: torch.device, precision: str = "auto") -> torch.amp.GradScaler:
    """Loss scaling, on only for fp16 (bf16 has fp32's exponent range and needs none)."""
    enabled = resolve_precision(precision, device) == "fp16"
    return torch.amp.GradScaler("cuda", enabled=enabled)


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a clock read after it is honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
