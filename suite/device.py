"""Device choice and the CUDA-only pieces (fp16 autocast, synchronise), kept in one place."""

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


def autocast(device: torch.device) -> AbstractContextManager:
    """fp16 autocast on CUDA (protocol.md); full precision on the CPU."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    return nullcontext()


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a clock read after it is honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
