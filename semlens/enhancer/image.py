"""IMAGE: Implicit Masked Attention Guided pre-alignment.

A supporting frame's features are coarsely warped onto the reference frame without optical flow:
every reference pixel queries the supporting frame's pixels inside a ``(2r + 1)^2`` search window
around the same position and takes the attention-weighted mix of their values. The attention is
masked by instance membership: a pixel of instance ``k`` only looks at pixels of instance ``k`` in the
other frame (background only at background), so motion of one object cannot drag in the pixels of
another. When no pixel of the window shares the query's instance the mask is lifted for that pixel
(it falls back to plain local attention).

The same comparison of ids tells the network where the aligned neighbour cannot help
(:meth:`ImplicitMaskedAlignment.reach_maps`): a pixel whose instance is nowhere in its window of the
neighbour was covered or uncovered by another object between the two frames, and the share of the
window that holds its instance says how close to such an edge it is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semlens.enhancer.blocks import MASKED_LOGIT

__all__ = ["ImplicitMaskedAlignment", "REACH_MAPS", "no_reach_maps"]

#: Channels of :meth:`ImplicitMaskedAlignment.reach_maps`.
REACH_MAPS = 2


def no_reach_maps(like: Tensor) -> Tensor:
    """The reach maps that carry nothing (no instance ids, or nothing aligned): ``(B, 2, h, w)``
    zeros in channel 0 and ones in channel 1, in ``like``'s dtype and device."""
    maps = like.new_zeros(like.shape[0], REACH_MAPS, *like.shape[2:])
    maps[:, 1] = 1.0
    return maps


class ImplicitMaskedAlignment(nn.Module):
    """Masked local attention that aligns a supporting frame to a reference frame.

    Args:
        channels: channels of the features used for matching.
        align_dim: size of the query/key projection.
        radius: search radius ``r`` in pixels (the window is ``2r + 1`` pixels wide).
    """

    def __init__(self, channels: int, align_dim: int, radius: int) -> None:
        super().__init__()
        self.radius = radius
        self.query = nn.Conv2d(channels, align_dim, 1)
        self.key = nn.Conv2d(channels, align_dim, 1)
        # A learned prior over displacements (initialised to prefer small motion).
        ys, xs = torch.meshgrid(torch.arange(-radius, radius + 1), torch.arange(-radius, radius + 1), indexing="ij")
        dist2 = (ys**2 + xs**2).float().flatten()
        self.position_bias = nn.Parameter(-0.5 * dist2 / max(radius, 1))
        self.scale = 1.0 / math.sqrt(align_dim)
        self._outside_cache: dict[tuple[int, int, str], Tensor] = {}

    def _shifts(self) -> list[tuple[int, int]]:
        r = self.radius
        return [(dy, dx) for dy in range(2 * r + 1) for dx in range(2 * r + 1)]

    def forward(
        self,
        reference: Tensor,
        support: Tensor,
        value: Tensor,
        reference_ids: Tensor | None = None,
        support_ids: Tensor | None = None,
    ) -> Tensor:
        """Align ``value`` (laid out like ``support``) to ``reference``.

        Args:
            reference: ``(B, C, h, w)`` features of the reference frame (queries).
            support: ``(B, C, h, w)`` features of the supporting frame (keys).
            value: ``(B, Cv, h, w)`` what to warp, in the supporting frame's geometry.
            reference_ids, support_ids: ``(B, h, w)`` int instance ids (0 = background), or
                ``None`` for unmasked attention.

        Returns:
            ``(B, Cv, h, w)``: ``value`` aligned to the reference frame.
        """
        b, _, h, w = reference.shape
        r = self.radius
        pad = (r, r, r, r)
        shifts = self._shifts()
        # Matching runs on plain (NCHW) layouts: the channel sums below reduce over a strided axis.
        q = (self.query(reference) * self.scale).contiguous()  # (B, A, h, w)
        keys = F.pad(self.key(support).contiguous(), pad)
        # One displacement at a time: no (K x A x h x w) tensor is ever materialised. Inference
        # writes into preallocated buffers (out= does not record gradients, so training stacks).
        if torch.is_grad_enabled():
            logits = torch.stack([(q * keys[:, :, dy:dy + h, dx:dx + w]).sum(dim=1) for dy, dx in shifts], dim=1)
        else:
            logits = q.new_empty(b, len(shifts), h, w)
            product = torch.empty_like(q)
            for k, (dy, dx) in enumerate(shifts):
                torch.sum(torch.mul(q, keys[:, :, dy:dy + h, dx:dx + w], out=product), dim=1, out=logits[:, k])
        logits = logits + self.position_bias.to(logits.dtype)[None, :, None, None]

        # Positions outside the frame never take part; with instance ids, a query only looks at its
        # own instance (where its instance is in reach at all, else at every position in the frame).
        logits.masked_fill_(self._outside(h, w, q.device), MASKED_LOGIT)
        if reference_ids is not None and support_ids is not None:
            same = self._same(reference_ids, support_ids)
            has_match = same.any(dim=1, keepdim=True)
            logits.masked_fill_(has_match & ~same, MASKED_LOGIT)
        attn = torch.softmax(logits, dim=1)  # (B, K, h, w)
        values = F.pad(value, pad)
        out = torch.zeros_like(value)
        for k, (dy, dx) in enumerate(shifts):
            out.addcmul_(attn[:, k:k + 1], values[:, :, dy:dy + h, dx:dx + w])
        return out

    def _same(self, reference_ids: Tensor, support_ids: Tensor) -> Tensor:
        """``(B, K, h, w)`` bool: displacement ``k`` of a pixel lands on its own instance."""
        h, w = reference_ids.shape[-2:]
        r = self.radius
        sup = F.pad(support_ids, (r, r, r, r), value=-1)  # -1 matches no instance
        return torch.stack([sup[:, dy:dy + h, dx:dx + w] == reference_ids for dy, dx in self._shifts()], dim=1)

    def reach_maps(self, reference_ids: Tensor | None, support_ids: Tensor | None, like: Tensor) -> Tensor:
        """``(B, 2, h, w)`` in ``like``'s dtype: channel 0 is 1 where no pixel of the query's
        instance is in its window of the support frame (covered or uncovered between the frames),
        channel 1 the share of the window's positions inside the frame that hold the query's
        instance. Without ids (or with one instance away from the frame's edge): 0 and 1."""
        h, w = like.shape[-2:]
        if reference_ids is None or support_ids is None:
            return no_reach_maps(like)
        same = self._same(reference_ids, support_ids)
        inside = (~self._outside(h, w, like.device)).sum(dim=1, keepdim=True).to(like.dtype)
        missing = (~same.any(dim=1, keepdim=True)).to(like.dtype)
        share = same.sum(dim=1, keepdim=True).to(like.dtype) / inside
        return torch.cat([missing, share], dim=1)

    def _outside(self, h: int, w: int, device: torch.device) -> Tensor:
        """``(1, K, h, w)`` bool: displacement ``k`` of pixel ``(y, x)`` falls outside the frame."""
        if torch.compiler.is_compiling():  # part of the graph: no Python-side cache to guard on
            return self._outside_mask(h, w, device)
        key = (h, w, str(device))
        cached = self._outside_cache.get(key)
        if cached is None:
            cached = self._outside_mask(h, w, device)
            if len(self._outside_cache) >= 8:
                self._outside_cache.clear()
            self._outside_cache[key] = cached
        return cached

    def _outside_mask(self, h: int, w: int, device: torch.device) -> Tensor:
        r = self.radius
        inside = F.pad(torch.ones(1, 1, h, w, dtype=torch.bool, device=device), (r, r, r, r))
        return ~torch.stack([inside[:, 0, dy:dy + h, dx:dx + w] for dy, dx in self._shifts()], dim=1)
