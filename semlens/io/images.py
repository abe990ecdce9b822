"""Image sequences: a folder of images as an input clip, and a folder of PNG frames as output.

Input: every file of the folder with an image extension (:data:`IMAGE_EXTENSIONS`), in *natural*
order (``frame2`` before ``frame10``), is one frame; frame ``i`` gets ``pts = i`` in time base
``1/fps`` (25 fps unless told). All images must have the same size. Images are decoded with PyAV
(FFmpeg's png/mjpeg/bmp/tiff decoders): 8-bit images give ``(H, W, 3)`` uint8 RGB, 16-bit ones
(e.g. 16-bit PNG) give ``(H, W, 3)`` uint16 RGB; the whole sequence uses the first image's depth.
Alpha is dropped and EXIF orientation is not applied (pixels are kept as stored).

Output: :class:`ImageSequenceWriter` writes ``frame_000001.png``, ``frame_000002.png``, ... (8-bit
RGB PNG for uint8 frames, 16-bit RGB PNG for uint16 frames).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import numpy as np

from ..errors import InputNotFoundError, InvalidInputError, OutputError
from ._av import AV_ERRORS, MAX_DIMENSION, bit_depth_of, describe
from .info import VideoInfo
from .reader import Frame

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_FPS",
    "ImageSequenceReader",
    "ImageSequenceWriter",
    "is_image_folder",
    "list_images",
    "natural_sort_key",
    "read_image",
    "write_png",
]

IMAGE_EXTENSIONS: frozenset[str] = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
DEFAULT_FPS = Fraction(25)

_DIGITS = re.compile(r"(\d+)")


def natural_sort_key(name: str | os.PathLike[str]) -> tuple[tuple[int, int | str], ...]:
    """Sort key that orders digit runs by value: ``frame2.png`` < ``frame10.png``."""
    text = os.fspath(name)
    text = os.path.basename(text)
    parts: list[tuple[int, int | str]] = []
    for chunk in _DIGITS.split(text):
        if not chunk:
            continue
        if chunk.isdigit():
            parts.append((0, int(chunk)))
        else:
            parts.append((1, chunk.casefold()))
    return tuple(parts)


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """Image files directly inside ``folder`` (not hidden), naturally sorted."""
    base = Path(folder)
    files = [
        p
        for p in base.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()
    ]
    return sorted(files, key=lambda p: (natural_sort_key(p.name), p.name))


def is_image_folder(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is a folder holding at least one image file."""
    p = Path(path)
    if not p.is_dir():
        return False
    try:
        return bool(list_images(p))
    except OSError:
        return False


def read_image(path: str | os.PathLike[str], *, high_bit_depth: bool | None = None) -> np.ndarray:
    """Decode one image to ``(H, W, 3)`` RGB: uint8, or uint16 (0..65535) if the image has more
    than 8 bits per sample (or ``high_bit_depth=True``). Raises :class:`InvalidInputError`."""
    path = Path(path)
    try:
        if path.stat().st_size == 0:
            raise InvalidInputError(f"image {str(path)!r} is an empty file; remove or replace it")
        with av.open(str(path), mode="r", metadata_errors="replace") as container:
            stream = container.streams.video[0]
            frame = next(iter(container.decode(stream)), None)
            if frame is None:
                raise InvalidInputError(f"image {str(path)!r} could not be decoded; remove or replace it")
            if not (0 < frame.width <= MAX_DIMENSION and 0 < frame.height <= MAX_DIMENSION):
                raise InvalidInputError(
                    f"image {str(path)!r} has an unsupported size {frame.width}x{frame.height}"
                )
            deep = bit_depth_of(frame.format.name) > 8 if high_bit_depth is None else high_bit_depth
            return frame.to_ndarray(format="rgb48le" if deep else "rgb24")
    except InvalidInputError:
        raise
    except AV_ERRORS as exc:
        raise InvalidInputError(
            f"image {str(path)!r} is not a readable image ({describe(exc)}); remove or replace it"
        ) from exc


def write_png(path: str | os.PathLike[str], image: np.ndarray) -> None:
    """Write ``(H, W, 3)`` uint8 RGB as an 8-bit PNG, or uint16 RGB as a 16-bit PNG."""
    image = _check_image(image)
    deep = image.dtype == np.uint16
    ctx = av.codec.CodecContext.create("png", "w")
    ctx.width = image.shape[1]
    ctx.height = image.shape[0]
    ctx.pix_fmt = "rgb48be" if deep else "rgb24"
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb48le" if deep else "rgb24")
    if deep:
        frame = frame.reformat(format="rgb48be")
    packets = ctx.encode(frame) + ctx.encode(None)
    with open(path, "wb") as fh:
        for packet in packets:
            fh.write(bytes(packet))


def _check_image(image: Any) -> np.ndarray:
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        raise ValueError(f"expected an (H, W, 3) RGB array, got shape {shape}")
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected a uint8 or uint16 RGB array, got dtype {image.dtype}")
    return image


class ImageSequenceReader:
    """A folder of images read as a clip (see the module docstring for order, pts and layout).

    Construction lists the folder and decodes the first image (for size and depth); iteration
    decodes one image at a time. Raises :class:`~semlens.errors.InputNotFoundError` /
    :class:`~semlens.errors.InvalidInputError`.
    """

    def __init__(self, folder: str | os.PathLike[str], *, fps: float | Fraction | None = None) -> None:
        self.path = Path(folder)
        if not self.path.exists():
            raise InputNotFoundError(f"input folder {str(self.path)!r} does not exist; check the path")
        if not self.path.is_dir():
            raise InvalidInputError(f"input {str(self.path)!r} is not a folder of images")
        self.files = list_images(self.path)
        if not self.files:
            exts = ", ".join(sorted(IMAGE_EXTENSIONS))
            raise InvalidInputError(
                f"folder {str(self.path)!r} holds no images ({exts}); give a folder of frames or a video"
            )
        rate = Fraction(fps).limit_denominator(1001000) if fps is not None else DEFAULT_FPS
        if rate <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        first = read_image(self.files[0])
        height, width = first.shape[:2]
        self.dtype: type[np.generic] = np.uint16 if first.dtype == np.uint16 else np.uint8
        deep = self.dtype == np.uint16
        n = len(self.files)
        self.info = VideoInfo(
            width=width,
            height=height,
            pix_fmt="rgb48le" if deep else "rgb24",
            bit_depth=16 if deep else 8,
            time_base=1 / rate,
            fps=rate,
            frame_count=n,
            duration=float(n / rate),
            codec=self.files[0].suffix.lower().lstrip("."),
            color_range=2,
            colorspace=0,
            start_pts=0,
            container_format="image2",
            path=str(self.path),
            is_image_sequence=True,
        )
        self.truncated = False
        self.frames_read = 0

    def __enter__(self) -> ImageSequenceReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Nothing to release (kept for the :class:`FrameSource` interface)."""

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"ImageSequenceReader({str(self.path)!r}, {len(self.files)} images, {self.info.width}x{self.info.height})"

    def __iter__(self) -> Iterator[Frame]:
        self.frames_read = 0
        deep = self.dtype == np.uint16
        for index, file in enumerate(self.files):
            image = read_image(file, high_bit_depth=deep)
            if image.shape[:2] != (self.info.height, self.info.width):
                raise InvalidInputError(
                    f"image {file.name!r} is {image.shape[1]}x{image.shape[0]} but {self.files[0].name!r} is "
                    f"{self.info.width}x{self.info.height}; all frames of a folder must have the same size"
                )
            self.frames_read += 1
            yield Frame(image=image, pts=index, index=index, time=float(index * self.info.time_base))


class ImageSequenceWriter:
    """Write frames as numbered PNGs into a folder (``frame_000001.png``, ...).

    Same ``write(image, pts)`` / ``close()`` / context-manager API as
    :class:`~semlens.io.writer.VideoWriter`; ``pts`` is accepted and ignored (images carry no
    time). ``image``: ``(H, W, 3)`` uint8 or uint16 RGB; if ``width``/``height`` are given, every
    frame must have that size. The folder is created if missing (use
    :func:`~semlens.io.atomic_output` with ``is_dir=True`` for an all-or-nothing folder).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        *,
        width: int | None = None,
        height: int | None = None,
        start_number: int = 1,
        pattern: str = "frame_{:06d}.png",
    ) -> None:
        self.path = Path(folder)
        self.width = width
        self.height = height
        self.pattern = pattern
        self.next_number = int(start_number)
        self.frames_written = 0
        self._closed = False
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(
                f"cannot create output folder {str(self.path)!r} ({exc.strerror or exc})"
            ) from exc

    def __enter__(self) -> ImageSequenceWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def write(self, image: np.ndarray, pts: int | None = None) -> Path:
        """Write one frame; return its file path."""
        if self._closed:
            raise RuntimeError("ImageSequenceWriter is closed")
        image = _check_image(image)
        if (
            self.width is not None
            and self.height is not None
            and image.shape[:2] != (self.height, self.width)
        ):
            raise ValueError(
                f"frame is {image.shape[1]}x{image.shape[0]} but the writer was opened for {self.width}x{self.height}"
            )
        target = self.path / self.pattern.format(self.next_number)
        try:
            write_png(target, image)
        except AV_ERRORS as exc:
            raise OutputError(
                f"cannot write {str(target)!r} ({getattr(exc, 'strerror', None) or describe(exc)})"
            ) from exc
        self.next_number += 1
        self.frames_written += 1
        return target

    def close(self) -> None:
        """Finish (nothing is buffered; kept for API symmetry)."""
        self._closed = True
