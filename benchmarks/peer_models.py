"""Re-implementations of two published video SR architectures, for speed comparisons only.

Written from the papers' descriptions (random weights, never trained, not meant to restore
anything): what matters here is that the layers, their sizes and the data flow, hence the cost, are
those of the published models.

- :class:`CompactVGG`: the SRVGGNetCompact of Real-ESRGAN's fast video models (Wang et al. 2021):
  a plain stack of 3x3 convolutions with PReLU at low resolution, a last convolution to
  ``3 s^2`` channels, pixel shuffle, plus the nearest-upsampled input.
- :class:`BasicVSRPlusPlus`: BasicVSR++ (Chan et al., CVPR 2022): residual feature extraction,
  second-order grid propagation in four branches (backward, forward, backward, forward), each step
  aligning the two previous states with flow-guided deformable convolution (the deformable
  offsets are residues around the optical flow), a SpyNet-style pyramid flow estimator, and a
  reconstruction with pixel shuffle. About 7.3 M parameters, 1.4 M of them in the flow network.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops import deform_conv2d

__all__ = ["CompactVGG", "PyramidFlow", "BasicVSRPlusPlus", "warp"]


class CompactVGG(nn.Module):
    """SRVGGNetCompact-like: ``(N, 3, h, w)`` -> ``(N, 3, s*h, s*w)``."""

    def __init__(self, scale: int = 4, channels: int = 64, convs: int = 32) -> None:
        super().__init__()
        self.scale = scale
        layers: list[nn.Module] = [nn.Conv2d(3, channels, 3, padding=1), nn.PReLU(channels)]
        for _ in range(convs):
            layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.PReLU(channels)]
        layers.append(nn.Conv2d(channels, 3 * scale * scale, 3, padding=1))
        self.body = nn.Sequential(*layers)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.shuffle(self.body(x)) + F.interpolate(x, scale_factor=self.scale, mode="nearest")


def warp(x: Tensor, flow: Tensor) -> Tensor:
    """Sample ``x`` ``(N, C, h, w)`` at each pixel plus ``flow`` ``(N, 2, h, w)`` (x then y, pixels)."""
    n, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=x.dtype),
                            torch.arange(w, device=x.device, dtype=x.dtype), indexing="ij")
    gx = (xs + flow[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    return F.grid_sample(x, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="zeros",
                         align_corners=True)


class _FlowLevel(nn.Module):
    """One pyramid level: five 7x7 convolutions from (reference, warped support, flow) to a flow update."""

    def __init__(self) -> None:
        super().__init__()
        widths = (8, 32, 64, 32, 16, 2)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            layers.append(nn.Conv2d(a, b, 7, padding=3))
            if i < len(widths) - 2:
                layers.append(nn.ReLU(inplace=True))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class PyramidFlow(nn.Module):
    """SpyNet-style coarse-to-fine optical flow: six levels, each refining the upsampled flow of the
    coarser one from the reference and the support warped by it. ``(N, 3, h, w)`` pairs ->
    ``(N, 2, h, w)`` flow from ``ref`` to ``sup`` in pixels."""

    def __init__(self, levels: int = 6) -> None:
        super().__init__()
        self.levels = nn.ModuleList(_FlowLevel() for _ in range(levels))
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    def forward(self, ref: Tensor, sup: Tensor) -> Tensor:
        n, _, h, w = ref.shape
        unit = 2 ** (len(self.levels) - 1)
        hh, ww = math.ceil(h / unit) * unit, math.ceil(w / unit) * unit
        ref_p = [(F.interpolate(ref, size=(hh, ww), mode="bilinear", align_corners=False) - self.mean) / self.std]
        sup_p = [(F.interpolate(sup, size=(hh, ww), mode="bilinear", align_corners=False) - self.mean) / self.std]
        for _ in range(len(self.levels) - 1):
            ref_p.insert(0, F.avg_pool2d(ref_p[0], 2))
            sup_p.insert(0, F.avg_pool2d(sup_p[0], 2))
        flow = ref.new_zeros(n, 2, hh // unit, ww // unit)
        for k, level in enumerate(self.levels):
            if k:
                flow = F.interpolate(flow, scale_factor=2, mode="bilinear", align_corners=True) * 2.0
            flow = flow + level(torch.cat([ref_p[k], warp(sup_p[k], flow), flow], dim=1))
        flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
        return flow * torch.tensor([w / ww, h / hh], dtype=flow.dtype, device=flow.device).view(1, 2, 1, 1)


class _ResidualBlock(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))


def _input_and_blocks(inputs: int, c: int, blocks: int) -> nn.Sequential:
    """A 3x3 convolution from ``inputs`` to ``c`` channels, leaky ReLU, ``blocks`` residual blocks."""
    return nn.Sequential(nn.Conv2d(inputs, c, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
                         *[_ResidualBlock(c) for _ in range(blocks)])


class _SecondOrderAlign(nn.Module):
    """Flow-guided deformable alignment of the two previous states (``2C`` channels) to the current
    frame: offsets = flow + bounded learned residues, plus a modulation mask, from the states
    pre-warped by their flows and the current features."""

    def __init__(self, c: int, groups: int = 16, max_residue: float = 10.0) -> None:
        super().__init__()
        self.groups, self.max_residue = groups, max_residue
        self.offsets = nn.Sequential(
            nn.Conv2d(3 * c + 4, c, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(c, 27 * groups, 3, padding=1),
        )
        nn.init.zeros_(self.offsets[-1].weight)
        nn.init.zeros_(self.offsets[-1].bias)
        self.weight = nn.Parameter(torch.empty(c, 2 * c, 3, 3))
        self.bias = nn.Parameter(torch.zeros(c))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(self, states: Tensor, condition: Tensor, flow1: Tensor, flow2: Tensor) -> Tensor:
        o1, o2, mask = self.offsets(torch.cat([condition, flow1, flow2], dim=1)).chunk(3, dim=1)
        o1 = self.max_residue * torch.tanh(o1) + flow1.flip(1).repeat(1, o1.shape[1] // 2, 1, 1)
        o2 = self.max_residue * torch.tanh(o2) + flow2.flip(1).repeat(1, o2.shape[1] // 2, 1, 1)
        return deform_conv2d(states, torch.cat([o1, o2], dim=1), self.weight, self.bias, padding=1,
                             mask=torch.sigmoid(mask))


class BasicVSRPlusPlus(nn.Module):
    """BasicVSR++-like: ``(N, T, 3, h, w)`` -> ``(N, T, 3, s*h, s*w)``, ``s`` a power of two."""

    BRANCHES = ("backward_1", "forward_1", "backward_2", "forward_2")

    def __init__(self, scale: int = 4, channels: int = 64, extract_blocks: int = 5, propagate_blocks: int = 7,
                 reconstruct_blocks: int = 5) -> None:
        super().__init__()
        if scale & (scale - 1) or scale < 2:
            raise ValueError("scale must be a power of two")
        c = channels
        self.scale, self.channels = scale, c
        self.flow = PyramidFlow()
        self.extract = _input_and_blocks(3, c, extract_blocks)
        self.align = nn.ModuleDict({b: _SecondOrderAlign(c) for b in self.BRANCHES})
        self.backbone = nn.ModuleDict({b: _input_and_blocks((2 + i) * c, c, propagate_blocks)
                                       for i, b in enumerate(self.BRANCHES)})
        self.reconstruct = _input_and_blocks(5 * c, c, reconstruct_blocks)
        up: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            up += [nn.Conv2d(c, 4 * c, 3, padding=1), nn.PixelShuffle(2), nn.LeakyReLU(0.1, inplace=True)]
        self.upsample = nn.Sequential(*up, nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
                                      nn.Conv2d(c, 3, 3, padding=1))

    def _propagate(self, name: str, feats: dict[str, list[Tensor]], flows: Tensor) -> list[Tensor]:
        spatial = feats["spatial"]
        t = len(spatial)
        order = list(range(t))[::-1] if name.startswith("backward") else list(range(t))
        out: list[Tensor] = [spatial[0]] * t
        prop = spatial[0].new_zeros(spatial[0].shape)
        done: list[Tensor] = []
        for step, idx in enumerate(order):
            current = spatial[idx]
            if step > 0:
                # flows[k] is the flow from frame k (forward: k + 1) to its predecessor in `order`
                flow1 = flows[:, idx if name.startswith("backward") else idx - 1]
                cond1 = warp(prop, flow1)
                older = torch.zeros_like(prop)
                flow2 = torch.zeros_like(flow1)
                cond2 = torch.zeros_like(prop)
                if step > 1:
                    older = done[-2]
                    prev = order[step - 1]
                    flow_prev = flows[:, prev if name.startswith("backward") else prev - 1]
                    flow2 = flow1 + warp(flow_prev, flow1)
                    cond2 = warp(older, flow2)
                condition = torch.cat([cond1, current, cond2], dim=1)
                prop = self.align[name](torch.cat([prop, older], dim=1), condition, flow1, flow2)
            earlier = [feats[b][idx] for b in self.BRANCHES if b in feats]
            prop = prop + self.backbone[name](torch.cat([current, *earlier, prop], dim=1))
            done.append(prop)
            out[idx] = prop
        return out

    def forward(self, frames: Tensor) -> Tensor:
        n, t, _, h, w = frames.shape
        flat = frames.reshape(n * t, 3, h, w)
        spatial = self.extract(flat).view(n, t, self.channels, h, w)
        feats: dict[str, list[Tensor]] = {"spatial": [spatial[:, i] for i in range(t)]}
        if t > 1:
            a = frames[:, :-1].reshape(-1, 3, h, w)
            b = frames[:, 1:].reshape(-1, 3, h, w)
            backward_flows = self.flow(a, b).view(n, t - 1, 2, h, w)  # frame k -> k + 1
            forward_flows = self.flow(b, a).view(n, t - 1, 2, h, w)  # frame k + 1 -> k
        else:
            backward_flows = forward_flows = frames.new_zeros(n, 0, 2, h, w)
        for name in self.BRANCHES:
            feats[name] = self._propagate(name, feats, backward_flows if name.startswith("backward") else forward_flows)
        outputs = []
        for i in range(t):
            x = self.reconstruct(torch.cat([feats[k][i] for k in ("spatial", *self.BRANCHES)], dim=1))
            base = F.interpolate(frames[:, i], scale_factor=self.scale, mode="bilinear", align_corners=False)
            outputs.append(self.upsample(x) + base)
        return torch.stack(outputs, dim=1)
