"""Mask propagation between SAM key frames: soft instance labels carried by local colour matching.

Works on thumbnails (small copies of the frames); the labels are upsampled to the full frame at
the end. Pure torch, no model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["argmax_upsampled", "propagate_soft_labels"]


def propagate_soft_labels(
    soft: Tensor, prev_thumb: Tensor, thumb: Tensor, radius: int = 4, colour_sigma: float = 0.1
) -> Tensor:
    """Carry soft labels from one frame to the next by local colour matching.

    ``soft``: ``(C, ph, pw)`` float label probabilities of the previous frame (channel 0 is the
    background); ``prev_thumb`` and ``thumb``: ``(3, ph, pw)`` float RGB in [0, 1] of the previous
    and the current frame. Each current pixel averages the labels of the previous pixels within
    ``radius`` (a ``(2r+1)^2`` neighbourhood, borders replicated), weighted by
    ``exp(-|colour difference|^2 / (2 colour_sigma^2) - distance^2 / (2 radius^2))``. Returns
    ``(C, ph, pw)`` float (columns still sum to 1).
    """
    r = int(radius)
    if r <= 0:
        return soft
    c, ph, pw = soft.shape
    k = 2 * r + 1
    pad = (r, r, r, r)
    prev_colour = F.unfold(F.pad(prev_thumb[None].float(), pad, mode="replicate"), k).view(3, k * k, ph, pw)
    prev_soft = F.unfold(F.pad(soft[None].float(), pad, mode="replicate"), k).view(c, k * k, ph, pw)
    colour = ((prev_colour - thumb[:, None].float()) ** 2).sum(0)  # (k*k, ph, pw)
    offsets = torch.arange(-r, r + 1, device=soft.device, dtype=torch.float32)
    dist = (offsets.view(-1, 1) ** 2 + offsets.view(1, -1) ** 2).reshape(k * k, 1, 1)
    weights = torch.softmax(-colour / (2 * colour_sigma**2) - dist / (2 * float(r) ** 2), dim=0)
    return (prev_soft * weights[None]).sum(1)


def argmax_upsampled(soft: Tensor, size: tuple[int, int]) -> Tensor:
    """Per-pixel most likely label ``(h, w)`` int64 of ``soft (C, ph, pw)`` upsampled bilinearly to
    ``size`` (channels in chunks, to bound memory at large frame sizes)."""
    best = labels = None
    for start in range(0, soft.shape[0], 4):
        up = F.interpolate(soft[None, start:start + 4], size=size, mode="bilinear", align_corners=False)[0]
        value, index = up.max(0)
        index = index + start
        if best is None:
            best, labels = value, index
        else:
            better = value > best
            best = torch.where(better, value, best)
            labels = torch.where(better, index, labels)
    assert labels is not None
    return labels
