"""Image quality metrics as reported in the super-resolution literature.

PSNR and SSIM on the luma (Y) channel of BT.601 YCbCr, computed on the 8-bit scale ([16, 235] Y),
with ``crop`` pixels removed at every border; tPSNR (the PSNR of frame-to-frame differences against
those of the ground truth) for temporal consistency.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["rgb_to_y", "psnr_y", "ssim_y", "temporal_sq_error_y", "tpsnr_from_errors"]


def rgb_to_y(rgb: Tensor) -> Tensor:
    """``(..., 3, H, W)`` float RGB in [0, 1] -> ``(..., H, W)`` BT.601 luma on the [16, 235] scale."""
    r, g, b = rgb.unbind(dim=-3)
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def _crop(x: Tensor, crop: int) -> Tensor:
    return x[..., crop:-crop, crop:-crop] if crop > 0 else x


def psnr_y(pred: Tensor, target: Tensor, crop: int = 0) -> float:
    """PSNR in dB on Y between ``(..., 3, H, W)`` float RGB images in [0, 1] (mean over images)."""
    a = _crop(rgb_to_y(pred.double().clamp(0, 1)), crop)
    b = _crop(rgb_to_y(target.double().clamp(0, 1)), crop)
    mse = ((a - b) ** 2).flatten(-2).mean(-1).flatten()
    psnr = 10 * torch.log10(255.0**2 / mse.clamp_min(1e-10))
    return float(psnr.mean())


def temporal_sq_error_y(pred_prev: Tensor, pred: Tensor, target_prev: Tensor, target: Tensor, crop: int = 0) -> float:
    """Mean squared error on Y (0-255 scale) between the frame-to-frame change of the prediction
    (``pred - pred_prev``) and that of the ground truth; ``(3, H, W)`` float RGB in [0, 1]."""
    def y(x: Tensor) -> Tensor:
        return _crop(rgb_to_y(x.double().clamp(0, 1)), crop)

    return float((((y(pred) - y(pred_prev)) - (y(target) - y(target_prev))) ** 2).mean())


def tpsnr_from_errors(errors: list[float]) -> float:
    """tPSNR in dB from the per-pair errors of :func:`temporal_sq_error_y` (their mean MSE); ``nan``
    for fewer than two frames. Higher means the output changes between frames as the truth does
    (less flicker)."""
    if not errors:
        return float("nan")
    mse = max(sum(errors) / len(errors), 1e-10)
    return float(10 * math.log10(255.0**2 / mse))


def _gaussian(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim_y(pred: Tensor, target: Tensor, crop: int = 0) -> float:
    """SSIM (Wang et al. 2004: 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03, valid region) on Y,
    the mean over images of ``(..., 3, H, W)`` float RGB in [0, 1]."""
    a = _crop(rgb_to_y(pred.double().clamp(0, 1)), crop)
    b = _crop(rgb_to_y(target.double().clamp(0, 1)), crop)
    a = a.reshape(-1, 1, *a.shape[-2:])
    b = b.reshape(-1, 1, *b.shape[-2:])
    w = _gaussian().to(a.device)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b = F.conv2d(a, w), F.conv2d(b, w)
    var_a = F.conv2d(a * a, w) - mu_a**2
    var_b = F.conv2d(b * b, w) - mu_b**2
    cov = F.conv2d(a * b, w) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.flatten(1).mean(1).mean())
