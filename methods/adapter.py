"""Adapter baseline: frozen CLIP, a bottleneck adapter after the MLP of every block of both towers.

One placement (Houlsby et al., ICML 2019, sequential form; AIM, Yang et al., ICLR 2023, uses the
same module): the output ``h`` of each residual block's MLP becomes ``h + up(GELU(down(h)))``
before the block's residual addition. ``down`` (d -> b) keeps PyTorch's default ``nn.Linear``
init; ``up`` (b -> d) starts at zero, weight and bias, so the patched model at initialisation is
exactly the unpatched CLIP. No adapter after attention: one adapter per block.

The adapter is appended to the block's ``mlp`` (an ``nn.Sequential`` of ``c_fc``, ``gelu``,
``c_proj``) by replacing it with :class:`AdaptedMLP`, an ``nn.Sequential`` with the same children
plus ``adapter``: the backbone's parameter names and ``block.mlp.c_fc`` (which open_clip reads for
the cast dtype) stay as they were. peft is not used: it has no bottleneck (Houlsby) adapter.
Adapters cannot be folded into the frozen weights, so they cost extra multiply-adds at inference.

``bottleneck`` ``None`` (the default) picks ``min(64, width // 4)`` per tower when the model is
built (64 for ViT-B/32's 768 and 512 widths, 16 for tiny-clip's 64). It is decided from the built
model, not by ``defaults_for``: open_clip does not know the embedded tiny config when the CLI
resolves method configs, and ``methods`` may not import ``suite`` to register it.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Annotated, Any, cast

import torch
from pydantic import Field
from torch import nn

from methods.base import MeanPoolVideoEncoder, RetrievalModel, backbone_parameter_ids
from methods.registry import Method

MAX_DEFAULT_BOTTLENECK = 64


@dataclass(frozen=True)
class AdapterConfig:
    """``bottleneck``: adapter hidden width for both towers; ``None``: min(64, width // 4)."""

    bottleneck: Annotated[int, Field(ge=1)] | None = None


class BottleneckAdapter(nn.Module):
    """``h + up(GELU(down(h)))`` with ``up`` zero-initialised (the identity at first)."""

    def __init__(self, width: int, bottleneck: int, dtype: torch.dtype | None = None,
                 device: torch.device | None = None) -> None:
        super().__init__()
        self.down = nn.Linear(width, bottleneck, dtype=dtype, device=device)
        self.act = nn.GELU()
        self.up = nn.Linear(bottleneck, width, dtype=dtype, device=device)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.up(self.act(self.down(h)))


class AdaptedMLP(nn.Sequential):
    """A block's MLP layers (same modules, same names) followed by a :class:`BottleneckAdapter`."""

    def __init__(self, mlp: nn.Module, bottleneck: int) -> None:
        if not isinstance(mlp, nn.Sequential):
            raise TypeError(f"expected the block's mlp as nn.Sequential, got {type(mlp).__name__}")
        weight = next(mlp.parameters())
        width = _output_width(mlp)
        adapter = BottleneckAdapter(width, bottleneck, dtype=weight.dtype, device=weight.device)
        super().__init__(OrderedDict([*mlp.named_children(), ("adapter", adapter)]))

    def unwrap(self) -> nn.Sequential:
        """The MLP without its adapter (the original layers)."""
        layers = [(n, m) for n, m in self.named_children() if n != "adapter"]
        return nn.Sequential(OrderedDict(layers))


def _output_width(mlp: nn.Sequential) -> int:
    linears = [m for m in mlp if isinstance(m, nn.Linear)]
    if not linears:
        raise TypeError("the block's mlp has no nn.Linear layer")
    return linears[-1].out_features


def default_bottleneck(width: int) -> int:
    """``min(64, width // 4)``, at least 1."""
    return max(1, min(MAX_DEFAULT_BOTTLENECK, width // 4))


def add_adapters(tower: nn.Module, bottleneck: int | None) -> list[nn.Parameter]:
    """Put an adapter after the MLP of every block of ``tower`` (an open_clip ``Transformer``
    with ``resblocks``), in place; returns the new parameters."""
    params: list[nn.Parameter] = []
    for block in cast(list[Any], tower.resblocks):  # open_clip ResidualAttentionBlocks
        if isinstance(block.mlp, AdaptedMLP):
            raise ValueError("this tower already has adapters")
        width = _output_width(block.mlp)
        block.mlp = AdaptedMLP(block.mlp, bottleneck or default_bottleneck(width))
        params.extend(block.mlp.adapter.parameters())
    return params


def remove_adapters(tower: nn.Module) -> None:
    """Undo :func:`add_adapters`: every block gets its original MLP back."""
    for block in cast(list[Any], tower.resblocks):
        if isinstance(block.mlp, AdaptedMLP):
            block.mlp = block.mlp.unwrap()


def build(clip: Any, config: AdapterConfig, frames: int, backbone: str) -> RetrievalModel:
    ids = backbone_parameter_ids(clip)
    clip.requires_grad_(False)
    for tower in (clip.visual.transformer, clip.transformer):
        for p in add_adapters(tower, config.bottleneck):
            p.requires_grad_(True)
    return RetrievalModel(clip, MeanPoolVideoEncoder(clip.visual), ids)


METHOD = Method(
    name="adapter",
    description="Frozen CLIP + bottleneck adapters after every MLP of both towers, mean pooling",
    reference="Houlsby et al., ICML 2019 (adapters); Yang et al., ICLR 2023 (AIM)",
    config_cls=AdapterConfig,
    build=build,
    search_space=lambda trial: {
        "bottleneck": trial.suggest_categorical("method.bottleneck", [16, 32, 64, 128])},
)
