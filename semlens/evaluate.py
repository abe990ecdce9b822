"""Evaluation: degrade high-resolution clips, upscale, and score PSNR / SSIM / tPSNR on Y.

Every clip is read as HR, cropped to a multiple of the scale, degraded with the standard bicubic
("BI") kernel to 8-bit LR frames (then, if asked, blurred, noised or compressed as a whole clip:
:mod:`semlens.train.degrade`), and upscaled by the model and by the bicubic and Lanczos
baselines; scores are computed on BT.601 luma with ``scale`` pixels cropped at each border. tPSNR
is the PSNR of the frame-to-frame differences against those of the ground truth (flicker).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from semlens.errors import InputNotFoundError, InvalidInputError, NothingToDoError
from semlens.metrics import psnr_y, ssim_y, temporal_sq_error_y, tpsnr_from_errors
from semlens.train.degrade import Degradation, bicubic_degrade

__all__ = ["Upscale", "ClipScore", "bicubic_frames", "lanczos_frames", "evaluate_clip", "evaluate", "find_clips",
           "clip_reader"]

Upscale = Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]]
"""A method: an iterable of LR ``(h, w, 3)`` uint8 frames -> an iterator of SR frames, in order."""


def bicubic_frames(scale: int) -> Upscale:
    """Bicubic upscaling (PyTorch, ``align_corners=False``), rounded to uint8."""

    def run(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for frame in frames:
            x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
            y = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
            yield (y[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()

    return run


def lanczos_frames(scale: int) -> Upscale:
    """Lanczos upscaling (Pillow)."""

    def run(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        for frame in frames:
            h, w = frame.shape[:2]
            yield np.asarray(Image.fromarray(frame).resize((w * scale, h * scale), Image.Resampling.LANCZOS))

    return run


@dataclass
class ClipScore:
    """Mean PSNR / SSIM (Y) over the frames of one clip, and tPSNR over its frame pairs, per method."""

    clip: str
    frames: int
    psnr: dict[str, float] = field(default_factory=dict)
    ssim: dict[str, float] = field(default_factory=dict)
    tpsnr: dict[str, float | None] = field(default_factory=dict)  # None: fewer than 2 frames


def _degraded(hr_frames: Iterable[np.ndarray], scale: int, keep: deque[np.ndarray]) -> Iterator[np.ndarray]:
    for frame in hr_frames:
        h, w = (frame.shape[0] // scale) * scale, (frame.shape[1] // scale) * scale
        hr = frame[:h, :w]
        keep.append(hr)
        x = torch.from_numpy(np.ascontiguousarray(hr)).permute(2, 0, 1).float() / 255
        lr = bicubic_degrade(x, scale)
        yield (lr * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def _cropped(hr_frames: Iterable[np.ndarray], scale: int) -> Iterator[np.ndarray]:
    for frame in hr_frames:
        yield frame[:(frame.shape[0] // scale) * scale, :(frame.shape[1] // scale) * scale]


def _degraded_clip(hr_frames: Iterable[np.ndarray], scale: int, degradation: Degradation) -> list[np.ndarray]:
    """The whole LR clip (BI, then ``degradation``'s steps on all frames at once, as a video is)."""
    lr = list(_degraded(hr_frames, scale, deque(maxlen=1)))
    clip = torch.from_numpy(np.stack(lr)).permute(0, 3, 1, 2).float() / 255
    out = degradation.degrade_lr(clip, torch.Generator().manual_seed(0))
    return list((out.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())


def evaluate_clip(name: str, hr_frames: Callable[[], Iterable[np.ndarray]], scale: int,
                  methods: dict[str, Upscale], degradation: Degradation | None = None) -> ClipScore:
    """Score each method on one clip. ``hr_frames`` is called once per method and must give the
    same uint8 frames each time. With BI (``degradation`` None or ``bi``) frames are streamed
    (only a window of them is in memory); other degradations work on the whole LR clip, which is
    then held in memory (1 / scale² of the HR frames)."""
    score = ClipScore(clip=name, frames=0)
    first = next(iter(hr_frames()), None)
    if first is not None:
        # Scored inside a border of ``scale`` pixels, with SSIM's 11-pixel window.
        need = -(-(2 * scale + 11) // scale) * scale
        h, w = first.shape[:2]
        if min(h, w) < need:
            raise InvalidInputError(f"{name} is {w}x{h}: too small to score at x{scale} (each side needs at least "
                                    f"{need} pixels)")
    lr_clip = None
    if degradation is not None and not degradation.is_bi:
        lr_clip = _degraded_clip(hr_frames(), scale, degradation)
    for method, upscale in methods.items():
        keep: deque[np.ndarray] = deque()
        psnrs, ssims, changes = [], [], []
        previous: tuple[torch.Tensor, torch.Tensor] | None = None
        if lr_clip is None:
            pairs: Iterator[tuple[np.ndarray, np.ndarray]] = (
                (sr, keep.popleft()) for sr in upscale(_degraded(hr_frames(), scale, keep)))
        else:
            pairs = zip(upscale(iter(lr_clip)), _cropped(hr_frames(), scale), strict=True)
        for sr, hr in pairs:
            a = torch.from_numpy(np.array(sr, copy=True)).permute(2, 0, 1).float() / 255
            b = torch.from_numpy(np.array(hr, copy=True)).permute(2, 0, 1).float() / 255
            psnrs.append(psnr_y(a, b, crop=scale))
            ssims.append(ssim_y(a, b, crop=scale))
            if previous is not None:
                changes.append(temporal_sq_error_y(previous[0], a, previous[1], b, crop=scale))
            previous = (a, b)
        score.frames = len(psnrs)
        score.psnr[method] = float(np.mean(psnrs))
        score.ssim[method] = float(np.mean(ssims))
        score.tpsnr[method] = tpsnr_from_errors(changes) if changes else None
    return score


def find_clips(path: Path) -> list[Path]:
    """A video file, an image folder, or a folder of videos -> the clips to evaluate."""
    from semlens.io import is_image_folder
    from semlens.scan import find_videos

    if not path.exists():
        raise InputNotFoundError(f"{str(path)!r} does not exist")
    if path.is_file():
        return [path]
    videos = find_videos(path)
    if videos:
        return videos
    if is_image_folder(path):
        return [path]
    raise NothingToDoError(f"no videos or images found in {str(path)!r}")


def clip_reader(path: Path, max_frames: int | None) -> Callable[[], Iterator[np.ndarray]]:
    """A callable giving the clip's first ``max_frames`` frames (all when None) as uint8 RGB arrays,
    afresh at every call (what :func:`evaluate_clip` scores against)."""
    from semlens.io import open_source

    def frames() -> Iterator[np.ndarray]:
        with open_source(path) as reader:
            for i, frame in enumerate(reader):
                if max_frames is not None and i >= max_frames:
                    return
                image = frame.image
                if image.dtype != np.uint8:
                    image = (image >> 8).astype(np.uint8)
                yield image

    return frames


def _mean_finite(values: list[float | None]) -> float | None:
    kept = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(kept)) if kept else None


def evaluate(paths: list[Path], scale: int, methods: dict[str, Upscale], max_frames: int | None = None,
             on_clip: Callable[[ClipScore], None] | None = None, degradation: Degradation | None = None) -> dict:
    """Evaluate ``methods`` on every clip; returns ``{"scale", "clips": [...], "mean": {...}}`` (PSNR,
    SSIM and tPSNR per method; tPSNR's mean skips single-frame clips)."""
    clips = []
    for path in paths:
        score = evaluate_clip(path.name, clip_reader(path, max_frames), scale, methods, degradation)
        clips.append(score)
        if on_clip is not None:
            on_clip(score)
    mean = {
        "psnr": {m: float(np.mean([c.psnr[m] for c in clips])) for m in methods},
        "ssim": {m: float(np.mean([c.ssim[m] for c in clips])) for m in methods},
        "tpsnr": {m: _mean_finite([c.tpsnr[m] for c in clips]) for m in methods},
    }
    return {"scale": scale, "degradation": degradation.text() if degradation is not None else "bi",
            "clips": [asdict(c) for c in clips], "mean": mean}
