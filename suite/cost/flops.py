"""Multiply-add counting with fvcore, completed for the operators it misses.

The paper's convention (protocol.md): "GFLOPs" are multiply-adds. fvcore counts one fused
multiply-add as one flop for matmul, linear and convolution, but has no handle for fused attention
(``scaled_dot_product_attention`` and the native multi-head attention fast path), for the
scatter reductions that token merging uses, or for the pairwise distances of token clustering.
This module registers handles for those and refuses to report a number when any other operator
that carries real work goes uncounted.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from math import prod
from typing import Any

import torch
from torch import nn

from suite.errors import UncountedOperatorError

# Element-wise and bookkeeping operators: their cost is linear in the tensor size and is left
# out by convention, like fvcore's own ignore list. Anything not here and not counted is an error.
NEGLIGIBLE_OPS = frozenset({
    "aten::add", "aten::add_", "aten::sub", "aten::rsub", "aten::mul", "aten::mul_",
    "aten::div", "aten::div_", "aten::neg", "aten::exp", "aten::log", "aten::sqrt",
    "aten::rsqrt", "aten::pow", "aten::abs", "aten::gelu", "aten::sigmoid", "aten::tanh",
    "aten::silu", "aten::softmax", "aten::log_softmax", "aten::clamp_min", "aten::clamp_max",
    "aten::sum", "aten::mean", "aten::amax", "aten::argmax", "aten::argsort", "aten::sort",
    "aten::topk", "aten::linalg_vector_norm", "aten::norm", "aten::expand_as",
    "aten::unflatten", "aten::unsqueeze", "aten::squeeze", "aten::transpose", "aten::t",
    "aten::view", "aten::view_as", "aten::split", "aten::split_with_sizes", "aten::unbind",
    "aten::stack", "aten::repeat", "aten::repeat_interleave", "aten::zeros_like",
    "aten::ones_like", "aten::zeros", "aten::scatter", "aten::index_select",
    "aten::take_along_dim", "aten::type_as", "aten::to", "aten::log_", "aten::fill_",
    "aten::masked_fill_", "aten::lt", "aten::le", "aten::ne", "aten::logical_not",
    "aten::where", "aten::cumsum", "aten::max_pool2d", "aten::select", "aten::slice",
    "aten::alias", "aten::lift_fresh", "aten::clone", "aten::unsqueeze_",
    "aten::reciprocal", "aten::minimum", "aten::maximum", "aten::embedding",
    "aten::argmin", "aten::one_hot",
})


def _shape(value: Any) -> list[int]:
    from fvcore.nn.jit_handles import get_shape

    shape = get_shape(value)
    if shape is None:
        raise UncountedOperatorError("an attention input has no static shape")
    return list(shape)


def sdpa_macs(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """``softmax(q k^T) v``: q (..., L, E), k (..., S, E), v (..., S, Ev) -> L*S*E + L*S*Ev."""
    q, k, v = (_shape(x) for x in inputs[:3])
    batch = prod(q[:-2])
    return batch * q[-2] * k[-2] * (q[-1] + v[-1])


def native_mha_macs(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """``_native_multi_head_attention``: fused in-projection, attention, out-projection."""
    query, key = _shape(inputs[0]), _shape(inputs[1])
    embed = int(inputs[3].toIValue())
    batch, length, source = prod(query[:-2]), query[-2], key[-2]
    in_proj = batch * (length + 2 * source) * embed * embed
    attention = 2 * batch * length * source * embed
    out_proj = batch * length * embed * embed
    return in_proj + attention + out_proj


def scatter_macs(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """Scatter reductions (token merging's weighted sums): one add per source element."""
    return prod(_shape(inputs[3] if len(inputs) > 3 else inputs[-1]))


def cdist_macs(inputs: Sequence[Any], outputs: Sequence[Any]) -> int:
    """Pairwise distances x1 (..., P, C) to x2 (..., R, C): one multiply-add per P*R*C."""
    x1, x2 = _shape(inputs[0]), _shape(inputs[1])
    return prod(x1[:-2]) * x1[-2] * x2[-2] * x1[-1]


EXTRA_HANDLES = {
    "aten::cdist": cdist_macs,
    "aten::scaled_dot_product_attention": sdpa_macs,
    "aten::_native_multi_head_attention": native_mha_macs,
    "aten::scatter_reduce": scatter_macs,
    "aten::scatter_add": scatter_macs,
    "aten::scatter_add_": scatter_macs,
    "aten::index_add": scatter_macs,
}


@dataclass(frozen=True)
class MacCount:
    """Multiply-adds of one forward call, in total and by operator family."""

    total: int
    by_operator: dict[str, int]

    @property
    def gmacs(self) -> float:
        return self.total / 1e9


def count_macs(module: nn.Module, inputs: tuple[Any, ...]) -> MacCount:
    """Multiply-adds of ``module(*inputs)`` in eval mode; raises on uncounted real work."""
    from torch.utils._python_dispatch import _disable_current_modes

    with warnings.catch_warnings():  # importing fvcore scripts a function with torch.jit
        warnings.simplefilter("ignore", FutureWarning)
        from fvcore.nn import FlopCountAnalysis

    was_training = module.training
    module.eval()
    try:
        # traced without kernel routing (suite.cost.cpu): fvcore counts the operators torch records
        with torch.no_grad(), warnings.catch_warnings(), _disable_current_modes():
            warnings.simplefilter("ignore", FutureWarning)  # fvcore's use of torch.jit
            analysis = FlopCountAnalysis(module, inputs)
            analysis.set_op_handle(**EXTRA_HANDLES)
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            total = int(analysis.total())
            uncounted = {op: n for op, n in analysis.unsupported_ops().items()
                         if op not in NEGLIGIBLE_OPS}
            by_operator = {k: int(v) for k, v in analysis.by_operator().items()}
    finally:
        module.train(was_training)
    if uncounted:
        raise UncountedOperatorError(
            "no multiply-add handle for " + ", ".join(f"{op} (x{n})" for op, n in uncounted.items())
            + "; add one in suite/cost/flops.py or list the operator as negligible"
        )
    return MacCount(total, by_operator)
