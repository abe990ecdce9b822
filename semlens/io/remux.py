"""Copying the source's other streams (audio, subtitles, fonts) into the output, and its tags.

Audio and subtitle streams are copied packet for packet (no re-encode) with their metadata,
language and disposition; Matroska font attachments go along with ASS subtitles. The packets are
read from a second demuxer on the source as the video advances and muxed interleaved by time
(:meth:`StreamCopier.pump`), so memory does not grow with the video's length. A stream the
output container cannot hold (e.g. SRT subtitles in .mp4, Opus in .mov) is skipped with an
:class:`~semlens.io.OutputWarning` and listed in ``skipped_streams``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av

from ._av import AV_ERRORS, codec_name, describe, pick_video_stream
from .encoding import OutputWarning
from .trim import place_packet

__all__ = ["StreamCopier", "copy_tags"]

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


def copy_tags(tags: dict[str, str], into: dict[str, Any]) -> None:
    """Copy metadata ``tags`` into ``into``, except those the muxer owns (encoder, duration, ...)."""
    for key, value in tags.items():
        k = key.lower()
        if k in _MUXER_OWNED_TAGS or k.startswith("_statistics"):
            continue
        into[key] = value


# How far past the end of the copied part packets are still read (streams interleave loosely).
_READ_PAST_END = 5
# Muxers that accept PCM audio and its header but cannot finish the file with it.
_NO_PCM = frozenset({"mp4"})


def ts_of(packet: Any) -> int:
    """A packet's dts, else its pts."""
    return packet.dts if packet.dts is not None else packet.pts


class StreamCopier:
    """Copies the audio and/or subtitle streams of ``source_path`` into the output container
    ``out`` (before its header is written), then their packets as :meth:`pump` is called.

    ``copied_streams`` / ``skipped_streams`` are lists that the copier appends labels to (such as
    ``"#1 audio aac"``); ``copied_packets`` counts the packets muxed. ``check_file`` is called when
    muxing a packet fails, before the stream is given up with a warning: it raises if the output
    file itself failed (a full disk is not the stream's fault).
    """

    def __init__(
        self,
        out: Any,
        source_path: Path,
        *,
        copy_audio: bool,
        copy_subtitles: bool,
        copied_streams: list[str],
        skipped_streams: list[str],
        check_file: Callable[[], None],
        start: Fraction = Fraction(0),
        end: Fraction | None = None,
    ) -> None:
        self._out = out
        self._start = start  # source seconds moved to 0 and output seconds where copying ends
        self._end = end  # (see place_packet)
        self.copied_streams = copied_streams
        self.skipped_streams = skipped_streams
        self.copied_packets = 0
        self._check_file = check_file
        self._source: Any | None = None
        self._packets: Iterator[Any] | None = None
        self._pending: Any | None = None
        self._map: dict[int, Any] = {}
        try:
            self._source = av.open(str(source_path), mode="r", metadata_errors="replace")
        except AV_ERRORS as exc:
            warnings.warn(
                OutputWarning(f"cannot reopen the source to copy audio/subtitles ({describe(exc)}); none copied"),
                stacklevel=4,
            )
            return
        self._add_streams(copy_audio=copy_audio, copy_subtitles=copy_subtitles)

    def _add_streams(self, *, copy_audio: bool, copy_subtitles: bool) -> None:
        source = self._source
        assert source is not None
        wanted = []
        video = pick_video_stream(source)
        for s in source.streams:
            if s.type == "audio" and copy_audio or s.type == "subtitle" and copy_subtitles:
                wanted.append(s)
            elif s.type == "attachment" and copy_subtitles and source.streams.subtitles:
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
        container = self._out.format.name.split(",")[0]
        for s in wanted:
            label = f"#{s.index} {s.type} {codec_name(s)}"
            if container in _NO_PCM and codec_name(s).startswith("pcm_"):
                # The muxer takes the stream and its header, then fails to finish the file: say so now.
                self.skipped_streams.append(label)
                warnings.warn(OutputWarning(f"{label} not copied: the {container} container cannot hold PCM audio; "
                                            f"use .mkv or .mov to keep it"), stacklevel=5)
                continue
            try:
                o = self._out.add_stream_from_template(s)
            except AV_ERRORS as exc:
                self.skipped_streams.append(label)
                warnings.warn(
                    OutputWarning(
                        f"{label} not copied: the {self._out.format.name.split(',')[0]} container cannot hold it "
                        f"({describe(exc)}); use .mkv to keep it"
                    ),
                    stacklevel=5,
                )
                continue
            copy_tags(dict(s.metadata), o.metadata)
            try:
                o.disposition = s.disposition
            except AV_ERRORS:
                pass
            self.copied_streams.append(label)
            if s.type != "attachment":
                self._map[s.index] = o
                packet_streams.append(s)
        if packet_streams and self._start > 0:
            try:  # to the key frame before the start; earlier packets are dropped by place_packet
                source.seek(int(self._start * av.time_base), backward=True, any_frame=False)
            except AV_ERRORS:
                pass
        if packet_streams:
            self._packets = source.demux(*packet_streams)
        else:
            self.close()

    def pump(self, until: Fraction | None) -> None:
        """Mux copied packets whose time (moved by ``start``) is <= ``until`` seconds (all of them
        if ``None``)."""
        if self._packets is None:
            return
        while True:
            packet = self._pending
            if packet is None:
                try:
                    packet = next(self._packets)
                except StopIteration:
                    self.close()
                    return
                except AV_ERRORS as exc:
                    warnings.warn(
                        OutputWarning(f"copying audio/subtitles stopped early ({describe(exc)})"),
                        stacklevel=5,
                    )
                    self.close()
                    return
                if packet.size == 0 or (packet.pts is None and packet.dts is None):
                    continue
                if self._end is not None and packet.time_base and ts_of(packet) * packet.time_base > (
                    self._start + self._end + _READ_PAST_END
                ):  # every stream is past the end: nothing more to copy
                    self.close()
                    return
                if not place_packet(packet, self._start, self._end):
                    continue
            ts = packet.dts if packet.dts is not None else packet.pts
            if until is not None and packet.time_base and ts * packet.time_base > until:
                self._pending = packet
                return
            self._pending = None
            out_stream = self._map.get(packet.stream_index)
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
                        stacklevel=5,
                    )

    def close(self) -> None:
        """Stop copying and close the second demuxer (no more packets are muxed)."""
        source, self._source = self._source, None
        self._packets = None
        self._pending = None
        if source is not None:
            try:
                source.close()
            except AV_ERRORS:
                pass
