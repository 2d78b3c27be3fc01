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
    ``kept`` (B, S - r) the unmerged sources in ascending (original) order. ``keep`` (B, N - r)
    lists the absolute positions the merged sequence is read from (protected tokens, kept
    sources, destinations), so applying the matching is one gather plus an update of the
    destinations that received tokens.
    """

    protected: int
    src_pos: torch.Tensor  # (S,) absolute positions of sources
    dst_pos: torch.Tensor  # (D,) absolute positions of destinations
    merged: torch.Tensor
    target: torch.Tensor
    kept: torch.Tensor
    keep: torch.Tensor  # (B, N - r) absolute positions of the merged sequence's tokens

    @property
    def r(self) -> int:
        return self.merged.shape[1]

    @property
    def slot(self) -> torch.Tensor:
        """(B, r) position in the merged sequence of the destination each merged source
        joins (destinations come after the protected tokens and the kept sources)."""
        return self.target + (self.protected + self.kept.shape[1])


def _first(parity: int, protected: int) -> int:
    """First position >= ``protected`` with the given parity (0 even, 1 odd)."""
    return protected + ((parity - protected) % 2)


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
    device = metric.device
    first_src, first_dst = _first(0, protected), _first(1, protected)
    src_pos = torch.arange(first_src, num_tokens, 2, device=device)
    dst_pos = torch.arange(first_dst, num_tokens, 2, device=device)
    with torch.no_grad():
        low = metric.dtype in (torch.float16, torch.bfloat16)
        unit = F.normalize(metric.float() if low else metric, dim=-1)
        # sources and destinations as strided views (every other token), not gathered copies
        scores = unit[:, first_src::2] @ unit[:, first_dst::2].transpose(1, 2)  # (B, S, D)
        best, best_dst = scores.max(dim=-1)  # each source keeps its best destination
        order = best.argsort(dim=-1, descending=True, stable=True)
        merged = order[:, :r]
        kept = order[:, r:].sort(dim=-1).values
        target = best_dst.gather(1, merged)
        head = torch.arange(protected, device=device).expand(batch, -1)
        keep = torch.cat([head, src_pos[kept], dst_pos.expand(batch, -1)], dim=1)
    return Matching(protected, src_pos, dst_pos, merged, target, kept, keep)


def _rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` (B, K) along dim 1 of ``x`` (B, N, ...): one ``index_select`` over the
    flattened batch, which copies whole rows (a ``gather`` reads an index per element)."""
    batch, n = x.shape[:2]
    offsets = torch.arange(0, batch * n, n, device=index.device).unsqueeze(1)
    flat = x.reshape(batch * n, *x.shape[2:]).index_select(0, (index + offsets).flatten())
    return flat.view(*index.shape, *x.shape[2:])


def merge_tokens(
    m: Matching | None, x: torch.Tensor, sizes: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Apply a matching to features ``x`` (B, N, C) with token sizes ``sizes`` (B, N).

    Merged tokens become the size-weighted average of their members; sizes add up. Written as
    one gather of the surviving tokens and an additive update of the destinations that received
    sources: with ``s'`` the destination's new size, each merged source j adds
    ``w_j (x_j - x_d) / s'`` to its destination d, which sums to
    ``(s_d x_d + sum_j w_j x_j) / s'``. Destinations that received nothing are copied exactly,
    and duplicates (two sources, one destination) add up, also under autograd.
    """
    if m is None:
        return x, sizes
    out = _rows(x, m.keep)
    slot = m.slot
    w_src = sizes.gather(1, m.src_pos[m.merged])  # (B, r)
    s_new = sizes.gather(1, m.keep).scatter_add(1, slot, w_src)
    weight = (w_src / s_new.gather(1, slot)).unsqueeze(-1).to(x.dtype)
    x_src, x_dst = _rows(x, m.src_pos[m.merged]), _rows(x, m.dst_pos[m.target])
    update = (x_src - x_dst) * weight
    out = out.scatter_add_(1, slot.unsqueeze(-1).expand(-1, -1, x.shape[-1]), update)
    return out, s_new


def merge_sources(m: Matching | None, sources: torch.Tensor) -> torch.Tensor:
    """Apply a matching to a source matrix (B, N, N_original): rows of merged tokens add up, so
    row i marks every original token that token i now stands for."""
    if m is None:
        return sources
    out = _rows(sources, m.keep)
    merged = _rows(sources, m.src_pos[m.merged])
    index = m.slot.unsqueeze(-1).expand(-1, -1, sources.shape[-1])
    return out.scatter_add_(1, index, merged)


def proportional_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sizes: torch.Tensor | None
) -> torch.Tensor:
    """Scaled dot-product attention over (B, H, N, d) with log(size of key) added to the logits,
    so a merged token draws attention like the tokens it stands for."""
    bias = None
    if sizes is not None:
        bias = sizes.log().to(q.dtype)[:, None, None, :]  # (B, 1, 1, N)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
