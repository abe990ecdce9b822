"""Streaming video reader (PyAV only): frames one at a time, with their timestamps.

Memory does not grow with the length of the video: the reader holds one decoded frame (plus the
decoder's own small frame-threading queue) at a time.

Layout of a yielded :class:`Frame`: ``image`` is ``(H, W, 3)`` RGB, **uint8** (0..255) for sources
with at most 8 bits per sample, **uint16** (0..65535, full scale: rgb48) for deeper sources such as
``yuv420p10le``; ``pts`` is the frame's presentation timestamp in ``reader.info.time_base`` units
(``None`` if the container has none). Pixels are kept as stored: no rotation is applied (the
rotation is reported in ``info.rotation`` and carried to the output by the writer).

Damaged input: a file that decodes only partly (truncated, a corrupt packet) yields what decodes,
then emits a :class:`TruncatedInputWarning` and sets :attr:`VideoReader.truncated`; if not a single
frame decodes, :class:`~semlens.errors.InvalidInputError` is raised. No FFmpeg exception escapes.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ..errors import InvalidInputError
from ._av import AV_ERRORS, describe, open_input, pick_video_stream
from .info import VideoInfo, probe

__all__ = ["Frame", "FrameSource", "TruncatedInputWarning", "VideoReader"]

# Stop after this many undecodable packets in a row (a corrupt file, not a glitch).
_MAX_CONSECUTIVE_ERRORS = 64


class TruncatedInputWarning(UserWarning):
    """The input decoded only partly (truncated or damaged); the frames that decoded were used."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One decoded frame.

    ``image``: ``(H, W, 3)`` RGB, uint8 (8-bit sources) or uint16 (deeper sources, 0..65535).
    ``pts``: presentation timestamp in the source's ``time_base`` units, or ``None``.
    ``index``: position in decoding output order, from 0. ``time``: ``pts * time_base`` in seconds.
    ``duration``: the frame's duration in ``time_base`` units when the container says, else ``None``.
    """

    image: np.ndarray
    pts: int | None
    index: int
    time: float | None = None
    duration: int | None = None


@runtime_checkable
class FrameSource(Protocol):
    """What :func:`~semlens.io.open_source` returns: a video file or an image-folder reader."""

    info: VideoInfo

    def __iter__(self) -> Iterator[Frame]: ...

    def close(self) -> None: ...

    @property
    def truncated(self) -> bool: ...


class VideoReader:
    """Iterate over the frames of a video file as :class:`Frame` objects.

    ``with VideoReader(path) as reader: for frame in reader: ...``. Construction probes the file
    (raising :class:`~semlens.errors.InputNotFoundError` / :class:`~semlens.errors.InvalidInputError`);
    each iteration decodes from the start with frame threading (``thread_type="AUTO"``;
    ``threads=0`` lets FFmpeg pick the count).

    ``start_pts``: seek to the key frame at or before this pts and yield only the frames from
    there whose pts is at least ``start_pts`` (``index`` then counts from the first of them). A
    container that cannot seek exactly may start later; check the first frame's pts.
    """

    def __init__(self, path: str | Path, *, threads: int = 0, info: VideoInfo | None = None,
                 start_pts: int | None = None) -> None:
        self.path = Path(path)
        self.start_pts = start_pts
        self.info: VideoInfo = info if info is not None else probe(self.path)
        self.threads = int(threads)
        self.dtype: type[np.generic] = np.uint16 if self.info.bit_depth > 8 else np.uint8
        self._rgb_format = "rgb48le" if self.info.bit_depth > 8 else "rgb24"
        self._container: Any | None = None
        self.truncated = False
        self.problems: list[str] = []
        self.frames_read = 0

    # -- context manager -------------------------------------------------------------------------
    def __enter__(self) -> VideoReader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the demuxer (safe to call twice)."""
        container, self._container = self._container, None
        if container is not None:
            try:
                container.close()
            except AV_ERRORS:
                pass

    def __repr__(self) -> str:
        i = self.info
        return f"VideoReader({str(self.path)!r}, {i.width}x{i.height} {i.pix_fmt}, {i.frame_count or '?'} frames)"

    # -- iteration -------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[Frame]:
        self.close()
        self.truncated = False
        self.problems = []
        self.frames_read = 0
        return self._frames()

    def _problem(self, text: str) -> None:
        self.truncated = True
        self.problems.append(text)

    def _to_image(self, frame: Any) -> np.ndarray:
        info = self.info
        if frame.width != info.width or frame.height != info.height:
            if not any("size changed" in p for p in self.problems):
                self.problems.append(
                    f"frame size changed mid-stream to {frame.width}x{frame.height}; rescaled to {info.width}x{info.height}"
                )
            frame = frame.reformat(width=info.width, height=info.height)
        image = frame.to_ndarray(format=self._rgb_format)
        if image.dtype != self.dtype:  # defensive: PyAV returns uint8 for rgb24, uint16 for rgb48le
            image = image.astype(self.dtype)
        return image

    def _frames(self) -> Iterator[Frame]:
        info = self.info
        container = open_input(self.path)
        self._container = container
        last_pts: int | None = None
        try:
            stream = pick_video_stream(container)
            if stream is None:
                raise InvalidInputError(f"input {str(self.path)!r} has no video stream; give a video file")
            try:
                stream.thread_type = "AUTO"
                stream.thread_count = self.threads
            except AV_ERRORS:
                pass
            if self.start_pts is not None:
                try:
                    container.seek(int(self.start_pts), stream=stream, backward=True, any_frame=False)
                except AV_ERRORS as exc:
                    raise InvalidInputError(f"cannot seek in {str(self.path)!r} ({describe(exc)})") from exc
            demux = container.demux(stream)
            errors_in_a_row = 0
            while True:
                try:
                    packet = next(demux)
                except StopIteration:
                    break
                except AV_ERRORS as exc:
                    self._problem(f"demuxing stopped: {describe(exc)}")
                    break
                try:
                    decoded = packet.decode()
                    images = [(f.pts, f.duration, self._to_image(f)) for f in decoded]
                except AV_ERRORS as exc:
                    errors_in_a_row += 1
                    if not self.problems or errors_in_a_row == 1:
                        self._problem(f"undecodable packet skipped: {describe(exc)}")
                    if errors_in_a_row >= _MAX_CONSECUTIVE_ERRORS:
                        self._problem("too many undecodable packets in a row; stopped")
                        break
                    continue
                errors_in_a_row = 0
                for pts, duration, image in images:
                    pts = int(pts) if pts is not None else None
                    if self.start_pts is not None and (pts is None or pts < self.start_pts):
                        continue
                    time = float(pts * info.time_base) if pts is not None else None
                    if pts is not None:
                        last_pts = pts
                    index = self.frames_read
                    self.frames_read += 1
                    yield Frame(
                        image=image,
                        pts=pts,
                        index=index,
                        time=time,
                        duration=int(duration) if duration else None,
                    )
            if self.start_pts is None:
                self._check_complete(stream, last_pts)
        finally:
            self.close()
        if self.frames_read == 0:
            reason = f" ({self.problems[0]})" if self.problems else ""
            raise InvalidInputError(
                f"no frame of {str(self.path)!r} could be decoded{reason}; the file is truncated or corrupt"
            )
        if self.truncated:
            warnings.warn(
                TruncatedInputWarning(
                    f"{self.path.name}: decoded {self.frames_read} frame(s) but the file is damaged or truncated "
                    f"({self.problems[0]}); the output ends early"
                ),
                stacklevel=2,
            )

    def _check_complete(self, stream: Any, last_pts: int | None) -> None:
        """Flag a file whose container promised more than what decoded."""
        problem = shortfall(self.info, stream, self.frames_read, last_pts, "decoded")
        if problem is not None:
            self._problem(problem)


def shortfall(info: Any, stream: Any, frames: int, last_pts: int | None, verb: str) -> str | None:
    """Why a video stream holds less than its container promised, or ``None``: fewer ``frames``
    than the container's count, or frames ending (``last_pts``, the latest timestamp) well before
    the duration it states. ``verb`` says what was counted ("decoded", "in the file"). The test
    the reader makes at the end of a run, and ``semlens info`` before one."""
    expected = info.frame_count
    if expected is not None and frames < expected:
        return f"only {frames} of {expected} frames {verb}"
    if last_pts is None or not info.fps:
        return None
    try:
        promised = promised_duration(stream)
        start = stream.start_time or 0
    except AV_ERRORS:
        return None
    if not promised:
        return None
    frame_time = 1 / float(info.fps)
    end = float((last_pts - start) * info.time_base) + frame_time
    if end < promised - max(3 * frame_time, 0.02 * promised):
        return f"its frames end at {end:.2f}s of a {promised:.2f}s stream"
    return None


def promised_duration(stream: Any) -> float | None:
    """The video stream's duration in seconds as the container states it: the stream's own
    duration, Matroska's per-stream ``DURATION`` tag, or the container's duration when the video is
    its only stream (with other streams it may be the audio's length)."""
    if stream.duration and stream.time_base:
        return float(stream.duration * stream.time_base)
    for key, value in stream.metadata.items():
        if key.upper() == "DURATION":
            seconds = _parse_clock(value)
            if seconds:
                return seconds
    container = stream.container
    if container.duration and len(container.streams) == 1:
        return container.duration / 1_000_000
    return None


def _parse_clock(text: str) -> float | None:
    """``"HH:MM:SS.fraction"`` -> seconds."""
    try:
        hours, minutes, seconds = text.strip().split(":")
        return int(hours) * 3600 + int(minutes) * 60 + float(seconds)
    except (ValueError, AttributeError):
        return None
