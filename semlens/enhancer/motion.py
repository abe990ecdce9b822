"""Where IMAGE looks: a cheap block-matching motion estimate that centres its search window.

IMAGE attends inside a ``(2r + 1)^2`` window of the supporting frame; on its own that window sits at
the query's position, so it follows only motions of about ``r`` low-resolution pixels per frame.
Given a reach ``R`` (``EnhancerConfig.motion_search``), :func:`block_offsets` estimates, for blocks
of the frame, the integer displacement (up to ``R`` pixels) that best matches the reference frame
in the supporting one, by the sum of absolute luma differences on a 2x-downscaled copy of the two
low-resolution frames. :func:`shift_by_offsets` then reads the supporting frame's tensors at those
displaced positions, and IMAGE's window is centred there: IMAGE stays masked local attention from a
frame to its neighbour, and its reach grows from ``r`` to ``R + r``. No weights are involved, and
with ``R = 0`` nothing changes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["block_offsets", "shift_by_offsets", "ShiftPlan", "BLOCK", "MOTION_SEARCH_LIMIT"]

#: Side of a matching block, in low-resolution pixels (one displacement per block).
BLOCK = 16
#: The largest reach a configuration may ask for (LR pixels per frame).
MOTION_SEARCH_LIMIT = 32
# A displacement must beat zero motion by this share of the block's mean absolute difference to
# be taken: flat or noisy regions keep the window where it is.
_ZERO_PREFERENCE = 0.02
# Values per batch of candidate displacements in the matching (16 MB of float32): a 320x180 frame
# takes all 81 candidates of reach 8 at once, a 4K frame a few at a time.
_BATCH_ELEMENTS = 1 << 22


def _luma_half(frames: Tensor) -> Tensor:
    """``(B, 3, h, w)`` RGB -> ``(B, 1, ceil(h/2), ceil(w/2))`` luma, 2x2 averaged, float32."""
    x = frames.float()
    y = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    return F.avg_pool2d(y, 2, ceil_mode=True)


def _shift_costs(reference: Tensor, support: Tensor, reach: int,
                 pools: Sequence[Callable[[Tensor], Tensor]],
                 widths: Sequence[int]) -> tuple[list[Tensor], list[tuple[int, int]]]:
    """Matching cost of every candidate displacement over the regions of each of ``pools`` (each
    reduces a ``(B, K, hh, ww)`` stack of half-resolution maps, one per candidate, to
    ``(B, K, ...)`` per region), one ``(B, K, ...)`` tensor per pool, and the candidates in
    half-resolution pixels. ``widths``: how many maps each pool makes of one (its memory per
    candidate). The candidates go through in a few large batches, not one by one: each costs a
    handful of whole-tensor operations, bounded to :data:`_BATCH_ELEMENTS` values. Regions whose
    match would lie mostly outside the frame get an infinite cost; zero motion is favoured on
    near-ties (flat regions have no motion to find)."""
    ref, sup = _luma_half(reference), _luma_half(support)
    b, _, hh, ww = ref.shape
    half_reach = max(1, reach // 2)
    padded = F.pad(sup, (half_reach,) * 4)
    inside = F.pad(torch.ones_like(sup), (half_reach,) * 4)
    wholes = [pool(torch.ones_like(ref)) for pool in pools]  # each region's size
    shifts = [(dy, dx) for dy in range(-half_reach, half_reach + 1) for dx in range(-half_reach, half_reach + 1)]
    step = max(1, _BATCH_ELEMENTS // (b * hh * ww * max(widths)))
    costs: list[list[Tensor]] = [[] for _ in pools]
    for start in range(0, len(shifts), step):
        batch = shifts[start:start + step]
        windows = [(slice(half_reach + dy, half_reach + dy + hh), slice(half_reach + dx, half_reach + dx + ww))
                   for dy, dx in batch]
        valid = torch.cat([inside[:, :, rows, cols] for rows, cols in windows], dim=1)  # (B, k, hh, ww)
        moved = torch.cat([padded[:, :, rows, cols] for rows, cols in windows], dim=1)
        difference = (moved - ref).abs_().mul_(valid)
        for pool, whole, out in zip(pools, wholes, costs):
            # Mean difference over the region's pixels whose match lies inside the frame.
            diff, share = pool(difference), pool(valid)
            out.append(torch.where((share > 0.5 * whole) & (share > 0), diff / share.clamp_min(1e-6), torch.inf))
    zero = shifts.index((0, 0))
    stacked = []
    for out in costs:
        cost = torch.cat(out, dim=1)
        finite = torch.where(cost.isfinite(), cost, 0.0)
        cost[:, zero] -= _ZERO_PREFERENCE * finite.sum(dim=1) / cost.isfinite().sum(dim=1).clamp_min(1) + 1e-6
        stacked.append(cost)
    return stacked, shifts


def _best(cost: Tensor, shifts: list[tuple[int, int]], reach: int) -> Tensor:
    """``cost`` ``(B, K, ...)`` -> the winning displacements ``(B, ..., 2)`` in LR pixels."""
    table = torch.tensor(shifts, dtype=torch.long, device=cost.device) * 2  # back to LR pixels
    return table[cost.argmin(dim=1)].clamp(-reach, reach)


def _per_pixel(x: Tensor, h: int, w: int) -> Tensor:
    """Values per block (the last two axes) spread over the ``h x w`` pixels of their blocks."""
    return x.repeat_interleave(BLOCK, dim=-2).repeat_interleave(BLOCK, dim=-1)[..., :h, :w]


@torch.no_grad()
def block_offsets(reference: Tensor, support: Tensor, reach: int, ids: Tensor | None = None) -> Tensor:
    """Integer displacement field ``(B, 2, h, w)`` (dy, dx) such that ``support[y + dy, x + dx]``
    matches ``reference[y, x]``: one displacement per :data:`BLOCK` x :data:`BLOCK` block, or, given
    the reference frame's instance ids, one per instance within each block, each component a
    multiple of 2 within ``[-reach, reach]``.

    With ``ids``, the pixels of each instance in a block are matched on their own (an object and the
    background behind it move differently, and a block on the object's edge holds both), as long
    as the instance covers at least a quarter of the block; smaller pieces take the block's
    displacement. One instance over the whole frame gives exactly the block field.

    Args:
        reference, support: ``(B, 3, h, w)`` low-resolution RGB frames in [0, 1].
        reach: largest displacement searched, in LR pixels (``0`` gives zeros).
        ids: optional ``(B, h, w)`` integer instance ids of the reference frame (0 = background).
    """
    b, _, h, w = reference.shape
    if reach <= 0 or h < 4 or w < 4:
        return torch.zeros(b, 2, h, w, dtype=torch.long, device=reference.device)
    block = BLOCK // 2  # in half-resolution pixels

    def per_block(x: Tensor) -> Tensor:
        return F.avg_pool2d(x, block, ceil_mode=True)  # (B, K, hh, ww) -> (B, K, by, bx)

    pools, widths = [per_block], [1]
    index, n = None, 1
    if ids is not None:
        _, index = torch.unique(ids, return_inverse=True)  # instance index 0..n-1 per pixel
        n = int(index.max()) + 1
    if n > 1:
        # Each instance's share of each half-resolution pixel, then costs per (block, instance).
        half = F.avg_pool2d(F.one_hot(index, n).permute(0, 3, 1, 2).float(), 2, ceil_mode=True)  # (B, n, hh, ww)

        def per_instance(x: Tensor) -> Tensor:
            # x (B, K, hh, ww) -> (B, K, n, by, bx): means over each instance's pixels of each block.
            k = x.shape[1]
            pooled = F.avg_pool2d((x.unsqueeze(2) * half.unsqueeze(1)).flatten(1, 2), block, ceil_mode=True)
            return pooled.unflatten(1, (k, n))
        pools.append(per_instance)
        widths.append(n)
    costs, shifts = _shift_costs(reference, support, reach, pools, widths)
    field = _per_pixel(_best(costs[0], shifts, reach).permute(0, 3, 1, 2), h, w)  # (B, 2, h, w)
    if index is None or n == 1:  # no ids, or one instance: the block field
        return field.contiguous()
    inst = _per_pixel(_best(costs[1], shifts, reach).permute(0, 4, 1, 2, 3), h, w)  # (B, 2, n, h, w)
    own = inst.gather(2, index[:, None, None].expand(b, 2, 1, h, w)).squeeze(2)  # (B, 2, h, w)
    coverage = _per_pixel(F.avg_pool2d(half, block, ceil_mode=True), h, w)  # (B, n, h, w)
    enough = coverage.gather(1, index[:, None]) >= 0.25  # (B, 1, h, w)
    return torch.where(enough, own, field).contiguous()


class ShiftPlan:
    """How to read tensors at the displacements of one integer field ``offsets`` ``(B, 2, h, w)``:
    the flat source index of every pixel (clamped to the frame's edge), found once and used for
    every tensor laid out like the field (a neighbour's features, hidden state and instance ids).
    One gather per tensor, whatever the number of distinct displacements (footage with many moving
    regions has dozens). A channels-last tensor moves whole pixels (its channels are contiguous) and
    stays channels-last: copying it to planes, for a gather or after one, costs several times the
    move itself on a CPU."""

    def __init__(self, offsets: Tensor) -> None:
        b, _, h, w = offsets.shape
        rows = (torch.arange(h, device=offsets.device).view(1, h, 1) + offsets[:, 0]).clamp_(0, h - 1)
        cols = (torch.arange(w, device=offsets.device).view(1, 1, w) + offsets[:, 1]).clamp_(0, w - 1)
        self.index = (rows * w + cols).view(b, 1, h * w)  # (B, 1, h*w)
        self._pixels: Tensor | None = None  # the same, as rows of all B frames' pixels stacked

    def _pixel_index(self) -> Tensor:
        if self._pixels is None:
            b, _, hw = self.index.shape
            start = torch.arange(b, device=self.index.device).view(b, 1, 1) * hw
            self._pixels = (self.index + start).view(b * hw)
        return self._pixels

    def __call__(self, x: Tensor) -> Tensor:
        """``x`` ``(B, C, h, w)`` (or ``(B, h, w)``) read at ``(y + dy, x + dx)``, clamped to the edge."""
        squeeze = x.dim() == 3
        if squeeze:
            x = x.unsqueeze(1)
        b, c, h, w = x.shape
        if c > 1 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last):
            pixels = x.permute(0, 2, 3, 1).reshape(b * h * w, c)  # a view: one row per pixel
            return pixels.index_select(0, self._pixel_index()).view(b, h, w, c).permute(0, 3, 1, 2)
        flat = x.reshape(b, c, h * w)
        out = flat.gather(2, self.index.expand(b, c, h * w)).view(b, c, h, w)
        return out[:, 0] if squeeze else out


def shift_by_offsets(x: Tensor, offsets: Tensor) -> Tensor:
    """``x`` ``(B, C, h, w)`` (or ``(B, h, w)``) read at ``(y + dy, x + dx)`` for the integer field
    ``offsets`` ``(B, 2, h, w)``, positions outside the frame clamped to its edge.

    A field from :func:`block_offsets` holds few distinct displacements (one per moving region), so
    the frame is shifted once per distinct displacement and each block takes its own
    (:class:`ShiftPlan`; build one to shift several tensors by the same field)."""
    return ShiftPlan(offsets)(x)
