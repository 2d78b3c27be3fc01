"""Token-merging primitives: bipartite soft matching with protected tokens, and proportional
attention. Pure tensor code, no model.

Sequences are batched ``(B, N, C)`` and share one merge count ``r``. The first ``protected``
tokens (the CLS tokens of every frame a sequence holds) are never merged and never counted. The
remaining (patch) tokens are split by their *absolute* position in the sequence: even positions
are sources, odd positions destinations. Each source picks its most cosine-similar destination;
the ``r`` sources with the best scores are averaged into their destinations, weighted by size.
The merged sequence is: protected tokens, unmerged sources in their original order, destinations.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


def max_merge(num_tokens: int, protected: int) -> int:
    """Largest merge count allowed for a sequence: half its patch (unprotected) tokens."""
    return max(num_tokens - protected, 0) // 2


def split_positions(num_tokens: int, protected: int) -> tuple[list[int], list[int]]:
    """Absolute positions of the source (even) and destination (odd) patch tokens."""
    patches = range(protected, num_tokens)
    return [p for p in patches if p % 2 == 0], [p for p in patches if p % 2 == 1]


@dataclass(frozen=True)
class Matching:
    """Result of bipartite soft matching, to be applied to features, sizes and sources alike.

    Indices into the source / destination sets (not absolute positions), per batch row:
    ``merged`` (B, r) sources that merge, ``target`` (B, r) the destination each of them joins,
    ``kept`` (B, S - r) the unmerged sources in ascending (original) order.
    """

    protected: int
    src_pos: torch.Tensor  # (S,) absolute positions of sources
    dst_pos: torch.Tensor  # (D,) absolute positions of destinations
    merged: torch.Tensor
    target: torch.Tensor
    kept: torch.Tensor

    @property
    def r(self) -> int:
        return self.merged.shape[1]


def bipartite_soft_matching(metric: torch.Tensor, r: int, protected: int = 1) -> Matching | None:
    """Choose which ``r`` source tokens merge into which destinations, from ``metric`` (B, N, C).

    ``r`` is capped at half the patch tokens. Returns ``None`` when nothing merges (``r`` <= 0),
    so that callers leave the sequence exactly as it is. The choice is discrete, so the metric is
    not differentiated through.
    """
    batch, num_tokens, _ = metric.shape
    r = min(r, max_merge(num_tokens, protected))
    if r <= 0:
        return None
    src, dst = split_positions(num_tokens, protected)
    device = metric.device
    src_pos = torch.tensor(src, device=device, dtype=torch.long)
    dst_pos = torch.tensor(dst, device=device, dtype=torch.long)
    with torch.no_grad():
        low = metric.dtype in (torch.float16, torch.bfloat16)
        unit = F.normalize(metric.float() if low else metric, dim=-1)
        scores = unit[:, src_pos] @ unit[:, dst_pos].transpose(1, 2)  # (B, S, D) cosine
        best, best_dst = scores.max(dim=-1)  # each source keeps its best destination
        order = best.argsort(dim=-1, descending=True, stable=True)
        merged = order[:, :r]
        kept = order[:, r:].sort(dim=-1).values
        target = best_dst.gather(1, merged)
    return Matching(protected, src_pos, dst_pos, merged, target, kept)


def _take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Gather rows ``index`` (B, K) along dim 1 of ``x`` (B, N, ...)."""
    expanded = index.view(*index.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return x.gather(1, expanded)


def _scatter_index(m: Matching, x: torch.Tensor) -> torch.Tensor:
    """``m.target`` broadcast over the trailing dims of ``x``."""
    return m.target.view(*m.target.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])


def merge_tokens(
    m: Matching | None, x: torch.Tensor, sizes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a matching to features ``x`` (B, N, C) with token sizes ``sizes`` (B, N).

    Merged tokens become the size-weighted average of their members; sizes add up.
    """
    if m is None:
        return x, sizes
    src, dst = x[:, m.src_pos], x[:, m.dst_pos]
    s_src, s_dst = sizes[:, m.src_pos], sizes[:, m.dst_pos]
    w_src, w_dst = s_src.unsqueeze(-1).to(x.dtype), s_dst.unsqueeze(-1).to(x.dtype)
    total = (dst * w_dst).scatter_add(1, _scatter_index(m, dst), _take(src * w_src, m.merged))
    s_new = s_dst.scatter_add(1, m.target, _take(s_src, m.merged))
    dst = total / s_new.unsqueeze(-1).to(x.dtype)
    out = torch.cat([x[:, : m.protected], _take(src, m.kept), dst], dim=1)
    return out, torch.cat([sizes[:, : m.protected], _take(s_src, m.kept), s_new], dim=1)


def merge_sources(m: Matching | None, sources: torch.Tensor) -> torch.Tensor:
    """Apply a matching to a source matrix (B, N, N_original): rows of merged tokens add up, so
    row i marks every original token that token i now stands for."""
    if m is None:
        return sources
    src, dst = sources[:, m.src_pos], sources[:, m.dst_pos]
    dst = dst.scatter_add(1, _scatter_index(m, dst), _take(src, m.merged))
    return torch.cat([sources[:, : m.protected], _take(src, m.kept), dst], dim=1)


def proportional_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sizes: torch.Tensor | None
) -> torch.Tensor:
    """Scaled dot-product attention over (B, H, N, d) with log(size of key) added to the logits,
    so a merged token draws attention like the tokens it stands for."""
    bias = None
    if sizes is not None:
        bias = sizes.log().to(q.dtype)[:, None, None, :]  # (B, 1, 1, N)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
