"""Optimisers and learning-rate schedules: torch's AdamW (the suite's default) and the two
variants the reference code trains with, written for this suite from their update rules.

- ``tempme-adamw``: TempMe's ``tvr/models/optimization_adamw.py`` (LunarShen/TempMe@e624930,
  lines 159-187; the old Hugging Face AdamW): ``denom = sqrt(v) + eps`` with the *un-corrected*
  v and eps 1e-6, the bias corrections folded into the step size, and the decoupled decay
  applied *after* the Adam update, to the updated weights. torch's AdamW decays first and adds
  eps to the bias-corrected sqrt(v). Schedule: cosine with linear warm-up (the same function as
  transformers', lines 56-87).
- ``bertadam``: CLIP4Clip's ``modules/optimization.py`` BertAdam (ArrowLuo/CLIP4Clip@508ffa3):
  no bias correction at all, eps 1e-6 added to sqrt(v), the weight decay added to the update
  (``update += wd * p``) before scaling by the learning rate, each parameter's gradient clipped
  to norm 1 on its own, betas (0.9, 0.98) as main_task_retrieval.py passes them; schedule
  ``warmup_cosine``: x / warmup during warm-up, then 0.5 (1 + cos(pi x)) of the *whole* run's
  progress x (not renormalised after the warm-up).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


class TempMeAdamW(Optimizer):
    """TempMe's AdamW update (see the module docstring); ``correct_bias`` as the reference."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-6,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                step = float(state["step"])
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denom = v.sqrt().add_(group["eps"])
                size = group["lr"] * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
                p.addcdiv_(m, denom, value=-size)
                if group["weight_decay"] > 0:
                    p.add_(p, alpha=-group["lr"] * group["weight_decay"])
        return loss


class BertAdam(Optimizer):
    """CLIP4Clip's BertAdam update (see the module docstring), without its built-in schedule:
    the learning rate comes from the group (set by ``warmup_cosine_schedule``)."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.98), eps: float = 1e-6,
                 weight_decay: float = 0.0, max_grad_norm: float = 1.0) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps,
                                  "weight_decay": weight_decay, "max_grad_norm": max_grad_norm})

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float64)
                    state["next_m"] = torch.zeros_like(p)
                    state["next_v"] = torch.zeros_like(p)
                if group["max_grad_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
                m, v = state["next_m"], state["next_v"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                update = m / (v.sqrt() + group["eps"])
                if group["weight_decay"] > 0:
                    update += group["weight_decay"] * p
                p.add_(update, alpha=-group["lr"])
                state["step"] += 1
        return loss


def warmup_cosine_schedule(optimizer: Optimizer, warmup: float, total: int) -> LambdaLR:
    """CLIP4Clip's ``warmup_cosine`` over the step's progress ``x = step / total``."""

    def factor(step: int) -> float:
        x = step / max(1, total)
        return x / warmup if x < warmup else 0.5 * (1.0 + math.cos(math.pi * x))

    return LambdaLR(optimizer, factor)


def parameter_groups(named: list[tuple[str, torch.nn.Parameter]], lr: float, weight_decay: float,
                     no_decay: str) -> list[dict[str, Any]]:
    """Decay and no-decay groups at ``lr``. ``no_decay``: "1d" (parameters of fewer than 2
    dimensions: biases, norms, class embeddings; the suite's default), "bias" (names containing
    "bias", CLIP4Clip's rule in practice: its LayerNorm names do not occur in CLIP) or "none"
    (decay everything, as the official TempMe's single group)."""
    def exempt(name: str, p: torch.nn.Parameter) -> bool:
        if no_decay == "1d":
            return p.ndim < 2
        if no_decay == "bias":
            return "bias" in name
        return False

    decay = [p for n, p in named if not exempt(n, p)]
    free = [p for n, p in named if exempt(n, p)]
    return [g for g in ({"params": decay, "lr": lr, "weight_decay": weight_decay},
                        {"params": free, "lr": lr, "weight_decay": 0.0}) if g["params"]]


def make_optimizer(groups: list[dict[str, Any]], name: str, warmup: float, steps: int
                   ) -> tuple[Optimizer, LambdaLR]:
    """The optimiser ``name`` over ``groups`` and its schedule over ``steps`` steps."""
    if name == "bertadam":
        bert = BertAdam(groups)
        return bert, warmup_cosine_schedule(bert, warmup, steps)
    from transformers import get_cosine_schedule_with_warmup

    optimizer = TempMeAdamW(groups) if name == "tempme-adamw" else torch.optim.AdamW(groups)
    return optimizer, get_cosine_schedule_with_warmup(optimizer, int(warmup * steps), steps)
