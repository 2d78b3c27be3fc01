"""DiffRate: differentiable compression rates (Chen et al., ICCV 2023), per frame on CLIP + LoRA.

Read for this module (none of it copied): OpenGVLab/DiffRate at commit 91ae3e3,
``DiffRate/ddp.py`` (the rate module), ``DiffRate/merge.py`` (``get_merge_func``),
``DiffRate/utils.py`` (``STE_Min``, ``STE_Ceil``), ``DiffRate/patch/deit.py`` (``DiffRateBlock``,
``DiffRateAttention``, ``calculate_flop_training`` / ``_inference``, ``apply_patch``),
``engine.py`` (``train_one_epoch``: the loss) and ``main.py`` (optimiser, schedule, defaults).

Every frame runs through the CLIP vision tower as one image, as the official model runs one
image. In each block, after attention (with proportional attention: log size added to the
logits), the tokens are sorted by the attention the CLS token pays them (mean over heads), CLS
first; then the block *prunes* to ``prune_kept`` tokens (drops the tail) and *merges* down to
``merge_kept``: every token past ``merge_kept`` is averaged (plain mean, ``scatter_reduce``) into
its most cosine-similar kept token (not CLS; the metric is the token features after
attention), whose size grows by the merged sizes times that similarity; then the MLP. Block 0
never compresses. The frame's CLS goes through ``ln_post`` and ``proj``; the L2-normalised
frame embeddings are mean-pooled over the mask (as ``tome``).

**Search** (the engine's search phase, before fine-tuning): every block has two rate modules,
each a softmax over candidates of kept patch tokens (every ``granularity``-th count from all
patches down) whose expected value, ceiled with a straight-through gradient, plus one, is the
block's kept count. Tokens are not removed while searching but masked: attention ignores masked
keys (``softmax_with_policy``), and the masks carry straight-through gradients to the
probabilities. The loss is the run's contrastive loss plus ``lamb x (GFLOPs - target)^2`` for
one frame, as the official loss is for one image; only the rate logits learn (AdamW, lr
``arch_lr``, no decay, cosine over the search epochs stepped per epoch as ``main.py`` steps it).
After the search the kept counts are fixed and LoRA fine-tunes with real pruning and merging,
as inference runs.

Cost: ``cost="official"`` measures the official formula (``calculate_flop_training``: per
block ``4NC^2 + 2N^2C`` before and ``8NC^2``, here ``2NCH``, after compression, patch embedding,
projection; gradients through ``STE_Min``); ``cost="counted"`` (default) measures what the
suite's counter (fvcore, suite.cost.flops) counts for the real forward: the formula plus each
merge's similarity product and scatter-adds and the layer norms, minus the formula's extra
patch-embedding token (0.3% more on ViT-B/32, 3% on tiny-clip; equal to the count exactly, as
tested). So the target is met as ``suite profile`` measures it.

Defaults (``main.py``, README): granularity 4, arch lr 0.01 (cosine to 0.001), 3 search epochs,
``lamb`` 5. The target (GFLOPs per video) defaults to TempMe's measured cost on the backbone
(34.76 on ViT-B/32, 121.8 on ViT-B/16, 0.0747 on tiny-clip at 12 frames; scaled by frames / 12
otherwise), so the two compare at equal cost; per frame that is 2.9 G on ViT-B/32, the scale of
the official DeiT-S targets. On tiny-clip, whose frame costs 6.2 M, ``flops_weight`` defaults
to 5 x (2.9 G / 6.2 M)^2 so that missing the target by a given fraction costs what it costs on
ViT-B/32 (with 5 the penalty would be nil). Kept counts are whole tokens, so the reachable costs
form a lattice; the search ends on a point near the target (within 2% in the tests).

Without a search (``search_epochs=0``, no training, or ``suite profile``) the model uses
``prune_kept``/``merge_kept`` when given (a found schedule, as ``--load_compression_rate``), else
a target-matched default: no pruning and the same merge count in every block after the first,
the one whose cost comes nearest the target. Departures: ``kept`` is read from the final rates
rather than from the last forward before the final step; mixup, label smoothing and drop-path
of the ImageNet recipe have no counterpart here; the last block's token sizes, which nothing
reads, are not computed. The size weighting follows the code: merged sizes are scaled by the
similarity, clamped at 1 only while searching.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from cliptools.lora import add_lora, attention_module, fused_in_proj
from cliptools.tokens import LayerTokens
from cliptools.towers import check_vision_transformer, embed_images, masked_mean
from methods.base import RetrievalModel, SearchPhase, backbone_parameter_ids
from methods.registry import Method

# TempMe's video GFLOPs (multiply-adds, 12 frames) as the suite measures them (README).
TEMPME_GFLOPS = {"ViT-B-32": 34.76, "ViT-B-16": 121.8, "tiny-clip": 0.0747}
OFFICIAL_LAMBDA = 5.0  # engine.py train_one_epoch: lamb = 5
REFERENCE_FRAME_GFLOPS = 2.9  # ViT-B/32 TempMe per frame; the official DeiT-S target scale
# The masked softmax's smoothing constant (DiffRate/patch/deit.py 127-139, softmax_with_policy's
# eps); read at call time. tests/methods/test_methods_diffrate.py checks that 1e-5 breaks the
# agreement with the official code.
POLICY_EPS = 1e-6


@dataclass(frozen=True)
class DiffRateConfig:
    """``target_gflops``: video GFLOPs the search aims at (None: TempMe's on the backbone);
    ``granularity``: gap between candidate kept counts; ``arch_lr`` / ``arch_min_lr``: the rate
    logits' cosine schedule; ``search_epochs``: passes of the search (0: none);
    ``flops_weight``: lambda of the FLOPs penalty (None: 5, scaled on tiny-clip);
    ``prune_kept`` / ``merge_kept``: a fixed schedule (tokens kept after each block's pruning
    and merging, CLS included), no search; ``cost``: what the FLOPs penalty measures,
    "counted" (suite.cost.flops' count) or "official" (the official formula); ``rank``: LoRA rank
    of both towers."""

    target_gflops: float | None = None
    granularity: int = 4
    arch_lr: float = 0.01
    arch_min_lr: float = 0.001
    search_epochs: int = 3
    flops_weight: float | None = None
    prune_kept: list[int] | None = None
    merge_kept: list[int] | None = None
    cost: str = "counted"
    rank: int = 8


class _SteCeil(torch.autograd.Function):
    """``ceil`` forward, identity backward (DiffRate/utils.py ``STE_Ceil``)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return torch.ceil(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad


class _SteMin(torch.autograd.Function):
    """``min(n, a, b)`` forward; backward passes the gradient to ``a`` and ``b`` both and none
    to ``n`` (DiffRate/utils.py ``STE_Min``)."""

    @staticmethod
    def forward(ctx: Any, n: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.minimum(torch.minimum(n, a), b)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, torch.Tensor, torch.Tensor]:
        return None, grad, grad


class RateChoice(nn.Module):
    """One differentiable compression rate (DiffRate/ddp.py): logits over candidate kept patch
    counts ``patches, patches - granularity, ... > 0``, zero at start (uniform)."""

    candidates: torch.Tensor

    def __init__(self, patches: int, granularity: int) -> None:
        super().__init__()
        self.patches = patches
        self.register_buffer("candidates",
                             torch.arange(patches, 0, -granularity, dtype=torch.float32))
        self.logits = nn.Parameter(torch.zeros(len(self.candidates)))

    def expected_kept(self) -> torch.Tensor:
        """Tokens kept, CLS included: ceil(candidates . softmax) + 1, straight-through."""
        return _SteCeil.apply(self.candidates @ self.logits.softmax(-1)) + 1

    def token_probability(self) -> torch.Tensor:
        """(patches + 1,): the probability that each position survives."""
        positions = torch.arange(self.patches + 1, device=self.logits.device)
        survives = positions[None, :] < (self.candidates[:, None] + 1)
        return self.logits.softmax(-1) @ survives.to(self.logits.dtype)

    def token_mask(self, kept: int, upto: int) -> torch.Tensor:
        """0 on positions ``kept..upto-1``, 1 elsewhere, with the survival probabilities'
        gradient (DiffRate/ddp.py ``get_token_mask``)."""
        probability = self.token_probability()
        mask = torch.ones_like(probability)
        mask[kept:upto] = 0
        return mask - probability.detach() + probability


def merge_into_kept(metric: torch.Tensor, kept: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For every token past ``kept``: its most cosine-similar token among the first ``kept``
    (never the CLS token at 0) and that similarity (DiffRate/merge.py ``get_merge_func``)."""
    with torch.no_grad():
        unit = metric / metric.norm(dim=-1, keepdim=True)
        similarity = unit[:, kept:] @ unit[:, :kept].transpose(-1, -2)
        similarity[..., :, 0] = -math.inf
        best, target = similarity.max(dim=-1)
    return target, best


def scatter_into(x: torch.Tensor, kept: int, target: torch.Tensor, reduce: str) -> torch.Tensor:
    """The first ``kept`` rows of ``x`` (B, N, C) with rows ``kept:`` reduced into ``target``."""
    dst, src = x[:, :kept], x[:, kept:]
    index = target[..., None].expand(-1, -1, x.shape[-1])
    return dst.scatter_reduce(1, index, src, reduce=reduce)


@dataclass
class DiffRateOutput:
    """``embedding`` (B, D); ``trace``: tokens per frame through every block; ``sources``
    (B, F, N, F x T) when tracked (pruned tokens stand for nothing)."""

    embedding: torch.Tensor
    trace: list[LayerTokens]
    sources: torch.Tensor | None = None


class DiffRateVideoEncoder(nn.Module):
    """DiffRate per frame over an open_clip ``VisionTransformer`` (held, never modified).

    ``searching`` selects the search forward (masks, rates learn); otherwise the fixed schedule
    ``prune_kept`` / ``merge_kept`` (buffers, one count per block) prunes and merges for real.
    """

    visual: Any
    prune_kept: torch.Tensor
    merge_kept: torch.Tensor

    def __init__(self, visual: Any, frames: int, granularity: int) -> None:
        super().__init__()
        check_vision_transformer(visual)
        if getattr(visual, "attn_pool", None) is not None or \
                getattr(visual, "pool_type", "tok") != "tok":
            raise TypeError("DiffRate needs CLS-token pooling (pool_type='tok', no attn_pool)")
        self.visual = visual
        self.num_frames = frames
        blocks = visual.transformer.resblocks
        for block in blocks:
            attention_module(block.attn)  # raises unless nn.MultiheadAttention
        self.depth = len(blocks)
        self.patches = visual.positional_embedding.shape[0] - 1
        self.width = visual.class_embedding.shape[-1]
        self.hidden = blocks[0].mlp.c_fc.out_features
        p = self.patches
        self.prune_rates = nn.ModuleList(RateChoice(p, p + 1 if i == 0 else granularity)
                                   for i in range(self.depth))
        self.merge_rates = nn.ModuleList(RateChoice(p, p + 1 if i == 0 else granularity)
                                   for i in range(self.depth))
        self.register_buffer("prune_kept", torch.full((self.depth,), p + 1, dtype=torch.long))
        self.register_buffer("merge_kept", torch.full((self.depth,), p + 1, dtype=torch.long))
        self.searching = False

    # -- schedules and their cost ---------------------------------------------------------

    @property
    def prune(self) -> list[RateChoice]:
        """The pruning rate of each block."""
        return cast(list[RateChoice], list(self.prune_rates))

    @property
    def merge(self) -> list[RateChoice]:
        """The merging rate of each block."""
        return cast(list[RateChoice], list(self.merge_rates))

    def rate_parameters(self) -> list[nn.Parameter]:
        """The logits the search learns (one per candidate, two rate modules per block)."""
        return [m.logits for m in (*self.prune, *self.merge)]

    def schedule(self) -> tuple[list[int], list[int]]:
        return [int(k) for k in self.prune_kept], [int(k) for k in self.merge_kept]

    def set_schedule(self, prune: list[int], merge: list[int]) -> None:
        self.prune_kept.copy_(torch.tensor(prune))
        self.merge_kept.copy_(torch.tensor(merge))

    def searched_schedule(self) -> tuple[list[int], list[int]]:
        """The kept counts the rates give now (``get_kept_num`` after the search)."""
        with torch.no_grad():
            return ([int(m.expected_kept()) for m in self.prune],
                    [int(m.expected_kept()) for m in self.merge])

    def frame_flops(self, prune: list[Any], merge: list[Any], counted: bool = True) -> Any:
        """Multiply-adds of one frame under kept counts ``prune`` / ``merge``: tensors in,
        tensor out with the search's straight-through gradients; ints in, float out.

        ``counted=False``: the official formula (``calculate_flop_training`` / ``_inference``;
        the MLP term is ``2NCH`` for an MLP of width H, ``8NC^2`` on CLIP). ``counted=True``
        (the default): what suite.cost.flops (fvcore) counts for the real forward, which is the
        formula plus each merge's similarity product and scatter-adds and the layer norms (5
        per element), minus the formula's one extra token of patch embedding (together 0.3% on
        ViT-B/32, 3% on tiny-clip).
        """
        c, h = self.width, self.hidden
        patch = self.visual.conv1.kernel_size
        embed = self.visual.proj.shape[-1] if self.visual.proj is not None else 0
        tokens: Any = float(self.patches + 1)
        searching = isinstance(prune[0], torch.Tensor)
        if searching:
            tokens = torch.tensor(tokens, device=prune[0].device)
        flops: Any = 0.0
        norm = 5 * c if counted else 0  # fvcore's layer_norm: 5 per element
        for i, (p, m) in enumerate(zip(prune, merge, strict=True)):
            flops = flops + 4 * tokens * c * c + 2 * tokens * tokens * c + norm * tokens
            if counted:
                pruned = _SteMin.apply(tokens, p, torch.full_like(p, math.inf)) if searching \
                    else min(tokens, p)
                if m < pruned:  # merge_into_kept; scatter_into on features (and sizes)
                    sizes = 1 if i < len(prune) - 1 else 0  # the last block's are not needed
                    flops = flops + (pruned - m) * m * c + (pruned - m) * (c + sizes)
            tokens = _SteMin.apply(tokens, p, m) if searching else min(tokens, p, m)
            flops = flops + 2 * tokens * c * h + norm * tokens
        patches = self.patches if counted else self.patches + 1
        norms = norm * (self.patches + 2)  # ln_pre on every token, ln_post on the CLS
        return flops + patches * c * patch[0] * patch[1] * 3 + c * embed + norms

    def search_flops(self, counted: bool = True) -> torch.Tensor:
        """One frame's multiply-adds under the current rates, differentiable in them."""
        with torch.autocast(str(self.prune_kept.device.type), enabled=False):
            return self.frame_flops([m.expected_kept().float() for m in self.prune],
                                    [m.expected_kept().float() for m in self.merge], counted)

    def video_gflops(self, counted: bool = True) -> float:
        """GFLOPs of one video under the fixed schedule."""
        return self.num_frames * self.frame_flops(*self.schedule(), counted=counted) / 1e9

    # -- forward ---------------------------------------------------------------------------

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.forward_with_trace(frames, mask).embedding

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) -> (N, D): each image's projected CLS token."""
        x, _, _ = self._run(images, track_sources=False, batch=1)
        return self._project(x[:, 0])

    def _project(self, cls: torch.Tensor) -> torch.Tensor:
        pooled = self.visual.ln_post(cls)
        return pooled @ self.visual.proj if self.visual.proj is not None else pooled

    def forward_with_trace(self, frames: torch.Tensor, mask: torch.Tensor,
                           track_sources: bool = False) -> DiffRateOutput:
        batch, num_frames = frames.shape[:2]
        if num_frames != self.num_frames:
            raise ValueError(f"encoder built for {self.num_frames} frames, got {num_frames}")
        x, trace, sources = self._run(frames.flatten(0, 1), track_sources, batch)
        per_frame = F.normalize(self._project(x[:, 0]).view(batch, num_frames, -1), dim=-1)
        if sources is not None:
            sources = sources.view(batch, num_frames, sources.shape[1], -1)
        return DiffRateOutput(masked_mean(per_frame, mask), trace, sources)

    def _attention(self, block: Any, x: torch.Tensor, size: torch.Tensor,
                   policy: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Proportional attention of ``block`` (``DiffRateAttention``); with ``policy`` (the
        search's token mask) masked keys are ignored. Returns (output, attention the CLS
        token pays every other token, mean over heads)."""
        mha = attention_module(block.attn)
        weight, bias = fused_in_proj(block.attn)
        n, t, c = x.shape
        heads = mha.num_heads
        qkv = F.linear(block.ln_1(x), weight, bias)
        q, k, v = qkv.view(n, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        logits = (q @ k.transpose(-2, -1)) * (c // heads) ** -0.5
        logits = logits + size.log()[:, None, None, :, 0]
        attn = logits.softmax(dim=-1) if policy is None else _softmax_with_policy(logits, policy)
        out = mha.out_proj((attn @ v).transpose(1, 2).reshape(n, t, c))
        return out, attn[:, :, 0, 1:].mean(dim=1)

    def _run(self, images: torch.Tensor, track_sources: bool, batch: int
             ) -> tuple[torch.Tensor, list[LayerTokens], torch.Tensor | None]:
        x = embed_images(self.visual, images)
        n, t = x.shape[:2]
        size = torch.ones(n, t, 1, dtype=x.dtype, device=x.device)
        sources = None
        if track_sources:
            frames = n // batch
            eye = torch.eye(frames * t, dtype=x.dtype, device=x.device)
            sources = eye.view(frames, t, -1).repeat(batch, 1, 1)
        policy = torch.ones(n, t, dtype=x.dtype, device=x.device) if self.searching else None
        trace = []
        for i, block in enumerate(self.visual.transformer.resblocks):
            tokens_in = x.shape[1]
            out, cls_attention = self._attention(block, x, size, policy)
            x = x + block.ls_1(out)
            order = cls_attention.argsort(dim=-1, descending=True) + 1
            order = torch.cat([torch.zeros_like(order[:, :1]), order], dim=1)
            x = _take(x, order)
            size = _take(size, order)
            if sources is not None:
                sources = _take(sources, order)
            if policy is not None:
                policy = policy.gather(1, order)
                x, size, policy = self._search_compress(i, x, size, policy)
            else:
                x, size, sources = self._compress(i, x, size, sources)
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
            trace.append(LayerTokens(i, "imgme", n // batch, tokens_in, None, x.shape[1]))
        return x, trace, sources

    def _compress(self, i: int, x: torch.Tensor, size: torch.Tensor, sources: torch.Tensor | None
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Real pruning then merging with the fixed schedule (``DiffRateBlock``, eval); the
        last block's sizes, which nothing reads, are not updated."""
        keep = int(self.prune_kept[i])
        x, size = x[:, :keep], size[:, :keep]
        sources = sources[:, :keep] if sources is not None else None
        kept = int(self.merge_kept[i])
        if kept < x.shape[1]:
            target, similarity = merge_into_kept(x.detach(), kept)
            x = scatter_into(x, kept, target, "mean")
            if i < self.depth - 1:
                weighted = torch.cat([size[:, :kept], size[:, kept:] * similarity[..., None]],
                                     dim=1)
                size = scatter_into(weighted, kept, target, "sum")
            else:
                size = size[:, :kept]
            if sources is not None:
                sources = scatter_into(sources, kept, target, "amax")
        return x, size, sources

    def _search_compress(self, i: int, x: torch.Tensor, size: torch.Tensor, policy: torch.Tensor
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masked pruning and merging with the rates' expected counts (``DiffRateBlock``,
        training): tokens stay, masks carry the gradients."""
        batch = x.shape[0]
        last = int(policy[0].sum())
        prune_kept = self.prune[i].expected_kept()
        if prune_kept < last:
            policy = policy * self.prune[i].token_mask(int(prune_kept), last).expand(batch, -1)
        middle = min(last, int(prune_kept))
        merge_kept = self.merge[i].expected_kept()
        kept = int(merge_kept)
        if merge_kept < middle:
            merge_mask = self.merge[i].token_mask(kept, middle)
            target, similarity = merge_into_kept(x[:, :middle].detach(), kept)
            head = x[:, :middle]
            merged = torch.cat([scatter_into(head, kept, target, "mean"), head[:, kept:]], dim=1)
            weighted = torch.cat([size[:, :kept], size[:, kept:middle] * similarity[..., None]],
                                 dim=1).clamp(1)
            sizes = torch.cat([scatter_into(weighted, kept, target, "sum"), weighted[:, kept:]],
                              dim=1)
            x = torch.cat([merged, x[:, middle:]], dim=1)
            size = torch.cat([sizes, size[:, middle:]], dim=1)
            policy = policy * merge_mask
        return x, size, policy


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` (B, N) of ``x`` (B, N, ...)."""
    return x.gather(1, index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x))


def _softmax_with_policy(logits: torch.Tensor, policy: torch.Tensor) -> torch.Tensor:
    """Softmax over the keys that ``policy`` (B, N) keeps; every token keeps itself
    (``DiffRateAttention.softmax_with_policy``, in fp32, smoothed by ``POLICY_EPS``)."""
    eps = POLICY_EPS
    n = policy.shape[1]
    keep = policy.reshape(policy.shape[0], 1, 1, n)
    eye = torch.eye(n, dtype=keep.dtype, device=keep.device).view(1, 1, n, n)
    keep = keep + (1.0 - keep) * eye
    shifted = logits - logits.max(dim=-1, keepdim=True)[0]
    weights = shifted.float().exp() * keep.float()
    return ((weights + eps / n) / (weights.sum(dim=-1, keepdim=True) + eps)).to(logits.dtype)


def default_schedule(encoder: DiffRateVideoEncoder, target_gflops: float, counted: bool = True
                     ) -> tuple[list[int], list[int]]:
    """No pruning; one merge count for every block after the first, the one whose video
    GFLOPs (counted, or by the official formula) come nearest ``target_gflops``."""
    full = encoder.patches + 1
    prune = [full] * encoder.depth

    def cost(kept: int) -> float:
        merge = [full] + [kept] * (encoder.depth - 1)
        return encoder.num_frames * encoder.frame_flops(prune, merge, counted) / 1e9

    kept = min(range(1, full + 1), key=lambda k: (abs(cost(k) - target_gflops), k))
    return prune, [full] + [kept] * (encoder.depth - 1)


class DiffRateRetrievalModel(RetrievalModel):
    """CLIP + LoRA with the DiffRate video encoder; its search phase learns the schedule."""

    video_encoder: DiffRateVideoEncoder

    def __init__(self, clip: nn.Module, encoder: DiffRateVideoEncoder, pretrained_ids: set[int],
                 peft_model: nn.Module, config: DiffRateConfig, target_gflops: float,
                 flops_weight: float) -> None:
        super().__init__(clip, encoder, pretrained_ids, peft_model=peft_model)
        self.config = config
        self.target_gflops = target_gflops
        self.flops_weight = flops_weight

    def extra_loss(self) -> torch.Tensor | None:
        """While searching: ``lamb x (GFLOPs of a frame - target per frame)^2``."""
        encoder = self.video_encoder
        if not encoder.searching:
            return None
        per_frame = self.target_gflops / encoder.num_frames
        flops = encoder.search_flops(counted=self.config.cost == "counted")
        return self.flops_weight * (flops / 1e9 - per_frame) ** 2

    def search_phase(self) -> SearchPhase | None:
        """The rate search, unless a schedule is fixed or ``search_epochs`` is 0."""
        config, encoder = self.config, self.video_encoder
        if config.prune_kept is not None or config.search_epochs == 0:
            return None
        encoder.searching = True
        optimizer = torch.optim.AdamW(encoder.rate_parameters(), lr=config.arch_lr,
                                      weight_decay=0.0)

        def start_epoch(epoch: int) -> None:
            # timm's CosineLRScheduler(t_initial=epochs), stepped with the finished epoch's
            # index (main.py): epoch e trains at the rate of e - 1, the first two at arch_lr.
            t = max(epoch - 1, 0)
            lr = config.arch_min_lr + 0.5 * (config.arch_lr - config.arch_min_lr) * (
                1 + math.cos(math.pi * t / config.search_epochs))
            for group in optimizer.param_groups:
                group["lr"] = lr

        def finish() -> dict[str, float]:
            encoder.searching = False
            prune, merge = encoder.searched_schedule()
            encoder.set_schedule(prune, merge)
            figures = {"video_gflops": encoder.video_gflops(),
                       "video_gflops_official": encoder.video_gflops(counted=False),
                       "target_gflops": self.target_gflops}
            for i, (p, m) in enumerate(zip(prune, merge, strict=True)):
                figures[f"prune_kept_{i:02d}"] = float(p)
                figures[f"merge_kept_{i:02d}"] = float(m)
            return figures

        return SearchPhase(config.search_epochs, optimizer, start_epoch, finish)

    _SCHEDULE = ("video_encoder.prune_kept", "video_encoder.merge_kept")

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Trained weights and the schedule in use (found by the search)."""
        state = super().trainable_state()
        state[self._SCHEDULE[0]] = self.video_encoder.prune_kept.detach().cpu().clone()
        state[self._SCHEDULE[1]] = self.video_encoder.merge_kept.detach().cpu().clone()
        return state

    def load_trainable_state(self, state: dict[str, torch.Tensor]) -> None:
        state = dict(state)
        if self._SCHEDULE[0] in state:
            self.video_encoder.set_schedule(state.pop(self._SCHEDULE[0]).tolist(),
                                            state.pop(self._SCHEDULE[1]).tolist())
        super().load_trainable_state(state)


def target_of(config: DiffRateConfig, backbone: str, frames: int) -> float:
    """The search's target, GFLOPs per video: the setting, else TempMe's cost on the backbone
    (measured at 12 frames, scaled per frame)."""
    if config.target_gflops is not None:
        return float(config.target_gflops)
    if backbone not in TEMPME_GFLOPS:
        raise ValueError(f"diffrate has no default target_gflops for {backbone!r}; set "
                         f"method.target_gflops (GFLOPs per video), known: "
                         f"{', '.join(TEMPME_GFLOPS)}")
    return TEMPME_GFLOPS[backbone] * frames / 12


def weight_of(config: DiffRateConfig, backbone: str, frames: int) -> float:
    if config.flops_weight is not None:
        return float(config.flops_weight)
    if backbone == "tiny-clip":
        per_frame = TEMPME_GFLOPS["tiny-clip"] / 12
        return OFFICIAL_LAMBDA * (REFERENCE_FRAME_GFLOPS / per_frame) ** 2
    return OFFICIAL_LAMBDA


def build(clip: Any, config: DiffRateConfig, frames: int, backbone: str) -> RetrievalModel:
    ids = backbone_parameter_ids(clip)
    peft_model = add_lora(clip, rank=config.rank)
    encoder = DiffRateVideoEncoder(clip.visual, frames, config.granularity)
    encoder.to(clip.visual.class_embedding.device)
    target = target_of(config, backbone, frames)
    if config.prune_kept is not None and config.merge_kept is not None:
        _check_schedule(config, encoder.depth, encoder.patches + 1)
        encoder.set_schedule(list(config.prune_kept), list(config.merge_kept))
    else:
        encoder.set_schedule(*default_schedule(encoder, target, config.cost == "counted"))
    return DiffRateRetrievalModel(clip, encoder, ids, peft_model, config, target,
                                  weight_of(config, backbone, frames))


def _check_schedule(config: DiffRateConfig, depth: int, tokens: int) -> None:
    for name in ("prune_kept", "merge_kept"):
        counts = getattr(config, name)
        if len(counts) != depth or not all(isinstance(k, int) and 1 <= k <= tokens
                                           for k in counts):
            raise ValueError(f"diffrate {name} must list {depth} counts within 1..{tokens}, "
                             f"got {counts}")


def validate(config: DiffRateConfig, backbone: str, frames: int) -> None:
    def positive_int(name: str, minimum: int) -> None:
        value = getattr(config, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"diffrate {name} must be an integer >= {minimum}, got {value!r}")

    if config.cost not in ("counted", "official"):
        raise ValueError(f"diffrate cost must be counted or official, got {config.cost!r}")
    positive_int("granularity", 1)
    positive_int("search_epochs", 0)
    positive_int("rank", 1)
    for name in ("arch_lr", "arch_min_lr", "target_gflops", "flops_weight"):
        value = getattr(config, name)
        if value is not None and (not isinstance(value, int | float) or value <= 0):
            raise ValueError(f"diffrate {name} must be a positive number, got {value!r}")
    if (config.prune_kept is None) != (config.merge_kept is None):
        raise ValueError("diffrate prune_kept and merge_kept go together (a found schedule)")
    if config.prune_kept is None:
        target_of(config, backbone, frames)
    else:
        from cliptools.towers import vision_depth

        depth = vision_depth(backbone)
        for name in ("prune_kept", "merge_kept"):
            counts = getattr(config, name)
            if not isinstance(counts, list) or len(counts) != depth:
                raise ValueError(f"diffrate {name} must list {depth} counts (one per block), "
                                 f"got {counts!r}")


def search_space(trial: Any) -> dict[str, Any]:
    return {
        "granularity": trial.suggest_categorical("method.granularity", [1, 2, 4, 8]),
        "arch_lr": trial.suggest_float("method.arch_lr", 1e-3, 1e-1, log=True),
    }


METHOD = Method(
    name="diffrate",
    description="DiffRate: frozen CLIP + LoRA, per-frame pruning and merging at searched rates",
    reference="Chen et al., ICCV 2023 (DiffRate: Differentiable Compression Rate), "
              "OpenGVLab/DiffRate",
    config_cls=DiffRateConfig,
    build=build,
    search_space=search_space,
    validate=validate,
)
