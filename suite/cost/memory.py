"""A run's peak memory, estimated from its shapes before anything is allocated.

The estimate is arithmetic on the run's settings and the backbone's open_clip config; the
method's model is built on torch's ``meta`` device (shapes, no storage) only to count its
parameters and see which of them train. It counts, in bytes, for one process:

- weights: every parameter in fp32 (autocast keeps fp32 master weights), plus a half-precision
  copy of them under fp16 or bf16 autocast (the casts it caches);
- training state: a gradient per trainable parameter and the optimiser's states (AdamW and
  BertAdam keep two per parameter); the gradients of the last step are still held while the
  next forward runs, the update's temporaries come when the activations are gone;
- activations kept for backward, in every block of a tower that holds a trainable parameter:
  ``sequences x tokens x width x k`` per block, ``k`` the tensors a pre-norm block saves per token
  (norm inputs and outputs, q, k, v, attention output, the MLP's hidden layer before and after
  its activation: ``KEPT_BASE + KEPT_PER_MLP x mlp_ratio`` widths, set against peaks measured
  on the tiny CLIP and ViT-B/32; QuickGELU, OpenAI CLIP's activation, keeps one hidden layer
  more than GELU and is assumed), plus the attention maps ``sequences x heads x tokens^2``
  (scores and probabilities; a fused attention kernel keeps none, so this errs high), plus
  one block's worth again for the gradients the backward pass holds while in a block. A video
  is ``frames`` sequences of ``(image size / patch size)^2 + 1`` tokens; an encoder that merges
  tokens and publishes its token table (TempMe, ToMe) is counted block by block with the
  sequences and tokens entering each block's attention;
- the batch: decoded uint8 frames at the data's size (and those the DataLoader's workers
  prepare ahead) and their float copies at the data's and the model's size;
- evaluation (no backward): weights, the training state when the run trains (it stays allocated
  between epochs), the activations alive at once in one block at the evaluation batch, and
  that batch.

It is an estimate, not a bound: merging methods come out high (a block's MLP sees the tokens
left after its merge); allocator slack, the libraries' own memory, the loaded datasets and the
similarity matrices of evaluation (computed in chunks) are not in it; other tower designs than
open_clip's pre-norm ViT are not estimated at all. ``benchmarks/memory_estimate.py`` sets it
against measured peaks (docs/cost.md).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

#: Bytes of one activation element by resolved precision.
BYTES = {"fp32": 4, "fp16": 2, "bf16": 2}
#: Widths a training block keeps per token besides its MLP (see the module's docstring).
KEPT_BASE = 10
#: Widths per unit of MLP ratio a training block keeps per token (hidden layer in and out).
KEPT_PER_MLP = 3
#: Attention-sized tensors kept per block (scores and probabilities).
KEPT_MAPS = 2
#: Widths alive at once per token in an evaluation block (input, residual, MLP hidden).
ALIVE_BASE = 4
#: Optimiser states per trainable parameter (AdamW, BertAdam: first and second moments).
OPTIMIZER_STATES = 2
#: Batches a DataLoader worker prepares ahead (torch's default ``prefetch_factor``).
PREFETCH = 2


@dataclass(frozen=True)
class Tower:
    """One transformer tower: width, blocks, heads, MLP ratio and tokens per sequence."""

    width: int
    layers: int
    heads: int
    mlp_ratio: float
    tokens: int


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs of a model: its towers, input size and parameters."""

    visual: Tower  # tokens per frame: (image size / patch size)^2 + 1
    text: Tower  # tokens: the text context (a run's words cap it)
    image_size: int
    params_total: int
    params_trainable: int
    visual_trains: bool  # a trainable parameter in the video tower
    text_trains: bool  # a trainable parameter outside it (text tower, heads)
    # Per visual block, (sequences per video, tokens per sequence) entering its attention, for
    # an encoder that merges tokens and says how (a ``token_table``, as TempMe's and ToMe's);
    # None: every block sees one sequence of ``visual.tokens`` per frame.
    visual_blocks: tuple[tuple[int, int], ...] | None = None

    def blocks(self, videos: int, frames: int) -> list[tuple[int, int]]:
        """(sequences, tokens per sequence) of every visual block for ``videos`` videos."""
        if self.visual_blocks is None:
            return [(videos * frames, self.visual.tokens)] * self.visual.layers
        return [(videos * sequences, tokens) for sequences, tokens in self.visual_blocks]


@dataclass(frozen=True)
class MemoryEstimate:
    """Estimated peak bytes of training (None when nothing trains) and of evaluation, with
    the parts of each, by name."""

    training: int | None
    evaluation: int
    parts: dict[str, int]

    @property
    def peak(self) -> int:
        """The larger of the two peaks."""
        return max(self.training or 0, self.evaluation)

    @property
    def phase(self) -> str:
        """Which phase the peak comes from: ``training`` or ``evaluation``."""
        return "training" if (self.training or 0) >= self.evaluation else "evaluation"


def towers(backbone: str) -> tuple[Tower, Tower, int] | None:
    """The visual and text towers of open_clip config ``backbone`` and its input size, read
    from the config alone; None for a model that is not a plain ViT CLIP (timm or Hugging Face
    towers, ResNets), whose shapes the config does not give."""
    import open_clip

    from suite.models.embedded import register_embedded_configs

    register_embedded_configs()
    config = open_clip.get_model_config(backbone) or {}
    vision, text = config.get("vision_cfg", {}), config.get("text_cfg", {})
    if (not isinstance(vision.get("layers"), int) or not vision.get("patch_size")
            or "hf_model_name" in text or "timm_model_name" in vision):
        return None
    size = vision.get("image_size", 224)
    size = int(size[0] if isinstance(size, list | tuple) else size)
    patch = vision["patch_size"]
    patch = int(patch[0] if isinstance(patch, list | tuple) else patch)
    width = int(vision.get("width", 768))
    visual = Tower(width, vision["layers"], width // int(vision.get("head_width", 64)),
                   float(vision.get("mlp_ratio", 4.0)), (size // patch) ** 2 + 1)
    text_tower = Tower(int(text.get("width", 512)), int(text.get("layers", 12)),
                       int(text.get("heads", 8)), float(text.get("mlp_ratio", 4.0)),
                       int(text.get("context_length", 77)))
    return visual, text_tower, size


def model_shape(method: str, backbone: str, frames: int, knobs: Any) -> ModelShape | None:
    """The shape of ``method`` on ``backbone`` built from its resolved config ``knobs``: towers
    from the config (:func:`towers`), parameters counted on a model built on the ``meta``
    device (no memory). None where :func:`towers` is. A method whose build needs real tensors
    is counted as full fine-tuning of the backbone (the estimate errs high)."""
    import open_clip

    from methods.registry import get
    from suite.models.embedded import quiet_logging

    shapes = towers(backbone)
    if shapes is None:
        return None
    visual, text, size = shapes
    with torch.device("meta"), quiet_logging():
        clip = open_clip.create_model(backbone, pretrained=None, device="meta")
        try:
            model = get(method).build(clip, knobs, frames, backbone)
        except Exception:  # noqa: BLE001 - a plug-in's build may need data; count it all
            total = sum(p.numel() for p in clip.parameters())
            return ModelShape(visual, text, size, total, total, True, True)
    video = {id(p) for p in model.video_encoder.parameters()}
    params = list(model.parameters())
    trainable = [p for p in params if p.requires_grad]
    blocks = None
    if hasattr(model.video_encoder, "token_table"):  # tokens merged (TempMe, ToMe)
        blocks = tuple((row.sequences, row.after_cross or row.tokens_in)
                       for row in model.video_encoder.token_table())
    return ModelShape(visual, text, size, sum(p.numel() for p in params),
                      sum(p.numel() for p in trainable),
                      any(id(p) in video for p in trainable),
                      any(id(p) not in video for p in trainable), blocks)


def kept_activations(tower: Tower, blocks: list[tuple[int, int]], element: int) -> int:
    """Bytes a tower keeps for backward: each block's saved tensors and attention maps, for
    its (sequences, tokens per sequence) in ``blocks``, and once more the largest block's, the
    gradients the backward pass holds for the block it is in."""
    per_token = (KEPT_BASE + KEPT_PER_MLP * tower.mlp_ratio) * tower.width
    sizes = [sequences * tokens * (per_token + KEPT_MAPS * tower.heads * tokens)
             for sequences, tokens in blocks]
    return int((sum(sizes) + max(sizes)) * element)


def alive_activations(tower: Tower, blocks: list[tuple[int, int]], element: int) -> int:
    """Bytes alive at once in the largest block of a tower without backward (input, residual
    and MLP hidden, or the attention maps)."""
    per_token = (ALIVE_BASE + tower.mlp_ratio) * tower.width
    return int(max(sequences * tokens * max(per_token, KEPT_MAPS * tower.heads * tokens)
                   for sequences, tokens in blocks) * element)


def batch_bytes(videos: int, frames: int, data_size: int, image_size: int,
                pending: int = 1) -> int:
    """Bytes of a batch of videos: the decoded uint8 frames at the data's size (``pending``
    batches of them, those a loader prepares ahead included), their float copy, and the
    resized and normalised float pixels at the model's size."""
    decoded = videos * frames * 3 * data_size**2
    return decoded * pending + 4 * decoded + 2 * 4 * videos * frames * 3 * image_size**2


def estimate(shape: ModelShape, batch: int, frames: int, words: int, eval_batch: int,
             precision: str = "fp32", eval_precision: str | None = None,
             data_size: int | None = None, trains: bool = True, workers: int = 0
             ) -> MemoryEstimate:
    """Peak bytes of a run of ``shape`` at ``batch`` videos of ``frames`` frames with
    ``words``-token captions, evaluating ``eval_batch`` videos at a time; ``precision`` and
    ``eval_precision``: the resolved ``fp32``, ``fp16`` or ``bf16`` of each phase;
    ``data_size``: the size frames are decoded at (default: the model's); ``workers``: the
    DataLoader's worker processes (each prepares ``PREFETCH`` batches ahead)."""
    element = BYTES[precision]
    eval_element = BYTES[eval_precision or precision]
    data_size = data_size or shape.image_size
    text = Tower(shape.text.width, shape.text.layers, shape.text.heads, shape.text.mlp_ratio,
                 min(words, shape.text.tokens))
    weights = 4 * shape.params_total
    if element < 4 or eval_element < 4:
        weights += 2 * shape.params_total  # autocast's cached half-precision copies
    parts = {"weights": weights}
    training = None
    if trains and shape.params_trainable:
        parts["gradients"] = 4 * shape.params_trainable
        parts["optimizer"] = 4 * shape.params_trainable * OPTIMIZER_STATES
        parts["activations"] = (
            (kept_activations(shape.visual, shape.blocks(batch, frames), element)
             if shape.visual_trains else 0)
            + (kept_activations(text, [(batch, text.tokens)] * text.layers, element)
               if shape.text_trains else 0))
        parts["batch"] = batch_bytes(batch, frames, data_size, shape.image_size,
                                     1 + PREFETCH * workers)
        training = sum(parts.values())
    state = parts.get("gradients", 0) + parts.get("optimizer", 0)
    parts["eval_activations"] = max(
        alive_activations(shape.visual, shape.blocks(eval_batch, frames), eval_element),
        alive_activations(text, [(eval_batch, text.tokens)], eval_element))
    parts["eval_batch"] = batch_bytes(eval_batch, frames, data_size, shape.image_size,
                                      1 + PREFETCH * workers)
    evaluation = weights + state + parts["eval_activations"] + parts["eval_batch"]
    return MemoryEstimate(training, evaluation, parts)


def available_memory(device: torch.device) -> tuple[int, str]:
    """Bytes this process may still allocate on ``device``, and what they are: the free
    memory of a CUDA device (``torch.cuda.mem_get_info``), else the host's available memory
    (psutil), or what the process's memory cgroup still allows when that is less."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free), f"free memory on {device}"
    import psutil

    host = int(psutil.virtual_memory().available)
    cgroup = cgroup_headroom()
    if cgroup is not None and cgroup < host:
        return cgroup, "memory left under this process's cgroup limit"
    return host, "available host memory"


def cgroup_headroom(root: Path = Path("/sys/fs/cgroup"), membership: str | None = None
                    ) -> int | None:
    """What the memory cgroups of this process still allow (limit less usage, reclaimable
    page cache counted as free), the least over the process's cgroup and its parents, cgroup
    v2 or v1; None without a limit (or off Linux). ``membership``: the text of
    ``/proc/self/cgroup`` (read when None)."""
    if membership is None:
        try:
            membership = Path("/proc/self/cgroup").read_text()
        except OSError:
            return None
    least: int | None = None
    for line in membership.splitlines():
        if line.count(":") < 2:
            continue
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # v2: one hierarchy
            base, files = root, ("memory.max", "memory.current", "inactive_file")
        elif "memory" in controllers.split(","):
            base = root / "memory"
            files = ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file")
        else:
            continue
        folder = base / path.lstrip("/")
        while True:
            room = _headroom(folder, *files)
            if room is not None:
                least = room if least is None else min(least, room)
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    return least


def _headroom(folder: Path, limit_file: str, usage_file: str, inactive_key: str) -> int | None:
    """Limit less usage (plus inactive file pages) of one cgroup folder; None without a limit."""
    try:
        limit_text = (folder / limit_file).read_text().strip()
        usage = int((folder / usage_file).read_text())
    except (OSError, ValueError):
        return None
    if limit_text == "max" or int(limit_text) >= 2**62:  # v1 writes a huge number for none
        return None
    inactive = 0
    try:
        for row in (folder / "memory.stat").read_text().splitlines():
            key, _, value = row.partition(" ")
            if key == inactive_key:
                inactive = int(value)
    except (OSError, ValueError):
        pass
    return max(0, int(limit_text) - usage + inactive)


def gib(size: int) -> str:
    """Bytes as GiB for a message (MiB below one GiB)."""
    if size < 2**30:
        return f"{size / 2**20:,.0f} MiB"
    return f"{size / 2**30:,.1f} GiB"


def local_processes() -> int:
    """Processes of one run on this machine (torchrun's ``LOCAL_WORLD_SIZE``, SLURM's tasks
    per node), which share its host memory."""
    for name in ("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE"):
        value = os.environ.get(name, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


def per_process(batch: int, world: int) -> int:
    """A process's share of a global batch (the first processes take the remainder)."""
    return math.ceil(batch / max(1, world))
