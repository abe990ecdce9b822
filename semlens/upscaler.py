"""`SemanticLensUpscaler`: the library's front door."""

from __future__ import annotations

import functools
import math
import os
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from semlens.enhancer import PixelEnhancer
from semlens.enhancer.compiling import compile_network
from semlens.errors import (
    BatchError,
    ExtractorMismatchError,
    InputNotFoundError,
    InvalidInputError,
    ModelNotFoundError,
    NothingToDoError,
    OutputError,
    SemlensError,
)
from semlens.executors import FolderExecutor, get_executor
from semlens.interrupts import check_termination, deferred_termination
from semlens.io.complete import is_complete_output  # re-exported: callers import it from here
from semlens.pipeline import StreamSettings, enhance_stream, planar_converter
from semlens.runtime import resolve_device, tune_allocator  # resolve_device re-exported
from semlens.scan import find_videos
from semlens.semantics import InstanceExtractor, extractor_dims
from semlens.tiling import DEFAULT_TILE_OVERLAP, default_memory_budget, parse_memory_size

__all__ = ["SemanticLensUpscaler", "UpscaleResult", "Progress", "resolve_device", "resolve_dtype",
           "check_task_device", "task_memory_budget", "default_model_name", "output_path_for", "check_extractor_fits"]

Progress = Callable[[int, "int | None"], None]
"""``progress(frames_done, frames_total_or_None)``, called after every output frame."""

T = TypeVar("T")

# Containers that hold the default H.264 stream; other inputs are mirrored as .mkv.
_KEEP_SUFFIX = {".mp4", ".mkv", ".mov", ".m4v", ".ts"}  # .avi cannot keep timestamps: .mkv


@dataclass
class UpscaleResult:
    """What happened to one input: ``status`` is ``done``, ``skipped`` or ``failed``."""

    input: Path
    output: Path
    status: str = "done"
    frames: int = 0
    seconds: float = 0.0
    error: str | None = None
    exit_code: int = 0
    warnings: list[str] = field(default_factory=list)
    #: The input was cut short or damaged: ``frames`` are the ones that decoded (the output holds
    #: those, a valid video; ``warnings`` says so). The command line exits non-zero for it.
    truncated: bool = False

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def ok(self) -> bool:
        return self.status != "failed"


def check_task_device(device: str, gpus_per_task: float | None) -> None:
    """Refuse a ``device`` that no Ray task can have: a task sees only the GPUs Ray gives it
    (``ceil(gpus_per_task)``, numbered from ``cuda:0``), so ``cuda:N`` beyond those names nothing
    there, whichever GPU of the node it meant. ``ValueError`` with what to use instead."""
    if device in ("auto", "cpu", "cuda"):
        return
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from exc
    visible = max(1, math.ceil(gpus_per_task)) if gpus_per_task else 1
    if dev.type == "cuda" and dev.index is not None and dev.index >= visible:
        raise ValueError(f"device={device!r} cannot be used on Ray: each task sees only the GPU{'s' if visible > 1 else ''} "
                         f"Ray gives it, as cuda:0{f' to cuda:{visible - 1}' if visible > 1 else ''}; "
                         "use device='cuda' (Ray picks the GPU)")


def task_memory_budget(budget: int | None, device: torch.device, gpus: float,
                       cpu_share: float | None = None) -> int | None:
    """The memory budget of a task that was given ``gpus`` GPUs (Ray's ``num_gpus``) and
    ``cpu_share`` of its machine's CPUs: ``budget`` when one is set, else for a fraction of one CUDA
    device :func:`default_memory_budget` of that share (tasks sharing a GPU then stay within its
    budget together), on a CPU the same for the task's share of the machine's CPUs (as many such
    tasks run there at once, and share its RAM), else ``None`` (the default)."""
    if budget is not None:
        return budget
    if device.type == "cuda":
        return default_memory_budget(device, share=gpus) if 0 < gpus < 1 else None
    if device.type == "cpu" and cpu_share is not None and 0 < cpu_share < 1:
        return default_memory_budget(device, share=cpu_share)
    return None


def _check_memory_budget(budget: int | str | None) -> int | None:
    """``budget`` in bytes (a string such as ``"4G"`` is read by
    :func:`~semlens.tiling.parse_memory_size`), or ``None`` for the automatic budget;
    ``ValueError`` for a budget below one byte or that is no size."""
    if budget is None:
        return None
    if isinstance(budget, bool) or not isinstance(budget, int | str):
        raise ValueError(f"memory_budget must be bytes (an int), a size such as '4G', or None; got {budget!r}")
    return parse_memory_size(budget)


_DTYPES = {"fp32": None, "float32": None, "fp16": torch.float16, "float16": torch.float16,
           "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype | None:
    """``auto``: float16 autocast on CUDA, float32 elsewhere. ``None`` means float32. bfloat16 on a
    CUDA device needs the device's support for it (compute capability 8.0 and up)."""
    if isinstance(dtype, torch.dtype):
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"dtype {dtype} cannot run the network; use auto, fp32, fp16 or bf16")
        resolved: torch.dtype | None = None if dtype == torch.float32 else dtype
    elif dtype in (None, "auto"):
        return torch.float16 if device.type == "cuda" else None
    elif dtype not in _DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, fp32, fp16 or bf16")
    else:
        resolved = _DTYPES[dtype]
    if resolved == torch.bfloat16 and device.type == "cuda" and not _cuda_bf16(device):
        raise ValueError(f"{device} does not support bf16 (it needs compute capability 8.0 or newer); "
                         "use dtype='fp16' or dtype='fp32'")
    return resolved


def _cuda_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bfloat16 natively (emulation is not enough: slow, and not
    every kernel has it)."""
    with torch.cuda.device(device):
        try:
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:  # older torch: no emulation argument
            return bool(torch.cuda.is_bf16_supported())


def check_extractor_fits(model: PixelEnhancer, extractor: str, dims: tuple[int, int], *,
                         model_name: str | None = None, trained_with: str | None = None) -> None:
    """Raise :class:`ExtractorMismatchError` unless the extractor named ``extractor``, whose
    instance and scene tokens have ``dims`` sizes, can drive ``model``. ``"none"`` fits any model,
    and any extractor fits a model that pools its own tokens (``token_source="pooled"``)."""
    if getattr(model.config, "pooled_tokens", False):
        return
    want = (model.config.instance_dim, model.config.global_dim)
    if extractor == "none" or tuple(dims) == want:
        return
    which = f"model {model_name!r}" if model_name else "the model"
    advice = (f"use extractor={trained_with!r}, the one it was trained with" if trained_with
              else "use the extractor the model was trained with")
    raise ExtractorMismatchError(
        f"extractor {extractor!r} gives {dims[0]}-d instance and {dims[1]}-d scene tokens but {which} expects "
        f"{want[0]}-d and {want[1]}-d; {advice}")


def default_model_name(scale: int) -> str:
    """The shipped model of ``scale`` (:data:`semlens.hub.specs.DEFAULT_MODELS`)."""
    from semlens.hub.specs import DEFAULT_MODELS

    if scale not in DEFAULT_MODELS:
        shipped = " and ".join(str(s) for s in sorted(DEFAULT_MODELS))
        raise ModelNotFoundError(f"no shipped model for scale {scale}; shipped scales are {shipped} (or name a model)")
    return DEFAULT_MODELS[scale]


def output_path_for(relative: Path, out_dir: Path) -> Path:
    """Where a folder run writes the upscaled copy of ``relative``: same relative path, and a .mkv
    suffix for containers that cannot hold H.264 (.webm, .flv, .wmv, ...) or its timestamps (.avi). ``relative`` must stay
    inside ``out_dir`` (no absolute path, no ``..`` part): :class:`OutputError` otherwise."""
    if relative.is_absolute() or ".." in relative.parts:
        raise OutputError(f"{str(relative)!r} would be written outside the output folder; refusing it")
    target = out_dir / relative
    if relative.suffix.lower() not in _KEEP_SUFFIX:
        target = target.with_suffix(".mkv")
    return target


class _Prefetch:
    """Iterates ``items`` on a background thread (decoding overlaps compute), ``size`` items ahead.

    Use it as a context manager around the consumer: leaving the block, normally or by an
    exception (an error, Ctrl-C), stops the thread and joins it, so that whatever ``items`` reads
    from (a demuxer) can be closed afterwards without the thread still decoding from it. An
    exception raised by ``items`` is raised in the consumer."""

    def __init__(self, items: Iterable[T], size: int = 8) -> None:
        self._items = items
        self._queue: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="semlens-decode", daemon=True)

    def _put(self, kind: str, value: Any) -> bool:
        """Queue one entry unless asked to stop first (never blocks past a stop request)."""
        while not self._stop.is_set():
            try:
                self._queue.put((kind, value), timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        try:
            for item in self._items:
                if not self._put("item", item):
                    return
            self._put("end", None)
        except BaseException as exc:  # handed to the consumer
            self._put("error", exc)

    def __iter__(self) -> Iterator[Any]:
        while True:
            kind, value = self._queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value

    def __enter__(self) -> _Prefetch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the thread and wait for it (it stops at the next item, at most one decode away)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        close = getattr(self._items, "close", None)
        if close is not None:  # a generator: run its cleanup here, now that no thread runs it
            close()


class _BackgroundWriter:
    """Runs ``write(image, pts, duration)`` on a background thread, ``size`` frames behind the
    producer, so encoding overlaps the network (``threaded=False``: in the caller, as frames come). A write error is raised in the producer (at its
    next :meth:`put` or on leaving the ``with`` block); leaving the block by an exception (an
    error, Ctrl-C) stops the thread without draining, before the caller cleans up the output."""

    def __init__(self, write: Callable[[Any, int | None, int | None], None], size: int = 8,
                 threaded: bool = True) -> None:
        self._write = write
        self.threaded = threaded
        self._queue: queue.Queue[tuple[Any, int | None, int | None] | None] = queue.Queue(maxsize=size)
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self.written = 0
        self._thread = threading.Thread(target=self._work, name="semlens-encode", daemon=True)

    def _work(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    item = self._queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                if item is None:
                    return
                self._write(*item)
                self.written += 1
        except BaseException as exc:  # handed to the producer
            self._error = exc
            self._stop.set()

    def _raise(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def put(self, image: Any, pts: int | None, duration: int | None) -> None:
        if not self.threaded:
            self._write(image, pts, duration)
            self.written += 1
            return
        while True:
            self._raise()
            if self._stop.is_set():
                raise RuntimeError("the encoding thread stopped")
            try:
                self._queue.put((image, pts, duration), timeout=0.1)
                return
            except queue.Full:
                continue

    def __enter__(self) -> _BackgroundWriter:
        if self.threaded:
            self._thread.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self.threaded:
            return
        if exc_type is None:
            while self._thread.is_alive():  # drain: every queued frame is written
                try:
                    self._queue.put(None, timeout=0.1)
                    break
                except queue.Full:
                    continue
            self._thread.join()
            self._raise()
        else:
            self._stop.set()
            self._thread.join(timeout=30)


F = TypeVar("F", bound=Callable[..., Any])


def _terminable(method: F) -> F:
    """Run ``method`` under :func:`~semlens.interrupts.deferred_termination`: a SIGTERM stops the
    run at the next frame boundary with :class:`~semlens.interrupts.Terminated`, after the
    partial output is removed, instead of killing the process with the partial left behind."""

    @functools.wraps(method)
    def run(*args: Any, **kwargs: Any) -> Any:
        with deferred_termination():
            return method(*args, **kwargs)

    return run  # type: ignore[return-value]


class _Part:
    """The frames of a source that a run keeps: from ``start`` seconds, for ``seconds`` seconds,
    at most ``max_frames`` of them (each ``None`` for no limit)."""

    def __init__(self, start: float | None, seconds: float | None, max_frames: int | None) -> None:
        self.start = start or 0.0
        self.seconds = seconds
        self.max_frames = max_frames

    @property
    def trims(self) -> bool:
        return bool(self.start) or self.seconds is not None or self.max_frames is not None

    def shift_pts(self, info: Any) -> int:
        return round(Fraction(self.start) / info.time_base) if self.start else 0

    def open(self, src: Path) -> Any:
        from semlens.io import VideoReader, open_source, probe

        if self.start and src.is_file():  # seek near the start instead of decoding up to it
            info = probe(src)
            return VideoReader(src, info=info, start_pts=(info.start_pts or 0) + self.shift_pts(info))
        return open_source(src)

    def total(self, info: Any) -> int | None:
        """The number of frames the part holds, as far as the container says (for progress): the
        frames from ``start`` on, at most ``seconds`` of them (within the video's duration) and at
        most ``max_frames``; ``None`` when the container gives no count and nothing bounds it."""
        total = info.frame_count
        rate = float(info.fps) if info.fps else None
        if self.start and rate:
            if total is not None:
                total = max(0, total - round(self.start * rate))
            elif info.duration:
                total = max(0, round((info.duration - self.start) * rate))
        if self.seconds is not None and rate:
            span = self.seconds if not info.duration else min(self.seconds, max(0.0, info.duration - self.start))
            total = min(1 << 62 if total is None else total, max(1, round(span * rate)))
        if self.max_frames is not None:
            total = min(self.max_frames if total is None else total, self.max_frames)
        return total

    def frames(self, reader: Any, info: Any) -> Iterator[Any]:
        """The kept frames of ``reader``, in order (a frame's time is its pts from the source's start)."""
        origin = info.start_pts or 0
        rate = float(info.fps) if info.fps else 25.0
        kept = 0
        for i, frame in enumerate(reader):
            t = i / rate if frame.pts is None else float((frame.pts - origin) * info.time_base)
            if t < self.start - 1e-9:
                continue
            if self.seconds is not None and t >= self.start + self.seconds - 1e-9:
                return
            if self.max_frames is not None and kept >= self.max_frames:
                return
            kept += 1
            yield frame


def _is_video_path(path: Path) -> bool:
    from semlens.io import VIDEO_EXTENSIONS

    return path.suffix.lower() in VIDEO_EXTENSIONS


class SemanticLensUpscaler:
    """Upscales videos, image sequences and frame iterables with a Semantic Lens model.

    Build it with :meth:`from_pretrained`; then :meth:`upscale_video`, :meth:`upscale_folder` or
    :meth:`upscale_frames`. Memory is bounded by one window of frames, whatever the video's length.
    """

    def __init__(self, model: PixelEnhancer, extractor: InstanceExtractor | str = "lite", *,
                 device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None,
                 window: int = 12, overlap: int = 2, tile: int = 0, detect_cuts: bool = True,
                 name: str | None = None, batch_windows: int = 0, tile_overlap: int | None = None,
                 memory_budget: int | str | None = None) -> None:
        budget = _check_memory_budget(memory_budget)
        self.device = resolve_device(device)
        self.dtype = resolve_dtype(dtype, self.device)
        tune_allocator()
        if isinstance(extractor, str):
            from semlens.hub import load_extractor

            extractor = load_extractor(extractor)
        elif not callable(extractor) or not hasattr(extractor, "name"):
            raise TypeError(f"extractor must be an extractor's name (such as 'lite') or an extractor object, "
                            f"got {extractor!r}")
        check_extractor_fits(model, extractor.name, (extractor.instance_dim, extractor.global_dim))
        self.model = model.to(self.device).eval()
        if self.device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.extractor = extractor
        self.name = name or "custom"
        #: sha256 of the weights file the network came from (set by :meth:`from_pretrained`).
        self.weights_sha256: str | None = None
        if batch_windows < 0:
            raise ValueError(f"batch_windows must be >= 0 (0 = automatic), got {batch_windows}")
        if tile < 0:
            raise ValueError(f"tile must be >= 0 (0 = whole frames unless they exceed the memory budget), got {tile}")
        self.batch_windows_asked = batch_windows  # 0: automatic, resolved again where the work runs
        if batch_windows == 0:  # a CPU gains nothing from batching windows; a GPU is fuller with a few
            batch_windows = 4 if self.device.type == "cuda" else 1
        if tile_overlap is None:
            tile_overlap = DEFAULT_TILE_OVERLAP
        if tile_overlap < 0:
            raise ValueError(f"tile_overlap must be >= 0, got {tile_overlap}")
        if 0 < tile <= tile_overlap:
            raise ValueError(f"tiles of {tile} pixels cannot share {tile_overlap} pixels with their neighbours; "
                             f"use tile={2 * tile_overlap} or more, or a smaller tile overlap")
        self.settings = StreamSettings(device=self.device, dtype=self.dtype, window=window, overlap=overlap,
                                       detect_cuts=detect_cuts, tile=tile, tile_overlap=tile_overlap,
                                       memory_budget=budget, batch_windows=batch_windows)
        from semlens.windows import check_window

        check_window(window, overlap)

    @property
    def scale(self) -> int:
        return self.model.scale

    @classmethod
    def from_pretrained(cls, model: str | os.PathLike[str] | None = None, *, scale: int | None = None,
                        device: str | torch.device = "auto", dtype: str | torch.dtype | None = "auto",
                        extractor: str | InstanceExtractor | None = None, window: int | None = None,
                        overlap: int | None = None, tile: int = 0, detect_cuts: bool = True,
                        compile: bool = False, batch_windows: int = 0,
                        tile_overlap: int | None = None,
                        memory_budget: int | str | None = None) -> SemanticLensUpscaler:
        """Load a model: a registry name (``semlens-tiny-x4``), a local file or folder, or a Hugging
        Face repo id ``user/repo[@revision]``. Without ``model``, the shipped default of ``scale``
        (4 unless given). The extractor, window and overlap default to those recorded in the model
        file (the extractor it was trained with; the window its card was evaluated with, or for a
        model from ``semlens train`` its training clip length unless ``--window`` was given). ``batch_windows`` windows go through the network together (0 = 4 on a
        GPU, 1 on a CPU); the output is the same either way. ``tile`` is the spatial tile side in
        input pixels (0 = whole frames unless they exceed the memory budget; otherwise larger than
        ``tile_overlap``) and ``tile_overlap`` the pixels neighbouring tiles share (``None`` =
        :data:`semlens.tiling.DEFAULT_TILE_OVERLAP`). ``memory_budget`` is the bytes of activations
        a window may take before its frames are tiled (or a size such as ``"4G"``; ``None`` =
        :func:`semlens.tiling.default_memory_budget`, half the available RAM on a CPU, 60% of a GPU's
        memory or 90% of its free memory, whichever is less). ``compile`` compiles the network's per-frame
        stages (:func:`semlens.enhancer.compiling.compile_network`): a few graphs made during the first
        windows, for long runs on a GPU."""
        from semlens.hub import load_model
        from semlens.hub.fetch import sha256_file

        if scale is not None and (isinstance(scale, bool) or not isinstance(scale, int)):
            raise TypeError(f"scale must be a whole number such as 2 or 4, got {scale!r}")
        name = str(model) if model is not None else default_model_name(4 if scale is None else scale)
        loaded = load_model(name, device="cpu")
        if scale is not None and loaded.scale != scale:
            raise ModelNotFoundError(f"model {name!r} upscales x{loaded.scale}, not x{scale}; "
                                     f"give no scale, or a x{scale} model")
        ext = extractor if extractor is not None else loaded.extractor
        if isinstance(ext, str) and not loaded.model.config.pooled_tokens:
            # checked before the extractor is built (a SAM checkpoint is large)
            check_extractor_fits(loaded.model, ext, extractor_dims(ext), model_name=loaded.name,
                                 trained_with=loaded.extractor)
        net = loaded.model
        if compile:  # the per-frame stages, with dynamic shapes (see semlens.enhancer.compiling)
            net = compile_network(net)  # type: ignore[assignment]
        window = window if window is not None else loaded.window
        if overlap is None:  # the model's context, as much of it as the window allows
            overlap = min(loaded.overlap, (window - 1) // 2)
        up = cls(net, ext, device=device, dtype=dtype, window=window, overlap=overlap, tile=tile,
                 detect_cuts=detect_cuts, name=loaded.name, batch_windows=batch_windows, tile_overlap=tile_overlap,
                 memory_budget=memory_budget)
        up.weights_sha256 = sha256_file(loaded.path)
        return up

    # -- frames ----------------------------------------------------------------------------------
    def upscale_frames(self, frames: Iterable[np.ndarray]) -> Iterator[np.ndarray]:
        """Upscale an iterable of ``(H, W, 3)`` uint8 (or uint16) RGB frames; yields
        ``(s*H, s*W, 3)`` frames of the same dtype, one per input frame, in order. The result does not
        depend on how the iterable is chunked. One upscaler runs one stream at a time: its extractor
        follows the instances of the stream it is on, so two streams interleaved on one upscaler (two
        generators advanced in turn, or two threads) disturb each other; give each its own upscaler."""
        return enhance_stream(frames, self.model, self.extractor, self.settings)

    # -- one video ---------------------------------------------------------------------------------
    @_terminable
    def upscale_video(self, src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                      codec: str = "libx264", crf: float | None = 18, preset: str | None = "medium",
                      pix_fmt: str | None = None, copy_audio: bool = True, overwrite: bool = False,
                      max_frames: int | None = None, progress: Progress | None = None,
                      start: float | None = None, seconds: float | None = None) -> UpscaleResult:
        """Upscale the video file (or image folder) ``src`` into ``dst``.

        ``dst`` is a video when it has a video extension, else a folder of PNG frames. Timestamps,
        audio/subtitle streams and metadata are kept; the output appears only when complete.
        ``max_frames`` stops early (a preview). ``start`` (seconds from the video's start) skips the
        frames shown before it and ``seconds`` keeps only the frames shown in that many seconds from
        there. With any of the three the copied audio and subtitles are trimmed to the video, and with
        ``start`` every timestamp (video, audio, subtitles) moves ``start`` seconds earlier, so the
        part begins where the source begins. Raises :class:`~semlens.errors.SemlensError`
        subclasses for bad inputs and outputs.
        """
        from semlens.io import (
            ImageSequenceWriter,
            VideoWriter,
            atomic_output,
            remove_stale_partials,
        )

        src, dst = Path(src), Path(dst)
        if max_frames is not None and (isinstance(max_frames, bool) or not isinstance(max_frames, int)):
            raise TypeError(f"max_frames must be a whole number of frames, got {max_frames!r}")
        if max_frames is not None and max_frames < 1:
            raise ValueError(f"max_frames must be at least 1 (or None for all frames), got {max_frames}")
        if start is not None and not start >= 0:
            raise ValueError(f"start must be >= 0 seconds, got {start}")
        if seconds is not None and not seconds > 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        if not src.exists():
            raise InputNotFoundError(f"input {str(src)!r} does not exist")
        remove_stale_partials(dst)  # left by a killed earlier run (its process is gone)
        started = time.perf_counter()
        result = UpscaleResult(input=src, output=dst)
        to_video = _is_video_path(dst)
        part = _Part(start, seconds, max_frames)
        with part.open(src) as reader:
            info = reader.info
            if start is not None and info.duration is not None and start >= info.duration:
                raise ValueError(f"start={start:g} s is past the end of the video ({info.duration:.3f} s); "
                                 f"give an earlier start")
            s = self.scale
            total = part.total(info)
            with atomic_output(dst, overwrite=overwrite, source=src, is_dir=not to_video) as tmp:
                if to_video:
                    writer: Any = VideoWriter(tmp, width=info.width * s, height=info.height * s, source=info,
                                              source_path=src if src.is_file() else None, codec=codec, crf=crf,
                                              preset=preset, pix_fmt=pix_fmt, copy_audio=copy_audio,
                                              shift_pts=part.shift_pts(info), trim_aux=part.trims,
                                              aux_end=None if seconds is None else Fraction(seconds))
                else:
                    writer = ImageSequenceWriter(tmp)
                with writer:
                    stamps: deque[tuple[int | None, int | None]] = deque()

                    def images() -> Iterator[np.ndarray]:
                        for frame in part.frames(reader, info):
                            stamps.append((frame.pts, frame.duration))
                            yield frame.image

                    def write(image: Any, pts: int | None, duration: int | None) -> None:
                        if to_video:
                            writer.write(image, pts, duration=duration)
                        else:
                            writer.write(image, pts)

                    done = 0
                    # Encoding overlaps compute where there is room for it: a GPU computes, or the CPU
                    # has cores the network's threads leave free (else the thread only competes).
                    spare = self.device.type != "cpu" or (os.cpu_count() or 1) > torch.get_num_threads()
                    # A video writer gets YUV made on the compute device (no RGB->YUV pass on the CPU).
                    convert = planar_converter(writer.planar_layout) if to_video else None
                    # Leaving this block stops and joins the decode thread before the reader closes.
                    with _Prefetch(images()) as decoded, _BackgroundWriter(write, threaded=spare) as background:
                        upscaled = enhance_stream(decoded, self.model, self.extractor, self.settings, convert)
                        for image in upscaled:
                            check_termination()
                            pts, duration = stamps.popleft()
                            background.put(image, pts, duration)
                            done += 1
                            if progress is not None:
                                progress(done, total)
                    result.frames = background.written
                if result.frames == 0:
                    raise InvalidInputError(f"no frame could be decoded from {str(src)!r}")
            if getattr(reader, "truncated", False):  # the reader has warned (TruncatedInputWarning)
                result.truncated = True
                result.warnings.append(f"{src.name}: the file is truncated or damaged; upscaled the "
                                       f"{result.frames} frames that decode")
        result.seconds = time.perf_counter() - started
        return result

    # -- folders -----------------------------------------------------------------------------------
    @_terminable
    def upscale_folder(self, src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                       skip_existing: bool = False, overwrite: bool = False, raise_on_failure: bool = False,
                       on_start: Callable[[Path, Path], None] | None = None,
                       on_result: Callable[[UpscaleResult], None] | None = None,
                       progress: Progress | None = None, executor: str | FolderExecutor = "local",
                       ray_options: Any = None, **video_options: Any) -> list[UpscaleResult]:
        """Upscale every video under ``src`` (recursively) into ``dst`` with the same relative paths.

        An output folder inside ``src`` is not read as input. A file that fails does not stop the
        others: its result has ``status == "failed"`` and the error message. ``skip_existing`` skips outputs that exist and are complete (same frame
        count, upscaled size). Raises :class:`NothingToDoError` when ``src`` holds no videos, and
        :class:`BatchError` at the end if ``raise_on_failure`` and some file failed.

        ``executor`` runs the videos elsewhere: an executor object (:mod:`semlens.executors`), e.g.
        ``semlens.distributed.RayExecutor(RayOptions(...))`` for one Ray task per video (or per
        segment) on a cluster (needs ``semlens[distributed]``), or the name of a registered one:
        ``executor="ray"`` is ``RayExecutor(ray_options)``. The results are the same as with
        ``"local"``, and ``progress`` then counts the frames of all videos together.
        """
        remote = None
        if isinstance(executor, str):
            if executor != "local":
                remote = get_executor(executor, ray_options)
        elif isinstance(executor, FolderExecutor):
            remote = executor
        else:
            raise TypeError(f"executor must be a name or an object with a run() method, got {type(executor).__name__}")
        from semlens.io import remove_stale_partials

        src, dst = Path(src), Path(dst)
        if not src.exists():
            raise InputNotFoundError(f"input folder {str(src)!r} does not exist")
        if not src.is_dir():
            raise InvalidInputError(f"{str(src)!r} is not a folder")
        videos = find_videos(src, exclude=dst)
        if not videos:
            raise NothingToDoError(f"no videos found in {str(src)!r} (looked for common video extensions, recursively)")
        if dst.resolve() == src.resolve():
            raise OutputError("the output folder is the input folder; choose another output folder")
        if remote is not None:
            pairs = [(video, output_path_for(video.relative_to(src), dst)) for video in videos]
            videos = []  # done by the executor: nothing left for the local loop below
            results = remote.run(self, pairs, overwrite=overwrite, skip_existing=skip_existing, on_start=on_start,
                                 on_result=on_result, progress=progress, **video_options)
        else:
            results = []
        for video in videos:
            check_termination()
            rel = video.relative_to(src)
            target = output_path_for(rel, dst)
            if on_start is not None:
                on_start(video, target)
            try:
                remove_stale_partials(target)
                if target.exists() and skip_existing and is_complete_output(video, target, self.scale):
                    result = UpscaleResult(input=video, output=target, status="skipped")
                else:
                    result = self.upscale_video(video, target, overwrite=overwrite or (skip_existing and target.exists()),
                                                progress=progress, **video_options)
            except SemlensError as exc:
                result = UpscaleResult(input=video, output=target, status="failed", error=str(exc),
                                       exit_code=exc.exit_code)
            except (OSError, ValueError, RuntimeError) as exc:
                result = UpscaleResult(input=video, output=target, status="failed",
                                       error=f"{type(exc).__name__}: {exc}", exit_code=1)
            results.append(result)
            if on_result is not None:
                on_result(result)
        failed = [r for r in results if r.status == "failed"]
        if failed and raise_on_failure:
            raise BatchError(f"{len(failed)} of {len(results)} videos failed (first: {failed[0].input}: {failed[0].error})")
        return results
