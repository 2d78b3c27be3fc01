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

MODEL_CONFIGS = Path(__file__).parent / "model_configs"
SYNTHETIC_TAG = "synthetic"  # pretrained tag of the embedded tiny CLIP: made by suite.pretrain
_registered = False


def register_embedded_configs() -> None:
    """Make the shipped JSON configs (``tiny-clip``) known to open_clip."""
    global _registered
    if not _registered:
        import open_clip

        open_clip.add_model_config(MODEL_CONFIGS)
        _registered = True


def embedded_names() -> list[str]:
    return sorted(p.stem for p in MODEL_CONFIGS.glob("*.json"))


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
                  show_progress: bool = True) -> Backbone:
    """Build backbone ``name`` with weights ``pretrained``.

    ``pretrained`` is ``None`` (random init, enough for cost figures), ``"synthetic"`` (the suite's
    own pre-training of an embedded config, cached), a path to a local checkpoint (OpenAI or
    open_clip format), or an open_clip pretrained tag (downloaded by open_clip; without network the
    error says how to supply the file locally).
    """
    import open_clip

    register_embedded_configs()
    check_backbone_name(name)
    if pretrained == SYNTHETIC_TAG:
        from suite.pretrain import pretrained_checkpoint

        if name not in embedded_names():
            raise UserError(f"--pretrained synthetic exists only for {', '.join(embedded_names())}")
        path = pretrained_checkpoint(name, show_progress=show_progress)
        model = open_clip.create_model(name, pretrained=str(path), device=device)
    elif pretrained is None or Path(pretrained).exists():
        model = open_clip.create_model(name, pretrained=pretrained, device=device)
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


def _create_from_tag(name: str, tag: str, device: str) -> Any:
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(name)
    if tag not in tags:
        raise UserError(
            f"{tag!r} is neither a file nor an open_clip pretrained tag of {name}; "
            f"valid tags: {', '.join(tags) or '(none)'}, or a local checkpoint path"
        )
    try:
        return open_clip.create_model(name, pretrained=tag, device=device)
    except Exception as exc:  # network and hub errors come in many types
        raise UserError(
            f"could not fetch {name} weights {tag!r} ({type(exc).__name__}); download the "
            f"checkpoint on a machine with network and pass --pretrained /path/to/file"
        ) from None
