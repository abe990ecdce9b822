"""Degradations that turn high-resolution frames into the low-resolution inputs of training."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["bicubic_degrade", "bicubic_upscale", "quantize"]


def quantize(x: Tensor) -> Tensor:
    """Clamp to [0, 1] and round to the 8-bit grid (what an 8-bit video stores)."""
    return (x.clamp(0, 1) * 255).round() / 255


def bicubic_degrade(hr: Tensor, scale: int) -> Tensor:
    """The standard "BI" degradation.

    ``hr`` ``(..., 3, H, W)`` float RGB in [0, 1] with ``H`` and ``W`` divisible by ``scale`` gives
    ``(..., 3, H / scale, W / scale)``: antialiased bicubic downscaling, clamped and rounded to 8 bits.
    """
    lead = hr.shape[:-3]
    flat = hr.reshape(-1, *hr.shape[-3:]).float()
    lr = F.interpolate(flat, scale_factor=1 / scale, mode="bicubic", antialias=True, align_corners=False)
    return quantize(lr).reshape(*lead, *lr.shape[-3:])


def bicubic_upscale(lr: Tensor, scale: int) -> Tensor:
    """Plain bicubic upscaling ``(..., 3, h, w)`` -> ``(..., 3, s*h, s*w)`` (the usual baseline)."""
    lead = lr.shape[:-3]
    flat = lr.reshape(-1, *lr.shape[-3:]).float()
    up = F.interpolate(flat, scale_factor=scale, mode="bicubic", align_corners=False)
    return up.clamp(0, 1).reshape(*lead, *up.shape[-3:])


