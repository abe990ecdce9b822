"""Tokens the enhancer pools itself: instance tokens from its features over each instance's mask,
the scene token from its features over the whole frame.

A model built with ``token_source="pooled"`` reads only the extractor's masks (ids per pixel),
validity and slots, never the extractor's own tokens, so any extractor (lite, SAM, given masks,
none) drives it. The pooling runs in float32 with autocast off: the sums over a 720p frame reach
far past float16's largest value.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from semlens.enhancer.isee import TilePooling

__all__ = ["MaskPooledTokens", "region_maps", "pooled_means"]


def region_maps(ids: Tensor | None, slots: int, b: int, hw: int, device: torch.device) -> Tensor:
    """``(B, 1 + N, hw)`` float32 0/1 maps: row 0 is the whole frame (the scene), row ``k`` the
    pixels whose id is ``k`` (instance slot ``k - 1``). ``ids`` ``(B, h, w)`` int or ``None`` (no
    instances)."""
    maps = torch.zeros(b, 1 + slots, hw, device=device, dtype=torch.float32)
    maps[:, 0] = 1.0
    if ids is not None and slots > 0:
        flat = ids.reshape(b, 1, hw)
        rows = torch.arange(1, slots + 1, device=device).view(1, slots, 1)
        maps[:, 1:] = (flat == rows).float()
    return maps


def pooled_means(maps: Tensor, x: Tensor, pooling: TilePooling | None) -> tuple[Tensor, Tensor]:
    """Mean of ``x`` ``(B, C, hw)`` over each map of ``maps`` ``(B, R, hw)``: ``(B, R, C)`` float32,
    and each map's pixel count ``(B, R)``. In a tiled run, ``pooling`` adds the other tiles' shares
    (the means are then those of the whole frame)."""
    with torch.autocast(device_type=x.device.type, enabled=False):
        x32 = x.float()
        if pooling is None:
            sums, area = torch.bmm(maps, x32.transpose(1, 2)), maps.sum(dim=2)
        else:
            sums, area = pooling.pool(maps, x32)
            sums, area = sums.float(), area.float()
        return sums / area.clamp_min(1.0).unsqueeze(-1), area


class MaskPooledTokens(nn.Module):
    """Projects the mean features of the scene and of each instance to tokens.

    ``features`` ``(B, C, h, w)`` of one frame and ``ids`` ``(B, h, w)`` (or ``None``) with
    ``slots`` instance slots give the scene token ``(B, D)``, instance tokens ``(B, N, D)`` and
    whether each slot has pixels in this frame ``(B, N)`` bool.
    """

    def __init__(self, channels: int, token_dim: int) -> None:
        super().__init__()
        self.instance = nn.Linear(channels, token_dim)
        self.scene = nn.Linear(channels, token_dim)

    def forward(self, features: Tensor, ids: Tensor | None, slots: int,
                pooling: TilePooling | None = None) -> tuple[Tensor, Tensor, Tensor]:
        b, _, h, w = features.shape
        maps = region_maps(ids, slots, b, h * w, features.device)
        means, area = pooled_means(maps, features.flatten(2), pooling)
        dtype = self.scene.weight.dtype
        scene = self.scene(means[:, 0].to(dtype))
        inst = self.instance(means[:, 1:].to(dtype))
        return scene, inst, area[:, 1:] > 0
