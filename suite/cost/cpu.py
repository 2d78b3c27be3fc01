"""CPU kernel settings: which library runs fp32 matrix products, and denormal flushing.

**GEMM route.** torch sends fp32 matrix products to its default BLAS (MKL on x86 builds). MKL
picks its code by vendor: on AMD processors it runs AVX2 code even where the CPU has AVX-512, at
less than half of what the CPU can do (measured on a 2-core AMD EPYC with AVX-512: 101 against
232 GFLOP/s per core). oneDNN, also inside torch, runs AVX-512 there. ``SUITE_CPU_GEMM`` says
which runs fp32 products in runs, profiles and benchmarks:

- ``auto`` (default): oneDNN where this machine's measured fp32 peak through it
  (:mod:`suite.cost.peak`) is at least ``ONEDNN_MARGIN`` times torch's default and the model has a
  layer at least ``ONEDNN_MIN_WIDTH`` wide (below that the route's per-operator cost wins),
  else the default;
- ``onednn`` / ``torch``: always that one.

The route is a :class:`~torch.utils._python_dispatch.TorchDispatchMode` under autograd, so the
forward and backward products of every method take the same route (a comparison of methods
stays fair). It sends ``mm``, ``addmm`` (linear layers), ``bmm`` against one shared matrix (a
linear layer on a non-contiguous input), patch-embedding convolutions (kernel = stride, no
padding: a product over patches) and the multi-head attention fast path of inference (its
projections) through oneDNN, and everything else to torch unchanged. The results differ from
the default route's by floating-point rounding (the summation order of the products).

**Denormals.** ``SUITE_FLUSH_DENORMAL=1`` (default) sets flush-to-zero / denormals-are-zero on
the CPU when a run or a profile starts: arithmetic on tiny values is slow on many Intel CPUs
(a measured 11% of the unmerged ViT-B/32 tower on a Xeon with AMX; nothing measurable on the
AMD EPYC), and values below 1.2e-38 change no figure. It is set before torch starts its thread
pool, because the pool's threads inherit the setting only when they are created (set later,
it reaches the main thread alone); ``0`` leaves the CPU as it is.

**Freed memory.** ``SUITE_REUSE_MEMORY=1`` (default) tells glibc's allocator to keep freed memory
for reuse. By default it returns every large block (a ViT-B/32 activation of 30 MB) to the
system at once and maps it fresh on the next allocation, so every page is faulted in and
zeroed again: 160,000 page faults and 11% of the time of a folded ViT-B/32 forward at batch 4.
Peak-memory figures release the kept memory before they start (:func:`release_free_memory`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from suite.errors import UserError

GEMM_ROUTES = ("auto", "onednn", "torch")
ONEDNN_MARGIN = 1.1  # oneDNN must be this much faster than the default to be picked
ONEDNN_MIN_WIDTH = 256  # and the model's widest layer at least this wide (gemm_route)
COPY_WEIGHT_ROWS = 256  # products with at least this many rows copy a transposed weight first

aten = torch.ops.aten


def gemm_setting() -> str:
    """``SUITE_CPU_GEMM``, checked."""
    value = os.environ.get("SUITE_CPU_GEMM", "auto").strip().lower() or "auto"
    if value not in GEMM_ROUTES:
        raise UserError(f"SUITE_CPU_GEMM={value!r} is not a GEMM route; valid: "
                        f"{', '.join(GEMM_ROUTES)}")
    return value


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn,
                                                            "_linear_pointwise")


def gemm_route(device: torch.device, model: nn.Module | None = None) -> str:
    """The fp32 GEMM route for ``device`` (and ``model``): ``onednn`` or ``torch`` (always
    ``torch`` off the CPU). ``auto`` reads (or measures once) this machine's peaks, and keeps
    torch's route for models whose layers are all narrower than ``ONEDNN_MIN_WIDTH``: the route
    costs ~5 us of Python per operator, every operator, which outweighs the faster products of
    small layers (tiny-clip, 64 wide: tempme 1.27x slower; ViT-B/32, 768 wide: 2x faster)."""
    setting = gemm_setting()
    if device.type != "cpu" or not onednn_available() or setting == "torch":
        return "torch"
    if setting == "onednn":
        return "onednn"
    if model is not None and widest_layer(model) < ONEDNN_MIN_WIDTH:
        return "torch"
    from suite.cost.peak import machine_peaks

    routes = machine_peaks(device).routes
    faster = routes.get("fp32/onednn", 0.0) >= ONEDNN_MARGIN * routes["fp32/torch"]
    return "onednn" if faster else "torch"


def widest_layer(model: nn.Module) -> int:
    """The largest input width of ``model``'s linear, attention and convolution layers."""
    widths = [0]
    for module in model.modules():
        if isinstance(module, nn.Linear):
            widths.append(module.in_features)
        elif isinstance(module, nn.MultiheadAttention):
            widths.append(module.embed_dim)
        elif isinstance(module, nn.Conv2d):
            widths.append(module.weight[0].numel())
    return max(widths)


def _switch(name: str) -> bool:
    value = os.environ.get(name, "1").strip()
    if value not in ("0", "1"):
        raise UserError(f"{name}={value!r}; valid: 1 (default) or 0")
    return value == "1"


def flush_denormal_setting() -> bool:
    """``SUITE_FLUSH_DENORMAL``: 1 (default) or 0."""
    return _switch("SUITE_FLUSH_DENORMAL")


def reuse_memory_setting() -> bool:
    """``SUITE_REUSE_MEMORY``: 1 (default) or 0."""
    return _switch("SUITE_REUSE_MEMORY")


def _libc() -> Any:
    """glibc, or None elsewhere (musl, macOS, Windows)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    return libc if libc is not None and hasattr(libc, "malloc_trim") else None


M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters


def configure_process() -> None:
    """At the start of a run or a profile, before torch's thread pool exists: flush denormals
    and keep freed memory for reuse, unless switched off (module docstring)."""
    if flush_denormal_setting():
        torch.set_flush_denormal(True)
    libc = _libc()
    if reuse_memory_setting() and libc is not None:
        libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)  # large blocks from the heap, not fresh maps
        libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)  # and freed ones kept


def release_free_memory() -> None:
    """Return the allocator's free memory to the system (glibc ``malloc_trim``), so that a
    resident-memory figure starts from what is in use."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def settings(device: torch.device, model: nn.Module | None = None) -> dict[str, str]:
    """The kernel settings in effect (for ``model``), for the record of a run or a figure."""
    on_cpu = device.type == "cpu"
    return {"cpu_gemm": gemm_route(device, model),
            "flush_denormal": str(flush_denormal_setting() and on_cpu).lower(),
            "reuse_memory": str(reuse_memory_setting() and on_cpu).lower()}


# -- the oneDNN route ------------------------------------------------------------------------

def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T + bias`` by oneDNN; x (M, K), weight (N, K)."""
    if not weight.is_contiguous() and x.shape[0] >= COPY_WEIGHT_ROWS:
        weight = weight.contiguous()  # a transposed weight runs ~15% slower than a copied one
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _fp32_cpu(*tensors: Any) -> bool:
    return all(isinstance(t, torch.Tensor) and t.dtype == torch.float32
               and t.device.type == "cpu" and t.layout == torch.strided and t.numel() > 0
               for t in tensors)


def _mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    if not (_fp32_cpu(a, b) and a.dim() == 2 and b.dim() == 2):
        return None
    return _linear(a, b.t(), None)


def _addmm(bias: torch.Tensor, a: torch.Tensor, b: torch.Tensor, beta: Any = 1,
           alpha: Any = 1) -> torch.Tensor | None:
    if beta != 1 or alpha != 1 or not _fp32_cpu(bias, a, b) or bias.dim() != 1:
        return None
    if a.dim() != 2 or b.dim() != 2 or bias.shape[0] != b.shape[1]:
        return None
    return _linear(a, b.t(), bias)


def _bmm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor | None:
    """A batch against one matrix expanded over the batch (a linear layer on a
    non-contiguous input): one product."""
    if not (_fp32_cpu(a, b) and a.dim() == 3 and b.dim() == 3 and b.stride(0) == 0):
        return None
    batch, rows, inner = a.shape
    return _linear(a.reshape(batch * rows, inner), b[0].t(), None).view(batch, rows, -1)


def _convolution(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 stride: list[int], padding: list[int], dilation: list[int], transposed: bool,
                 output_padding: list[int], groups: int) -> torch.Tensor | None:
    """A patch embedding (2-D, kernel = stride, no padding, no dilation, one group): each output
    pixel is one patch times the weight."""
    if transposed or groups != 1 or x.dim() != 4 or weight.dim() != 4:
        return None
    if not _fp32_cpu(x, weight) or (bias is not None and not _fp32_cpu(bias)):
        return None
    kh, kw = weight.shape[2:]
    if list(stride) != [kh, kw] or any(padding) or any(d != 1 for d in dilation):
        return None
    n, c, h, w = x.shape
    rows, cols = h // kh, w // kw
    patches = (x[:, :, :rows * kh, :cols * kw].reshape(n, c, rows, kh, cols, kw)
               .permute(0, 2, 4, 1, 3, 5).reshape(n * rows * cols, c * kh * kw))
    out = _linear(patches, weight.reshape(weight.shape[0], -1), bias)
    return out.view(n, rows, cols, -1).permute(0, 3, 1, 2).contiguous()


def _native_mha(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, embed_dim: int,
                num_heads: int, qkv_weight: torch.Tensor, qkv_bias: torch.Tensor | None,
                proj_weight: torch.Tensor, proj_bias: torch.Tensor | None,
                mask: torch.Tensor | None = None, need_weights: bool = True,
                average_attn_weights: bool = True, mask_type: int | None = None
                ) -> tuple[torch.Tensor, None] | None:
    """``nn.MultiheadAttention``'s inference fast path for unmasked self-attention without
    attention weights (what open_clip's towers call): in-projection, scaled dot-product
    attention, out-projection."""
    same = key is query and value is query
    if not same or mask is not None or need_weights or query.dim() != 3:
        return None
    if not _fp32_cpu(query, qkv_weight, proj_weight):
        return None
    batch, length, width = query.shape
    qkv = _linear(query.reshape(batch * length, width), qkv_weight, qkv_bias)
    q, k, v = qkv.view(batch, length, 3, num_heads, width // num_heads).permute(2, 0, 3, 1, 4)
    out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch * length, width)
    return _linear(out, proj_weight, proj_bias).view(batch, length, width), None


HANDLERS: dict[Any, Callable[..., Any]] = {
    aten.mm.default: _mm,
    aten.addmm.default: _addmm,
    aten.bmm.default: _bmm,
    aten.convolution.default: _convolution,
    aten._native_multi_head_attention.default: _native_mha,
}


class OneDnnRoute(TorchDispatchMode):
    """Send fp32 CPU matrix products to oneDNN (see the module docstring); anything a handler
    declines (returns None for) runs as usual."""

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (),
                           kwargs: dict | None = None) -> Any:
        handler = HANDLERS.get(func)
        if handler is not None:
            out = handler(*args, **(kwargs or {}))
            if out is not None:
                return out
        return func(*args, **(kwargs or {}))


@contextmanager
def kernels(device: torch.device, route: str | None = None,
            model: nn.Module | None = None) -> Iterator[str]:
    """Run the block with this machine's fp32 GEMM route on ``device`` for ``model``
    (:func:`gemm_route`; ``route``: force ``onednn`` or ``torch``); yields the route taken."""
    route = gemm_route(device, model) if route is None else route
    if route != "onednn" or device.type != "cpu":
        yield "torch"
        return
    with OneDnnRoute():
        yield "onednn"
