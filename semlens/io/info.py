"""What a video (or an image sequence) is: :class:`VideoInfo`, and :func:`probe` to read it.

:func:`probe` opens the file with PyAV, picks the first video stream that is not a cover picture,
and decodes its first frame, because FFmpeg attaches the rotation (display matrix) and the
colour tags to decoded frames. It never decodes more than that.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from ..errors import InvalidInputError, SemlensError
from ._av import (
    AV_ERRORS,
    COLOR_PRIMARIES_NAMES,
    COLOR_RANGE_NAMES,
    COLOR_TRC_NAMES,
    COLORSPACE_NAMES,
    MAX_DIMENSION,
    bit_depth_of,
    check_input_file,
    codec_name,
    describe,
    open_input,
    pick_video_stream,
)

__all__ = ["VideoInfo", "probe"]

# How many packets probe() may feed the decoder before giving up on a first frame.
_PROBE_PACKET_LIMIT = 2000


@dataclass(frozen=True)
class VideoInfo:
    """Facts about a video stream and its container, as read by :func:`probe`.

    Times: ``time_base`` is the video stream's time base (seconds per pts tick); pts of frames are
    integers in that base. ``fps`` is the average frame rate (``None`` if unknown; a VFR clip has
    one too, it is only an average). ``frame_count`` is the container's count, ``None`` when the
    container does not store one (e.g. Matroska). ``duration`` is in seconds.

    Pixels: ``pix_fmt`` is the decoded pixel format (e.g. ``"yuv420p10le"``) and ``bit_depth`` its
    bits per sample; readers yield uint8 RGB for ``bit_depth <= 8`` and uint16 RGB (0..65535)
    above. ``rotation`` is the display-matrix rotation in degrees counter-clockwise (as FFmpeg
    reports it); pixels are never rotated, the matrix is carried to the output
    (``display_matrix``, FFmpeg's nine int32 values, ``None`` when absent).

    Colour tags are FFmpeg enum values (``AVColorRange``, ``AVColorPrimaries``,
    ``AVColorTransferCharacteristic``, ``AVColorSpace``; 0 or 2 mean unspecified); see
    :attr:`colour` for names.
    """

    width: int
    height: int
    pix_fmt: str
    bit_depth: int
    time_base: Fraction
    fps: Fraction | None
    frame_count: int | None
    duration: float | None
    codec: str
    rotation: int = 0
    display_matrix: tuple[int, ...] | None = None
    audio_codecs: tuple[str, ...] = ()
    subtitle_codecs: tuple[str, ...] = ()
    color_range: int = 0
    color_primaries: int = 2
    color_trc: int = 2
    colorspace: int = 2
    sample_aspect_ratio: Fraction | None = None
    start_pts: int | None = None
    container_format: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    video_metadata: dict[str, str] = field(default_factory=dict)
    path: str | None = None
    is_image_sequence: bool = False

    @property
    def has_audio(self) -> bool:
        """Whether the source has at least one audio stream."""
        return bool(self.audio_codecs)

    @property
    def has_subtitles(self) -> bool:
        """Whether the source has at least one subtitle stream."""
        return bool(self.subtitle_codecs)

    @property
    def is_high_bit_depth(self) -> bool:
        """True when frames are read as uint16 (more than 8 bits per sample)."""
        return self.bit_depth > 8

    @property
    def colour(self) -> dict[str, str]:
        """Colour tags by FFmpeg name, e.g. ``{"range": "tv", "primaries": "bt709", ...}``."""
        return {
            "range": COLOR_RANGE_NAMES.get(self.color_range, str(self.color_range)),
            "primaries": COLOR_PRIMARIES_NAMES.get(self.color_primaries, str(self.color_primaries)),
            "trc": COLOR_TRC_NAMES.get(self.color_trc, str(self.color_trc)),
            "colorspace": COLORSPACE_NAMES.get(self.colorspace, str(self.colorspace)),
        }


def _fraction(value: Any) -> Fraction | None:
    if value is None:
        return None
    try:
        frac = Fraction(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return frac if frac > 0 else None


def display_matrix_of(frame: Any) -> tuple[int, ...] | None:
    """The nine int32 values of a decoded frame's DISPLAYMATRIX side data, or ``None``."""
    try:
        for side in frame.side_data:
            if side.type.name == "DISPLAYMATRIX":
                data = bytes(side)
                if len(data) >= 36:
                    return tuple(struct.unpack("=9i", data[:36]))
    except AV_ERRORS:
        return None
    return None


def _first_frame(container: Any, stream: Any) -> Any | None:
    packets = 0
    for packet in container.demux(stream):
        for frame in packet.decode():
            return frame
        packets += 1
        if packets > _PROBE_PACKET_LIMIT:
            break
    return None


def probe(path: str | Path) -> VideoInfo:
    """Read a video file's :class:`VideoInfo` (decodes its first frame only).

    A folder of images is probed as an image sequence (25 fps; see
    :class:`~semlens.io.ImageSequenceReader`). Raises :class:`~semlens.errors.InputNotFoundError`
    for a missing path and :class:`~semlens.errors.InvalidInputError` for anything unreadable
    (empty, not a video, no video stream, no decodable frame, absurd size); messages are one line.
    """
    path = Path(path)
    if path.is_dir():
        from .images import ImageSequenceReader  # images.py imports this module

        return ImageSequenceReader(path).info
    check_input_file(path)
    container = open_input(path)
    try:
        return _probe_container(container, path)
    except SemlensError:
        raise
    except AV_ERRORS as exc:
        raise InvalidInputError(
            f"input {str(path)!r} is not a video semlens can read ({describe(exc)}); check that it plays in a media player"
        ) from exc
    finally:
        try:
            container.close()
        except AV_ERRORS:
            pass


def _probe_container(container: Any, path: Path) -> VideoInfo:
    stream = pick_video_stream(container)
    if stream is None:
        kinds = sorted({s.type for s in container.streams}) or ["no streams"]
        raise InvalidInputError(
            f"input {str(path)!r} has no video stream (it holds: {', '.join(kinds)}); give a video file"
        )
    codec = codec_name(stream)
    time_base = _fraction(stream.time_base)
    fps = _fraction(stream.average_rate) or _fraction(getattr(stream, "guessed_rate", None))
    frame_count = int(stream.frames) if stream.frames and stream.frames > 0 else None
    if stream.duration and time_base is not None:
        duration: float | None = float(stream.duration * time_base)
    elif container.duration:
        duration = container.duration / av.time_base
    else:
        duration = None
    if duration is not None and duration <= 0:
        duration = None

    frame = _first_frame(container, stream)
    if frame is None:
        raise InvalidInputError(
            f"input {str(path)!r} has a video stream but no frame could be decoded (truncated or corrupt); re-copy or re-download it"
        )
    width, height = int(frame.width), int(frame.height)
    if not (0 < width <= MAX_DIMENSION and 0 < height <= MAX_DIMENSION):
        raise InvalidInputError(
            f"input {str(path)!r} claims a frame size of {width}x{height}, outside 1..{MAX_DIMENSION}; the file is corrupt"
        )
    pix_fmt = frame.format.name
    if time_base is None:
        time_base = Fraction(1, int(fps)) if fps and fps.denominator == 1 else Fraction(1, 90000)
    matrix = display_matrix_of(frame)
    try:
        rotation = int(frame.rotation) if matrix is not None else 0
    except AV_ERRORS:
        rotation = 0
    try:
        sar = _fraction(stream.sample_aspect_ratio)
    except AV_ERRORS:
        sar = None

    return VideoInfo(
        width=width,
        height=height,
        pix_fmt=pix_fmt,
        bit_depth=bit_depth_of(pix_fmt),
        time_base=time_base,
        fps=fps,
        frame_count=frame_count,
        duration=duration,
        codec=codec,
        rotation=rotation,
        display_matrix=matrix,
        audio_codecs=tuple(codec_name(s) for s in container.streams.audio),
        subtitle_codecs=tuple(codec_name(s) for s in container.streams.subtitles),
        color_range=int(frame.color_range),
        color_primaries=int(frame.color_primaries),
        color_trc=int(frame.color_trc),
        colorspace=int(frame.colorspace),
        sample_aspect_ratio=sar,
        start_pts=stream.start_time,
        container_format=container.format.name if container.format else "",
        metadata=dict(container.metadata),
        video_metadata=dict(stream.metadata),
        path=str(path),
    )
