"""CenterCLIP: token clustering across the frames of each video segment, as its authors wrote it.

Zhao et al. (SIGIR 2022); the official code is mzhaoshuai/CenterCLIP (commit cfce759, read for
this module; none of it is copied). CLIP runs per frame up to one block; there the F frames are
split into S consecutive segments and each segment becomes one sequence:

- its CLS token is the mean of its frames' CLS tokens (``modules/cluster/cluster.py`` 307-310:
  "Here we simply average the class embedding from different frames");
- its other tokens are the medoids of its frames' patch tokens, found by Euclidean k-medoids
  (``modules/cluster/fast_kmeans.py`` ``batch_fast_kmedoids``) and kept in ascending token order
  (``id_sort``): KKZ start (``cluster_utils.py`` ``KKZ_init``: the first medoid is the token with
  the largest L2 norm, each next one the token farthest from its nearest chosen medoid), then
  assignment to the nearest medoid and, per cluster, the member with the least total distance
  to the other members, until the medoids move by less than ``threshold`` (1e-6) or after
  ``max_iters`` (100) rounds (``scripts/msrvtt.sh``: ``cluster_threshold=1e-6``,
  ``cluster_iter_limit=100``).

So a segment has 1 + K tokens: 50 on ViT-B/32 with K = 49, 200 output tokens for 12 frames in 4
segments. The remaining blocks run each segment alone; each segment's CLS goes through ln_post
and the projection (``modules/clip.py`` ``encode_image``, 463-464), is L2-normalised, and the
segments are averaged over the mask of each segment's *last* frame (``modules/clip4clip.py``
``get_video_mask_after_cluster`` 436-444, ``_mean_pooling_for_similarity_visual`` 305-316,
called at 357-360); ``RetrievalModel`` normalises the mean again, as ``_loose_similarity`` does.

Defaults follow ``scripts/msrvtt.sh`` (configuration 80, ViT-B/32, 12 frames): clustering at the
input of block 8 counted from 1 (``target_frames_blocks`` '12 12 12 12 12 12 12 4 4 4 4 4'), that
is block 7 here, into 4 segments of 49 medoids; on other depths the block is the same fraction of
the tower (block 3 of tiny-clip's 6) and the medoids default to one frame's patch count. The
paper fine-tunes every weight (``freeze_clip=0``, ``--freeze_layer_num 0``), and so does this
method by default (``rank: null``): the method named after a paper reproduces that paper's
recipe, to be set beside ``tempme-full`` and ``full``; ``method.rank=8`` trains rank-8 LoRA on
both towers instead, the variant that compares with ``tempme``, ``tome`` and ``lora`` at equal
trainable parameters.

Padding frames (``data.policy=clip4clip`` pads short clips at the end): a segment's padding
frames take no part in its clustering (never a medoid, no weight in any cluster cost) nor in its
CLS mean, so nothing of them reaches attention; with the last-frame rule a padded clip then
embeds exactly as its complete segments alone. A clip shorter than one segment has no segment
whose last frame is real (the official mean is then a zero vector, NaN once normalised): its
segments with real frames are pooled, padding left out as above. Only a segment with fewer real
patch tokens than ``clusters`` (possible only with ``clusters`` above one frame's patches) keeps
its padding, as the official code does; if such a segment had to be pooled the forward raises.

Departures, on purpose: the stopping rule is applied per sequence rather than to the mean shift
of chunks of 16 sequences (``batch_fast_kmedoids_with_split``), so that a video's clusters never
depend on which videos share its batch (the two differ only when medoids move by less than 1e-6
in total without standing still). The official distance matrix comes from ``torch.cdist``'s
matmul path, which rounds d(a, b) and d(b, a) differently, shifted by a batch-wide maximum, so its
choice between exactly tied costs (the two members of every two-token cluster) follows rounding
noise; here the matrix is exactly symmetric and ties go to the lower index, which is what the
official code chooses on exact distances (``tests/test_centerclip_official.py``). Each round
sums every token's distances within its own cluster (O(N^2) element-wise) where the official code
masks a (K, N, N) copy: the same costs. Written for this suite as batched tensor code (no library
offers batched k-medoids).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cliptools.lora import add_lora
from cliptools.towers import check_vision_transformer, embed_images, masked_mean, vision_depth
from methods.base import RetrievalModel, backbone_parameter_ids
from methods.registry import Method

# -- k-medoids ----------------------------------------------------------------------------------


def pairwise_distances(points: torch.Tensor) -> torch.Tensor:
    """Euclidean distances (B, N, N) between the rows of ``points`` (B, N, C), exactly symmetric,
    with -1 on the diagonal: every token is its own nearest, as the official
    ``pairwise_distance(..., self_nearest=True)`` makes it (``cluster_utils.py`` 38-41)."""
    distances = torch.cdist(points, points)
    distances = (distances + distances.transpose(1, 2)) / 2
    index = torch.arange(points.shape[1], device=points.device)
    return distances.masked_fill(index.unsqueeze(0) == index.unsqueeze(1), -1.0)


def kkz_start(points: torch.Tensor, distances: torch.Tensor, k: int,
              valid: torch.Tensor | None = None) -> torch.Tensor:
    """KKZ initial medoids (B, k) in the order chosen (``cluster_utils.py`` ``KKZ_init``, batch
    branch 106-118): the token of largest L2 norm, then repeatedly the token farthest from its
    nearest chosen medoid (ties: the lowest index). Chosen tokens sit at distance -1 from
    themselves, so none is chosen twice. ``valid`` (B, N) limits the choice to those tokens."""
    rows = torch.arange(points.shape[0], device=points.device)
    norms = points.norm(dim=-1)
    if valid is not None:
        norms = norms.masked_fill(~valid, float("-inf"))
    first = norms.argmax(-1)
    medoids = [first]
    nearest = distances[rows, first]  # (B, N) distance to the nearest chosen medoid
    for _ in range(1, k):
        candidates = nearest if valid is None else nearest.masked_fill(~valid, float("-inf"))
        far = candidates.argmax(-1)
        medoids.append(far)
        nearest = torch.minimum(nearest, distances[rows, far])
    return torch.stack(medoids, dim=1)


def _assign(distances: torch.Tensor, medoids: torch.Tensor) -> torch.Tensor:
    """Each token's nearest medoid (ties: the earlier medoid), as a position in ``medoids``."""
    to_medoids = distances.gather(2, medoids.unsqueeze(1).expand(-1, distances.shape[1], -1))
    return to_medoids.argmin(-1)


def _update(distances: torch.Tensor, labels: torch.Tensor, k: int,
            valid: torch.Tensor | None) -> torch.Tensor:
    """The member of each cluster with the least total distance to its fellow members (ties: the
    lowest index), as ``batch_fast_kmedoids`` step 3 (``fast_kmeans.py`` 78-82). Every cluster
    holds its medoid (a token is its own nearest), so none is empty. Costs are O(N^2) element-wise
    work, not a (N, N) x (N, k) product."""
    same = labels.unsqueeze(2) == labels.unsqueeze(1)  # (B, N, N): i and j share a cluster
    members = F.one_hot(labels, k).bool()  # (B, N, k)
    if valid is not None:
        same = same & valid.unsqueeze(1)
        members = members & valid.unsqueeze(-1)
    within = (distances * same.to(distances.dtype)).sum(-1)  # (B, N)
    cost = within.unsqueeze(-1).masked_fill(~members, float("inf"))
    return cost.argmin(1)


def kmedoids(x: torch.Tensor, k: int, max_iters: int = 100, threshold: float = 1e-6,
             valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster the tokens of each row of ``x`` (B, N, C) into ``k`` clusters by Euclidean
    k-medoids with the official KKZ start and stopping rule (see the module docstring).

    A row stops once its medoids move by less than ``threshold`` in total (the sum over clusters
    of the distance between old and new medoid, ``fast_kmeans.py`` 84-88), or after ``max_iters``
    rounds. ``valid`` (B, N) bool leaves tokens out entirely (never a medoid, no weight in any
    cost); each row needs at least ``k`` valid tokens. Returns ``(medoids, labels)``: medoid
    indices (B, k) sorted ascending and each token's cluster (B, N) as a position in ``medoids``
    (-1 for left-out tokens). Discrete, so computed without gradients; gather the medoid tokens
    from ``x`` to keep them differentiable.
    """
    n = x.shape[1]
    if not 1 <= k <= n:
        raise ValueError(f"cannot make {k} clusters of {n} tokens")
    if valid is not None and int(valid.sum(1).amin()) < k:
        raise ValueError(f"cannot make {k} clusters of fewer valid tokens")
    with torch.no_grad():
        points = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
        distances = pairwise_distances(points)
        medoids = kkz_start(points, distances, k, valid)
        rows = torch.arange(x.shape[0], device=x.device).unsqueeze(1)
        active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(max_iters):
            updated = _update(distances, _assign(distances, medoids), k, valid)
            shift = (points[rows, updated] - points[rows, medoids]).norm(dim=-1).sum(-1)
            medoids = torch.where(active.unsqueeze(1), updated, medoids)
            active = active & (shift >= threshold)
            if not bool(active.amax()):
                break
        medoids = medoids.sort(dim=-1).values
        labels = _assign(distances, medoids)
        if valid is not None:
            labels = labels.masked_fill(~valid, -1)
        return medoids, labels


# -- segments -----------------------------------------------------------------------------------


def _own_tokens(real: torch.Tensor, patches: int, clusters: int) -> torch.Tensor:
    """Segments (rows of ``real``, (B*S, g) real frames) with at least ``clusters`` real patch
    tokens: those that cluster without their padding."""
    return real.sum(1) * patches >= clusters


def cluster_segments(x: torch.Tensor, group: int, clusters: int, max_iters: int = 100,
                     threshold: float = 1e-6, mask: torch.Tensor | None = None) -> torch.Tensor:
    """(B*F, 1+P, C) per-frame sequences -> (B*S, 1+K, C) segment sequences of ``group``
    consecutive frames each: the mean of the segment's frame CLS tokens, then the K medoids of
    its frames' patch tokens in their original (frame-major) order (``cluster.py`` 243-310).
    ``mask`` (B, F) marks real frames (None: all real); padding frames are left out of a segment
    that has at least K real patch tokens (see the module docstring)."""
    width, patches = x.shape[-1], x.shape[1] - 1
    seq = x.view(-1, group, x.shape[1], width)  # (B*S, g, 1+P, C), segments video-major
    cls, tokens = seq[:, :, 0], seq[:, :, 1:].reshape(seq.shape[0], -1, width)
    if mask is None:
        medoids, _ = kmedoids(tokens, clusters, max_iters, threshold)
        head = cls.mean(1)
    else:
        real = mask.reshape(-1, group).bool()
        # A segment short of real tokens keeps its padding, as the official code does.
        kept = real | ~_own_tokens(real, patches, clusters).unsqueeze(1)  # (B*S, g)
        valid = kept.repeat_interleave(patches, dim=1)
        medoids, _ = kmedoids(tokens, clusters, max_iters, threshold, valid)
        weights = kept.to(cls.dtype).unsqueeze(-1)
        head = (cls * weights).sum(1) / weights.sum(1)
    centres = tokens.gather(1, medoids.unsqueeze(-1).expand(-1, -1, width))
    return torch.cat([head.unsqueeze(1), centres], dim=1)


def segment_mask(mask: torch.Tensor, group: int) -> torch.Tensor:
    """The segments (B, S) pooled from frame mask (B, F): those whose last frame is real
    (``clip4clip.py`` 436-444: ``video_mask[:, arange(g - 1, F, g)]``); a clip with no such
    segment pools its segments that have a real frame."""
    frames = mask.reshape(mask.shape[0], -1, group).bool()
    last, any_real = frames[..., -1], frames.amax(-1)  # amax: an operator fvcore knows
    return torch.where(last.amax(1, keepdim=True), last, any_real)


def check_pooled_padding(mask: torch.Tensor, group: int, clusters: int, patches: int) -> None:
    """Raise if a pooled segment would keep padding (fewer real patch tokens than clusters)."""
    real = mask.reshape(-1, group).bool()
    kept_padding = ~real.all(1) & ~_own_tokens(real, patches, clusters)
    if bool((segment_mask(mask, group).flatten() & kept_padding).amax()):
        raise ValueError(f"centerclip: a clip has fewer real patch tokens in a segment than "
                         f"clusters ({clusters}); lower method.clusters to at most {patches} or "
                         f"use data.policy=tempme")


# -- the encoder --------------------------------------------------------------------------------


class CenterClipVideoEncoder(nn.Module):
    """Per-frame CLIP up to ``cluster_layer``, then one sequence per segment: the mean of its
    frames' CLS tokens and the medoids of their patch tokens.

    Runs the open_clip tower's own blocks (so LoRA through peft applies as usual) and never
    modifies the tower. ``forward(frames (B, F, 3, H, W), mask (B, F)) -> (B, D)``.
    """

    visual: Any  # an open_clip VisionTransformer

    def __init__(self, visual: nn.Module, num_frames: int, cluster_layer: int, segments: int,
                 clusters: int, max_iters: int = 100, threshold: float = 1e-6) -> None:
        super().__init__()
        check_vision_transformer(visual)
        if getattr(visual, "attn_pool", None) is not None or getattr(visual, "pool_type",
                                                                     "tok") != "tok":
            raise TypeError("CenterCLIP needs CLS-token pooling (pool_type='tok')")
        if num_frames % segments:
            raise ValueError(f"{segments} segments do not divide {num_frames} frames")
        self.visual = visual
        self.num_frames, self.cluster_layer = num_frames, cluster_layer
        self.segments, self.clusters = segments, clusters
        self.max_iters, self.threshold = max_iters, threshold

    @property
    def group(self) -> int:
        """Frames per segment."""
        return self.num_frames // self.segments

    def _block(self, block: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.visual.transformer.batch_first:
            return block(x)
        return block(x.transpose(0, 1)).transpose(0, 1)

    def cluster(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B*F, 1+P, C) per-frame sequences -> (B*S, 1+K, C) segment sequences."""
        return cluster_segments(x, self.group, self.clusters, self.max_iters, self.threshold, mask)

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, num_frames = frames.shape[:2]
        if num_frames != self.num_frames:
            raise ValueError(f"encoder built for {self.num_frames} frames, got {num_frames}")
        padded = mask if int(mask.bool().sum()) < mask.numel() else None
        x = embed_images(self.visual, frames.flatten(0, 1))
        if padded is not None:
            check_pooled_padding(padded, self.group, self.clusters, x.shape[1] - 1)
        for layer, block in enumerate(self.visual.transformer.resblocks):
            if layer == self.cluster_layer:
                x = self.cluster(x, padded)
            x = self._block(block, x)
        v = self.visual
        pooled = v.ln_post(x[:, 0]).view(batch, self.segments, -1)
        if v.proj is not None:
            pooled = pooled @ v.proj
        return masked_mean(F.normalize(pooled, dim=-1), segment_mask(mask, self.group))


# -- the method ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class CenterClipConfig:
    """``cluster_layer``: block at whose input tokens are clustered (0-indexed); ``segments``:
    consecutive frame groups, each one sequence after clustering; ``clusters``: medoids kept per
    segment; ``max_iters`` and ``threshold``: k-medoids iteration limit and stopping shift;
    ``rank``: LoRA rank (``None``, the default: train every backbone weight, as the paper)."""

    cluster_layer: int = 7
    segments: int = 4
    clusters: int = 49
    max_iters: int = 100
    threshold: float = 1e-6
    rank: int | None = None


def _patches_per_frame(backbone: str) -> int | None:
    import open_clip

    vision = (open_clip.get_model_config(backbone) or {}).get("vision_cfg", {})
    size, patch = vision.get("image_size"), vision.get("patch_size")
    if not isinstance(size, int) or not isinstance(patch, int):
        return None
    return (size // patch) ** 2


def defaults_for(backbone: str, frames: int) -> dict[str, Any]:
    """The paper's B/32 placement (block 7 of 12) scaled to the tower's depth; one frame's
    worth of medoids per segment."""
    out: dict[str, Any] = {"cluster_layer": 7 * vision_depth(backbone) // 12}
    patches = _patches_per_frame(backbone)
    if patches is not None:
        out["clusters"] = patches
    return out


def validate(config: CenterClipConfig, backbone: str, frames: int) -> None:
    depth = vision_depth(backbone)
    if not 0 <= config.cluster_layer < depth:
        raise ValueError(f"cluster_layer {config.cluster_layer} is outside the backbone; "
                         f"valid: 0..{depth - 1}")
    if config.segments < 1 or frames % config.segments:
        divisors = [d for d in range(1, frames + 1) if frames % d == 0]
        raise ValueError(f"segments {config.segments} does not divide {frames} frames; valid: "
                         f"{', '.join(map(str, divisors))}")
    patches = _patches_per_frame(backbone)
    most = patches * (frames // config.segments) if patches is not None else None
    if config.clusters < 1 or (most is not None and config.clusters > most):
        raise ValueError(f"clusters must be within 1..{most or 'the segment tokens'} "
                         f"(patch tokens per segment), got {config.clusters}")
    if config.max_iters < 1:
        raise ValueError(f"max_iters must be >= 1, got {config.max_iters}")
    if not config.threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {config.threshold}")
    if config.rank is not None and config.rank < 1:
        raise ValueError(f"rank must be >= 1 or null (full fine-tuning), got {config.rank}")


def build(clip: Any, config: CenterClipConfig, frames: int, backbone: str) -> RetrievalModel:
    ids = backbone_parameter_ids(clip)
    peft_model = add_lora(clip, rank=config.rank) if config.rank is not None else None
    if config.rank is None:
        clip.requires_grad_(True)
    encoder = CenterClipVideoEncoder(clip.visual, frames, config.cluster_layer, config.segments,
                                     config.clusters, config.max_iters, config.threshold)
    return RetrievalModel(clip, encoder, ids, peft_model=peft_model)


def search_space(trial: Any) -> dict[str, Any]:
    """Segment count only: valid layers and cluster counts depend on the backbone."""
    return {"segments": trial.suggest_categorical("method.segments", [2, 3, 4, 6])}


METHOD = Method(
    name="centerclip",
    description="CenterCLIP: k-medoids token clustering per frame segment, full fine-tuning "
                "(method.rank=N: LoRA)",
    reference="Zhao et al., SIGIR 2022 (CenterCLIP: Token Clustering for Efficient Text-Video "
              "Retrieval); code mzhaoshuai/CenterCLIP",
    config_cls=CenterClipConfig,
    build=build,
    defaults_for=defaults_for,
    search_space=search_space,
    validate=validate,
    # Full fine-tuning (the default) trains pretrained weights; method.rank=N trains new ones.
    learning_rates=("lr", "lr_pretrained"),
)
