"""The streaming core: frames in, upscaled frames out, window by window.

Frames are pulled from any iterable, split into shots at scene cuts, grouped into overlapping
windows (:mod:`semlens.windows`), passed through the extractor and the enhancer, and the inner
frames of each window are yielded in order. Only about one window of frames is held at a time,
whatever the length of the video.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from semlens.enhancer import PixelEnhancer
from semlens.errors import InvalidInputError, SemlensError
from semlens.semantics.cuts import SceneCutDetector
from semlens.semantics.types import InstanceExtractor, Semantics, locate_frames
from semlens.tiling import DEFAULT_TILE_OVERLAP
from semlens.windows import Window, WindowScheduler

if TYPE_CHECKING:
    from semlens.io import PlanarLayout

__all__ = ["StreamSettings", "WindowRunner", "ShotStart", "PlannedWindow", "window_plan", "enhance_stream",
           "planar_converter", "to_planar", "to_tensor", "to_frames"]

#: turns the enhancer's ``(T, 3, H, W)`` float output (and the input's integer maximum) into frames
Converter = Callable[[Tensor, int], list[Any]]


@dataclass
class StreamSettings:
    """How frames are processed: device, autocast dtype (``None`` = float32), window and overlap,
    scene-cut detection, spatial tile size (``0`` = automatic: whole frames when the window fits
    ``memory_budget`` bytes of activations, else the largest tile that does; ``None`` budget =
    :func:`~semlens.tiling.default_memory_budget`, read once per run: half the available RAM on a
    CPU, at least 1 GiB; on a GPU 60% of its memory or 90% of what is free, whichever is less).
    ``batch_windows`` windows go through the enhancer together
    (one batch: fuller GPUs; the extractor still sees every window in stream order, and the pixels
    are those of one at a time), fewer when their whole-frame tensors would take more than half the
    budget. Out-of-memory errors split the batch, then halve the tile, and retry
    (:class:`WindowRunner`)."""

    device: torch.device
    dtype: torch.dtype | None = None
    window: int = 12
    overlap: int = 2
    detect_cuts: bool = True
    tile: int = 0
    tile_overlap: int = DEFAULT_TILE_OVERLAP
    memory_budget: int | None = None
    batch_windows: int = 1


def to_tensor(frames: list[np.ndarray], device: torch.device) -> tuple[Tensor, int]:
    """``T`` frames ``(H, W, 3)`` uint8/uint16 -> ``(1, T, 3, H, W)`` float in [0, 1] on ``device``, and
    the integer maximum (255 or 65535). The division happens on the device."""
    stacked = np.stack(frames)
    maxval = 65535 if stacked.dtype == np.uint16 else 255
    if stacked.dtype == np.uint16:
        stacked = stacked.astype(np.int32)
    t = torch.from_numpy(stacked)
    if device.type == "cuda":
        t = t.pin_memory().to(device, non_blocking=True)
    else:
        t = t.to(device)
    return t.permute(0, 3, 1, 2).unsqueeze(0).float().div_(maxval), maxval


def to_frames(x: Tensor, maxval: int) -> list[np.ndarray]:
    """``(T, 3, H, W)`` float -> ``T`` frames ``(H, W, 3)`` uint8 (or uint16 when ``maxval`` is 65535);
    clamping, rounding and the integer cast happen on the tensor's device."""
    q = x.float().clamp_(0, 1).mul_(maxval).round_()
    q = q.to(torch.uint8) if maxval == 255 else q.to(torch.int32)
    arrays = q.permute(0, 2, 3, 1).contiguous().cpu().numpy()
    if maxval != 255:
        arrays = arrays.astype(np.uint16)
    return list(arrays)


def to_planar(x: Tensor, layout: PlanarLayout) -> list[np.ndarray]:
    """``(T, 3, H, W)`` float RGB -> ``T`` YUV frames as ``layout`` describes them (the arrays
    ``av.VideoFrame.from_ndarray`` takes), computed on the tensor's device: an encoder then gets its
    own pixel format with no conversion on the CPU. ``x`` is clamped to [0, 1] in place."""
    t, _, h, w = x.shape
    x = x.float().clamp_(0, 1)
    m = float(1 << (layout.depth - 8))
    if layout.full_range:
        y_scale = c_scale = float((1 << layout.depth) - 1)
        y_offset = 0.0
    else:
        y_scale, c_scale, y_offset = 219 * m, 224 * m, 16 * m
    c_offset = 128 * m
    kr, kb = layout.kr, layout.kb
    kg = 1.0 - kr - kb
    r, g, b = x.unbind(1)
    # Quantisation: + 0.5, then the integer cast truncates (every value is >= 0 here).
    luma = torch.mul(r, kr * y_scale).add_(g, alpha=kg * y_scale).add_(b, alpha=kb * y_scale).add_(y_offset + 0.5)
    if layout.subsampled:  # chroma of the 2x2 block means (the chroma matrix is linear)
        block = x[..., 0::2, 0::2] + x[..., 1::2, 0::2]
        block.add_(x[..., 0::2, 1::2]).add_(x[..., 1::2, 1::2])
        r, g, b = block.unbind(1)
        c_scale /= 4
    top = float((1 << layout.depth) - 1)
    cb = torch.mul(r, -kr / (2 * (1 - kb)) * c_scale).add_(g, alpha=-kg / (2 * (1 - kb)) * c_scale)
    cb.add_(b, alpha=0.5 * c_scale).add_(c_offset + 0.5).clamp_(0, top)
    cr = torch.mul(r, 0.5 * c_scale).add_(g, alpha=-kg / (2 * (1 - kr)) * c_scale)
    cr.add_(b, alpha=-kb / (2 * (1 - kr)) * c_scale).add_(c_offset + 0.5).clamp_(0, top)
    dtype = torch.uint8 if layout.depth == 8 else torch.int32
    out = torch.empty(t, h * w + 2 * cb[0].numel(), dtype=dtype, device=x.device)
    out[:, : h * w].copy_(luma.flatten(1))
    out[:, h * w : h * w + cb[0].numel()].copy_(cb.flatten(1))
    out[:, h * w + cb[0].numel() :].copy_(cr.flatten(1))
    arrays = out.view(t, *layout.shape).cpu().numpy()
    if layout.depth != 8:
        arrays = arrays.astype(np.uint16)
    return list(arrays)


def planar_converter(layout: PlanarLayout | None) -> Converter | None:
    """A converter giving a writer with this :attr:`~semlens.io.VideoWriter.planar_layout` its
    own pixel format (:class:`~semlens.io.PlanarImage` frames); ``None`` for no layout."""
    if layout is None:
        return None
    from semlens.io import PlanarImage

    def convert(x: Tensor, maxval: int) -> list[Any]:
        return [PlanarImage(a, layout.pix_fmt) for a in to_planar(x, layout)]

    return convert


def _check_frame(frame: np.ndarray, first: np.ndarray | None) -> np.ndarray:
    if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] != 3:
        shape = getattr(frame, "shape", None)
        raise InvalidInputError(f"frames must be (H, W, 3) RGB arrays, got shape {shape}")
    if min(frame.shape[:2]) < 1:
        raise InvalidInputError(f"frames must be at least 1x1 pixels, got shape {frame.shape}")
    if frame.dtype not in (np.uint8, np.uint16):
        raise InvalidInputError(f"frames must be uint8 or uint16, got {frame.dtype}")
    if first is not None and (frame.shape != first.shape or frame.dtype != first.dtype):
        raise InvalidInputError(f"frame size changed from {first.shape} {first.dtype} to {frame.shape} {frame.dtype}")
    return frame


class WindowRunner:
    """Upscales one window: frames -> extractor -> enhancer (tiled when needed) -> the window's
    emitted frames. The extractor carries its state from call to call within a shot, so windows
    must be given in stream order (:func:`enhance_stream`; :mod:`semlens.segments` replays it).

    Memory: the windows of a batch go through the network :attr:`windows` at a time (fewer than
    ``batch_windows`` when their whole-frame tensors, which tiling cannot shrink, would take more
    than half the memory budget), and frames are tiled when the window does not fit the budget. On
    an out-of-memory error the batch is split first, then the tile halved (never below twice the
    tile overlap); what fitted is kept for the following batches. Moving frames to the device,
    the extractor and the conversion of the output are retried too.

    ``shot_start`` is the stream index of the current shot's first frame (window indices are
    relative to it): the extractor is told each window's stream frames (:func:`locate_frames`).
    """

    def __init__(self, model: PixelEnhancer, extractor: InstanceExtractor, settings: StreamSettings,
                 convert: Converter | None = None) -> None:
        self.model, self.extractor, self.settings = model, extractor, settings
        self.convert: Converter = convert or to_frames
        self.windows = max(1, int(settings.batch_windows))
        """Windows per pass through the network (lowered for good after an out-of-memory error)."""
        self.tile: int | None = None
        """The tile that fitted after an out-of-memory error (``None``: none yet); later batches
        start from it instead of running out of memory again."""
        self.frame_by_frame = False
        """Whether the output is converted one frame at a time (after an out-of-memory error)."""
        self.shot_start = 0
        self._resolved_budget: int | None = None

    def _autocast(self) -> contextlib.AbstractContextManager:
        s = self.settings
        if s.dtype is None or s.dtype == torch.float32:
            return contextlib.nullcontext()
        return torch.autocast(device_type=s.device.type, dtype=s.dtype)

    def _budget(self) -> int:
        """The settings' memory budget, else the automatic one, read at the first window and kept
        (what is free changes as the run itself takes memory: every window is decided alike)."""
        from semlens.tiling import default_memory_budget

        s = self.settings
        if s.memory_budget is not None:
            return s.memory_budget
        if self._resolved_budget is None:
            self._resolved_budget = default_memory_budget(s.device)
        return self._resolved_budget

    @torch.inference_mode()
    def __call__(self, window: Window, frames: list[np.ndarray]) -> list[np.ndarray]:
        return self.batch([(window, frames)])[0]

    @torch.inference_mode()
    def batch(self, items: list[tuple[Window, list[np.ndarray]]]) -> list[list[np.ndarray]]:
        """Several windows of the same length and emitted range through the enhancer as one batch;
        the extractor runs on each in the order given. Returns each window's emitted frames."""
        from semlens.tiling import windows_per_pass

        window = items[0][0]
        first = window.emit_offset
        emit = (first, first + (window.stop - window.start))
        for w, frames in items:
            if (w.emit_offset, w.emit_offset + w.stop - w.start) != emit or len(frames) != len(items[0][1]):
                raise ValueError("windows batched together must have the same length and emitted range")
        h, w_ = items[0][1][0].shape[:2]
        results: list[list[Any]] = []
        prepared: dict[int, tuple[Tensor, Semantics | None, int]] = {}
        while len(results) < len(items):
            done = len(results)
            count = min(self.windows, len(items) - done)
            if count > 1:
                count = windows_per_pass(h, w_, len(items[0][1]), int(self.model.scale), self._budget(), count)
            for k in range(done, done + count):  # in stream order, each window's extractor runs once
                if k not in prepared:
                    prepared[k] = self._prepare(*items[k])
            outputs = self._enhance([prepared[k] for k in range(done, done + count)], emit)
            if outputs is None:  # out of memory: fewer windows or a smaller tile, then again
                continue
            for k in range(done, done + count):
                del prepared[k]
            results.extend(outputs)
        return results

    def _prepare(self, window: Window, frames: list[np.ndarray]) -> tuple[Tensor, Semantics | None, int]:
        """The window on the device and its semantics (each retried once after an out-of-memory
        error, the extractor from its state before the failed call)."""
        from semlens.tiling import attempt, release_memory

        device = self.settings.device
        ok, value, message = attempt(to_tensor, frames, device)
        if not ok:
            release_memory(device)
            ok, value, message = attempt(to_tensor, frames, device)
        if not ok or value is None:
            raise SemlensError(f"out of memory moving a window of frames to {device} ({message}); "
                               "use a shorter --window or free memory")
        x, maxval = value
        locate_frames(self.extractor, [[self.shot_start + i for i in window.indices]])
        state = getattr(self.extractor, "__dict__", None)
        saved = dict(state) if state is not None else None  # extractors replace their state, never mutate it
        ok, semantics, message = attempt(self.extractor, x)
        if not ok and state is not None and saved is not None:
            release_memory(device)
            state.clear()
            state.update(saved)
            ok, semantics, message = attempt(self.extractor, x)
        if not ok:
            name = getattr(self.extractor, "name", "instance")
            raise SemlensError(f"out of memory in the {name} extractor ({message}); use a shorter --window, "
                               "a lighter --extractor, or free memory")
        return x, semantics, maxval

    def _tile_for(self, x: Tensor) -> int:
        """The tile for the batch ``x``: the settings' (or the automatic) tile, or the one that
        fitted after an out-of-memory error when that is smaller."""
        from semlens.tiling import auto_tile_for

        s = self.settings
        h, w = x.shape[-2:]
        base = s.tile if s.tile else auto_tile_for(self.model, x, self._budget(), s.dtype, s.tile_overlap)
        if base >= max(h, w):
            base = 0
        if self.tile is None:
            return base
        return self.tile if base <= 0 or self.tile < base else base

    def _enhance(self, chunk: list[tuple[Tensor, Semantics | None, int]], emit: tuple[int, int]) -> list[list[Any]] | None:
        """The emitted frames of each window of ``chunk``, or ``None`` after an out-of-memory error
        (with :attr:`windows` or :attr:`tile` lowered; :class:`SemlensError` when neither can be)."""
        from semlens import tiling

        s = self.settings
        x = chunk[0][0] if len(chunk) == 1 else torch.cat([c[0] for c in chunk])
        parts = [c[1] for c in chunk]
        semantics = parts[0] if len(parts) == 1 or parts[0] is None else Semantics.concat(parts)  # type: ignore[arg-type]
        tile = self._tile_for(x)
        with self._autocast():
            ok, y, message = tiling.attempt(tiling.tiled_forward, self.model, x, semantics, tile, s.tile_overlap,
                                            emit)
        if not ok or y is None:
            tiling.release_memory(s.device)
            self._cut(len(chunk), tile, x.shape[-2], x.shape[-1], message)
            return None
        return [self._convert(y[i], chunk[i][2]) for i in range(len(chunk))]

    def _cut(self, count: int, tile: int, h: int, w: int, message: str) -> None:
        """After an out-of-memory error with ``count`` windows and ``tile``: fewer windows per pass
        first, then a smaller tile; :class:`SemlensError` when one window at the smallest tile failed."""
        from semlens.tiling import logger, oom_message, smaller_tile

        s = self.settings
        if count > 1:
            self.windows = max(1, count // 2)
            logger.warning("out of memory with %d windows in one batch; going on with %d", count, self.windows)
            return
        smaller = smaller_tile(tile, h, w, s.tile_overlap)
        if smaller is None:
            raise SemlensError(oom_message(tile or max(h, w), message, s.device, s.dtype, s.tile_overlap))
        logger.warning("out of memory with %s; going on with %d-pixel tiles",
                       f"{tile}-pixel tiles" if tile else "whole frames", smaller)
        self.tile = smaller

    def _convert(self, y: Tensor, maxval: int) -> list[Any]:
        """One window's output ``(n, 3, H, W)`` -> frames; checked for non-finite values, and converted
        frame by frame (on the CPU if need be) once the whole window ran out of memory."""
        from semlens.tiling import attempt, logger, release_memory

        # A sum is non-finite when any value is (inf/nan propagate; finite outputs are far below
        # float32's range), and needs no output-sized mask.
        if not bool(torch.isfinite(y.sum())):
            self._non_finite()
        if not self.frame_by_frame:
            ok, frames, _ = attempt(self.convert, y, maxval)
            if ok and frames is not None:
                return frames
            release_memory(y.device)
            self.frame_by_frame = True
            logger.warning("out of memory converting a window of output; going on frame by frame")
        out: list[Any] = []
        for j in range(y.shape[0]):
            one = y[j:j + 1]
            ok, part, _ = attempt(self.convert, one, maxval)
            if not ok or part is None:
                release_memory(y.device)
                part = self.convert(one.cpu(), maxval)
            out.extend(part)
        return out

    def _non_finite(self) -> None:
        dtype = self.settings.dtype
        name = {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32") if dtype is not None else "fp32"
        hint = ("run with --dtype fp32" if name != "fp32"
                else "the weights may be damaged or not meant for this input; check the model")
        raise SemlensError(f"the network's output has non-finite values (inf or nan) in {name}; {hint}")


class _Batcher:
    """Collects windows until ``size`` of the same shape are pending, then runs them as one batch."""

    def __init__(self, run: WindowRunner, size: int) -> None:
        self.run, self.size = run, max(1, int(size))
        self.pending: list[tuple[Window, list[np.ndarray]]] = []

    def _key(self, item: tuple[Window, list[np.ndarray]]) -> tuple[int, int, int]:
        w, frames = item
        return (len(frames), w.emit_offset, w.stop - w.start)

    def add(self, items: Iterable[tuple[Window, list[np.ndarray]]]) -> Iterator[np.ndarray]:
        for item in items:
            if self.pending and self._key(item) != self._key(self.pending[0]):
                yield from self.flush()
            self.pending.append(item)
            if len(self.pending) >= self.size:
                yield from self.flush()

    def flush(self) -> Iterator[np.ndarray]:
        items, self.pending = self.pending, []
        if items:
            for frames in self.run.batch(items):
                yield from frames


@dataclass(frozen=True)
class ShotStart:
    """The stream's shot starting at frame ``index`` (0 for the first shot, else a scene cut): the
    windows of the shot before it are all planned, and the extractor restarts here."""

    index: int


@dataclass(frozen=True)
class PlannedWindow:
    """Window ``window`` of the shot whose first frame is stream frame ``shot_start`` (the window's
    indices are relative to that frame), with the ``frames`` it reads."""

    shot_start: int
    window: Window
    frames: list[np.ndarray]


def window_plan(frames: Iterable[np.ndarray], window: int, overlap: int,
                detect_cuts: bool = True) -> Iterator[ShotStart | PlannedWindow]:
    """The single run's plan of a frame stream, as it unfolds: a :class:`ShotStart` for the first
    shot (before any frame is read) and at every scene cut, and every window of every shot, in
    order (a shot's windows come before the next shot's start). Frames are read one at a time; only
    about one window of them is held. :func:`enhance_stream` upscales by this plan and
    :func:`semlens.segments.scan_video` splits a video along it, so that segments join exactly."""
    scheduler: WindowScheduler[np.ndarray] = WindowScheduler(window, overlap)
    cuts = SceneCutDetector() if detect_cuts else None
    shot_start = 0
    yield ShotStart(0)
    for index, frame in enumerate(frames):
        if cuts is not None and cuts.update(frame) and scheduler.count:
            for w, group in scheduler.finish():
                yield PlannedWindow(shot_start, w, group)
            scheduler = WindowScheduler(window, overlap)
            shot_start = index
            yield ShotStart(index)
        for w, group in scheduler.push(frame):
            yield PlannedWindow(shot_start, w, group)
    for w, group in scheduler.finish():
        yield PlannedWindow(shot_start, w, group)


def _checked(frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
    first: np.ndarray | None = None
    for frame in frames:
        frame = _check_frame(frame, first)
        first = frame if first is None else first
        yield frame


def enhance_stream(frames: Iterable[np.ndarray], model: PixelEnhancer, extractor: InstanceExtractor,
                   settings: StreamSettings, convert: Converter | None = None) -> Iterator[Any]:
    """Upscale a stream of ``(H, W, 3)`` uint8/uint16 RGB frames, yielding ``(sH, sW, 3)`` frames of the
    same dtype, one per input frame and in order (or what ``convert`` makes of the enhancer's output,
    e.g. :func:`planar_converter`'s YUV frames). Shots are split at scene cuts: no window spans a
    cut and the extractor restarts at each one (:func:`window_plan`)."""
    run = WindowRunner(model, extractor, settings, convert)
    batcher = _Batcher(run, settings.batch_windows)
    for step in window_plan(_checked(frames), settings.window, settings.overlap, settings.detect_cuts):
        if isinstance(step, ShotStart):
            yield from batcher.flush()  # the extractor restarts: the windows before the cut are done
            extractor.reset()
            run.shot_start = step.index
        else:
            yield from batcher.add([(step.window, step.frames)])
    yield from batcher.flush()
