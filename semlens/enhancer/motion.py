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

from collections.abc import Callable

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


def _luma_half(frames: Tensor) -> Tensor:
    """``(B, 3, h, w)`` RGB -> ``(B, 1, ceil(h/2), ceil(w/2))`` luma, 2x2 averaged, float32."""
    x = frames.float()
    y = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    return F.avg_pool2d(y, 2, ceil_mode=True)


@torch.no_grad()
def block_offsets(reference: Tensor, support: Tensor, reach: int) -> Tensor:
    """Integer displacement field ``(B, 2, h, w)`` (dy, dx) such that ``support[y + dy, x + dx]``
    matches ``reference[y, x]``; constant over :data:`BLOCK` x :data:`BLOCK` blocks, multiples of 2,
    each component within ``[-reach, reach]``.

    Args:
        reference, support: ``(B, 3, h, w)`` low-resolution RGB frames in [0, 1].
        reach: largest displacement searched, in LR pixels (``0`` gives zeros).
    """
    b, _, h, w = reference.shape
    if reach <= 0 or h < 4 or w < 4:
        return torch.zeros(b, 2, h, w, dtype=torch.long, device=reference.device)
    ref, sup = _luma_half(reference), _luma_half(support)
    hh, ww = ref.shape[-2:]
    half_reach = max(1, reach // 2)
    block = BLOCK // 2
    padded = F.pad(sup, (half_reach,) * 4)
    inside = F.pad(torch.ones_like(sup), (half_reach,) * 4)
    costs = []
    shifts = [(dy, dx) for dy in range(-half_reach, half_reach + 1) for dx in range(-half_reach, half_reach + 1)]
    for dy, dx in shifts:
        rows = slice(half_reach + dy, half_reach + dy + hh)
        cols = slice(half_reach + dx, half_reach + dx + ww)
        valid = inside[:, :, rows, cols]
        # Mean difference over the block's pixels whose match lies inside the frame; a displacement
        # that takes most of the block out of the frame is not a candidate.
        diff = F.avg_pool2d((padded[:, :, rows, cols] - ref).abs() * valid, block, ceil_mode=True)
        share = F.avg_pool2d(valid, block, ceil_mode=True)
        costs.append(torch.where(share > 0.5 * share.amax(), diff / share.clamp_min(1e-6), torch.inf))
    cost = torch.cat(costs, dim=1)  # (B, K, blocks_y, blocks_x)
    zero = shifts.index((0, 0))
    # Zero motion wins ties and near-ties: a flat block has no motion to find.
    finite = torch.where(cost.isfinite(), cost, 0.0)
    cost[:, zero] -= _ZERO_PREFERENCE * finite.sum(dim=1) / cost.isfinite().sum(dim=1) + 1e-6
    best = cost.argmin(dim=1)  # (B, by, bx)
    table = torch.tensor(shifts, dtype=torch.long, device=reference.device) * 2  # back to LR pixels
    field = table[best].permute(0, 3, 1, 2).clamp(-reach, reach)  # (B, 2, by, bx)
    field = field.repeat_interleave(BLOCK, dim=2).repeat_interleave(BLOCK, dim=3)
    return field[:, :, :h, :w].contiguous()


def _shifter(x: Tensor, reach: int) -> Callable[[int, int], Tensor]:
    """A function ``(dy, dx) -> x read at (y + dy, x + dx)``, clamped to the frame's edge, for
    ``|dy|, |dx| <= reach``: float tensors are edge-padded once and each shift is a view of it."""
    h, w = x.shape[-2:]
    if x.is_floating_point():
        padded = F.pad(x, (reach,) * 4, mode="replicate")
        return lambda dy, dx: padded[..., reach + dy:reach + dy + h, reach + dx:reach + dx + w]

    def select(dy: int, dx: int) -> Tensor:
        rows = (torch.arange(h, device=x.device) + dy).clamp_(0, h - 1)
        cols = (torch.arange(w, device=x.device) + dx).clamp_(0, w - 1)
        return x.index_select(-2, rows).index_select(-1, cols)
    return select


class ShiftPlan:
    """How to read tensors at the displacements of one integer field ``offsets`` ``(B, 2, h, w)``:
    its distinct displacements and where each applies, found once and used for every tensor laid
    out like the field (a neighbour's features, hidden state and instance ids)."""

    def __init__(self, offsets: Tensor) -> None:
        corners = offsets[:, :, ::BLOCK, ::BLOCK]
        # Block-constant fields (those of block_offsets) are described exactly by their block corners.
        block_constant = torch.equal(corners.repeat_interleave(BLOCK, 2).repeat_interleave(BLOCK, 3)[
            :, :, :offsets.shape[2], :offsets.shape[3]], offsets)
        distinct = torch.unique((corners if block_constant else offsets).permute(0, 2, 3, 1).reshape(-1, 2), dim=0)
        self.pairs: list[tuple[int, int]] = [(dy, dx) for dy, dx in distinct.tolist()]
        self.reach = max(max(abs(dy), abs(dx)) for dy, dx in self.pairs)
        # Where each displacement after the first applies, (B, 1, h, w); the first is the base.
        self.where = [((offsets[:, 0] == dy) & (offsets[:, 1] == dx)).unsqueeze(1) for dy, dx in self.pairs[1:]]

    def __call__(self, x: Tensor) -> Tensor:
        """``x`` ``(B, C, h, w)`` (or ``(B, h, w)``) read at ``(y + dy, x + dx)``, clamped to the edge."""
        squeeze = x.dim() == 3
        if squeeze:
            x = x.unsqueeze(1)
        shift = _shifter(x, self.reach)
        out = shift(*self.pairs[0])
        for (dy, dx), here in zip(self.pairs[1:], self.where):
            out = torch.where(here, shift(dy, dx), out)
        return out[:, 0] if squeeze else out


def shift_by_offsets(x: Tensor, offsets: Tensor) -> Tensor:
    """``x`` ``(B, C, h, w)`` (or ``(B, h, w)``) read at ``(y + dy, x + dx)`` for the integer field
    ``offsets`` ``(B, 2, h, w)``, positions outside the frame clamped to its edge.

    A field from :func:`block_offsets` holds few distinct displacements (one per moving region), so
    the frame is shifted once per distinct displacement and each block takes its own
    (:class:`ShiftPlan`; build one to shift several tensors by the same field)."""
    return ShiftPlan(offsets)(x)
