"""One video in segments: plan the split, upscale a segment, join the segments.

A segment is a run of frames that a worker upscales on its own; the segments' encoded packets are
then joined into one file. The joined video has exactly the frames, timestamps and pixels of a
single run (:meth:`~semlens.upscaler.SemanticLensUpscaler.upscale_video`), bit for bit with a
lossless codec, given the same software, device type and thread count.

What an output frame depends on, in the single run (:func:`semlens.pipeline.enhance_stream`):

- the **window** that emits it (:mod:`semlens.windows`): its ``T`` frames, reflected at the ends
  of the frame's shot, so up to ``O`` frames before and after it, and more near a shot's end;
- the **shots**: the scene-cut detector compares each frame with the one before and has a
  hysteresis state, so whether frame *i* starts a shot depends on every frame before it;
- the **extractor's state**: it is reset at each shot start, then carried from window to window
  (``lite`` warm-starts its k-means from the previous frame's centres; SAM carries its tracks and
  key frames), so a window's semantics depend on every earlier window of its shot.

The rule that keeps segments exact:

1. A **scan** decodes the whole video once (sequentially, the cheap part: decoding, the cut
   detector and the extractor, not the enhancer), finds the shots exactly as the single run does,
   and runs the extractor alone over every window in the single run's order.
2. Segments start only at **window starts of the single run's plan** (a shot start, or
   ``k * (T - 2 * O)`` frames into a shot): the first window start at least ``seconds`` after the
   current segment's start opens the next one. Every window then belongs to exactly one segment
   and is computed once, with the frames the single run gives it.
3. At the first window of each segment the scan **records the extractor's state** (pickled, without
   its network weights); the segment's worker restores it, so every window sees the semantics state
   the single run would have.
4. A segment **decodes the frames its windows read** (its own frames plus their context, from a
   seek to the key frame before them) and gets the shot boundaries from the scan instead of
   running the cut detector.
5. **Timestamps**: each frame is written with its source pts; the segment's last frame lasts until
   the next segment's first pts (the single run's writer does the same). Segments are encoded
   into MP4 files (exact timestamps, any codec this project writes) and joined by copying their
   packets (no re-encode) into one output that gets the audio, subtitles and metadata of the
   source once (:func:`join_segments`).

A video whose frames lack timestamps, or whose timestamps do not increase, is not split.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from semlens.errors import InvalidInputError, OutputError
from semlens.semantics.types import InstanceExtractor, locate_frames
from semlens.windows import Window, check_window, window_at

if TYPE_CHECKING:
    from semlens.upscaler import SemanticLensUpscaler

__all__ = [
    "Shot",
    "Segment",
    "SegmentJob",
    "VideoPlan",
    "SplitRule",
    "shots_from_cuts",
    "window_starts",
    "choose_boundaries",
    "plan_segments",
    "segment_windows",
    "extractor_state",
    "restore_extractor",
    "scan_video",
    "upscale_segment",
    "join_segments",
]


# -- planning (pure index maths) ----------------------------------------------------------------


@dataclass(frozen=True)
class Shot:
    """Frames ``[start, stop)`` of the video, between two scene cuts."""

    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class Segment:
    """Segment ``number`` emits frames ``[start, stop)`` and reads frames ``[read_start, read_stop)``
    (its own frames plus the context its windows need)."""

    number: int
    start: int
    stop: int
    read_start: int
    read_stop: int


def shots_from_cuts(length: int, cuts: Sequence[int]) -> list[Shot]:
    """The shots of a video of ``length`` frames whose scene cuts (first frames of new shots) are
    ``cuts``; cuts at 0 or outside the video are ignored."""
    if length < 1:
        raise ValueError("a video has at least one frame")
    edges = [0, *sorted({c for c in cuts if 0 < c < length}), length]
    return [Shot(a, b) for a, b in zip(edges, edges[1:], strict=False)]


def window_starts(shots: Sequence[Shot], window: int, overlap: int) -> list[int]:
    """The first emitted frame of every window of the single run's plan, in order: the candidate
    segment boundaries."""
    check_window(window, overlap)
    step = window - 2 * overlap
    return [shot.start + k for shot in shots for k in range(0, len(shot), step)]


class SplitRule:
    """Decides, window start by window start (in order), where segments begin: the first window
    start at least ``seconds`` after the start of the current segment opens the next segment."""

    def __init__(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"segment length must be positive, got {seconds} s")
        self.seconds = Fraction(seconds).limit_denominator(10**6)
        self._current: Fraction | None = None

    def starts_segment(self, time: Fraction) -> bool:
        """True when the window starting at ``time`` (seconds) starts a new segment; the first call
        always does."""
        if self._current is None or time - self._current >= self.seconds:
            self._current = time
            return True
        return False


def choose_boundaries(times: Sequence[Fraction], starts: Sequence[int], seconds: float) -> list[int]:
    """First frames of the segments, chosen among the window ``starts`` with :class:`SplitRule`
    (``times[i]`` is frame *i*'s time in seconds)."""
    rule = SplitRule(seconds)
    return [c for c in starts if rule.starts_segment(times[c])]


def _window_span(shot: Shot, w: Window) -> tuple[int, int]:
    return shot.start + min(w.indices), shot.start + max(w.indices) + 1


def segment_windows(start: int, stop: int, shots: Sequence[Shot], window: int, overlap: int) -> list[tuple[Shot, Window]]:
    """The windows of the single run's plan whose first emitted frame lies in ``[start, stop)``, in
    order, with their shot (window indices are relative to the shot's first frame)."""
    check_window(window, overlap)
    step = window - 2 * overlap
    out = []
    for shot in shots:
        if shot.stop <= start or shot.start >= stop:
            continue
        first = max(0, -(-(start - shot.start) // step))
        k = first
        while shot.start + k * step < min(stop, shot.stop):
            out.append((shot, window_at(k, len(shot), window, overlap)))
            k += 1
    return out


def plan_segments(shots: Sequence[Shot], boundaries: Sequence[int], window: int, overlap: int) -> list[Segment]:
    """Segments starting at ``boundaries`` (which must include 0 and be window starts of the plan,
    else ``ValueError``), with the frames each one reads."""
    if not shots:
        raise ValueError("no shots")
    length = shots[-1].stop
    bounds = sorted(set(boundaries))
    if not bounds or bounds[0] != 0:
        raise ValueError("the first segment must start at frame 0")
    allowed = set(window_starts(shots, window, overlap))
    wrong = [b for b in bounds if b not in allowed]
    if wrong:
        raise ValueError(f"segment boundaries {wrong} are not window starts of the plan")
    segments = []
    for number, (a, b) in enumerate(zip(bounds, [*bounds[1:], length], strict=True)):
        spans = [_window_span(shot, w) for shot, w in segment_windows(a, b, shots, window, overlap)]
        segments.append(Segment(number, a, b, min(s for s, _ in spans), max(e for _, e in spans)))
    return segments


# -- extractor state ----------------------------------------------------------------------------


class _StatePickler(pickle.Pickler):
    """Pickles an extractor without the networks it holds as attributes (the weights): those are
    written as references to the attribute's name."""

    def __init__(self, file: io.BytesIO, modules: dict[int, str]) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._modules = modules

    def persistent_id(self, obj: Any) -> str | None:
        if isinstance(obj, torch.nn.Module):
            return self._modules.get(id(obj))
        return None


class _StateUnpickler(pickle.Unpickler):
    def __init__(self, file: io.BytesIO, owner: Any) -> None:
        super().__init__(file)
        self._owner = owner

    def persistent_load(self, pid: Any) -> Any:
        return getattr(self._owner, str(pid))


def extractor_state(extractor: InstanceExtractor) -> bytes:
    """The extractor's state between two windows (everything but the networks it holds), as bytes."""
    modules = {id(v): k for k, v in vars(extractor).items() if isinstance(v, torch.nn.Module)}
    buffer = io.BytesIO()
    _StatePickler(buffer, modules).dump(extractor)
    return buffer.getvalue()


def restore_extractor(extractor: InstanceExtractor, state: bytes) -> InstanceExtractor:
    """A copy of ``extractor`` in the state recorded by :func:`extractor_state`, sharing the
    networks of ``extractor``."""
    return _StateUnpickler(io.BytesIO(state), extractor).load()


# -- the scan ---------------------------------------------------------------------------------


@dataclass
class VideoPlan:
    """What the scan found: every frame's ``pts`` and ``durations`` (source time base), the shots,
    the segments and the extractor state at the first window of each segment (``states``).
    ``splittable`` is false (with ``reason``) when the video must be upscaled in one piece."""

    frames: int
    pts: list[int]
    durations: list[int | None]
    time_base: Fraction
    shots: list[Shot]
    segments: list[Segment]
    states: list[bytes]
    splittable: bool = True
    reason: str = ""
    warnings: list[str] = field(default_factory=list)

    def job(self, number: int) -> SegmentJob:
        """What the worker of segment ``number`` needs."""
        seg = self.segments[number]
        shots = [s for s in self.shots if s.stop > seg.read_start and s.start < seg.read_stop]
        if seg.stop < self.frames:
            last = self.pts[seg.stop] - self.pts[seg.stop - 1]
        else:
            last = self.durations[-1]
        return SegmentJob(segment=seg, shots=shots, pts=self.pts[seg.read_start:seg.read_stop],
                          last_duration=last, state=self.states[number])


@dataclass
class SegmentJob:
    """One segment's work: the segment, the shots it touches, the pts of the frames it reads, the
    duration of its last frame and the extractor state to start from."""

    segment: Segment
    shots: list[Shot]
    pts: list[int]
    last_duration: int | None
    state: bytes


def scan_video(src: str | os.PathLike[str], up: SemanticLensUpscaler, seconds: float, *,
               max_frames: int | None = None) -> VideoPlan:
    """Decode ``src`` once, find its shots as the single run does, run ``up``'s extractor over
    every window, and plan segments of about ``seconds`` (see the module docstring)."""
    from semlens.io import VideoReader
    from semlens.pipeline import ShotStart, to_tensor, window_plan

    settings = up.settings
    extractor = up.extractor
    rule = SplitRule(seconds)
    reader = VideoReader(src)
    tb = reader.info.time_base
    pts: list[int] = []
    durations: list[int | None] = []
    cuts: list[int] = []
    boundaries: list[int] = []
    states: list[bytes] = []
    reason = ""

    def images() -> Iterator[np.ndarray]:
        nonlocal reason
        for frame in reader:
            if max_frames is not None and len(pts) >= max_frames:
                return
            if frame.pts is None or (pts and frame.pts <= pts[-1]):
                reason = "its frames have no increasing timestamps"
                return
            pts.append(frame.pts)
            durations.append(frame.duration)
            yield frame.image

    with reader:
        for step in window_plan(images(), settings.window, settings.overlap, settings.detect_cuts):
            if reason:  # not split: the rest of the plan is not needed
                break
            if isinstance(step, ShotStart):
                extractor.reset()
                if step.index:
                    cuts.append(step.index)
                continue
            first = step.shot_start + step.window.start
            if rule.starts_segment(pts[first] * tb):
                boundaries.append(first)
                states.append(extractor_state(extractor))
            locate_frames(extractor, [[step.shot_start + i for i in step.window.indices]])
            with torch.inference_mode():
                extractor(to_tensor(step.frames, settings.device)[0])
    warnings = list(reader.problems[:1]) if reader.truncated else []
    if not pts:
        raise InvalidInputError(f"no frame could be decoded from {str(src)!r}")
    shots = shots_from_cuts(len(pts), cuts)
    if reason:
        return VideoPlan(len(pts), pts, durations, tb, shots, [], [], splittable=False, reason=reason,
                         warnings=warnings)
    segments = plan_segments(shots, boundaries, settings.window, settings.overlap)
    return VideoPlan(len(pts), pts, durations, tb, shots, segments, states, warnings=warnings)


# -- one segment ------------------------------------------------------------------------------


def _segment_frames(src: Path, job: SegmentJob) -> Iterator[np.ndarray]:
    """The frames ``job`` reads, in order, checked against the scan's pts. Seeks to the key frame
    before them; decodes from the start when the container cannot seek exactly."""
    from semlens.io import VideoReader

    want = job.pts
    reader = VideoReader(src, start_pts=want[0])
    frames = iter(reader)
    first = next(frames, None)
    if first is None or first.pts != want[0]:
        reader.close()
        reader = VideoReader(src)
        frames = (f for f in reader if f.pts is not None and f.pts >= want[0])
        first = next(frames, None)
    with reader:
        got = 0
        frame = first
        while frame is not None and got < len(want):
            if frame.pts != want[got]:
                raise InvalidInputError(f"{src.name}: frame {job.segment.read_start + got} decodes with pts "
                                        f"{frame.pts}, not {want[got]} as when it was scanned; the file changed")
            yield frame.image
            got += 1
            if got < len(want):
                frame = next(frames, None)
        if got < len(want):
            raise InvalidInputError(f"{src.name}: only {got} of the {len(want)} frames of segment "
                                    f"{job.segment.number} decode; the file changed since it was scanned")


def upscale_segment(src: str | os.PathLike[str], part: str | os.PathLike[str], job: SegmentJob,
                    up: SemanticLensUpscaler, *, codec: str = "libx264", crf: float | None = 18,
                    preset: str | None = "medium", pix_fmt: str | None = None,
                    progress: Callable[[int], None] | None = None) -> int:
    """Upscale the frames of ``job``'s segment of ``src`` into the MP4 file ``part`` (written
    atomically) and return the number of frames written."""
    from semlens.io import VideoWriter, atomic_output, probe
    from semlens.pipeline import WindowRunner, _Batcher, planar_converter

    src = Path(src)
    seg = job.segment
    info = probe(src)
    extractor = restore_extractor(up.extractor, job.state)
    windows = segment_windows(seg.start, seg.stop, job.shots, up.settings.window, up.settings.overlap)
    spans = [_window_span(shot, w) for shot, w in windows]
    # The lowest frame any remaining window reads: frames below it are dropped from the buffer.
    keep_from = [min(s for s, _ in spans[k:]) for k in range(len(spans))]
    frames = _segment_frames(src, job)
    written = 0
    s = up.scale

    def upscaled(batcher: _Batcher) -> Iterator[Any]:
        """The segment's output frames in order; windows go through the network ``batch_windows``
        at a time, as in the single run."""
        buffer: dict[int, np.ndarray] = {}
        loaded = seg.read_start
        for k, ((shot, w), (_, end)) in enumerate(zip(windows, spans, strict=True)):
            while loaded < end:
                buffer[loaded] = next(frames)
                loaded += 1
            for i in [i for i in buffer if i < keep_from[k]]:
                del buffer[i]
            if w.number == 0:  # a shot starts: its extractor state must not see the last shot's windows
                yield from batcher.flush()
                extractor.reset()
            batcher.run.shot_start = shot.start  # the batcher has no window of another shot pending
            yield from batcher.add([(w, [buffer[shot.start + i] for i in w.indices])])
        yield from batcher.flush()

    with atomic_output(part, overwrite=True) as tmp:
        with VideoWriter(tmp, width=info.width * s, height=info.height * s, source=info, codec=codec, crf=crf,
                         preset=preset, pix_fmt=pix_fmt, copy_audio=False, copy_subtitles=False,
                         copy_metadata=False, faststart=False) as writer:
            run = WindowRunner(up.model, extractor, up.settings, planar_converter(writer.planar_layout))
            for image in upscaled(_Batcher(run, up.settings.batch_windows)):
                index = seg.start + written
                last = index == seg.stop - 1
                writer.write(image, job.pts[index - seg.read_start], duration=job.last_duration if last else None)
                written += 1
                if progress is not None:
                    progress(written)
            for _ in frames:  # finish the reader (closes the file)
                pass
    if written != seg.stop - seg.start:
        raise OutputError(f"segment {seg.number} wrote {written} frames instead of {seg.stop - seg.start}")
    return written


# -- joining ----------------------------------------------------------------------------------


def join_segments(parts: Sequence[str | os.PathLike[str]], dst: str | os.PathLike[str], *,
                  source: str | os.PathLike[str], copy_audio: bool = True, overwrite: bool = False,
                  trim_aux: bool = False) -> int:
    """Join the segment files ``parts`` (in order) into ``dst`` by copying their video packets,
    with the audio, subtitles and metadata of ``source`` copied once (``trim_aux``: only up to the
    end of the last frame, for parts that stop before the source's end); ``dst`` is written
    atomically. Returns the number of video packets written."""
    import av

    from semlens.io import VideoWriter, atomic_output, probe
    from semlens.io._av import AV_ERRORS, describe

    src = Path(source)
    info = probe(src)
    paths = [Path(p) for p in parts]
    if not paths:
        raise ValueError("no segments to join")
    try:
        first = av.open(str(paths[0]))
    except AV_ERRORS as exc:
        raise OutputError(f"cannot read segment {paths[0].name} ({describe(exc)})") from exc
    with first, atomic_output(dst, overwrite=overwrite, source=src) as tmp:
        template = first.streams.video[0]
        extradata = template.codec_context.extradata
        ctx = template.codec_context
        with VideoWriter(tmp, width=ctx.width, height=ctx.height, source=info, source_path=src,
                         copy_audio=copy_audio, template=template, trim_aux=trim_aux) as writer:
            last: Fraction | None = None
            for path in paths:
                with av.open(str(path)) as part:
                    stream = part.streams.video[0]
                    if stream.codec_context.extradata != extradata:
                        raise OutputError(f"segment {path.name} was encoded with other codec parameters; "
                                          f"cannot join it")
                    for packet in part.demux(stream):
                        if packet.size == 0:
                            continue
                        tb = packet.time_base
                        if packet.dts is not None:
                            # An encoder with a reordering delay starts each segment's dts before its
                            # first pts; keep dts increasing across the joint (never past the pts).
                            if last is not None and packet.dts * tb <= last:
                                moved = int(last / tb) + 1
                                if packet.pts is not None and moved > packet.pts:
                                    raise OutputError(f"cannot join {path.name}: its decoding timestamps overlap the "
                                                      f"previous segment's; use a codec without B-frames (e.g. ffv1)")
                                packet.dts = moved
                            last = packet.dts * tb
                        writer.write_packet(packet)
        return writer.frames_written
