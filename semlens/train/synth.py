"""Synthetic video clips from still images: a moving camera plus independently moving objects.

A background photo is filmed by a virtual camera that pans, zooms, rotates slightly and shakes by
sub-pixel amounts; a few object layers, cut out of other photos with soft blob-shaped mattes, move
along their own paths on top of it. Instances therefore move differently from the scene, which is
what Semantic Lens's instance-centric alignment is for. The generator also returns the objects'
instance masks (``0`` = background, ``k`` = object ``k``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["MotionConfig", "synthetic_clip", "blob_matte"]


@dataclass(frozen=True)
class MotionConfig:
    """Ranges of the random motion, in output (HR) pixels per frame unless said otherwise."""

    camera_speed: float = 6.0
    camera_zoom_rate: float = 0.01
    camera_rotation: float = 0.01  # radians per frame
    camera_shake: float = 0.5
    object_speed: float = 10.0
    object_rotation: float = 0.03
    max_objects: int = 3
    object_size: tuple[float, float] = (0.25, 0.55)  # fraction of the output size


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=g))


def blob_matte(size: int, g: torch.Generator) -> Tensor:
    """A soft random blob ``(1, size, size)`` in [0, 1]: a few Gaussians, thresholded smoothly."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    field = torch.zeros(size, size)
    for _ in range(int(torch.randint(2, 5, (), generator=g))):
        cy, cx = _uniform(g, -0.35, 0.35), _uniform(g, -0.35, 0.35)
        sy, sx = _uniform(g, 0.2, 0.45), _uniform(g, 0.2, 0.45)
        field = field + torch.exp(-(((ys - cy) / sy) ** 2 + ((xs - cx) / sx) ** 2))
    return torch.sigmoid((field - 0.6) * 12).unsqueeze(0)


def _camera_theta(center: tuple[float, float], zoom: float, angle: float, out: int,
                  src_h: int, src_w: int) -> Tensor:
    """Affine map ``(1, 2, 3)`` of a sampling grid for ``out x out`` output pixels: output pixels ->
    source pixels around ``center`` (y, x)."""
    half = out / 2.0 / zoom
    cos, sin = math.cos(angle), math.sin(angle)
    # Normalised output coords u in [-1, 1] map to source offsets R(angle) @ (u * half) pixels.
    theta = torch.tensor([[
        [cos * half / (src_w / 2), -sin * half / (src_w / 2), (center[1] - src_w / 2) / (src_w / 2)],
        [sin * half / (src_h / 2), cos * half / (src_h / 2), (center[0] - src_h / 2) / (src_h / 2)],
    ]], dtype=torch.float32)
    return theta


def synthetic_clip(
    background: Tensor, objects: list[Tensor], frames: int, size: int, g: torch.Generator,
    motion: MotionConfig = MotionConfig(),
) -> tuple[Tensor, Tensor]:
    """Film ``background`` with a moving camera and composite moving ``objects`` over it.

    Args:
        background: ``(3, H, W)`` float RGB in [0, 1].
        objects: photos ``(3, h, w)`` to cut object layers from (one per object, may be empty).
        frames: clip length ``T``.
        size: output frame side (square clip).
        g: random generator (the clip is a pure function of its state).
        motion: ranges of the random motion.

    Returns:
        ``(T, 3, size, size)`` float RGB clip and ``(T, size, size)`` int64 instance masks.
    """
    _, bh, bw = background.shape
    zoom0 = _uniform(g, 0.85, 1.25)
    zoom0 = max(zoom0, size / min(bh, bw) * 1.05)
    reach = size / 2 / zoom0 * 1.5 + motion.camera_speed * frames
    cy0 = _uniform(g, min(reach, bh / 2), max(bh - reach, bh / 2))
    cx0 = _uniform(g, min(reach, bw / 2), max(bw - reach, bw / 2))
    speed, heading = _uniform(g, 0, motion.camera_speed), _uniform(g, 0, 2 * math.pi)
    vy, vx = speed * math.sin(heading) / zoom0, speed * math.cos(heading) / zoom0
    zoom_rate = _uniform(g, -motion.camera_zoom_rate, motion.camera_zoom_rate)
    rot0, rot_rate = _uniform(g, -0.1, 0.1), _uniform(g, -motion.camera_rotation, motion.camera_rotation)

    device = background.device
    thetas = []
    for t in range(frames):
        shake_y = _uniform(g, -motion.camera_shake, motion.camera_shake) / zoom0
        shake_x = _uniform(g, -motion.camera_shake, motion.camera_shake) / zoom0
        center = (cy0 + vy * t + shake_y, cx0 + vx * t + shake_x)
        thetas.append(_camera_theta(center, zoom0 * (1 + zoom_rate) ** t, rot0 + rot_rate * t, size, bh, bw))
    # One grid for all frames, made where the photo is (the same numbers as frame by frame).
    grid = F.affine_grid(torch.cat(thetas).to(device), [frames, 1, size, size], align_corners=False)
    clip = F.grid_sample(background.expand(frames, -1, -1, -1), grid, mode="bicubic",
                         padding_mode="reflection", align_corners=False).clamp_(0, 1)
    masks = torch.zeros(frames, size, size, dtype=torch.long, device=device)

    for k, photo in enumerate(objects[: motion.max_objects], start=1):
        obj_size = int(size * _uniform(g, *motion.object_size))
        ph, pw = photo.shape[1:]
        scale = _uniform(g, 0.6, 1.4)
        crop = max(8, min(ph, pw, int(obj_size / scale)))
        oy = int(torch.randint(0, ph - crop + 1, (), generator=g))
        ox = int(torch.randint(0, pw - crop + 1, (), generator=g))
        patch = F.interpolate(photo[None, :, oy:oy + crop, ox:ox + crop].to(device), size=(obj_size, obj_size),
                              mode="bilinear", align_corners=False, antialias=True)[0]
        rgba = torch.cat([patch, blob_matte(obj_size, g).to(device)])
        # The object's path in output pixels (independent of the camera).
        py, px = _uniform(g, 0.2, 0.8) * size, _uniform(g, 0.2, 0.8) * size
        ospeed, oheading = _uniform(g, 0, motion.object_speed), _uniform(g, 0, 2 * math.pi)
        ovy, ovx = ospeed * math.sin(oheading), ospeed * math.cos(oheading)
        orot, orot_rate = _uniform(g, -0.5, 0.5), _uniform(g, -motion.object_rotation, motion.object_rotation)
        layer_thetas = []
        for t in range(frames):
            # Inverse map: output pixel -> object pixel. Object centred at (py, px) in the output.
            angle = orot + orot_rate * t
            cos, sin = math.cos(angle), math.sin(angle)
            cy, cx = py + ovy * t, px + ovx * t
            half_o = obj_size / 2
            theta = torch.tensor([[
                [cos * size / 2 / half_o, sin * size / 2 / half_o, 0.0],
                [-sin * size / 2 / half_o, cos * size / 2 / half_o, 0.0],
            ]])
            shift = torch.tensor([(cx - size / 2) / (size / 2), (cy - size / 2) / (size / 2)])
            theta[0, :, 2] = -(theta[0, :, :2] @ shift)
            layer_thetas.append(theta)
        layer_grid = F.affine_grid(torch.cat(layer_thetas).to(device), [frames, 1, size, size], align_corners=False)
        layer = F.grid_sample(rgba.expand(frames, -1, -1, -1), layer_grid, mode="bilinear",
                              padding_mode="zeros", align_corners=False)
        alpha = layer[:, 3:4].clamp(0, 1)
        clip = clip * (1 - alpha) + layer[:, :3].clamp(0, 1) * alpha
        masks[alpha[:, 0] > 0.5] = k
    return clip, masks
