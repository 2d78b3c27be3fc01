"""Image-text pre-training of the embedded tiny CLIP on single generated frames.

The captions name colour, shape, size and position but never motion, so the backbone knows
objects and not time, as CLIP does. The result is deterministic, cached under the user's cache
directory keyed by model config, seed and recipe, and reused by every later run.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

from suite.common.paths import MODEL_CONFIGS, cache_dir

RECIPE_VERSION = 1


@dataclass(frozen=True)
class PretrainRecipe:
    """How the tiny CLIP is pre-trained (every field is part of the cache key)."""

    seed: int = 0
    steps: int = 150
    batch_size: int = 256
    images: int = 20000
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: float = 0.05


def checkpoint_path(name: str, recipe: PretrainRecipe) -> Path:
    """Where the checkpoint for ``name`` trained with ``recipe`` lives."""
    config = json.loads((MODEL_CONFIGS / f"{name}.json").read_text())
    key = json.dumps({"config": config, "recipe": asdict(recipe), "v": RECIPE_VERSION},
                     sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return cache_dir() / "backbones" / f"{name}-synthetic-{digest}.pt"


def pretrained_checkpoint(name: str, recipe: PretrainRecipe | None = None,
                          show_progress: bool = True) -> Path:
    """Path of the pre-trained checkpoint of embedded config ``name``, training it if absent."""
    recipe = recipe or PretrainRecipe()
    path = checkpoint_path(name, recipe)
    if not path.exists():
        from suite.common.preflight import writable_folder

        # Before a minute of pre-training, not after: the result must be cached.
        writable_folder(path.parent, "the backbone cache (SUITE_CACHE_DIR)")
        state = pretrain(name, recipe, show_progress=show_progress)
        import torch

        from suite.common.files import write_atomic

        write_atomic(path, lambda file: torch.save(state, file))
    return path


def pretrain(name: str, recipe: PretrainRecipe, show_progress: bool = True) -> dict:
    """Contrastive image-text training of ``name`` from scratch; returns its state dict."""
    import open_clip
    import torch
    import torch.nn.functional as F

    from suite.common.progress import progress_bar
    from suite.data.synthetic import static_pairs
    from suite.data.transforms import preprocess
    from suite.models.embedded import quiet_logging, register_embedded_configs

    register_embedded_configs()
    torch.manual_seed(recipe.seed)
    with quiet_logging():
        model = open_clip.create_model(name, pretrained=None)
    tokenizer = open_clip.get_tokenizer(name)
    size = model.visual.image_size
    size = int(size[0] if isinstance(size, tuple | list) else size)
    images, captions = static_pairs(recipe.seed, recipe.images)
    pixels = preprocess(torch.from_numpy(images), size, open_clip.OPENAI_DATASET_MEAN,
                        open_clip.OPENAI_DATASET_STD)
    tokens = tokenizer(captions)
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    optimizer = torch.optim.AdamW([
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ], lr=recipe.lr)
    warmup = max(1, int(recipe.warmup * recipe.steps))

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, recipe.steps - warmup)))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(recipe.seed)
    model.train()
    with progress_bar(f"pre-training {name} on static frames (once, cached)", recipe.steps,
                      enabled=show_progress) as advance:
        for _ in range(recipe.steps):
            idx = torch.randint(0, len(captions), (recipe.batch_size,), generator=generator)
            image = F.normalize(model.encode_image(pixels[idx]), dim=-1)
            text = F.normalize(model.encode_text(tokens[idx]), dim=-1)
            logits = model.logit_scale.exp() * image @ text.t()
            # Identical captions in one batch are true positives: soft targets over them.
            same = (tokens[idx][:, None, :] == tokens[idx][None, :, :]).all(-1).float()
            target = same / same.sum(1, keepdim=True)
            loss = (torch.sum(-target * logits.log_softmax(1), 1).mean()
                    + torch.sum(-target * logits.t().log_softmax(1), 1).mean()) / 2
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            advance(loss=loss.item())
    return model.state_dict()
