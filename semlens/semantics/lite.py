"""The ``lite`` extractor: weight-free region instances for CPUs and offline use.

Each frame is clustered into at most ``N`` regions by k-means over colour and position, computed at
a low working resolution and warm-started from the previous frame's centres, so a region keeps its
slot (and track id) from frame to frame and window to window. Region descriptors are the instance
tokens; frame statistics are the scene token. Every pixel of the full-resolution frame is then
assigned to its nearest centre, so masks have full-resolution boundaries.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from semlens.semantics.types import Semantics

__all__ = ["LiteExtractor", "LITE_INSTANCE_DIM", "LITE_GLOBAL_DIM"]

LITE_INSTANCE_DIM = 8
LITE_GLOBAL_DIM = 8


def _luma(frames: Tensor) -> Tensor:
    r, g, b = frames.unbind(dim=-3)
    return 0.299 * r + 0.587 * g + 0.114 * b


def _gradient(luma: Tensor) -> Tensor:
    """Absolute gradient magnitude of ``(..., h, w)`` luma (same shape, zero at the last row/col)."""
    gx = F.pad((luma[..., :, 1:] - luma[..., :, :-1]).abs(), (0, 1, 0, 0))
    gy = F.pad((luma[..., 1:, :] - luma[..., :-1, :]).abs(), (0, 0, 0, 1))
    return gx + gy


class LiteExtractor:
    """Colour + position k-means regions as instances (no weights, a few ms per frame).

    Args:
        max_instances: number of region slots ``N``.
        work_size: longest side of the frame used for clustering.
        iterations: k-means iterations per frame (more on the first frame of a stream).
        position_weight: weight of the (normalised) pixel position against colour.
        min_area: regions covering less than this fraction of a frame are background (id 0).
    """

    name = "lite"
    instance_dim = LITE_INSTANCE_DIM
    global_dim = LITE_GLOBAL_DIM

    def __init__(self, max_instances: int = 8, work_size: int = 64, iterations: int = 3,
                 position_weight: float = 0.6, min_area: float = 0.01) -> None:
        self.max_instances = max_instances
        self.work_size = work_size
        self.iterations = iterations
        self.position_weight = position_weight
        self.min_area = min_area
        self._centres: Tensor | None = None  # (B, N, 5) state of the stream

    def reset(self) -> None:
        self._centres = None

    def _features(self, frame: Tensor) -> Tensor:
        """``(B, 3, h, w)`` -> ``(B, h*w, 5)``: RGB and weighted normalised (y, x)."""
        b, _, h, w = frame.shape
        ys = torch.linspace(0, 1, h, device=frame.device, dtype=frame.dtype)
        xs = torch.linspace(0, 1, w, device=frame.device, dtype=frame.dtype)
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        pos = torch.stack([gy, gx]).expand(b, -1, -1, -1) * self.position_weight
        return torch.cat([frame, pos], dim=1).flatten(2).transpose(1, 2)

    def _initial_centres(self, feats: Tensor) -> Tensor:
        """Deterministic start: N evenly spaced samples in raster order."""
        p = feats.shape[1]
        idx = torch.linspace(0, p - 1, self.max_instances + 2, device=feats.device)[1:-1].round().long()
        return feats[:, idx].clone()

    def _kmeans(self, feats: Tensor, centres: Tensor, iterations: int) -> Tensor:
        for _ in range(iterations):
            assign = torch.cdist(feats, centres).argmin(dim=-1)  # (B, P)
            onehot = F.one_hot(assign, self.max_instances).to(feats.dtype)  # (B, P, N)
            count = onehot.sum(dim=1)  # (B, N)
            sums = torch.einsum("bpn,bpf->bnf", onehot, feats)
            # Empty clusters keep their previous centre (so their slot stays put).
            centres = torch.where(count[..., None] > 0, sums / count.clamp_min(1)[..., None], centres)
        return centres

    @torch.no_grad()
    def __call__(self, frames: Tensor) -> Semantics:
        """``(B, T, 3, h, w)`` float RGB in [0, 1] -> :class:`Semantics` with ``N`` region slots."""
        b, t, _, h, w = frames.shape
        frames = frames.float()
        factor = min(1.0, self.work_size / max(h, w))
        masks, tokens, scenes, valid = [], [], [], []
        for i in range(t):
            frame = frames[:, i]
            small = F.interpolate(frame, scale_factor=factor, mode="area") if factor < 1.0 else frame
            feats_small = self._features(small)
            if self._centres is None or self._centres.shape[0] != b:
                centres = self._kmeans(feats_small, self._initial_centres(feats_small), 3 * self.iterations)
            else:
                centres = self._kmeans(feats_small, self._centres.to(frames.device), self.iterations)
            self._centres = centres
            assign = torch.cdist(self._features(frame), centres).argmin(dim=-1)  # (B, hw)
            onehot = F.one_hot(assign, self.max_instances).to(frame.dtype)  # (B, hw, N)
            area = onehot.mean(dim=1)  # (B, N)
            present = area >= self.min_area
            ids = torch.where(present.gather(1, assign), assign + 1, torch.zeros_like(assign))
            masks.append(ids.view(b, h, w))
            tokens.append(self._region_tokens(frame, onehot, area, centres))
            scenes.append(self._scene_token(frame))
            valid.append(present)
        track_ids = torch.arange(self.max_instances, device=frames.device).expand(b, -1).clone()
        return Semantics(
            masks=torch.stack(masks, dim=1),
            instance_tokens=torch.stack(tokens, dim=1),
            global_tokens=torch.stack(scenes, dim=1),
            valid=torch.stack(valid, dim=1),
            track_ids=track_ids,
        )

    def _region_tokens(self, frame: Tensor, onehot: Tensor, area: Tensor, centres: Tensor) -> Tensor:
        """``(B, N, 8)``: mean RGB, luma std, centre (y, x), area, mean gradient."""
        luma = _luma(frame).flatten(1)  # (B, hw)
        grad = _gradient(_luma(frame)).flatten(1)
        count = onehot.sum(dim=1).clamp_min(1.0)  # (B, N)
        mean_rgb = torch.einsum("bpn,bcp->bnc", onehot, frame.flatten(2)) / count[..., None]
        mean_l = torch.einsum("bpn,bp->bn", onehot, luma) / count
        var_l = torch.einsum("bpn,bp->bn", onehot, luma**2) / count - mean_l**2
        mean_g = torch.einsum("bpn,bp->bn", onehot, grad) / count
        pos = centres[..., 3:5] / self.position_weight
        return torch.cat([mean_rgb, var_l.clamp_min(0).sqrt()[..., None], pos, area[..., None] * 4,
                          mean_g[..., None] * 4], dim=-1)

    @staticmethod
    def _scene_token(frame: Tensor) -> Tensor:
        """``(B, 8)``: mean RGB, std RGB, mean luma gradient, luma contrast."""
        luma = _luma(frame)
        # A single-pixel frame has no spread (std() of one sample is NaN and would poison the token).
        spread = frame.std(dim=(2, 3)) if frame.shape[-2] * frame.shape[-1] > 1 else frame.new_zeros(frame.shape[:2])
        return torch.cat([
            frame.mean(dim=(2, 3)), spread,
            _gradient(luma).mean(dim=(1, 2))[:, None] * 4,
            (luma.amax(dim=(1, 2)) - luma.amin(dim=(1, 2)))[:, None],
        ], dim=-1)
