"""Backbones: open_clip models by name with a pretrained tag, a local checkpoint, or the
embedded tiny CLIP pre-trained by the suite itself.

There is no backbone registry of our own: open_clip's factory builds every model. The tiny
config ships in ``suite/model_configs`` and is registered with open_clip on first use, like a
real architecture.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from suite.errors import UserError
from suite.models.embedded import embedded_names, quiet_logging, register_embedded_configs

# The pretrained tag of the embedded tiny CLIP, whose weights suite.models.pretrain makes.
SYNTHETIC_TAG = "synthetic"


@dataclass
class Backbone:
    """An open_clip CLIP model and what the data pipeline needs to feed it."""

    name: str
    pretrained: str | None
    model: Any  # open_clip.CLIP
    tokenizer: Any
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def check_backbone_name(name: str) -> None:
    """A user error unless open_clip (with the embedded configs) knows ``name``."""
    import open_clip

    register_embedded_configs()
    if name not in open_clip.list_models():
        raise UserError(
            f"unknown backbone {name!r}; valid: any open_clip model name, e.g. "
            f"{', '.join(embedded_names() + ['ViT-B-32', 'ViT-B-16'])} (see `suite list backbones`)"
        )


def load_backbone(name: str, pretrained: str | None, device: str = "cpu",
                  show_progress: bool = True, trust_torchscript: bool = False) -> Backbone:
    """Build backbone ``name`` with weights ``pretrained``.

    ``pretrained`` is ``None`` (random init, enough for cost figures), ``"synthetic"`` (the suite's
    own pre-training of an embedded config, cached), a path to a local checkpoint (OpenAI or
    open_clip format), or an open_clip pretrained tag (downloaded by open_clip; without network the
    error says how to supply the file locally). A local TorchScript archive carries code that
    loading runs: it is read only with ``trust_torchscript``.
    """
    import open_clip

    register_embedded_configs()
    check_backbone_name(name)
    if pretrained == SYNTHETIC_TAG:
        from suite.models.pretrain import pretrained_checkpoint

        if name not in embedded_names():
            raise UserError(f"--pretrained synthetic exists only for {', '.join(embedded_names())}")
        path = pretrained_checkpoint(name, show_progress=show_progress)
        model = open_clip.create_model(name, pretrained=str(path), device=device)
    elif pretrained is None:
        with quiet_logging():
            model = open_clip.create_model(name, pretrained=None, device=device)
    elif Path(pretrained).expanduser().is_file():
        model = _create_from_file(name, Path(pretrained).expanduser(), device, trust_torchscript)
    elif Path(pretrained).expanduser().exists():
        raise UserError(f"--pretrained {pretrained} is a folder; pass the checkpoint file in it")
    elif _looks_like_path(pretrained) and pretrained not in _tags(name):
        raise UserError(
            f"checkpoint file {pretrained} does not exist; --pretrained takes a local checkpoint "
            f"file or an open_clip tag of {name} (valid: {', '.join(_tags(name)) or 'none'})")
    else:
        model = _create_from_tag(name, pretrained, device)
    tokenizer = open_clip.get_tokenizer(name)
    cfg = model.visual.preprocess_cfg if hasattr(model.visual, "preprocess_cfg") else {}
    size = model.visual.image_size
    return Backbone(
        name=name,
        pretrained=pretrained,
        model=model,
        tokenizer=tokenizer,
        image_size=int(size[0] if isinstance(size, tuple | list) else size),
        mean=tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
    )


def _tags(name: str) -> list[str]:
    import open_clip

    return list(open_clip.list_pretrained_tags_by_model(name))


def _looks_like_path(text: str) -> bool:
    suffixes = (".pt", ".pth", ".bin", ".safetensors", ".ckpt", ".npz", ".tar")
    return ("/" in text or "\\" in text or text.startswith(("~", "."))
            or text.lower().endswith(suffixes))


def _needs_quick_gelu(name: str, tag: str) -> bool:
    """Whether weights ``tag`` were trained with QuickGELU while config ``name`` lacks it.

    open_clip's factory only warns about the mismatch (``ViT-B-32`` + ``openai``); the suite
    builds the activation the weights were trained with, so that embeddings match OpenAI's.
    """
    import open_clip

    config = open_clip.get_model_config(name) or {}
    tag_cfg = open_clip.get_pretrained_cfg(name, tag) or {}
    return bool(tag_cfg.get("quick_gelu")) and not config.get("quick_gelu", False)


def _create_from_tag(name: str, tag: str, device: str) -> Any:
    import open_clip

    tags = _tags(name)
    if tag not in tags:
        raise UserError(
            f"{tag!r} is neither a file nor an open_clip pretrained tag of {name}; "
            f"valid tags: {', '.join(tags) or '(none)'}, or a local checkpoint path"
        )
    try:
        with quiet_logging():  # hub retries and open_clip's own error log: the error says it all
            return open_clip.create_model(name, pretrained=tag, device=device,
                                          force_quick_gelu=_needs_quick_gelu(name, tag))
    except Exception as exc:  # network and hub errors come in many types
        cfg = open_clip.get_pretrained_cfg(name, tag) or {}
        where = cfg.get("url") or (f"https://huggingface.co/{cfg['hf_hub'].rstrip('/')}"
                                   if cfg.get("hf_hub") else "the checkpoint")
        raise UserError(
            f"could not fetch {name} weights {tag!r} ({type(exc).__name__}); download {where} "
            f"on a machine with network and pass --pretrained /path/to/file"
        ) from None


OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives (as OpenAI released its weights) hold code; torch.save files don't."""
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())


def read_checkpoint(path: Path, trust_torchscript: bool = False) -> tuple[dict[str, Any], bool]:
    """The state dict in ``path`` and whether it is in OpenAI's format.

    OpenAI format: a TorchScript archive as OpenAI released them, or a state dict that carries
    OpenAI's extra entries (``input_resolution``, ``context_length``, ``vocab_size``). Anything
    else is an open_clip (or plain ``torch.save``) state dict, possibly under ``state_dict`` and
    with DDP's ``module.`` prefix. Only TorchScript needs ``torch.jit.load``, which runs the
    archive's code, so it is refused unless ``trust_torchscript``; everything else is read as
    data (``weights_only=True``, safetensors).
    """
    import torch

    from suite.common.tensors import load_tensors

    if _is_torchscript(path) and not trust_torchscript:
        raise UserError(f"checkpoint {path} is a TorchScript archive: loading it runs the code "
                        f"inside it; pass --trust-torchscript if you trust where it came from "
                        f"(OpenAI's released .pt files are such archives)")
    try:
        if _is_torchscript(path):
            state = dict(torch.jit.load(str(path), map_location="cpu").state_dict())
            openai = True
        elif path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state, openai = dict(load_file(str(path))), False
        else:
            raw = load_tensors(path, f"cannot read checkpoint {path}")
            state = raw.get("state_dict", raw) if isinstance(raw, dict) else raw
            if not isinstance(state, dict):
                raise UserError(f"checkpoint {path} holds a {type(state).__name__}, "
                                f"not a state dict")
            openai = any(k in state for k in OPENAI_EXTRA_KEYS)
    except UserError:
        raise
    except Exception as exc:  # pickle, zip and torch errors come in many types
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(f"cannot read checkpoint {path}: {reason}") from None
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    for key in OPENAI_EXTRA_KEYS:
        state.pop(key, None)
    return state, openai


def _create_from_file(name: str, path: Path, device: str, trust_torchscript: bool = False) -> Any:
    """Backbone ``name`` with the weights of a local checkpoint (OpenAI or open_clip format)."""
    import open_clip
    import torch

    state, openai = read_checkpoint(path, trust_torchscript)
    # OpenAI's models use QuickGELU; a config without it would silently change the embeddings.
    with quiet_logging():
        model = open_clip.create_model(name, pretrained=None, device="cpu",
                                       force_quick_gelu=openai)
    try:
        from open_clip.factory import convert_state_dict
        from open_clip.model import resize_pos_embed

        state = convert_state_dict(model, state)
        # Traced/scripted archives also carry non-persistent buffers (the causal mask).
        kept, buffers = model.state_dict(), {n for n, _ in model.named_buffers()}
        state = {k: v for k, v in state.items() if k in kept or k not in buffers}
        if "logit_scale" in state and state["logit_scale"].ndim != model.logit_scale.ndim:
            state["logit_scale"] = state["logit_scale"].reshape(model.logit_scale.shape)
        resize_pos_embed(state, model)
        with torch.no_grad():
            model.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, ValueError) as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:3] if len(lines) > 1 else lines)[:300]
        raise UserError(f"checkpoint {path} does not fit backbone {name} ({detail}); pass the "
                        f"--backbone it was saved from") from None
    return model.to(device)
