"""The ``lite`` extractor: weight-free region instances for CPUs and offline use.

Each frame is clustered into at most ``N`` regions by k-means over colour and position, computed at
a low working resolution and warm-started from the previous frame's centres, so a region keeps its
slot (and track id) from frame to frame and window to window. Region descriptors are the instance
tokens; frame statistics are the scene token. Every pixel of the full-resolution frame is then
assigned to its nearest centre, so masks have full-resolution boundaries.

Each row of a batch is its own stream (see :class:`~semlens.semantics.types.InstanceExtractor`):
it is warm-started from the same row of the previous call.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from semlens.semantics.types import Semantics

__all__ = ["LiteExtractor", "LITE_INSTANCE_DIM", "LITE_GLOBAL_DIM", "exact_region_sums", "region_sums"]

LITE_INSTANCE_DIM = 8
LITE_GLOBAL_DIM = 8

#: fixed-point steps per unit of :func:`exact_region_sums` (2^29 pixels of value 2 still fit an int64)
_FIXED_POINT = 2.0**32


def exact_region_sums(values: Tensor, assign: Tensor, regions: int) -> tuple[Tensor, Tensor]:
    """Per-region sums ``(n, C, regions)`` of ``values (n, C, P)`` in ``[0, 2]`` and pixel counts
    ``(n, regions)``, ``assign (n, P)`` giving each pixel's region, independent of the order in
    which the pixels are added.

    A float scatter-add on a GPU adds in whatever order its atomic operations land, so the same
    input can give sums that differ in the last bits from run to run. Here each value is rounded
    to a multiple of ``2^-32`` and added as an int64 (integer addition does not depend on the
    order), then converted back: the result is bit-identical on every run. Before its final
    rounding to float32 it is off from the exact sum by at most ``2^-33`` per pixel, far less than
    a float32 scatter-add's own rounding errors.
    """
    n, c, _ = values.shape
    fixed = torch.round(values.float() * _FIXED_POINT).long()  # exact: scaling by a power of two
    sums = fixed.new_zeros(n, c, regions).scatter_add_(2, assign[:, None].expand_as(fixed), fixed)
    count = assign.new_zeros(n, regions).scatter_add_(1, assign, torch.ones_like(assign))
    # One rounding (int64 -> float), then an exact division by a power of two; no float64 needed.
    return sums.to(values.dtype) / _FIXED_POINT, count.to(values.dtype)


def region_sums(values: Tensor, assign: Tensor, regions: int, exact: bool | None = None) -> tuple[Tensor, Tensor]:
    """Per-region sums ``(n, C, regions)`` of ``values (n, C, P)`` and pixel counts ``(n, regions)``.

    ``exact``: use :func:`exact_region_sums` (the same bits on every run, on any device). ``None``:
    on every device but the CPU, whose float scatter-add is already deterministic (and faster).
    """
    if exact is None:
        exact = values.device.type != "cpu"
    if exact:
        return exact_region_sums(values, assign, regions)
    n, c, _ = values.shape
    sums = values.new_zeros(n, c, regions).scatter_add_(2, assign[:, None].expand_as(values), values)
    count = values.new_zeros(n, regions).scatter_add_(1, assign, values.new_ones(()).expand_as(assign))
    return sums, count


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
        exact_sums: add the region statistics with :func:`exact_region_sums` (bit-identical from
            run to run on any device). ``None`` (default): on every device but the CPU, whose float
            scatter-add is already deterministic (and faster); see :func:`region_sums`.
    """

    name = "lite"
    instance_dim = LITE_INSTANCE_DIM
    global_dim = LITE_GLOBAL_DIM

    def __init__(self, max_instances: int = 8, work_size: int = 64, iterations: int = 3,
                 position_weight: float = 0.6, min_area: float = 0.01, exact_sums: bool | None = None) -> None:
        self.max_instances = max_instances
        self.work_size = work_size
        self.iterations = iterations
        self.position_weight = position_weight
        self.min_area = min_area
        self.exact_sums = exact_sums
        self._centres: Tensor | None = None  # (B, N, 5): the last frame's centres of each stream

    #: frames are assigned to their regions at full resolution in batches of about this many pixels
    FULL_RES_PIXELS = 1 << 20

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
        # At least one pixel a side: a very wide or tall frame would lose its short side.
        # (``area`` is adaptive average pooling: the same pixels as ``scale_factor`` gives, floored.)
        work = (max(1, math.floor(h * factor)), max(1, math.floor(w * factor)))
        # The clustering runs frame by frame at the working size (each frame starts from the last
        # one's centres); the full-resolution work runs on several frames at once.
        centres_per_frame = []
        for i in range(t):
            frame = frames[:, i]
            small = F.interpolate(frame, size=work, mode="area") if factor < 1.0 else frame
            feats_small = self._features(small)
            if self._centres is None or self._centres.shape[0] != b:
                centres = self._kmeans(feats_small, self._initial_centres(feats_small), 3 * self.iterations)
            else:
                centres = self._kmeans(feats_small, self._centres.to(frames.device), self.iterations)
            self._centres = centres
            centres_per_frame.append(centres)
        all_centres = torch.stack(centres_per_frame, dim=1).flatten(0, 1)  # (B*T, N, 5)
        flat = frames.flatten(0, 1)  # (B*T, 3, h, w)
        step = max(1, self.FULL_RES_PIXELS // max(1, h * w))
        masks, tokens, scenes, valid = [], [], [], []
        for start in range(0, b * t, step):
            part, centres = flat[start : start + step], all_centres[start : start + step]
            n = part.shape[0]
            assign = self._assign(part, centres)  # (n, hw)
            sums, count = self._region_sums(part, assign)
            area = count / (h * w)  # (n, N)
            present = area >= self.min_area
            ids = torch.where(present.gather(1, assign), assign + 1, torch.zeros_like(assign))
            masks.append(ids.view(n, h, w))
            tokens.append(self._region_tokens(sums, count, area, centres))
            scenes.append(self._scene_token(part))
            valid.append(present)
        track_ids = torch.arange(self.max_instances, device=frames.device).expand(b, -1).clone()
        return Semantics(
            masks=torch.cat(masks).view(b, t, h, w),
            instance_tokens=torch.cat(tokens).view(b, t, self.max_instances, -1),
            global_tokens=torch.cat(scenes).view(b, t, -1),
            valid=torch.cat(valid).view(b, t, self.max_instances),
            track_ids=track_ids,
        )

    def _assign(self, frames: Tensor, centres: Tensor) -> Tensor:
        """Nearest centre of every pixel of ``(n, 3, h, w)`` frames, ``(n, h*w)``. The squared
        distance to a centre ``c`` is ``|f|^2 - 2 f.c + |c|^2``; ``|f|^2`` is the same for every
        centre, and the position part of ``f.c`` is a sum of a row and a column term."""
        n, _, h, w = frames.shape
        ys = torch.linspace(0, 1, h, device=frames.device, dtype=frames.dtype) * self.position_weight
        xs = torch.linspace(0, 1, w, device=frames.device, dtype=frames.dtype) * self.position_weight
        score = torch.bmm(frames.flatten(2).transpose(1, 2), centres[..., :3].transpose(1, 2))  # (n, hw, N)
        grid = score.view(n, h, w, -1)
        grid.add_(ys.view(1, h, 1, 1) * centres[:, None, None, :, 3]).add_(xs.view(1, 1, w, 1) * centres[:, None, None, :, 4])
        score.mul_(2).sub_(centres.square().sum(-1)[:, None])
        return score.argmax(dim=-1)

    def _region_sums(self, frames: Tensor, assign: Tensor) -> tuple[Tensor, Tensor]:
        """Per region of ``assign``: sums of R, G, B, luma, luma^2 and gradient ``(n, 6, N)``, and
        pixel counts ``(n, N)``."""
        luma = _luma(frames)
        values = torch.cat([frames.flatten(2), luma.flatten(1)[:, None], luma.square().flatten(1)[:, None],
                            _gradient(luma).flatten(1)[:, None]], dim=1)  # (n, 6, hw)
        return region_sums(values, assign, self.max_instances, self.exact_sums)

    def _region_tokens(self, sums: Tensor, count: Tensor, area: Tensor, centres: Tensor) -> Tensor:
        """``(n, N, 8)``: mean RGB, luma std, centre (y, x), area, mean gradient."""
        mean = sums / count.clamp_min(1.0)[:, None]  # (n, 6, N)
        mean_rgb = mean[:, :3].transpose(1, 2)
        var_l = mean[:, 4] - mean[:, 3] ** 2
        pos = centres[..., 3:5] / self.position_weight
        return torch.cat([mean_rgb, var_l.clamp_min(0).sqrt()[..., None], pos, area[..., None] * 4,
                          mean[:, 5, :, None] * 4], dim=-1)

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
