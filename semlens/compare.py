"""Side-by-side pictures of the same frame upscaled by several methods (``semlens compare``).

Layout of the picture: one row per chosen time, one column per method (bicubic, Lanczos, then
each model); every panel is the method's output (``s*H x s*W``, or the crop of it given in input
pixels) under a label strip of :data:`LABEL_HEIGHT` pixels, panels :data:`GAP` pixels apart on a
black background. A model upscales the chosen frame together with the frames around it (one of
its windows, centred on that frame where the clip allows), as in a run.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from semlens.errors import InvalidInputError

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from semlens.upscaler import SemanticLensUpscaler

__all__ = ["GAP", "LABEL_HEIGHT", "CompareResult", "compare_video", "parse_crop", "parse_time", "render_grid"]

LABEL_HEIGHT = 20
GAP = 4

Upscale = Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]]


@dataclass(frozen=True)
class CompareResult:
    """What :func:`compare_video` wrote: the picture's path and size, the column labels, the times
    (seconds from the video's start) of the frames shown, and the panel size."""

    path: Path
    width: int
    height: int
    labels: tuple[str, ...]
    times: tuple[float, ...]
    panel: tuple[int, int]  # (width, height)


def parse_time(text: str) -> float:
    """Seconds from ``"SS[.ms]"``, ``"MM:SS[.ms]"`` or ``"HH:MM:SS[.ms]"``; raises ValueError."""
    parts = text.strip().split(":")
    try:
        if not 1 <= len(parts) <= 3 or any(p.strip() == "" for p in parts):
            raise ValueError
        values = [float(p) for p in parts]
    except ValueError:
        raise ValueError(f"{text!r} is not a time (use SS, MM:SS or HH:MM:SS, e.g. 00:01:05.5)") from None
    seconds = 0.0
    for v in values:
        seconds = seconds * 60 + v
    if seconds < 0 or not np.isfinite(seconds):
        raise ValueError(f"{text!r} is not a time (use SS, MM:SS or HH:MM:SS, e.g. 00:01:05.5)")
    return seconds


def parse_crop(text: str) -> tuple[int, int, int, int]:
    """``"X,Y,W,H"`` (input pixels) as integers; raises ValueError."""
    try:
        x, y, w, h = (int(p) for p in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not a crop; give X,Y,W,H in input pixels, e.g. 40,20,64,48") from None
    if x < 0 or y < 0 or w < 1 or h < 1:
        raise ValueError(f"crop {text!r} needs X, Y >= 0 and W, H >= 1")
    return x, y, w, h


def _to_uint8(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return (image >> 8).astype(np.uint8)


def _frames_around(src: Path, at: float, context: int) -> tuple[list[np.ndarray], int, float]:
    """The decoded frame shown at ``at`` seconds (the first whose time is at least ``at``, else the
    last), with up to ``context`` frames on each side: (frames as uint8 RGB, its index, its time)."""
    from semlens.io import VideoReader, open_source, probe

    info = probe(src)
    origin = info.start_pts or 0
    rate = float(info.fps) if info.fps else 25.0
    if info.is_image_sequence:
        reader = open_source(src)
    else:
        lead = max(0.0, at - (context + 1) / rate)
        reader = VideoReader(src, info=info, start_pts=origin + int(Fraction(lead) / info.time_base))
    before: deque[np.ndarray] = deque(maxlen=max(context, 1))
    chosen: tuple[np.ndarray, float] | None = None
    after: list[np.ndarray] = []
    last_time: float | None = None
    with reader:
        for i, frame in enumerate(reader):
            t = i / rate if frame.pts is None else float((frame.pts - origin) * info.time_base)
            image = _to_uint8(frame.image)
            if chosen is None:
                if t + 1e-6 >= at:
                    chosen = (image, t)
                    if context == 0:
                        break
                else:
                    before.append(image)
                    last_time = t
            else:
                after.append(image)
                if len(after) >= context:
                    break
    if chosen is None:
        if last_time is None:
            raise InvalidInputError(f"no frame could be decoded from {str(src)!r}")
        raise ValueError(f"time {at:g} s is past the last frame ({last_time:.3f} s); pick an earlier time")
    if context == 0:
        before.clear()
    frames = [*before, chosen[0], *after]
    return frames, len(before), chosen[1]


def _label_font() -> object:
    from PIL import ImageFont

    return ImageFont.load_default()


def render_grid(rows: Sequence[Sequence[tuple[str, np.ndarray]]]) -> PILImage.Image:
    """The picture of ``rows`` of ``(label, (H, W, 3) uint8 RGB image)`` panels, all of one size:
    each panel under a black :data:`LABEL_HEIGHT` strip with its label in white, :data:`GAP`
    pixels between panels and around them."""
    from PIL import Image, ImageDraw

    ph, pw = rows[0][0][1].shape[:2]
    cols = max(len(r) for r in rows)
    width = GAP + cols * (pw + GAP)
    height = GAP + len(rows) * (LABEL_HEIGHT + ph + GAP)
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    draw = ImageDraw.Draw(canvas)
    font = _label_font()
    for r, row in enumerate(rows):
        top = GAP + r * (LABEL_HEIGHT + ph + GAP)
        for c, (label, image) in enumerate(row):
            if image.shape[:2] != (ph, pw):
                raise ValueError(f"panel {label!r} is {image.shape[1]}x{image.shape[0]}, not {pw}x{ph}")
            left = GAP + c * (pw + GAP)
            draw.text((left + 3, top + 4), label, fill=(255, 255, 255), font=font)  # type: ignore[arg-type]
            canvas.paste(Image.fromarray(np.ascontiguousarray(image)), (left, top + LABEL_HEIGHT))
    return canvas


def compare_video(src: str | Path, dst: str | Path, upscalers: Sequence[SemanticLensUpscaler], *,
                  at: Sequence[float] = (), crop: tuple[int, int, int, int] | None = None,
                  baselines: bool = True) -> CompareResult:
    """Write a PNG ``dst`` comparing bicubic, Lanczos (unless ``baselines`` is false) and each of
    ``upscalers`` (all of one scale) on the frames of ``src`` at the times ``at`` (seconds; default:
    the middle of the video). ``crop`` ``(x, y, w, h)`` in input pixels shows that region only,
    at ``s*w x s*h``. Frames deeper than 8 bits are compared as 8-bit. Raises ValueError for a
    crop outside the frame or a time past the end, and the I/O errors of :mod:`semlens.io`."""
    from semlens.evaluate import bicubic_frames, lanczos_frames
    from semlens.io import probe

    if not upscalers:
        raise ValueError("compare needs at least one model")
    scales = {u.scale for u in upscalers}
    if len(scales) != 1:
        raise ValueError(f"the models upscale by different factors ({sorted(scales)}); compare models of one scale")
    s = scales.pop()
    src, dst = Path(src), Path(dst)
    info = probe(src)
    if crop is not None:
        x, y, w, h = crop
        if x + w > info.width or y + h > info.height:
            raise ValueError(f"crop {x},{y},{w},{h} leaves the {info.width}x{info.height} frame")
    times = list(at) if at else [(info.duration or 0.0) / 2]
    for t in times:
        if info.duration is not None and t >= info.duration:
            raise ValueError(f"time {t:g} s is past the end of the video ({info.duration:.3f} s); pick an earlier time")
    methods: list[tuple[str, Upscale, int]] = []  # (label, upscale, frames of context)
    if baselines:
        methods += [("bicubic", bicubic_frames(s), 0), ("Lanczos", lanczos_frames(s), 0)]
    for u in upscalers:
        methods.append((u.name, u.upscale_frames, u.settings.window // 2))
    context = max(m[2] for m in methods)
    rows = []
    shown = []
    for t in times:
        frames, index, when = _frames_around(src, t, context)
        shown.append(when)
        row = []
        for label, upscale, ctx in methods:
            lo = max(0, index - ctx)
            outputs = list(upscale(frames[lo:index + ctx + 1]))
            image = outputs[index - lo]
            if crop is not None:
                x, y, w, h = crop
                image = image[y * s:(y + h) * s, x * s:(x + w) * s]
            text = label if len(times) == 1 else f"{label}  {when:.3f} s"
            row.append((text, image))
        rows.append(row)
    picture = render_grid(rows)
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        picture.save(dst, format="PNG", optimize=True)
    except OSError as exc:
        from semlens.errors import OutputError

        raise OutputError(f"cannot write {str(dst)!r} ({exc.strerror or exc})") from exc
    panel = rows[0][0][1].shape
    return CompareResult(path=dst, width=picture.width, height=picture.height,
                         labels=tuple(m[0] for m in methods), times=tuple(shown), panel=(panel[1], panel[0]))
