"""Video writer (PyAV only): encode RGB frames with their source timestamps, remux the rest.

Frames: ``write(image, pts)`` takes ``(H, W, 3)`` RGB, uint8 (0..255) or uint16 (0..65535), of
the size the writer was opened for (any size: e.g. the source size times 2 or 4), and the source
frame's ``pts``. A producer that can convert to YUV itself (the upscaler does it on the compute
device) passes :class:`PlanarImage` frames laid out as :attr:`VideoWriter.planar_layout` says,
and no conversion happens here. The video stream gets the source's time base and every output frame keeps its
input pts, so frame count, duration and variable frame rate are kept exactly (no re-timing).
Each packet gets its frame's duration (the gap to the next pts; pass ``duration=`` for the last
frame, e.g. ``frame.duration`` from the reader, else it lasts as long as the one before it).
MP4/MOV keep the source's pts exactly (the movie timescale is set to the video track's for the
edit list). Matroska/WebM and MPEG-TS keep them too where FFmpeg would shift every stream to
start at zero: a copied stream that starts before the video (the AAC priming of an mp4 source,
21-23 ms) keeps its negative start (Matroska stores it relative to the first cluster, MPEG-TS
modulo 2**33), and so do the B-frame decoding times in MPEG-TS. Matroska stores milliseconds, so
finer pts are rounded to 1 ms. AVI stores no timestamps at all (its frames read back shifted, out
of order with B-frames, and at a constant rate): it is refused with an :class:`OutputError`.

Encoding is reproducible: the same frames and settings give the same file, byte for byte.
libx264 runs with ``cpu-independent=1`` (its canonical macroblock-tree code instead of SIMD
versions that differ from one another, and of which the AVX-512 ones gave a different file on
every run); its output still depends on its thread count, which follows the number of CPUs.

Errors of the file itself (``ENOSPC``, disk full, while writing frames, the trailer or on
closing) are :class:`OutputError` with the file's path and the cause, via :class:`OutputFile`.

Other streams: audio and subtitle streams of ``source_path`` are copied packet for packet (no
re-encode) with their metadata, language and disposition. They are read from a second demuxer as
the video advances and interleaved by timestamp, so memory does not grow with the video's length.
A stream the output container cannot hold (e.g. SRT subtitles in .mp4, Opus in .mov) is skipped
with an :class:`OutputWarning` and listed in ``VideoWriter.skipped_streams``. MP4 output gets
``+faststart`` (index first, for streaming players).

Metadata: container and video-stream metadata are copied (minus tags the muxer owns, such as
``encoder`` and ``duration``); the display matrix (rotation) is carried as stream side data;
colour range, primaries, transfer and matrix are tagged like the source, and RGB is converted to
YUV with the source's matrix (BT.601 when unspecified, like FFmpeg's reading side).

Pixel formats (``pix_fmt=None`` picks automatically, see :func:`choose_pix_fmt`):

- 8-bit source: ``yuv420p`` (``yuv444p`` for the lossless ``ffv1``).
- Source with more than 8 bits per sample: written 10-bit (``yuv420p10le`` with libx264 / libx265 /
  libsvtav1, ``yuv444p10le``/``12le``/``16le`` with ffv1); a codec without a high-bit-depth format
  falls back to 8-bit with a warning.
- Odd width or height: 4:2:0 chroma needs even sizes, so the automatic choice switches to the 4:4:4
  format of the same depth (``yuv444p``; libx264/libx265 encode it, the displayed size stays exact)
  with a warning. An explicit subsampled ``pix_fmt`` at an odd size, or a codec without 4:4:4
  (libsvtav1), raises :class:`~semlens.errors.OutputError`. (The upscaler multiplies sizes by 2 or
  4, so its outputs are always even.)
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import numpy as np

from ..errors import OutputError
from ._av import AV_ERRORS, bit_depth_of, codec_name, describe, pick_video_stream, sws_colorspace
from .info import VideoInfo

__all__ = [
    "CODEC_ALIASES",
    "DEFAULT_CODEC",
    "OutputWarning",
    "PlanarImage",
    "PlanarLayout",
    "VideoWriter",
    "choose_pix_fmt",
    "encoder_pix_fmts",
    "resolve_codec",
]

DEFAULT_CODEC = "libx264"
DEFAULT_CRF = 18
DEFAULT_PRESET = "medium"

CODEC_ALIASES: dict[str, str] = {
    "h264": "libx264",
    "x264": "libx264",
    "avc": "libx264",
    "h265": "libx265",
    "hevc": "libx265",
    "x265": "libx265",
    "av1": "libsvtav1",
    "svtav1": "libsvtav1",
    "svt-av1": "libsvtav1",
    "vp9": "libvpx-vp9",
}

# x264-style preset names translated to SVT-AV1's numeric presets (0 slowest .. 13 fastest).
_SVT_PRESETS = {
    "placebo": "0",
    "veryslow": "2",
    "slower": "4",
    "slow": "5",
    "medium": "7",
    "fast": "8",
    "faster": "9",
    "veryfast": "10",
    "superfast": "11",
    "ultrafast": "12",
}

# Tags the muxer writes itself; copying a stale value over would be wrong.
_MUXER_OWNED_TAGS = {
    "encoder",
    "duration",
    "major_brand",
    "minor_version",
    "compatible_brands",
    "rotate",
    "number_of_frames",
    "number_of_bytes",
    "bps",
    "bps-eng",
    "duration-eng",
    "number_of_frames-eng",
    "number_of_bytes-eng",
}

_MP4_FAMILY = {"mp4", "mov", "ipod", "3gp", "3g2", "psp", "ismv", "f4v"}
# Containers whose streams keep a start below zero when FFmpeg is told not to shift them.
_NEGATIVE_TS_FORMATS = {"matroska", "webm", "mpegts"}
# Encoders suggested, in this order, when a container cannot hold the one asked for.
_SUGGESTED_CODECS = ("libx264", "libvpx-vp9", "libsvtav1", "libx265", "ffv1", "gif")


class OutputWarning(UserWarning):
    """The output differs from what was asked in a documented way (a stream skipped, 8-bit fallback...)."""


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
    """The YUV frames a :class:`VideoWriter` encodes, for producers that convert RGB themselves.

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


def resolve_codec(codec: str) -> str:
    """Map friendly names (``h264``, ``hevc``, ``av1``, ...) to the bundled encoder's name and check it
    exists; raises :class:`OutputError` for unknown or non-video encoders."""
    name = CODEC_ALIASES.get(codec.lower(), codec) if codec else DEFAULT_CODEC
    try:
        c = av.Codec(name, "w")
    except AV_ERRORS as exc:
        raise OutputError(
            f"unknown video encoder {codec!r}; use one of libx264, libx265, libsvtav1, ffv1, libvpx-vp9"
        ) from exc
    if c.type != "video":
        raise OutputError(f"{codec!r} is a {c.type} encoder, not a video encoder; use e.g. libx264")
    return c.name


def encoder_pix_fmts(codec: str) -> list[str] | None:
    """Pixel formats the bundled ``codec`` encoder accepts (``None`` if it does not say)."""
    c = av.Codec(resolve_codec(codec), "w")
    formats = c.video_formats
    return [f.name for f in formats] if formats else None


def _subsampled(pix_fmt: str) -> tuple[bool, bool]:
    fmt = av.VideoFormat(pix_fmt)
    if fmt.is_rgb or len(fmt.components) < 3:
        return (False, False)
    return (fmt.chroma_width(2) < 2, fmt.chroma_height(2) < 2)


def _to_444(pix_fmt: str) -> str:
    for sub in ("420p", "422p", "440p", "411p", "410p"):
        if sub in pix_fmt:
            return pix_fmt.replace(sub, "444p")
    return pix_fmt


def choose_pix_fmt(
    codec: str,
    *,
    bit_depth: int = 8,
    width: int,
    height: int,
    requested: str | None = None,
    warn: bool = True,
) -> str:
    """The pixel format to encode with (see the module docstring for the rules).

    ``bit_depth`` is the source's bits per sample (8 for uint8 frames). Raises
    :class:`OutputError` when the request cannot be met.
    """
    codec = resolve_codec(codec)
    supported = encoder_pix_fmts(codec)

    def ok(fmt: str) -> bool:
        return supported is None or fmt in supported

    def odd_ok(fmt: str) -> bool:
        sub_w, sub_h = _subsampled(fmt)
        return not ((sub_w and width % 2) or (sub_h and height % 2))

    if requested is not None:
        try:
            av.VideoFormat(requested)
        except AV_ERRORS as exc:
            raise OutputError(f"unknown pixel format {requested!r}; use e.g. yuv420p or yuv420p10le") from exc
        if not ok(requested):
            raise OutputError(
                f"{codec} cannot encode pixel format {requested!r}; it supports: {', '.join(supported or [])}"
            )
        if not odd_ok(requested):
            alt = _to_444(requested)
            hint = f" or pix_fmt={alt!r}" if ok(alt) else ""
            raise OutputError(
                f"{codec} with {requested} needs an even width and height, got {width}x{height}; use an even size{hint}"
            )
        return requested

    lossless = codec == "ffv1"
    family = "444p" if lossless else "420p"
    candidates: list[str] = []
    if bit_depth > 8:
        depths = [d for d in (bit_depth, 10, 12, 16) if d in (10, 12, 16)]
        for d in dict.fromkeys(depths):
            candidates.append(f"yuv{family}{d}le")
        if not lossless:
            candidates.append("yuv444p10le")
    candidates.append(f"yuv{family}")
    if supported is not None:
        candidates.extend(supported)

    chosen = next((f for f in candidates if ok(f)), None)
    if chosen is None:
        raise OutputError(f"{codec} offers no usable pixel format")
    if not odd_ok(chosen):
        alt = _to_444(chosen)
        if ok(alt) and odd_ok(alt):
            if warn:
                warnings.warn(
                    OutputWarning(
                        f"{width}x{height} is odd-sized: encoding {alt} instead of {chosen} (4:2:0 needs even sizes)"
                    ),
                    stacklevel=3,
                )
            chosen = alt
        else:
            raise OutputError(
                f"{codec} cannot encode an odd size ({width}x{height}); use an even size or codec libx264 / ffv1"
            )
    if bit_depth > 8 and bit_depth_of(chosen) <= 8 and warn:
        warnings.warn(
            OutputWarning(
                f"{codec} has no high-bit-depth format here; writing 8-bit (use libx265, libx264 or ffv1 to keep {bit_depth}-bit)"
            ),
            stacklevel=3,
        )
    return chosen


def _codec_options(codec: str, crf: int | float | None, preset: str | None) -> dict[str, str]:
    opts: dict[str, str] = {}
    if codec in ("libx264", "libx265"):
        if crf is not None:
            opts["crf"] = str(crf)
        if preset:
            opts["preset"] = str(preset)
        if codec == "libx264":
            # x264's SIMD versions of the macroblock-tree cost propagation are not bit-exact with
            # one another, and the AVX-512 ones read memory they never wrote, so the same frames
            # gave different files from run to run. The canonical versions make the output
            # depend only on the frames and the settings (and x264's thread count).
            opts["x264-params"] = "cpu-independent=1"
        if codec == "libx265":
            opts["x265-params"] = "log-level=error"
    elif codec == "libsvtav1":
        if crf is not None:
            opts["crf"] = str(int(crf))
        if preset:
            opts["preset"] = _SVT_PRESETS.get(str(preset), str(preset))
    elif codec == "libvpx-vp9":
        if crf is not None:
            opts["crf"] = str(int(crf))
            opts["b"] = "0"
    return opts


def _merge_options(opts: dict[str, str], extra: dict[str, str] | None) -> dict[str, str]:
    """``opts`` updated with the caller's ``extra``; encoder parameter lists (``x264-params``,
    ``x265-params``) are joined, the caller's entries last so that they win."""
    merged = dict(opts)
    for key, value in (extra or {}).items():
        value = str(value)
        if key.endswith("-params") and merged.get(key):
            merged[key] = f"{merged[key]}:{value}"
        else:
            merged[key] = value
    return merged


def _mov_track_timescale(time_base: Fraction) -> int:
    """The timescale FFmpeg's mp4 muxer gives a video track of this time base."""
    scale = time_base.denominator
    while scale < 10000:
        scale *= 2
    return min(scale, 2**31 - 1)


def _container_hint(format_name: str, codec: str) -> str:
    """What to do when the ``format_name`` container refuses ``codec``: the bundled encoders it
    does hold, else .mkv."""
    fits = []
    for candidate in _SUGGESTED_CODECS:
        if candidate == codec:
            continue
        try:
            av.Codec(candidate, "w")
            with av.open(io.BytesIO(), mode="w", format=format_name) as probe:
                probe.add_stream(candidate)
        except AV_ERRORS:
            continue
        fits.append(candidate)
    if not fits:
        return "write .mkv instead (it holds every codec)"
    alternatives = " or ".join(f"codec {c} (--codec {c})" for c in fits[:2])
    return f"use {alternatives}, or write .mkv (it holds every codec)"


def _copy_tags(tags: dict[str, str], into: dict[str, Any]) -> None:
    for key, value in tags.items():
        k = key.lower()
        if k in _MUXER_OWNED_TAGS or k.startswith("_statistics"):
            continue
        into[key] = value


def _open_binary(path: Path) -> Any:
    return open(path, "w+b")


class OutputFile:
    """The file a :class:`VideoWriter` muxes into: a binary file that remembers its first error.

    PyAV turns an exception of a Python file object into "Error in PyAV callback", or drops it
    where FFmpeg ignores a failed write (while writing the trailer, for one). So the first
    ``OSError`` (e.g. ``ENOSPC``, disk full) is kept in ``error`` instead of raised, the file is
    closed, and later writes and seeks go nowhere; the writer checks ``error`` after each step and
    reports the real cause, and never a file that lost data as finished.
    """

    opener = staticmethod(_open_binary)

    def __init__(self, path: str | Path) -> None:
        self.name = str(path)  # muxers that rewrite the file (mp4 faststart) reopen it by name
        self._file = self.opener(Path(path))
        self.error: OSError | None = None
        self._pos = 0  # the position once the file failed

    def _fail(self, exc: OSError) -> None:
        self.error = exc
        self._pos = self._file.tell() if not self._file.closed else 0
        try:
            self._file.close()
        except OSError:
            pass  # the buffered bytes are lost either way

    def read(self, size: int = -1) -> bytes:
        if self.error is not None:
            return b""
        try:
            return self._file.read(size)
        except OSError as exc:
            self._fail(exc)
            return b""

    def write(self, data: bytes) -> int:
        if self.error is None:
            try:
                return self._file.write(data)
            except OSError as exc:
                self._fail(exc)
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if self.error is None:
            try:
                return self._file.seek(offset, whence)
            except OSError as exc:  # seeking flushes the buffer
                self._fail(exc)
        self._pos = offset if whence == os.SEEK_SET else self._pos + offset
        return self._pos

    def tell(self) -> int:
        return self._pos if self.error is not None else self._file.tell()

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return bool(self._file.closed)

    def close(self) -> None:
        """Flush and close; a failed flush is kept in ``error`` (and not raised)."""
        if self._file.closed:
            return
        try:
            self._file.close()
        except OSError as exc:
            self.error = self.error or exc


class VideoWriter:
    """Encode frames into a video file, copying the source's audio/subtitles and metadata.

    ``with VideoWriter(tmp, width=W, height=H, source=reader.info, source_path=src) as w:
    w.write(image, frame.pts)``. ``image`` is ``(height, width, 3)`` uint8 or uint16 RGB; ``pts``
    is the source frame's pts in ``source.time_base`` units (``None``: one frame after the last).
    Timestamps must increase; a repeated or decreasing pts is moved one tick after the previous one
    (with a warning) because encoders refuse it.

    Without ``source``, frames are timed by ``fps`` (default 25) in time base ``time_base``
    (default ``1/fps``). ``copy_audio`` / ``copy_subtitles`` need ``source_path``. Leaving the
    ``with`` block with an exception aborts (nothing is flushed); pair with
    :func:`~semlens.io.atomic_output` so the partial file is removed.

    Errors: :class:`OutputError` (unknown codec, container cannot hold the codec, disk errors,
    no frame written), ``ValueError`` for a frame of the wrong shape or dtype.

    After :meth:`close`: ``frames_written``, ``copied_streams`` / ``skipped_streams`` (labels such
    as ``"#1 audio aac"``) and ``copied_packets`` describe what went into the file. With
    ``codec="libsvtav1"`` the environment variable ``SVT_LOG`` defaults to 1 (errors only).

    Packet mode: with ``template`` (a demuxed video stream of an already-encoded file), no encoder
    is opened; the video stream copies the template's codec parameters and :meth:`write_packet`
    muxes that file's packets (e.g. to join separately encoded parts of one video), with the same
    container set-up, metadata and audio/subtitle copying as encoded frames get.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        width: int,
        height: int,
        source: VideoInfo | None = None,
        source_path: str | Path | None = None,
        codec: str = DEFAULT_CODEC,
        crf: int | float | None = DEFAULT_CRF,
        preset: str | None = DEFAULT_PRESET,
        pix_fmt: str | None = None,
        copy_audio: bool = True,
        copy_subtitles: bool = True,
        copy_metadata: bool = True,
        fps: float | Fraction | None = None,
        time_base: Fraction | None = None,
        options: dict[str, str] | None = None,
        container_format: str | None = None,
        faststart: bool = True,
        template: Any | None = None,
    ) -> None:
        self.path = Path(path)
        self._template = template
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"width and height must be positive, got {width}x{height}")
        self.width, self.height = int(width), int(height)
        self.source = source
        self.source_path = Path(source_path) if source_path is not None else None
        self.codec = codec_name(template) if template is not None else resolve_codec(codec)
        if self.codec == "libsvtav1":
            os.environ.setdefault("SVT_LOG", "1")  # SVT-AV1 prints pages of info to stderr otherwise
        depth = source.bit_depth if source is not None else 8
        if template is not None:
            self.pix_fmt = template.codec_context.pix_fmt or pix_fmt or "yuv420p"
        else:
            self.pix_fmt = choose_pix_fmt(
                self.codec, bit_depth=depth, width=self.width, height=self.height, requested=pix_fmt
            )
        self.bit_depth = bit_depth_of(self.pix_fmt)

        if source is not None:
            self.time_base = Fraction(time_base or source.time_base)
            self.fps = Fraction(fps).limit_denominator(1001000) if fps else source.fps
        else:
            self.fps = Fraction(fps).limit_denominator(1001000) if fps else Fraction(25)
            self.time_base = Fraction(time_base) if time_base else 1 / self.fps
        if self.time_base <= 0:
            raise ValueError(f"time_base must be positive, got {self.time_base}")
        step = (1 / self.fps / self.time_base) if self.fps else Fraction(1)
        self._pts_step = max(1, round(step))

        self.frames_written = 0
        self.skipped_streams: list[str] = []
        self.copied_streams: list[str] = []
        self.copied_packets = 0
        self._last_pts: int | None = None
        self._last_gap: int | None = None
        self._durations: dict[int, int] = {}
        self._held: tuple[Any, int | None] | None = None
        self._warned_pts = False
        self._closed = False
        self._out: Any | None = None
        self._file: OutputFile | None = None
        self._aux: Any | None = None
        self._aux_iter: Any | None = None
        self._aux_pending: Any | None = None
        self._aux_map: dict[int, Any] = {}

        settings = dict(
            copy_metadata=copy_metadata,
            crf=crf,
            preset=preset,
            options=options,
            container_format=container_format,
            faststart=faststart,
        )
        try:
            self._open(copy_audio=copy_audio, copy_subtitles=copy_subtitles, **settings)
            try:
                self._start()
            except OutputError as exc:
                if not self.copied_streams:
                    raise
                # The muxer accepted a copied stream but cannot write its header (e.g. Opus in .mov):
                # start again with the video alone rather than fail the whole job.
                reason = describe(exc.__cause__) if exc.__cause__ is not None else str(exc)
                fmt = self._out.format.name.split(",")[0] if self._out is not None else "output"
                warnings.warn(
                    OutputWarning(
                        f"{', '.join(self.copied_streams)} not copied: the {fmt} muxer refused it ({reason}); use .mkv to keep it"
                    ),
                    stacklevel=2,
                )
                self._teardown()
                self.skipped_streams += self.copied_streams
                self.copied_streams = []
                self._open(copy_audio=False, copy_subtitles=False, **settings)
                self._start()
        except BaseException:
            self.abort()
            raise

    def _start(self) -> None:
        """Open the encoder and write the container header now, so that errors surface here."""
        assert self._out is not None
        try:
            self._out.start_encoding()
        except AV_ERRORS as exc:
            raise OutputError(f"cannot write the header of {str(self.path)!r} ({self._reason(exc)})") from exc

    def _teardown(self) -> None:
        """Drop the output and the second demuxer without writing anything more."""
        self._close_aux()
        self._aux_map = {}
        file, self._file = self._file, None
        out, self._out = self._out, None
        if file is not None:
            file.close()
        if out is not None:
            try:
                out.close()
            except AV_ERRORS:
                pass

    # -- setup -----------------------------------------------------------------------------------
    def _open(
        self,
        *,
        copy_audio: bool,
        copy_subtitles: bool,
        copy_metadata: bool,
        crf: int | float | None,
        preset: str | None,
        options: dict[str, str] | None,
        container_format: str | None,
        faststart: bool,
    ) -> None:
        # The muxer writes through a Python file object that we own, so that abort() can close the
        # file first: PyAV then skips the trailer (no faststart rewrite of a file about to be removed).
        try:
            probe_out = av.open(str(self.path), mode="w", format=container_format)  # creates no file
            fmt_name = probe_out.format.name
            probe_out.close()
        except AV_ERRORS as exc:
            raise OutputError(
                f"cannot create {str(self.path)!r} ({describe(exc)}); use a known video extension such as .mp4 or .mkv"
            ) from exc
        if "avi" in fmt_name.split(","):
            raise OutputError(
                f"cannot write {str(self.path)!r}: AVI stores no timestamps (frames would come out shifted, "
                "B-frames out of order, a variable frame rate lost); write .mkv or .mp4 instead"
            )
        try:
            self._file = OutputFile(self.path)  # closed in close() / abort()
        except OSError as exc:
            raise OutputError(f"cannot create {str(self.path)!r} ({exc.strerror or exc})") from exc
        try:
            self._out = av.open(self._file, mode="w", format=fmt_name)
        except AV_ERRORS as exc:
            raise OutputError(f"cannot create {str(self.path)!r} ({describe(exc)})") from exc
        out = self._out
        fmt_names = set(out.format.name.split(","))
        if fmt_names & _MP4_FAMILY:
            if faststart:
                out.options["movflags"] = "+faststart"
            # Edit lists (a start offset, B-frame delay) are stored in the movie timescale, 1/1000 s
            # by default: use the video track's timescale so that a start pts survives exactly.
            out.options["movie_timescale"] = str(_mov_track_timescale(self.time_base))
        if fmt_names & _NEGATIVE_TS_FORMATS:
            # FFmpeg would shift every stream so that none starts below zero (the AAC priming of an
            # mp4 source's audio, the B-frame delay in MPEG-TS), moving the video off its source
            # times. Matroska stores a negative time relative to its first cluster and MPEG-TS
            # wraps it modulo 2**33, so the times are kept as they are.
            out.options["avoid_negative_ts"] = "disabled"

        opts = _merge_options(_codec_options(self.codec, crf, preset), options)
        try:
            if self._template is not None:  # packet mode: the template's codec parameters, no encoder
                stream = out.add_stream_from_template(self._template)
            else:
                stream = out.add_stream(self.codec, rate=self.fps or None, options=opts)
        except AV_ERRORS as exc:
            raise OutputError(
                f"the {out.format.name.split(',')[0]} container cannot hold {self.codec} video ({describe(exc)}); "
                f"{_container_hint(out.format.name, self.codec)}"
            ) from exc
        self._stream = stream
        stream.time_base = self.time_base
        ctx = stream.codec_context
        if self._template is None and self.codec == "libx264":
            # Frame threads rather than PyAV's default slices: slice boundaries cost x264 some
            # compression (about 1% at the same crf, benchmarks/encoder_threads.py), and encode()
            # hands the frame over instead of encoding it inside the call.
            ctx.thread_type = "FRAME"
        if self._template is None:
            stream.width = self.width
            stream.height = self.height
            stream.pix_fmt = self.pix_fmt
            ctx.time_base = self.time_base
            if self.fps:
                ctx.framerate = self.fps
            self._setup_colour(ctx)
        src = self.source
        if src is not None:
            if self._template is None and src.sample_aspect_ratio and src.sample_aspect_ratio != 1:
                ctx.sample_aspect_ratio = src.sample_aspect_ratio
            if src.display_matrix is not None:
                stream.set_display_matrix(list(src.display_matrix))
            elif src.rotation:
                stream.set_display_rotation(src.rotation)
            if copy_metadata:
                _copy_tags(src.metadata, out.metadata)
                _copy_tags(src.video_metadata, stream.metadata)

        if self.source_path is not None and not self.source_path.is_dir():
            if src is not None:  # open a second demuxer only if there is something to copy
                copy_audio = copy_audio and src.has_audio
                copy_subtitles = copy_subtitles and src.has_subtitles
            if copy_audio or copy_subtitles:
                self._open_aux(copy_audio=copy_audio, copy_subtitles=copy_subtitles)

    def _setup_colour(self, ctx: Any) -> None:
        """Tag the stream like the source and pick the RGB->YUV conversion to match."""
        src = self.source
        out_rgb = av.VideoFormat(self.pix_fmt).is_rgb
        src_yuv = src is not None and not src.is_image_sequence and not av.VideoFormat(src.pix_fmt).is_rgb
        colorspace = src.colorspace if src_yuv and src is not None else 2
        full_range = bool(src_yuv and src is not None and src.color_range == 2)
        self._sws_colorspace = None if out_rgb else sws_colorspace(colorspace)
        self._dst_range = None if out_rgb else (2 if full_range else 1)
        if src is not None:
            ctx.color_primaries = src.color_primaries
            ctx.color_trc = src.color_trc
        if out_rgb:
            ctx.colorspace = 0
            ctx.color_range = 2
        else:
            ctx.colorspace = colorspace
            if src_yuv and src is not None:
                ctx.color_range = src.color_range
            else:
                ctx.color_range = 1

    def _open_aux(self, *, copy_audio: bool, copy_subtitles: bool) -> None:
        """Open a second demuxer on the source and add the streams to copy."""
        assert self._out is not None and self.source_path is not None
        try:
            aux = av.open(str(self.source_path), mode="r", metadata_errors="replace")
        except AV_ERRORS as exc:
            warnings.warn(
                OutputWarning(
                    f"cannot reopen the source to copy audio/subtitles ({describe(exc)}); none copied"
                ),
                stacklevel=4,
            )
            return
        self._aux = aux
        wanted = []
        video = pick_video_stream(aux)
        for s in aux.streams:
            if s.type == "audio" and copy_audio or s.type == "subtitle" and copy_subtitles:
                wanted.append(s)
            elif s.type == "attachment" and copy_subtitles and aux.streams.subtitles:
                wanted.append(s)  # fonts used by ASS subtitles (Matroska)
            elif s is not video:
                try:
                    s.discard = av.stream.Discard.all
                except AV_ERRORS:
                    pass
        if video is not None:
            try:
                video.discard = av.stream.Discard.all
            except AV_ERRORS:
                pass
        packet_streams = []
        for s in wanted:
            label = f"#{s.index} {s.type} {codec_name(s)}"
            try:
                o = self._out.add_stream_from_template(s)
            except AV_ERRORS as exc:
                self.skipped_streams.append(label)
                warnings.warn(
                    OutputWarning(
                        f"{label} not copied: the {self._out.format.name.split(',')[0]} container cannot hold it "
                        f"({describe(exc)}); use .mkv to keep it"
                    ),
                    stacklevel=4,
                )
                continue
            _copy_tags(dict(s.metadata), o.metadata)
            try:
                o.disposition = s.disposition
            except AV_ERRORS:
                pass
            self.copied_streams.append(label)
            if s.type != "attachment":
                self._aux_map[s.index] = o
                packet_streams.append(s)
        if packet_streams:
            self._aux_iter = aux.demux(*packet_streams)
        else:
            self._close_aux()

    # -- writing ---------------------------------------------------------------------------------
    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()

    def _next_pts(self, pts: int | None) -> int:
        if pts is None:
            return 0 if self._last_pts is None else self._last_pts + self._pts_step
        pts = int(pts)
        if self._last_pts is not None and pts <= self._last_pts:
            if not self._warned_pts:
                self._warned_pts = True
                warnings.warn(
                    OutputWarning(
                        f"non-increasing pts {pts} after {self._last_pts}; moved to {self._last_pts + 1}"
                    ),
                    stacklevel=3,
                )
            pts = self._last_pts + 1
        return pts

    @functools.cached_property
    def planar_layout(self) -> PlanarLayout | None:
        """How to give this writer frames in its own pixel format, or ``None`` when it takes RGB
        only (packet mode, RGB or other pixel formats). Fixed once the writer is open."""
        if self._template is not None or self.pix_fmt not in _PLANAR_FORMATS:
            return None
        if self._sws_colorspace not in _LUMA_COEFFICIENTS:
            return None
        depth, subsampled = _PLANAR_FORMATS[self.pix_fmt]
        kr, kb = _LUMA_COEFFICIENTS[self._sws_colorspace]
        return PlanarLayout(self.pix_fmt, self.width, self.height, depth, subsampled, kr, kb,
                            full_range=self._dst_range == 2)

    def _planar_frame(self, image: PlanarImage) -> Any:
        layout = self.planar_layout
        if layout is None or image.pix_fmt != layout.pix_fmt:
            raise ValueError(f"this writer encodes {self.pix_fmt}, not {image.pix_fmt}; give it RGB frames")
        dtype = np.uint8 if layout.depth == 8 else np.uint16
        if image.data.shape != layout.shape or image.data.dtype != dtype:
            raise ValueError(
                f"a {layout.pix_fmt} frame of {self.width}x{self.height} is a {np.dtype(dtype).name} array of "
                f"shape {layout.shape}, got {image.data.dtype} {image.data.shape}"
            )
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image.data), format=layout.pix_fmt)
        frame.colorspace = 2 if self._sws_colorspace is None else self._sws_colorspace  # as reformat() tags it
        frame.color_range = self._dst_range
        return frame

    def _make_frame(self, image: np.ndarray | PlanarImage) -> Any:
        if isinstance(image, PlanarImage):
            return self._planar_frame(image)
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB array, got shape {getattr(image, 'shape', None)}")
        if image.shape[0] != self.height or image.shape[1] != self.width:
            raise ValueError(
                f"frame is {image.shape[1]}x{image.shape[0]} but the writer was opened for {self.width}x{self.height}"
            )
        if image.dtype == np.uint8:
            fmt = "rgb24"
        elif image.dtype == np.uint16:
            fmt = "rgb48le"
        else:
            raise ValueError(f"expected a uint8 or uint16 RGB array, got dtype {image.dtype}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=fmt)
        return frame.reformat(
            format=self.pix_fmt,
            dst_colorspace=self._sws_colorspace,
            dst_color_range=self._dst_range,
        )

    def write(self, image: np.ndarray | PlanarImage, pts: int | None = None, duration: int | None = None) -> None:
        """Encode one ``(height, width, 3)`` uint8/uint16 RGB frame (or a :class:`PlanarImage` in
        the writer's own pixel format) at ``pts`` (source time base).

        ``duration`` (ticks, optional) matters only for the last frame: every other frame lasts
        until the next one's pts; the last one lasts ``duration``, else as long as the frame
        before it. Frames are encoded one call late for that reason.
        """
        if self._closed or self._out is None:
            raise RuntimeError("VideoWriter is closed")
        frame = self._make_frame(image)
        pts = self._next_pts(pts)
        frame.pts = pts
        frame.time_base = self.time_base
        self._last_pts = pts
        held = self._held
        if held is not None:
            gap = pts - held[0].pts
            held[0].duration = gap
            self._last_gap = gap
            self._encode(held[0])
        self._held = (frame, duration)
        self.frames_written += 1

    def write_packet(self, packet: Any) -> None:
        """Mux one encoded video packet of the ``template``'s codec (packet mode only); its
        timestamps are in ``packet.time_base`` and are rescaled to the output's. Packets must come
        in decoding order with increasing ``dts``."""
        if self._closed or self._out is None:
            raise RuntimeError("VideoWriter is closed")
        if self._template is None:
            raise RuntimeError("write_packet() needs a VideoWriter opened with template=")
        ts = packet.dts if packet.dts is not None else packet.pts
        if ts is not None and packet.time_base:
            self._pump_aux(ts * packet.time_base)
        packet.stream = self._stream
        try:
            self._out.mux(packet)
        except AV_ERRORS as exc:
            raise self._write_error(exc) from exc
        self._check_file()
        self.frames_written += 1

    def _encode(self, frame: Any) -> None:
        assert self._out is not None
        self._pump_aux(frame.pts * self.time_base)
        if frame.duration:
            self._durations[frame.pts] = frame.duration
        try:
            self._mux_video(self._stream.encode(frame))
        except AV_ERRORS as exc:
            raise self._write_error(exc) from exc
        self._check_file()

    def _mux_video(self, packets: list[Any]) -> None:
        """Mux encoded packets, giving each the duration of its frame (encoders guess it from the
        average rate, which is wrong for VFR and for the last frame)."""
        assert self._out is not None
        for packet in packets:
            duration = self._durations.pop(packet.pts, None) if packet.pts is not None else None
            if duration:
                packet.duration = duration
            self._out.mux(packet)

    # -- errors of the file ----------------------------------------------------------------------
    def _reason(self, exc: BaseException) -> str:
        """Why ``exc`` happened, in a few words: the file's own error (e.g. "No space left on
        device") when there was one, as PyAV reports those only as "Error in PyAV callback"."""
        error = self._file.error if self._file is not None else None
        return describe(error if error is not None else exc)

    def _write_error(self, exc: BaseException) -> OutputError:
        return OutputError(f"writing {str(self.path)!r} failed ({self._reason(exc)})")

    def _check_file(self) -> None:
        """Raise the file's error, which PyAV may have dropped after a failed write."""
        if self._file is not None and self._file.error is not None:
            raise self._write_error(self._file.error) from self._file.error

    # -- remuxing of the other streams -----------------------------------------------------------
    def _pump_aux(self, until: Fraction | None) -> None:
        """Mux copied packets whose time is <= ``until`` seconds (all of them if ``None``)."""
        if self._aux_iter is None or self._out is None:
            return
        while True:
            packet = self._aux_pending
            if packet is None:
                try:
                    packet = next(self._aux_iter)
                except StopIteration:
                    self._close_aux()
                    return
                except AV_ERRORS as exc:
                    warnings.warn(
                        OutputWarning(f"copying audio/subtitles stopped early ({describe(exc)})"),
                        stacklevel=3,
                    )
                    self._close_aux()
                    return
                if packet.size == 0 or (packet.pts is None and packet.dts is None):
                    continue
            ts = packet.dts if packet.dts is not None else packet.pts
            if until is not None and packet.time_base and ts * packet.time_base > until:
                self._aux_pending = packet
                return
            self._aux_pending = None
            out_stream = self._aux_map.get(packet.stream_index)
            if out_stream is None:
                continue
            packet.stream = out_stream
            try:
                self._out.mux(packet)
                self.copied_packets += 1
            except AV_ERRORS as exc:
                self._check_file()  # a disk error is the file's, not the stream's
                label = f"#{packet.stream_index}"
                if label not in self.skipped_streams:
                    self.skipped_streams.append(label)
                    warnings.warn(
                        OutputWarning(f"a packet of stream {label} could not be copied ({describe(exc)})"),
                        stacklevel=3,
                    )

    def _close_aux(self) -> None:
        aux, self._aux = self._aux, None
        self._aux_iter = None
        self._aux_pending = None
        if aux is not None:
            try:
                aux.close()
            except AV_ERRORS:
                pass

    # -- finishing -------------------------------------------------------------------------------
    def close(self) -> None:
        """Flush the encoder, copy the remaining audio/subtitle packets, finish the file."""
        if self._closed:
            return
        if self.frames_written == 0:
            self.abort()
            raise OutputError(f"no frame was written to {str(self.path)!r}; the input gave no frames")
        try:
            assert self._out is not None
            if self._held is not None:
                frame, duration = self._held
                self._held = None
                frame.duration = int(duration) if duration else (self._last_gap or self._pts_step)
                self._encode(frame)
            for packet in self._stream.encode(None) if self._template is None else ():
                ts = packet.dts if packet.dts is not None else packet.pts
                if ts is not None and packet.time_base:
                    self._pump_aux(ts * packet.time_base)
                self._mux_video([packet])
            self._pump_aux(None)
            self._out.close()
            if self._file is not None:
                self._file.close()
                if self._file.error is not None:
                    raise self._file.error
        except OutputError:
            self.abort()
            raise
        except AV_ERRORS as exc:
            reason = self._reason(exc)
            self.abort()
            raise OutputError(f"finishing {str(self.path)!r} failed ({reason})") from exc
        finally:
            self._close_aux()
        self._out = None
        self._file = None
        self._closed = True

    def abort(self) -> None:
        """Stop without flushing (the file is left incomplete; the caller removes it)."""
        self._closed = True
        self._held = None
        self._teardown()  # closes our file first: PyAV then skips writing the trailer
