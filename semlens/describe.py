"""What is in a video file, and what upscaling it would cost on this machine.

:func:`describe_file` reads the container (streams, codecs, languages) and demuxes the video
stream's packets without decoding them, which gives an exact frame count and tells constant from
variable frame rate. :func:`estimate_run` upscales and encodes a few frames with a given
upscaler and extrapolates the time and the output size to the whole video.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semlens.errors import InvalidInputError
from semlens.io import VideoInfo, probe
from semlens.windows import plan_windows

if TYPE_CHECKING:
    from semlens.upscaler import SemanticLensUpscaler

__all__ = ["Estimate", "FileReport", "Track", "describe_file", "estimate_run"]


@dataclass(frozen=True)
class Track:
    """One stream of the container: ``kind`` is ``video``, ``audio``, ``subtitle``, ``data`` ...;
    ``detail`` is e.g. ``"48000 Hz mono"`` for audio, ``"cover picture"`` for an attached picture."""

    index: int
    kind: str
    codec: str
    language: str | None = None
    detail: str = ""


@dataclass(frozen=True)
class FileReport:
    """What :func:`describe_file` found. ``frame_count`` is counted from the video packets (the
    container's own count is ``info.frame_count``); ``vfr`` is true when the gaps between frame
    timestamps differ by more than one tick of the time base, and ``min_fps`` / ``max_fps`` are then
    the rates of the longest and the shortest gap. ``size_bytes`` is the file's size (the sum of the
    images' sizes for an image folder)."""

    path: str
    size_bytes: int
    info: VideoInfo
    frame_count: int
    vfr: bool
    min_fps: float | None
    max_fps: float | None
    tracks: tuple[Track, ...] = ()
    aux_bytes: int = 0  # payload bytes of the audio and subtitle streams
    average_fps: float | None = None  # frames per second between the first and the last timestamp
    #: Why the file looks cut short or damaged (the container promises more frames or a longer
    #: video than its packets hold), else None.
    damage: str | None = None

    @property
    def fps(self) -> float | None:
        """The average frame rate from the timestamps, else the container's."""
        if self.average_fps is not None:
            return self.average_fps
        return float(self.info.fps) if self.info.fps else None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (the ``--json`` output of ``semlens info``)."""
        i = self.info
        return {
            "path": self.path,
            "size_bytes": self.size_bytes,
            "container": i.container_format or ("image sequence" if i.is_image_sequence else ""),
            "codec": i.codec,
            "width": i.width,
            "height": i.height,
            "pix_fmt": i.pix_fmt,
            "bit_depth": i.bit_depth,
            "rotation": i.rotation,
            "frame_count": self.frame_count,
            "duration": i.duration,
            "fps": self.fps,
            "vfr": self.vfr,
            "min_fps": self.min_fps,
            "max_fps": self.max_fps,
            "colour": i.colour,
            "tracks": [asdict(t) for t in self.tracks],
            "damage": self.damage,
        }


@dataclass(frozen=True)
class Estimate:
    """The cost of upscaling a whole video, extrapolated from ``sample_frames`` frames.

    ``upscale_seconds`` and ``encode_seconds`` are the measured times for the sample (the first
    includes the network's first-call warm-up, so the estimate leans high). ``seconds`` scales the
    upscaling time by the network's work, the frames its windows read (``frames_read`` for the whole
    video as one shot, ``sample_frames_read`` for the sample, whose last window reads its context like
    any shot's end), and the encoding time by the frame count. ``output_bytes`` is the encoded
    sample's bytes per frame times the frame count plus the audio and subtitle bytes copied from the
    input; the sample starts with a key frame, so long videos usually come out smaller."""

    model: str
    scale: int
    device: str
    output_width: int
    output_height: int
    frames: int
    sample_frames: int
    upscale_seconds: float
    encode_seconds: float
    seconds: float
    output_bytes: int
    codec: str
    crf: float | None
    preset: str | None
    method: str = field(default="")
    frames_read: int = 0
    sample_frames_read: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _tracks(container: Any) -> tuple[Track, ...]:
    import av

    from semlens.io._av import codec_name

    tracks = []
    for s in container.streams:
        codec = codec_name(s)
        language = s.metadata.get("language")
        detail = ""
        if s.type == "audio":
            ctx = s.codec_context
            layout = getattr(getattr(ctx, "layout", None), "name", "") or f"{ctx.channels} ch"
            detail = f"{ctx.sample_rate} Hz {layout}"
        elif s.type == "video":
            if s.disposition & av.stream.Disposition.attached_pic:
                detail = "cover picture"
            else:
                detail = f"{s.codec_context.width}x{s.codec_context.height}"
        tracks.append(Track(index=s.index, kind=s.type, codec=codec,
                            language=language if language and language != "und" else None, detail=detail))
    return tuple(tracks)


def _timing(stamps: list[int], time_base: Fraction) -> tuple[bool, float | None, float | None, float | None]:
    """(vfr, min fps, max fps, average fps) from presentation timestamps in ``time_base``."""
    ordered = sorted(set(stamps))
    gaps = [b - a for a, b in zip(ordered, ordered[1:], strict=False)]
    if not gaps or min(gaps) <= 0:
        return False, None, None, None
    low, high = min(gaps), max(gaps)
    vfr = high - low > 1  # a millisecond time base rounds 29.97 fps to 33 and 34
    average = len(gaps) / ((ordered[-1] - ordered[0]) * time_base)
    return vfr, float(1 / (high * time_base)), float(1 / (low * time_base)), float(average)


def describe_file(path: str | Path) -> FileReport:
    """Describe the video file (or image folder) ``path``: :func:`~semlens.io.probe` plus every
    stream, an exact frame count and the frame timing. Demuxes the file once, decodes one frame.
    Raises :class:`~semlens.errors.InputNotFoundError` / :class:`~semlens.errors.InvalidInputError`."""
    from semlens.io._av import AV_ERRORS, describe, open_input, pick_video_stream
    from semlens.io.reader import shortfall

    path = Path(path)
    info = probe(path)
    if info.is_image_sequence:
        from semlens.io import list_images

        images = list_images(path)
        return FileReport(path=str(path), size_bytes=sum(p.stat().st_size for p in images), info=info,
                          frame_count=len(images), vfr=False, min_fps=None, max_fps=None)
    container = open_input(path)
    try:
        stream = pick_video_stream(container)
        tracks = _tracks(container)
        aux = [s for s in container.streams if s.type in ("audio", "subtitle")]
        stamps: list[int] = []
        count = 0
        aux_bytes = 0
        for packet in container.demux([stream, *aux]):
            if packet.size == 0:
                continue
            if packet.stream.index != stream.index:
                aux_bytes += packet.size
                continue
            count += 1
            if packet.pts is not None:
                stamps.append(int(packet.pts))
        damage = shortfall(info, stream, count, max(stamps) if stamps else None, "in the file")
    except AV_ERRORS as exc:
        raise InvalidInputError(f"input {str(path)!r} could not be read to the end ({describe(exc)})") from exc
    finally:
        container.close()
    vfr, min_fps, max_fps, average = _timing(stamps, info.time_base)
    return FileReport(path=str(path), size_bytes=path.stat().st_size, info=info, frame_count=count, vfr=vfr,
                      min_fps=min_fps, max_fps=max_fps, tracks=tracks, aux_bytes=aux_bytes,
                      average_fps=average, damage=damage)


def estimate_run(upscaler: SemanticLensUpscaler, report: FileReport, *, sample_frames: int = 8,
                 codec: str = "libx264", crf: float | None = 18, preset: str | None = "medium") -> Estimate:
    """Upscale the first ``sample_frames`` frames of ``report``'s video with ``upscaler``, encode them
    with ``codec`` / ``crf`` / ``preset`` into a temporary file, and extrapolate the time and the
    output size to all ``report.frame_count`` frames (see :class:`Estimate`)."""
    from semlens.io import VideoWriter, open_source

    if sample_frames < 1:
        raise ValueError(f"sample_frames must be at least 1, got {sample_frames}")
    info = report.info
    s = upscaler.scale
    with open_source(report.path) as reader:
        frames = [f.image for f in islice(reader, sample_frames)]
    if not frames:
        raise InvalidInputError(f"no frame could be decoded from {report.path!r}")
    started = time.perf_counter()
    outputs = list(upscaler.upscale_frames(frames))
    upscale_seconds = time.perf_counter() - started
    with tempfile.TemporaryDirectory(prefix="semlens-estimate-") as folder:
        target = Path(folder) / "sample.mkv"
        started = time.perf_counter()
        with VideoWriter(target, width=info.width * s, height=info.height * s, source=info, codec=codec, crf=crf,
                         preset=preset, copy_audio=False) as writer:
            for i, image in enumerate(outputs):
                writer.write(image, i)
        encode_seconds = time.perf_counter() - started
        video_bytes = target.stat().st_size
    n = len(frames)
    total = report.frame_count
    window, overlap = upscaler.settings.window, upscaler.settings.overlap
    sample_read = sum(len(w.indices) for w in plan_windows(n, window, overlap))
    read = sum(len(w.indices) for w in plan_windows(total, window, overlap)) if total > 0 else 0
    seconds = upscale_seconds / sample_read * read + encode_seconds / n * total
    method = (f"upscaled the first {n} frames on {upscaler.device} in {upscale_seconds:.2f} s (first call "
              f"included; their windows read {sample_read} frames, the whole video's {read}) and encoded them "
              f"with {codec} (crf {crf}, preset {preset}) in {encode_seconds:.2f} s; upscaling time x frames "
              f"read, encoding time and bytes per frame x {total} frames, plus the copied audio/subtitles")
    return Estimate(model=upscaler.name, scale=s, device=str(upscaler.device), output_width=info.width * s,
                    output_height=info.height * s, frames=total, sample_frames=n,
                    upscale_seconds=upscale_seconds, encode_seconds=encode_seconds, seconds=seconds,
                    output_bytes=int(video_bytes / n * total) + report.aux_bytes, codec=codec, crf=crf,
                    preset=preset, method=method, frames_read=read, sample_frames_read=sample_read)
