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

Other streams: audio and subtitle streams of ``source_path`` are copied packet for packet,
interleaved with the video by time (:mod:`semlens.io.remux`). MP4 output gets ``+faststart``
(index first, for streaming players). Metadata: container and video-stream metadata are copied
(minus tags the muxer owns, such as ``encoder`` and ``duration``); the display matrix (rotation)
is carried as stream side data; colours are tagged like the source and RGB is converted with its
matrix (:mod:`semlens.io.colour`). Codec, pixel format and encoder settings are chosen by
:mod:`semlens.io.encoding` (``pix_fmt=None``: :func:`choose_pix_fmt`).
"""

from __future__ import annotations

import functools
import os
import warnings
from fractions import Fraction
from pathlib import Path
from types import TracebackType
from typing import Any

import av
import numpy as np

from ..errors import OutputError
from ._av import AV_ERRORS, bit_depth_of, codec_name, describe
from .colour import Colour, PlanarImage, PlanarLayout, setup_colour
from .encoding import (
    CODEC_ALIASES,
    DEFAULT_CODEC,
    DEFAULT_CRF,
    DEFAULT_PRESET,
    OutputWarning,
    check_encoder_settings,
    choose_pix_fmt,
    codec_options,
    container_hint,
    encoder_pix_fmts,
    merge_options,
    resolve_codec,
)
from .info import VideoInfo
from .output_file import OutputFile
from .remux import StreamCopier, copy_tags

__all__ = [
    "CODEC_ALIASES",
    "DEFAULT_CODEC",
    "OutputFile",
    "OutputWarning",
    "PlanarImage",
    "PlanarLayout",
    "VideoWriter",
    "choose_pix_fmt",
    "encoder_pix_fmts",
    "resolve_codec",
]

_MP4_FAMILY = {"mp4", "mov", "ipod", "3gp", "3g2", "psp", "ismv", "f4v"}
# Containers whose streams keep a start below zero when FFmpeg is told not to shift them.
_NEGATIVE_TS_FORMATS = {"matroska", "webm", "mpegts"}


def _mov_track_timescale(time_base: Fraction) -> int:
    """The timescale FFmpeg's mp4 muxer gives a video track of this time base."""
    scale = time_base.denominator
    while scale < 10000:
        scale *= 2
    return min(scale, 2**31 - 1)


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

    Part of a source: ``shift_pts`` (ticks of the time base) is subtracted from every frame's pts,
    and copied audio/subtitles are moved as many seconds earlier (packets before that point are
    dropped, a subtitle cue showing there is kept from there); ``trim_aux`` drops the copied
    packets that start at or after the end of the last frame; ``aux_end`` (output seconds, when
    known in advance) drops those from there on and cuts a subtitle cue showing there.

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
        shift_pts: int = 0,
        trim_aux: bool = False,
        aux_end: Fraction | None = None,
    ) -> None:
        self.path = Path(path)
        self._template = template
        if int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"width and height must be positive, got {width}x{height}")
        self.width, self.height = int(width), int(height)
        self.source = source
        self.source_path = Path(source_path) if source_path is not None else None
        self.codec = codec_name(template) if template is not None else resolve_codec(codec)
        if template is None:
            check_encoder_settings(self.codec, crf, preset)
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
        self._shift = int(shift_pts)
        self._trim_aux = trim_aux
        self._aux_end = None if aux_end is None else Fraction(aux_end)
        self._end: Fraction | None = None  # output time where the last frame ends, once known

        self.frames_written = 0
        self.skipped_streams: list[str] = []
        self.copied_streams: list[str] = []
        self._last_pts: int | None = None
        self._last_gap: int | None = None
        self._durations: dict[int, int] = {}
        self._held: tuple[Any, int | None] | None = None
        self._warned_pts = False
        self._closed = False
        self._out: Any | None = None
        self._file: OutputFile | None = None
        self._copier: StreamCopier | None = None
        self._colour: Colour | None = None

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
        self._copier = None
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

        opts = merge_options(codec_options(self.codec, crf, preset), options)
        try:
            if self._template is not None:  # packet mode: the template's codec parameters, no encoder
                stream = out.add_stream_from_template(self._template)
            else:
                stream = out.add_stream(self.codec, rate=self.fps or None, options=opts)
        except AV_ERRORS as exc:
            raise OutputError(
                f"the {out.format.name.split(',')[0]} container cannot hold {self.codec} video ({describe(exc)}); "
                f"{container_hint(out.format.name, self.codec)}"
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
            self._colour = setup_colour(ctx, self.source, self.pix_fmt)
        src = self.source
        if src is not None:
            if self._template is None and src.sample_aspect_ratio and src.sample_aspect_ratio != 1:
                ctx.sample_aspect_ratio = src.sample_aspect_ratio
            if src.display_matrix is not None:
                stream.set_display_matrix(list(src.display_matrix))
            elif src.rotation:
                stream.set_display_rotation(src.rotation)
            if copy_metadata:
                copy_tags(src.metadata, out.metadata)
                copy_tags(src.video_metadata, stream.metadata)

        if self.source_path is not None and not self.source_path.is_dir():
            if src is not None:  # open a second demuxer only if there is something to copy
                copy_audio = copy_audio and src.has_audio
                copy_subtitles = copy_subtitles and src.has_subtitles
            if copy_audio or copy_subtitles:
                self._copier = StreamCopier(
                    out,
                    self.source_path,
                    copy_audio=copy_audio,
                    copy_subtitles=copy_subtitles,
                    copied_streams=self.copied_streams,
                    skipped_streams=self.skipped_streams,
                    check_file=self._check_file,
                    start=self._shift * self.time_base,
                    end=self._aux_end,
                )

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

    @property
    def copied_packets(self) -> int:
        """Packets of the other streams muxed so far."""
        return self._copier.copied_packets if self._copier is not None else 0

    @functools.cached_property
    def planar_layout(self) -> PlanarLayout | None:
        """How to give this writer frames in its own pixel format, or ``None`` when it takes RGB
        only (packet mode, RGB or other pixel formats). Fixed once the writer is open."""
        if self._template is not None or self._colour is None:
            return None
        return self._colour.planar_layout(self.width, self.height)

    def write(self, image: np.ndarray | PlanarImage, pts: int | None = None, duration: int | None = None) -> None:
        """Encode one ``(height, width, 3)`` uint8/uint16 RGB frame (or a :class:`PlanarImage` in
        the writer's own pixel format) at ``pts`` (source time base).

        ``duration`` (ticks, optional) matters only for the last frame: every other frame lasts
        until the next one's pts; the last one lasts ``duration``, else as long as the frame
        before it. Frames are encoded one call late for that reason.
        """
        if self._closed or self._out is None:
            raise RuntimeError("VideoWriter is closed")
        if self._colour is None:
            raise RuntimeError("write() encodes frames; a writer opened with template= takes write_packet()")
        if isinstance(image, PlanarImage):
            frame = self._colour.planar_frame(self.planar_layout, image)
        else:
            frame = self._colour.rgb_frame(image, self.width, self.height)
        pts = self._next_pts(None if pts is None else int(pts) - self._shift)
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
        if packet.pts is not None and packet.time_base:
            end = (packet.pts + (packet.duration or 0)) * packet.time_base
            self._end = end if self._end is None else max(self._end, end)
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

    # -- the other streams ------------------------------------------------------------------------
    def _pump_aux(self, until: Fraction | None) -> None:
        if self._copier is not None and self._out is not None:
            self._copier.pump(until)

    def _close_aux(self) -> None:
        if self._copier is not None:
            self._copier.close()

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
                self._end = (frame.pts + frame.duration) * self.time_base
                self._encode(frame)
            for packet in self._stream.encode(None) if self._template is None else ():
                ts = packet.dts if packet.dts is not None else packet.pts
                if ts is not None and packet.time_base:
                    self._pump_aux(ts * packet.time_base)
                self._mux_video([packet])
            if self._trim_aux and self._end is not None:  # copied streams end with the video
                self._pump_aux(self._end - Fraction(1, 10**9))
            else:
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
