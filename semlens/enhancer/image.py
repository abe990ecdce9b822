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
# Bytes of the aligned values per strip of rows when IMAGE runs on a CPU at inference (about 100
# rows of a 320-pixel-wide, 32-channel float32 frame, 25 of a 1280-pixel-wide one). Without strips
# the time per pixel grows with the frame: on the 2-core Xeon one call took 59 ms at 320x180 and
# 350 ms at 640x360 (6x for 4x the pixels); in 4 MB strips 58 and 240 ms, and 0.69x the whole
# frame's time at 1280x720 (`python benchmarks/image_strips.py`, BENCHMARKS.md).
_STRIP_BYTES = 1 << 22


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
        h = reference.shape[-2]
        pad = (self.radius,) * 4
        # Matching runs on plain (NCHW) layouts: the channel sums below reduce over a strided axis.
        q = (self.query(reference) * self.scale).contiguous()  # (B, A, h, w)
        keys = F.pad(self.key(support).contiguous(), pad)
        values = F.pad(value, pad)
        masked = reference_ids is not None and support_ids is not None
        sup_ids = self._pad_ids(support_ids) if masked else None
        out = torch.zeros_like(value)
        # On a CPU at inference the frame goes through in strips of rows: each strip's logits,
        # attention and output stay in the caches across the window's displacements. Each pixel
        # gets the same arithmetic; only where a strip ends inside a vector of the softmax's
        # vectorised loop may its last bit differ. Training, GPUs and compiled graphs take the
        # frame at once.
        whole = torch.is_grad_enabled() or q.device.type != "cpu" or torch.compiler.is_compiling()
        step = h if whole else max(1, _STRIP_BYTES // (value[0, :, 0].numel() * value.element_size()))
        for top in range(0, h, step):
            self._attend(q, keys, values, reference_ids if masked else None, sup_ids, top, min(h, top + step), out)
        return out

    def _attend(self, q: Tensor, keys: Tensor, values: Tensor, reference_ids: Tensor | None,
                sup_ids: Tensor | None, top: int, bottom: int, out: Tensor) -> None:
        """Rows ``top .. bottom - 1`` of the aligned values, added into ``out``: queries ``q``
        ``(B, A, h, w)``, ``keys`` and ``values`` padded by the radius, ``sup_ids`` the padded
        support ids (None for unmasked attention)."""
        b, _, h, w = q.shape
        shifts = self._shifts()
        rows = slice(top, bottom)
        qs = q[:, :, rows]
        # One displacement at a time: no (K x A x h x w) tensor is ever materialised. Inference
        # writes into preallocated buffers (out= does not record gradients, so training stacks).
        if torch.is_grad_enabled():
            logits = torch.stack([(qs * keys[:, :, top + dy:bottom + dy, dx:dx + w]).sum(dim=1)
                                  for dy, dx in shifts], dim=1)
        else:
            logits = q.new_empty(b, len(shifts), bottom - top, w)
            product = torch.empty_like(qs)
            for k, (dy, dx) in enumerate(shifts):
                torch.sum(torch.mul(qs, keys[:, :, top + dy:bottom + dy, dx:dx + w], out=product), dim=1,
                          out=logits[:, k])
        logits = logits + self.position_bias.to(logits.dtype)[None, :, None, None]

        # Positions outside the frame never take part; with instance ids, a query only looks at its
        # own instance (where its instance is in reach at all, else at every position in the frame).
        logits.masked_fill_(self._outside(h, w, q.device)[:, :, rows], MASKED_LOGIT)
        if reference_ids is not None and sup_ids is not None:
            same = self._same(reference_ids[:, rows], sup_ids, top)
            has_match = same.any(dim=1, keepdim=True)
            logits.masked_fill_(has_match & ~same, MASKED_LOGIT)
        attn = torch.softmax(logits, dim=1)  # (B, K, rows, w)
        target = out if bottom - top == h else out[:, :, rows]
        for k, (dy, dx) in enumerate(shifts):
            target.addcmul_(attn[:, k:k + 1], values[:, :, top + dy:bottom + dy, dx:dx + w])

    def _pad_ids(self, support_ids: Tensor) -> Tensor:
        """The support frame's ids padded by the radius with -1 (which matches no instance)."""
        return F.pad(support_ids, (self.radius,) * 4, value=-1)

    def _same(self, reference_ids: Tensor, sup_ids: Tensor, top: int = 0) -> Tensor:
        """``(B, K, rows, w)`` bool: displacement ``k`` of a pixel in rows ``top ..`` of the
        reference (``reference_ids``, those rows) lands on its own instance in the padded support
        ids ``sup_ids``."""
        rows, w = reference_ids.shape[-2:]
        return torch.stack([sup_ids[:, top + dy:top + dy + rows, dx:dx + w] == reference_ids
                            for dy, dx in self._shifts()], dim=1)

    def reach_maps(self, reference_ids: Tensor | None, support_ids: Tensor | None, like: Tensor) -> Tensor:
        """``(B, 2, h, w)`` in ``like``'s dtype: channel 0 is 1 where no pixel of the query's
        instance is in its window of the support frame (covered or uncovered between the frames),
        channel 1 the share of the window's positions inside the frame that hold the query's
        instance. Without ids (or with one instance away from the frame's edge): 0 and 1."""
        h, w = like.shape[-2:]
        if reference_ids is None or support_ids is None:
            return no_reach_maps(like)
        same = self._same(reference_ids, self._pad_ids(support_ids))
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
