"""Whether an output file is the finished upscale of its source (what ``--skip-existing`` trusts)."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

from ..errors import SemlensError
from ._av import AV_ERRORS, codec_name, open_input, pick_video_stream
from .info import probe

__all__ = ["is_complete_output"]

# Matroska stores milliseconds: a copied audio stream may end up to half a millisecond off.
_END_TOLERANCE = Fraction(1, 1000)


@dataclass
class _AudioTrack:
    codec: str
    packets: int = 0
    size: int = 0
    end: Fraction | None = None


@dataclass
class _Scan:
    video_packets: int = 0
    whole: bool = True
    audio: list[_AudioTrack] = field(default_factory=list)


def _scan(path: Path) -> _Scan:
    """Demux the first video stream and every audio stream: packet counts, bytes, end times."""
    result = _Scan()
    container = open_input(path)
    try:
        video = pick_video_stream(container)
        if video is None:
            result.whole = False
            return result
        audio = {s.index: _AudioTrack(codec_name(s)) for s in container.streams.audio}
        result.audio = list(audio.values())
        for packet in container.demux(video, *container.streams.audio):
            if packet.size == 0:
                continue
            if packet.is_corrupt:  # e.g. read short because the file ends inside it
                result.whole = False
            if packet.stream_index == video.index:
                result.video_packets += 1
                continue
            track = audio[packet.stream_index]
            track.packets += 1
            track.size += packet.size
            if packet.pts is not None and packet.time_base:
                end = (packet.pts + (packet.duration or 0)) * packet.time_base
                track.end = end if track.end is None else max(track.end, end)
    finally:
        container.close()
    return result


def _decoded_frames(path: Path) -> int | None:
    """How many frames of the video stream decode cleanly (``None``: one is damaged)."""
    container = open_input(path)
    try:
        stream = pick_video_stream(container)
        count = 0
        for frame in container.decode(stream):
            if frame.is_corrupt:
                return None
            count += 1
        return count
    finally:
        container.close()


def _audio_matches(source: list[_AudioTrack], output: list[_AudioTrack]) -> bool:
    """Each audio stream of the output is a whole copy of a source stream of the same codec, in
    order (a stream the output container could not hold may be missing)."""
    remaining = list(source)
    for track in output:
        match = next((s for s in remaining if s.codec == track.codec), None)
        if match is None:
            return False
        remaining = remaining[remaining.index(match) + 1 :]
        if (track.packets, track.size) != (match.packets, match.size):
            return False
        if (track.end is None) != (match.end is None):
            return False
        if track.end is not None and match.end is not None and abs(track.end - match.end) > _END_TOLERANCE:
            return False
    return True


def is_complete_output(src: str | Path, dst: str | Path, scale: int) -> bool:
    """True when ``dst`` is the finished upscale of ``src``: ``scale`` times its width and height,
    every packet whole, as many video frames as ``src`` has and all of them decoding cleanly, and
    every audio stream a whole copy of the source's (same packets, ending at the same time).

    The whole video of ``dst`` is decoded (a file cut short can still demux every packet: only
    decoding shows that its last frame is damaged), which takes about as long as decoding the
    file does; never raises for a damaged or unreadable ``dst``.
    """
    src, dst = Path(src), Path(dst)
    try:
        a, b = probe(src), probe(dst)
    except SemlensError:
        return False
    if (b.width, b.height) != (a.width * scale, a.height * scale):
        return False
    try:
        source, output = _scan(src), _scan(dst)
        if not output.whole or output.video_packets != source.video_packets:
            return False
        if not _audio_matches(source.audio, output.audio):
            return False
        return _decoded_frames(dst) == source.video_packets
    except (SemlensError, *AV_ERRORS):
        return False
