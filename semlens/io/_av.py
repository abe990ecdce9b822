"""Private PyAV helpers shared by the reader, the prober and the writer.

Everything that can raise out of PyAV/FFmpeg is listed in :data:`AV_ERRORS`, so that callers can
turn it into one of our error types with a one-line message.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import av
import av.error

from ..errors import InputNotFoundError, InvalidInputError

# PyAV raises av.error.FFmpegError subclasses (several also derive from OSError / ValueError),
# plus plain Python errors from its wrappers on bad data (metadata decoding, bad rationals, ...).
AV_ERRORS: tuple[type[BaseException], ...] = (
    av.error.FFmpegError,
    OSError,
    ValueError,
    EOFError,
    RuntimeError,
    IndexError,
    KeyError,
    TypeError,
    OverflowError,
    ZeroDivisionError,
    UnicodeError,
)

# A guard against mutated headers that claim absurd frame sizes (8K is 7680x4320).
MAX_DIMENSION = 16384


def describe(exc: BaseException) -> str:
    """A short, one-line description of an FFmpeg/PyAV exception."""
    if isinstance(exc, (av.error.FFmpegError, OSError)):
        text = getattr(exc, "strerror", None) or str(exc)
    else:
        text = str(exc) or type(exc).__name__
    text = " ".join(str(text).split())
    return text[:200]


def check_input_file(path: Path) -> None:
    """Raise our error types for a missing or empty input file."""
    if not path.exists():
        raise InputNotFoundError(f"input {str(path)!r} does not exist; check the path")
    if path.is_dir():
        raise InvalidInputError(f"input {str(path)!r} is a folder, not a video file")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InvalidInputError(f"cannot read input {str(path)!r} ({exc.strerror or exc})") from exc
    if size == 0:
        raise InvalidInputError(f"input {str(path)!r} is an empty file (0 bytes); re-copy or re-download it")
    if not os.access(path, os.R_OK):
        raise InvalidInputError(f"input {str(path)!r} is not readable (permission denied)")


def open_input(path: Path) -> Any:
    """Open ``path`` for demuxing; FFmpeg errors become :class:`InvalidInputError`."""
    try:
        return av.open(str(path), mode="r", metadata_errors="replace")
    except AV_ERRORS as exc:
        raise InvalidInputError(
            f"input {str(path)!r} is not a video semlens can read ({describe(exc)}); check that it plays in a media player"
        ) from exc


def pick_video_stream(container: Any) -> Any | None:
    """The first video stream that is not a cover picture (attached_pic), or ``None``."""
    for stream in container.streams.video:
        try:
            attached = bool(stream.disposition & av.stream.Disposition.attached_pic)
        except AV_ERRORS:
            attached = False
        if not attached:
            return stream
    return None


def codec_name(stream: Any) -> str:
    """The stream's codec (descriptor) name, e.g. ``"h264"``, ``"aac"``; ``"unknown"`` if FFmpeg has
    no decoder for it."""
    try:
        ctx = stream.codec_context
        if ctx is not None:
            return getattr(ctx.codec, "canonical_name", None) or ctx.name or "unknown"
        return getattr(stream, "name", None) or "unknown"
    except (AttributeError, *AV_ERRORS):
        return "unknown"


def bit_depth_of(pix_fmt: str | None) -> int:
    """Bits per sample of a pixel format (8 for unknown or packed low-depth formats)."""
    if not pix_fmt:
        return 8
    try:
        fmt = av.VideoFormat(pix_fmt)
        bits = max((c.bits for c in fmt.components if not c.is_alpha), default=8)
    except AV_ERRORS:
        return 8
    return max(8, int(bits))


# FFmpeg enum names (libavutil/pixfmt.h), for display only.
COLOR_RANGE_NAMES = {0: "unknown", 1: "tv", 2: "pc"}
COLOR_PRIMARIES_NAMES = {
    1: "bt709",
    2: "unknown",
    4: "bt470m",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "film",
    9: "bt2020",
    10: "smpte428",
    11: "smpte431",
    12: "smpte432",
    22: "ebu3213",
}
COLOR_TRC_NAMES = {
    1: "bt709",
    2: "unknown",
    4: "gamma22",
    5: "gamma28",
    6: "smpte170m",
    7: "smpte240m",
    8: "linear",
    9: "log100",
    10: "log316",
    11: "iec61966-2-4",
    12: "bt1361e",
    13: "iec61966-2-1",
    14: "bt2020-10",
    15: "bt2020-12",
    16: "smpte2084",
    17: "smpte428",
    18: "arib-std-b67",
}
COLORSPACE_NAMES = {
    0: "gbr",
    1: "bt709",
    2: "unknown",
    4: "fcc",
    5: "bt470bg",
    6: "smpte170m",
    7: "smpte240m",
    8: "ycgco",
    9: "bt2020nc",
    10: "bt2020c",
    11: "smpte2085",
    12: "chroma-derived-nc",
    13: "chroma-derived-c",
    14: "ictcp",
}

# AVColorSpace -> swscale SWS_CS_* matrix used to convert RGB to YUV (None = swscale default, BT.601).
_SWS_CS = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}


def sws_colorspace(av_colorspace: int | None) -> int | None:
    """The swscale matrix id for an FFmpeg ``AVColorSpace`` value (None: swscale's default)."""
    if av_colorspace is None:
        return None
    return _SWS_CS.get(int(av_colorspace))
