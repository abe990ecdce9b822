"""Colour of the written video: the tags it gets, and how RGB frames become its YUV planes.

The stream is tagged like the source (range, primaries, transfer, matrix), and RGB is converted
to YUV with the source's matrix (BT.601 when unspecified, like FFmpeg's reading side), limited
range unless the source is full range. A producer that converts to YUV itself (the upscaler does
it on the compute device) gets the exact layout and formulas as a :class:`PlanarLayout` and hands
over :class:`PlanarImage` frames, which are encoded without any conversion here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import av
import numpy as np

from ._av import sws_colorspace
from .info import VideoInfo

__all__ = ["Colour", "PlanarImage", "PlanarLayout", "setup_colour"]

# swscale matrix id (see sws_colorspace) -> luma coefficients (Kr, Kb); None is swscale's BT.601.
_LUMA_COEFFICIENTS: dict[int | None, tuple[float, float]] = {
    None: (0.299, 0.114),
    5: (0.299, 0.114),
    1: (0.2126, 0.0722),
    4: (0.30, 0.11),
    7: (0.212, 0.087),
    9: (0.2627, 0.0593),
}

# Pixel formats a producer may hand over ready-made: name -> (bits per sample, 4:2:0 subsampled).
_PLANAR_FORMATS = {"yuv420p": (8, True), "yuv444p": (8, False), "yuv420p10le": (10, True)}


@dataclass(frozen=True)
class PlanarLayout:
    """The YUV frames a :class:`~semlens.io.VideoWriter` encodes, for producers that convert RGB themselves.

    ``Y = Kr R + (1 - Kr - Kb) G + Kb B``, ``Cb = (B - Y) / (2 (1 - Kb))``, ``Cr = (R - Y) / (2 (1 - Kr))``
    on RGB in [0, 1], then quantised to ``depth`` bits, limited range (luma 16..235, chroma 16..240,
    scaled by ``2**(depth - 8)``) or full range (0..2**depth - 1, chroma centred on
    ``2**(depth - 1)``). 4:2:0 chroma is the mean of each 2x2 block (centred, as swscale does).
    The array a frame is given as is the one ``av.VideoFrame.from_ndarray`` takes for ``pix_fmt``:
    ``(3 H / 2, W)`` for 4:2:0 (Y, then Cb, then Cr, each plane's rows one after another),
    ``(3, H, W)`` for 4:4:4; uint8, or uint16 above 8 bits.
    """

    pix_fmt: str
    width: int
    height: int
    depth: int
    subsampled: bool
    kr: float
    kb: float
    full_range: bool

    @property
    def shape(self) -> tuple[int, ...]:
        if self.subsampled:
            return (self.height * 3 // 2, self.width)
        return (3, self.height, self.width)


@dataclass(frozen=True)
class PlanarImage:
    """One frame already in the writer's pixel format (see :class:`PlanarLayout`)."""

    data: np.ndarray
    pix_fmt: str


@dataclass(frozen=True)
class Colour:
    """How RGB frames are converted for a stream: the swscale matrix (``None``: swscale's default,
    BT.601; also ``None`` for RGB output) and the colour range (1 limited, 2 full; ``None`` for RGB
    output), as ``VideoFrame.reformat`` takes them."""

    pix_fmt: str
    sws_colorspace: int | None
    color_range: int | None

    def planar_layout(self, width: int, height: int) -> PlanarLayout | None:
        """The :class:`PlanarLayout` of ``width`` x ``height`` frames in this pixel format, or
        ``None`` when frames must be given as RGB (RGB or other pixel formats, other matrices)."""
        if self.pix_fmt not in _PLANAR_FORMATS or self.sws_colorspace not in _LUMA_COEFFICIENTS:
            return None
        depth, subsampled = _PLANAR_FORMATS[self.pix_fmt]
        kr, kb = _LUMA_COEFFICIENTS[self.sws_colorspace]
        return PlanarLayout(self.pix_fmt, width, height, depth, subsampled, kr, kb,
                            full_range=self.color_range == 2)

    def planar_frame(self, layout: PlanarLayout | None, image: PlanarImage) -> Any:
        """An ``av.VideoFrame`` of ``image``, which must match ``layout`` (``ValueError`` if not)."""
        if layout is None or image.pix_fmt != layout.pix_fmt:
            raise ValueError(f"this writer encodes {self.pix_fmt}, not {image.pix_fmt}; give it RGB frames")
        dtype = np.uint8 if layout.depth == 8 else np.uint16
        if image.data.shape != layout.shape or image.data.dtype != dtype:
            raise ValueError(
                f"a {layout.pix_fmt} frame of {layout.width}x{layout.height} is a {np.dtype(dtype).name} array of "
                f"shape {layout.shape}, got {image.data.dtype} {image.data.shape}"
            )
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image.data), format=layout.pix_fmt)
        frame.colorspace = 2 if self.sws_colorspace is None else self.sws_colorspace  # as reformat() tags it
        frame.color_range = self.color_range
        return frame

    def rgb_frame(self, image: np.ndarray, width: int, height: int) -> Any:
        """An ``av.VideoFrame`` in this pixel format of ``(height, width, 3)`` uint8 or uint16 RGB
        (``ValueError`` for another shape or dtype)."""
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB array, got shape {getattr(image, 'shape', None)}")
        if image.shape[0] != height or image.shape[1] != width:
            raise ValueError(
                f"frame is {image.shape[1]}x{image.shape[0]} but the writer was opened for {width}x{height}"
            )
        if image.dtype == np.uint8:
            fmt = "rgb24"
        elif image.dtype == np.uint16:
            fmt = "rgb48le"
        else:
            raise ValueError(f"expected a uint8 or uint16 RGB array, got dtype {image.dtype}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=fmt)
        return frame.reformat(format=self.pix_fmt, dst_colorspace=self.sws_colorspace,
                              dst_color_range=self.color_range)


def setup_colour(ctx: Any, source: VideoInfo | None, pix_fmt: str) -> Colour:
    """Tag the encoder context ``ctx`` like ``source`` and return the RGB conversion to match."""
    out_rgb = av.VideoFormat(pix_fmt).is_rgb
    src_yuv = source is not None and not source.is_image_sequence and not av.VideoFormat(source.pix_fmt).is_rgb
    colorspace = source.colorspace if src_yuv and source is not None else 2
    full_range = bool(src_yuv and source is not None and source.color_range == 2)
    if source is not None:
        ctx.color_primaries = source.color_primaries
        ctx.color_trc = source.color_trc
    if out_rgb:
        ctx.colorspace = 0
        ctx.color_range = 2
    else:
        ctx.colorspace = colorspace
        if src_yuv and source is not None:
            ctx.color_range = source.color_range
        else:
            ctx.color_range = 1
    return Colour(
        pix_fmt,
        None if out_rgb else sws_colorspace(colorspace),
        None if out_rgb else (2 if full_range else 1),
    )
