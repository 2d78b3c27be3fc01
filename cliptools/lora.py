"""LoRA on the fused q, k, v input projection of every attention layer, through peft.

TempMe (and the `lora` baseline) adapt only ``attn.in_proj_weight`` of each
``nn.MultiheadAttention`` with ``delta = B (A x)``, rank 8, scale 1. peft expresses this exactly
with ``target_parameters`` (a LoRA on a bare ``nn.Parameter``): A is Kaiming-uniform, B is zero,
and ``lora_alpha = r`` makes the scale 1. Merging folds the delta into the frozen weight.
"""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora.layer import ParamWrapper
from torch import nn

LORA_TARGET = "attn.in_proj_weight"


def add_lora(model: nn.Module, rank: int = 8) -> PeftModel:
    """Inject rank-``rank`` LoRA (scale 1) into every fused qkv projection of ``model``, in place.

    Every other parameter of ``model`` is frozen. Returns the peft wrapper; ``model`` itself keeps
    its attribute paths (its attention modules are now peft ``ParamWrapper``s).
    """
    config = LoraConfig(
        r=rank,
        lora_alpha=rank,
        lora_dropout=0.0,
        target_modules=[],
        target_parameters=[LORA_TARGET],
        init_lora_weights=True,
    )
    return get_peft_model(model, config)


def fold_lora(peft_model: PeftModel) -> nn.Module:
    """Fold the LoRA deltas into the frozen weights and return the plain model (no extra cost)."""
    return peft_model.merge_and_unload()


def has_lora(module: nn.Module) -> bool:
    """True when ``module`` still carries an unmerged LoRA adapter."""
    return any(isinstance(m, ParamWrapper) for m in module.modules())


def attention_module(attn: nn.Module) -> nn.MultiheadAttention:
    """The ``nn.MultiheadAttention`` behind ``attn``, whether or not peft wraps it."""
    base = attn.get_base_layer() if isinstance(attn, ParamWrapper) else attn
    if not isinstance(base, nn.MultiheadAttention):
        raise TypeError(f"expected nn.MultiheadAttention, got {type(base).__name__}")
    return base


def fused_in_proj(attn: nn.Module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Effective fused qkv weight (3d x d) and bias of an attention layer, LoRA delta included.

    Lets code that runs its own attention (TempMe's proportional attention) see exactly the weights
    that peft's forward would use.
    """
    mha = attention_module(attn)
    weight = mha.in_proj_weight
    if isinstance(attn, ParamWrapper) and not attn.merged and not attn.disable_adapters:
        for name in attn.active_adapters:
            if name in attn.lora_A:
                weight = weight + attn.get_delta_weight(name)
    return weight, mha.in_proj_bias
