"""Side-by-side pictures of the same frame upscaled by several methods (``semlens compare``).

Layout of the picture: one row per chosen time, one column per method (bicubic, Lanczos, then
each model); every panel is the method's output (``s*H x s*W``, or the crop of it given in input
pixels) under a label strip of :data:`LABEL_HEIGHT` pixels, panels :data:`GAP` pixels apart on a
black background. A model upscales the chosen frame together with the frames around it (one of
its windows, centred on that frame where the clip allows), as in a run.

:func:`compare_clip` makes a short video instead: every frame of a few seconds of the input laid
out as one row of that picture, with the input's frame rate and timestamps, the models streaming
over the frames as in a run.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from semlens.errors import InvalidInputError

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from semlens.io import VideoInfo
    from semlens.upscaler import SemanticLensUpscaler

__all__ = ["CLIP_SECONDS", "GAP", "LABEL_HEIGHT", "CompareResult", "check_clip_path", "compare_clip",
           "compare_video", "grid_size", "parse_crop", "parse_time", "render_grid"]

LABEL_HEIGHT = 20
GAP = 4
CLIP_SECONDS = 3.0  # default length of a comparison clip

Upscale = Callable[[Iterable[np.ndarray]], Iterator[np.ndarray]]


@dataclass(frozen=True)
class CompareResult:
    """What :func:`compare_video` or :func:`compare_clip` wrote: the picture's (or clip's) path and
    frame size, the column labels, the times (seconds from the video's start) of the frames shown
    (of a clip: its first frame), the panel size, and the clip's frame count (0 for a picture)."""

    path: Path
    width: int
    height: int
    labels: tuple[str, ...]
    times: tuple[float, ...]
    panel: tuple[int, int]  # (width, height)
    frames: int = 0


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


def grid_size(cols: int, rows: int, panel: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of the picture :func:`render_grid` makes of ``rows`` rows of ``cols`` panels
    of ``panel`` (width, height) pixels."""
    pw, ph = panel
    return GAP + cols * (pw + GAP), GAP + rows * (LABEL_HEIGHT + ph + GAP)


def render_grid(rows: Sequence[Sequence[tuple[str, np.ndarray]]]) -> PILImage.Image:
    """The picture of ``rows`` of ``(label, (H, W, 3) uint8 RGB image)`` panels, all of one size:
    each panel under a black :data:`LABEL_HEIGHT` strip with its label in white, :data:`GAP`
    pixels between panels and around them."""
    from PIL import Image, ImageDraw

    ph, pw = rows[0][0][1].shape[:2]
    width, height = grid_size(max(len(r) for r in rows), len(rows), (pw, ph))
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


def _methods(upscalers: Sequence[SemanticLensUpscaler], baselines: bool) -> tuple[int, list[tuple[str, Upscale, int]]]:
    """The scale and the methods compared: (label, upscale, frames of context a frame needs)."""
    from semlens.evaluate import bicubic_frames, lanczos_frames

    if not upscalers:
        raise ValueError("compare needs at least one model")
    scales = {u.scale for u in upscalers}
    if len(scales) != 1:
        raise ValueError(f"the models upscale by different factors ({sorted(scales)}); compare models of one scale")
    s = scales.pop()
    methods: list[tuple[str, Upscale, int]] = []
    if baselines:
        methods += [("bicubic", bicubic_frames(s), 0), ("Lanczos", lanczos_frames(s), 0)]
    for u in upscalers:
        methods.append((u.name, u.upscale_frames, u.settings.window // 2))
    return s, methods


def _check_request(info: VideoInfo, crop: tuple[int, int, int, int] | None, times: Sequence[float]) -> None:
    if crop is not None:
        x, y, w, h = crop
        if x + w > info.width or y + h > info.height:
            raise ValueError(f"crop {x},{y},{w},{h} leaves the {info.width}x{info.height} frame")
    for t in times:
        if info.duration is not None and t >= info.duration:
            raise ValueError(f"time {t:g} s is past the end of the video ({info.duration:.3f} s); pick an earlier time")


def _panel(image: np.ndarray, crop: tuple[int, int, int, int] | None, s: int) -> np.ndarray:
    """What a panel shows of an ``s``-times upscaled frame: all of it, or the crop (input pixels)."""
    if crop is None:
        return image
    x, y, w, h = crop
    return image[y * s:(y + h) * s, x * s:(x + w) * s]


def _panel_size(info: VideoInfo, crop: tuple[int, int, int, int] | None, s: int) -> tuple[int, int]:
    if crop is None:
        return info.width * s, info.height * s
    return crop[2] * s, crop[3] * s


#: Picture formats of :func:`compare_video`, by extension (PIL format, save options).
PICTURE_FORMATS: dict[str, tuple[str, dict[str, Any]]] = {
    ".png": ("PNG", {"optimize": True}),
    ".jpg": ("JPEG", {"quality": 95}),
    ".jpeg": ("JPEG", {"quality": 95}),
    ".webp": ("WEBP", {"lossless": True}),
}


def check_picture_path(dst: str | Path) -> Path:
    """``dst`` as a path if it names a picture :func:`compare_video` can write; else ValueError."""
    dst = Path(dst)
    if dst.suffix.lower() not in PICTURE_FORMATS:
        raise ValueError(f"a comparison picture is a .png, .jpg or .webp file, not {str(dst)!r}")
    return dst


def compare_video(src: str | Path, dst: str | Path, upscalers: Sequence[SemanticLensUpscaler], *,
                  at: Sequence[float] = (), crop: tuple[int, int, int, int] | None = None,
                  baselines: bool = True, overwrite: bool = False) -> CompareResult:
    """Write a PNG ``dst`` comparing bicubic, Lanczos (unless ``baselines`` is false) and each of
    ``upscalers`` (all of one scale) on the frames of ``src`` at the times ``at`` (seconds; default:
    the middle of the video). ``crop`` ``(x, y, w, h)`` in input pixels shows that region only,
    at ``s*w x s*h``. Frames deeper than 8 bits are compared as 8-bit. Raises ValueError for a
    crop outside the frame or a time past the end or a ``dst`` that is not a picture (.png, .jpg,
    .webp; written in that format), and the I/O errors of :mod:`semlens.io`. ``dst`` appears only
    when complete, is never the input, and replaces an existing file only with ``overwrite``."""
    from semlens.io import atomic_output, check_output_path, probe

    s, methods = _methods(upscalers, baselines)
    src, dst = Path(src), check_picture_path(dst)
    check_output_path(dst, source=src, overwrite=overwrite, is_dir=False)
    info = probe(src)
    times = list(at) if at else [(info.duration or 0.0) / 2]
    _check_request(info, crop, times)
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
            image = _panel(outputs[index - lo], crop, s)
            text = label if len(times) == 1 else f"{label}  {when:.3f} s"
            row.append((text, image))
        rows.append(row)
    picture = render_grid(rows)
    kind, options = PICTURE_FORMATS[dst.suffix.lower()]
    with atomic_output(dst, overwrite=overwrite, source=src) as tmp:
        try:
            picture.save(tmp, format=kind, **options)
        except OSError as exc:
            from semlens.errors import OutputError

            raise OutputError(f"cannot write {str(dst)!r} ({exc.strerror or exc})") from exc
    panel = rows[0][0][1].shape
    return CompareResult(path=dst, width=picture.width, height=picture.height,
                         labels=tuple(m[0] for m in methods), times=tuple(shown), panel=(panel[1], panel[0]))


# Containers that hold the H.264 of a comparison clip with its timestamps.
_CLIP_CONTAINERS = frozenset({".mp4", ".m4v", ".mkv", ".mov", ".ts", ".m2ts", ".mts", ".nut"})


def check_clip_path(dst: str | Path) -> Path:
    """``dst`` as a path if it names a video file a clip can be written to; else ValueError."""
    from semlens.io import VIDEO_EXTENSIONS

    dst = Path(dst)
    if dst.suffix.lower() == ".avi":
        raise ValueError(f"cannot write the clip as {str(dst)!r}: AVI stores no timestamps; use .mp4 or .mkv")
    if dst.suffix.lower() not in VIDEO_EXTENSIONS:
        raise ValueError(f"a comparison clip is a video: {str(dst)!r} needs a video extension such as .mp4 or .mkv")
    if dst.suffix.lower() not in _CLIP_CONTAINERS:
        raise ValueError(f"a comparison clip is H.264, which {dst.suffix} cannot hold; write it as .mp4, .mkv or .mov")
    return dst


def compare_clip(src: str | Path, dst: str | Path, upscalers: Sequence[SemanticLensUpscaler], *,
                 start: float | None = None, seconds: float = CLIP_SECONDS,
                 crop: tuple[int, int, int, int] | None = None, baselines: bool = True,
                 overwrite: bool = False, copy_audio: bool = True, crf: float | None = 18,
                 preset: str | None = "medium") -> CompareResult:
    """Write a video ``dst`` (.mp4, .mkv, ...) comparing bicubic, Lanczos (unless ``baselines`` is
    false) and each of ``upscalers`` on ``seconds`` seconds of ``src`` from ``start`` (seconds from
    the video's start; default 0): each of its frames is one row of the picture
    :func:`compare_video` makes, panels and labels alike (``crop`` as there), padded with one black
    column or row where needed to an even size (H.264 in yuv420p). The clip keeps the frame rate and
    the timestamps of the input, moved ``start`` seconds earlier, and the audio (unless
    ``copy_audio`` is false) and subtitles of that span. The models stream over the frames as in a
    run: memory holds a window of frames, not the clip. ``dst`` appears only when complete (an
    error leaves no file behind) and replaces an existing file only with ``overwrite``. Raises
    ValueError for a bad ``dst``, crop, start or length, and the errors of :mod:`semlens.io`."""
    from semlens.io import VideoWriter, atomic_output, probe
    from semlens.upscaler import _Part

    s, methods = _methods(upscalers, baselines)
    src, dst = Path(src), check_clip_path(dst)
    if start is not None and not start >= 0:
        raise ValueError(f"the clip's start must be >= 0 seconds, got {start:g}")
    if not seconds > 0:
        raise ValueError(f"the clip's length must be a positive number of seconds, got {seconds:g}")
    info = probe(src)
    _check_request(info, crop, [start or 0.0])
    panel = _panel_size(info, crop, s)
    grid = grid_size(len(methods), 1, panel)
    width, height = grid[0] + grid[0] % 2, grid[1] + grid[1] % 2  # yuv420p halves both
    # The pixels are shown as stored, like the picture: no rotation or pixel aspect for the player to
    # apply to the labels; the source's tags do not describe the comparison.
    shown = dataclasses.replace(info, rotation=0, display_matrix=None, sample_aspect_ratio=None)
    part = _Part(start, seconds, None)
    stamps: deque[tuple[int | None, int | None]] = deque()
    first: list[float] = []
    origin = info.start_pts or 0

    with part.open(src) as reader:

        def images() -> Iterator[np.ndarray]:
            for frame in part.frames(reader, info):
                if not first:
                    first.append(part.start if frame.pts is None else float((frame.pts - origin) * info.time_base))
                stamps.append((frame.pts, frame.duration))
                yield _to_uint8(frame.image)

        # One decode for all methods; a model runs ahead of the others by at most its windows in flight.
        copies = itertools.tee(images(), len(methods))
        outputs = [upscale(frames) for (_, upscale, _), frames in zip(methods, copies, strict=True)]
        count = 0
        with atomic_output(dst, overwrite=overwrite, source=src) as tmp:
            with VideoWriter(tmp, width=width, height=height, source=shown,
                             source_path=src if src.is_file() else None, pix_fmt="yuv420p", crf=crf,
                             preset=preset, copy_audio=copy_audio, copy_metadata=False,
                             shift_pts=part.shift_pts(info), trim_aux=True,
                             aux_end=Fraction(seconds)) as writer:
                for images_now in zip(*outputs, strict=True):
                    row = [(label, _panel(image, crop, s)) for (label, _, _), image in zip(methods, images_now, strict=True)]
                    picture = np.zeros((height, width, 3), np.uint8)
                    picture[:grid[1], :grid[0]] = np.asarray(render_grid([row]))
                    pts, duration = stamps.popleft()
                    writer.write(picture, pts, duration=duration)
                    count += 1
                if count == 0:
                    raise InvalidInputError(f"no frame could be decoded from {str(src)!r} from {start or 0:g} s on")
    return CompareResult(path=dst, width=width, height=height, labels=tuple(m[0] for m in methods),
                         times=(first[0],), panel=panel, frames=count)
