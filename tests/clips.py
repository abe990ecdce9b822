"""Small real clips for tests, made with PyAV (no ffmpeg binary needed).

Everything is deterministic: :func:`pattern_frame` draws coloured squares moving over a gradient,
so two calls with the same arguments give the same pixels. Used by the I/O tests and by any
other test that needs a real encoded video::

    from clips import make_clip   # pytest puts tests/ on sys.path (no __init__.py there)
    clip = make_clip(tmp_path / "in.mp4", frames=12, size=(64, 48), audio=True)
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

__all__ = [
    "make_audio_only",
    "make_clip",
    "make_image_folder",
    "make_shots_clip",
    "packet_dump",
    "pattern_frame",
    "read_frames",
    "truncate_file",
]

_SQUARES = (  # colour (RGB, 0..1), speed x, speed y, start x, start y
    ((1.0, 0.1, 0.1), 3, 1, 0.10, 0.20),
    ((0.1, 0.9, 0.2), -2, 2, 0.60, 0.10),
    ((0.2, 0.3, 1.0), 1, -3, 0.35, 0.70),
)


def pattern_frame(
    index: int,
    width: int = 64,
    height: int = 48,
    *,
    dtype: type[np.generic] = np.uint8,
    pattern: str = "moving squares",
) -> np.ndarray:
    """One deterministic ``(height, width, 3)`` RGB frame (uint8 0..255 or uint16 0..65535).

    ``pattern``: ``"moving squares"`` (a horizontal/vertical gradient with three coloured squares
    moving a few pixels per frame), ``"gradient"`` (the background only, shifting slowly), or
    ``"noise"`` (seeded uniform noise, seed = index).
    """
    peak = 65535.0 if dtype == np.uint16 else 255.0
    if pattern == "noise":
        rng = np.random.default_rng(index)
        return (rng.random((height, width, 3)) * peak).round().astype(dtype)
    y = np.linspace(0.0, 1.0, height, dtype=np.float64)[:, None]
    x = np.linspace(0.0, 1.0, width, dtype=np.float64)[None, :]
    shift = 0.02 * index
    img = np.empty((height, width, 3), dtype=np.float64)
    img[..., 0] = 0.15 + 0.5 * ((x + shift) % 1.0)
    img[..., 1] = 0.15 + 0.5 * y
    img[..., 2] = 0.4 + 0.2 * np.sin(2 * np.pi * (x + y + shift))
    if pattern == "moving squares":
        side = max(2, min(width, height) // 5)
        for colour, vx, vy, sx, sy in _SQUARES:
            cx = int(sx * width + vx * index) % max(1, width - side)
            cy = int(sy * height + vy * index) % max(1, height - side)
            img[cy : cy + side, cx : cx + side] = colour
    elif pattern != "gradient":
        raise ValueError(f"unknown pattern {pattern!r}")
    return (np.clip(img, 0.0, 1.0) * peak).round().astype(dtype)


# FFmpeg AVColorSpace -> swscale matrix id (unspecified: swscale's default, BT.601).
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 5, 7: 7, 9: 9, 10: 9}


def _is_mp4_family(path: Path) -> bool:
    return path.suffix.lower() in {".mp4", ".m4v", ".mov", ".m4a", ".3gp"}


def _add_audio(out: av.container.OutputContainer, codec: str, sample_rate: int, language: str | None):
    stream = out.add_stream(codec, rate=sample_rate, layout="mono")
    if language:
        stream.metadata["language"] = language
    return stream


def _encode_sine(out: av.container.OutputContainer, stream, seconds: float, sample_rate: int) -> None:
    n = max(1, int(round(seconds * sample_rate)))
    t = np.arange(n, dtype=np.float64) / sample_rate
    samples = (0.25 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)
    chunk = 1024
    for start in range(0, n, chunk):
        part = samples[None, start : start + chunk]
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(part), format="flt", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, sample_rate)
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def _subtitle_cues(end_seconds: float) -> list[tuple[float, float, str]]:
    half = max(end_seconds / 2, 0.01)
    return [
        (0.0, half, "Hello from semlens"),
        (half, max(end_seconds, half + 0.01), "Second cue, with ümlauts"),
    ]


def make_clip(
    path: str | Path,
    frames: int = 12,
    size: tuple[int, int] = (64, 48),
    fps: int | Fraction = 25,
    audio: bool = False,
    subtitles: bool = False,
    pix_fmt: str = "yuv420p",
    codec: str = "libx264",
    pts: Sequence[int] | None = None,
    rotation: float | None = None,
    pattern: str = "moving squares",
    *,
    time_base: Fraction | None = None,
    preset: str = "ultrafast",
    crf: int = 20,
    metadata: dict[str, str] | None = None,
    video_metadata: dict[str, str] | None = None,
    audio_codec: str = "aac",
    audio_language: str | None = "eng",
    subtitle_language: str | None = "fra",
    sample_rate: int = 48000,
    colour: dict[str, int] | None = None,
) -> Path:
    """Encode a small deterministic clip and return its path.

    ``size`` is ``(width, height)``. ``pts`` (explicit, for VFR clips) are in ``time_base``
    (default ``1/fps``); without them frame ``i`` has pts ``i``. ``pix_fmt`` with more than 8 bits
    (e.g. ``"yuv420p10le"``) is fed from uint16 frames. ``rotation`` sets the display matrix
    (degrees counter-clockwise). ``audio`` adds a mono 440 Hz sine (``audio_codec``, AAC by default)
    covering the video; ``subtitles`` adds two text cues (SubRip in .mkv, mov_text in .mp4/.mov).
    ``colour`` may set ``color_range`` / ``color_primaries`` / ``color_trc`` / ``colorspace``
    (FFmpeg enum values) on the encoder. ``preset`` defaults to ultrafast (no B-frames); use
    ``"medium"`` for B-frame reordering.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    rate = Fraction(fps)
    tb = Fraction(time_base) if time_base is not None else 1 / rate
    stamps = list(range(frames)) if pts is None else [int(p) for p in pts]
    deep = max(c.bits for c in av.VideoFormat(pix_fmt).components) > 8
    dtype = np.uint16 if deep else np.uint8

    out = av.open(str(path), mode="w")
    try:
        for key, value in (metadata or {}).items():
            out.metadata[key] = value
        options = {"crf": str(crf), "preset": preset} if codec in ("libx264", "libx265") else {}
        if codec == "libx265":
            options["x265-params"] = "log-level=error"
        vs = out.add_stream(codec, rate=rate, options=options)
        vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
        vs.time_base = tb
        vs.codec_context.time_base = tb
        for key, value in (colour or {}).items():
            setattr(vs.codec_context, key, value)
        for key, value in (video_metadata or {}).items():
            vs.metadata[key] = value
        if rotation is not None:
            vs.set_display_rotation(rotation)
        astream = _add_audio(out, audio_codec, sample_rate, audio_language) if audio else None
        sstream = None
        if subtitles:
            codec_name = "mov_text" if _is_mp4_family(path) else "subrip"
            sstream = out.add_mux_stream(codec_name, time_base=Fraction(1, 1000))
            if subtitle_language:
                sstream.metadata["language"] = subtitle_language

        for i, stamp in enumerate(stamps):
            image = pattern_frame(i, width, height, dtype=dtype, pattern=pattern)
            frame = av.VideoFrame.from_ndarray(image, format="rgb48le" if deep else "rgb24")
            frame = frame.reformat(
                format=pix_fmt,
                dst_colorspace=_SWS_MATRIX.get((colour or {}).get("colorspace", 2)),
                dst_color_range=(colour or {}).get("color_range") or None,
            )
            for key, value in (colour or {}).items():
                if key in ("color_primaries", "color_trc"):
                    setattr(frame, key, value)
            frame.pts = stamp
            frame.time_base = tb
            out.mux(vs.encode(frame))
        out.mux(vs.encode(None))

        step = stamps[1] - stamps[0] if len(stamps) > 1 else 1
        end_seconds = float((stamps[-1] + step) * tb) if stamps else 0.0
        if astream is not None:
            _encode_sine(out, astream, end_seconds, sample_rate)
        if sstream is not None:
            for start, end, text in _subtitle_cues(end_seconds):
                data = text.encode("utf-8")
                if _is_mp4_family(path):
                    data = struct.pack(">H", len(data)) + data
                packet = av.Packet(data)
                packet.stream = sstream
                packet.time_base = Fraction(1, 1000)
                packet.pts = packet.dts = int(round(start * 1000))
                packet.duration = int(round((end - start) * 1000))
                out.mux(packet)
    finally:
        out.close()
    return path


def shot_frame(index: int, shot: int, width: int = 64, height: int = 48) -> np.ndarray:
    """Frame ``index`` of shot number ``shot`` of :func:`make_shots_clip`: the moving squares, with
    colours that differ from shot to shot enough for the scene-cut detector (shot 1 inverted,
    shot 2 with its channels rotated, and so on in turn)."""
    image = pattern_frame(index, width, height)
    kind = shot % 3
    if kind == 1:
        return 255 - image
    if kind == 2:
        return np.ascontiguousarray(image[..., [2, 0, 1]])
    return image


def make_shots_clip(
    path: str | Path,
    shots: Sequence[int] = (13, 14, 13),
    size: tuple[int, int] = (32, 24),
    *,
    fps: int = 25,
    gop: int = 8,
    audio: bool = True,
) -> Path:
    """An H.264 clip made of shots of the given lengths (frames of :func:`shot_frame`), with a key
    frame every ``gop`` frames (so readers can seek) and, with ``audio``, a mono AAC sine."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    out = av.open(str(path), mode="w")
    try:
        vs = out.add_stream("libx264", rate=fps, options={"crf": "20", "preset": "ultrafast", "g": str(gop)})
        vs.width, vs.height, vs.pix_fmt = width, height, "yuv420p"
        astream = _add_audio(out, "aac", 48000, "eng") if audio else None
        index = 0
        for number, length in enumerate(shots):
            for _ in range(length):
                frame = av.VideoFrame.from_ndarray(shot_frame(index, number, width, height), format="rgb24")
                frame.pts = index
                frame.time_base = Fraction(1, fps)
                out.mux(vs.encode(frame.reformat(format="yuv420p")))
                index += 1
        out.mux(vs.encode(None))
        if astream is not None:
            _encode_sine(out, astream, index / fps, 48000)
    finally:
        out.close()
    return path


def make_audio_only(
    path: str | Path, seconds: float = 0.5, codec: str = "aac", sample_rate: int = 48000
) -> Path:
    """A file with a single audio stream (no video), e.g. ``song.m4a`` or ``audio.mp4``."""
    path = Path(path)
    out = av.open(str(path), mode="w")
    try:
        stream = _add_audio(out, codec, sample_rate, "eng")
        _encode_sine(out, stream, seconds, sample_rate)
    finally:
        out.close()
    return path


def make_image_folder(
    folder: str | Path,
    frames: int = 5,
    size: tuple[int, int] = (64, 48),
    *,
    names: Sequence[str] | None = None,
    ext: str = "png",
    bit16: bool = False,
) -> list[Path]:
    """Write ``frames`` pattern images (``names`` or ``frame{i}.{ext}``) and return their paths in
    the order written (frame ``i`` is :func:`pattern_frame` ``i``). ``bit16`` writes 16-bit PNGs."""
    from semlens.io.images import write_png  # PNG (8/16-bit); other formats through PIL

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    width, height = size
    names = list(names) if names is not None else [f"frame{i}.{ext}" for i in range(frames)]
    paths = []
    for i, name in enumerate(names):
        image = pattern_frame(i, width, height, dtype=np.uint16 if bit16 else np.uint8)
        target = folder / name
        if target.suffix.lower() == ".png":
            write_png(target, image)
        else:
            from PIL import Image

            Image.fromarray(image if image.dtype == np.uint8 else (image >> 8).astype(np.uint8)).save(target)
        paths.append(target)
    return paths


def truncate_file(path: str | Path, fraction: float = 0.5, dest: str | Path | None = None) -> Path:
    """Copy of ``path`` (or ``path`` itself if ``dest`` is None) cut to ``fraction`` of its bytes."""
    path = Path(path)
    data = path.read_bytes()
    target = Path(dest) if dest is not None else path
    target.write_bytes(data[: int(len(data) * fraction)])
    return target


def read_frames(path: str | Path) -> tuple[list[np.ndarray], list[int | None], Fraction]:
    """Decode every video frame with plain PyAV: (RGB images, pts, time base). uint16 for >8-bit."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        deep = max(c.bits for c in av.VideoFormat(stream.codec_context.pix_fmt).components) > 8
        images, stamps = [], []
        for frame in container.decode(stream):
            images.append(frame.to_ndarray(format="rgb48le" if deep else "rgb24"))
            stamps.append(frame.pts)
        return images, stamps, Fraction(stream.time_base)


def packet_dump(path: str | Path, kind: str = "audio") -> list[tuple[float | None, bytes]]:
    """(time in seconds, payload bytes) of every packet of the first ``kind`` stream."""
    with av.open(str(path)) as container:
        streams = [s for s in container.streams if s.type == kind]
        if not streams:
            return []
        stream = streams[0]
        result = []
        for packet in container.demux(stream):
            if packet.size == 0:
                continue
            t = float(packet.pts * packet.time_base) if packet.pts is not None else None
            result.append((t, bytes(packet)))
        return result
