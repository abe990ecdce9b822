"""Scale-out on Ray: one task per video, or per segment of a long video, across a cluster.

Needs the ``distributed`` extra (``pip install "semlens[distributed]"``); nothing here imports Ray
until it is used. The driver (the process that calls :func:`run_on_ray`) connects to a cluster
(``address``, else ``RAY_ADDRESS``, else a new local one), then:

- **weights**: the model was loaded by the driver through the hub (bundled file, Hugging Face
  cache or pinned download); its configuration, weights and extractor go once into Ray's object
  store and every worker process builds its upscaler from there (once per process). No file of
  the user's home folder is copied anywhere;
- **tasks**: one task per video (``upscale_video`` on a worker), each asking for ``num_cpus`` CPUs
  and ``num_gpus`` GPUs (by default one GPU when the cluster has GPUs and the device is not
  ``cpu``). With ``segment_seconds``, a video is scanned by one task and split into segments by
  :mod:`semlens.segments` (exactly the single run's frames), one task per segment, joined by the
  driver;
- **retries**: a task whose worker process dies (a crash, a killed process, a lost node) is run
  again, up to ``max_retries`` times; errors in the input (a file that is not a video, ...) are
  not retried and fail that video only, as in a local run;
- **progress**: workers report frames done to a small actor; the driver polls it and the tasks'
  results and calls ``progress(frames_done, frames_total)`` for all videos together.

Inputs and outputs must be on a filesystem every node sees (the same paths), as for any cluster
job that reads and writes files.
"""

from __future__ import annotations

import copy
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from semlens.errors import ExtraNotInstalledError, SemlensError
from semlens.executors import register_executor

if TYPE_CHECKING:
    from semlens.upscaler import SemanticLensUpscaler, UpscaleResult

__all__ = ["RayOptions", "RayExecutor", "import_ray", "run_on_ray", "upscale_video_on_ray"]

Progress = Callable[[int, "int | None"], None]


def import_ray() -> ModuleType:
    """The ``ray`` module, or :class:`ExtraNotInstalledError` when it is not installed."""
    try:
        import ray
    except ImportError as exc:
        raise ExtraNotInstalledError(
            'Ray is not installed; pip install "semlens[distributed]" to run on a Ray cluster') from exc
    return ray


@dataclass
class RayOptions:
    """How to run on Ray.

    ``address``: the cluster (``ray://host:10001``, ``host:6379`` or ``auto``); ``None`` uses
    ``RAY_ADDRESS`` or starts a local cluster. ``device`` / ``dtype``: as for
    :meth:`~semlens.upscaler.SemanticLensUpscaler.from_pretrained`, resolved on each worker
    (``auto``: the GPU Ray gave the task, else the CPU). ``num_cpus`` / ``num_gpus``: resources of
    each task (``num_gpus=None``: 1 when the cluster has GPUs and ``device`` is not ``cpu``, else
    0). ``threads``: torch threads per task (0: the task's CPUs). ``max_retries``: runs again of a
    task whose worker died. ``segment_seconds``: split each video into segments of at least this
    many seconds (``None``: one task per video). ``compile``: ``torch.compile`` the network on each
    worker (``None``: when the driver's network is compiled). ``batch_windows``: windows per network
    batch on each worker, ``0`` resolved on the worker's device (4 on a GPU, 1 on a CPU); ``None``:
    what the driver's upscaler was given (automatic unless it was given a number).
    """

    address: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    num_cpus: float = 1.0
    num_gpus: float | None = None
    threads: int = 0
    max_retries: int = 3
    segment_seconds: float | None = None
    poll_seconds: float = 0.5
    compile: bool | None = None
    batch_windows: int | None = None


# -- what the workers run ---------------------------------------------------------------------


@dataclass
class _Payload:
    """The model as shipped to the workers through the object store."""

    config: Any
    state: dict[str, Any]
    extractor: Any
    settings: Any
    name: str
    device: str
    dtype: str
    threads: int
    compile: bool = False
    batch_windows: int = 0


_BUILT: dict[str, SemanticLensUpscaler] = {}


def _payload(up: SemanticLensUpscaler, options: RayOptions) -> _Payload:
    """The driver's model (weights on the CPU), extractor (reset, networks on the CPU), streaming
    settings, and what each worker resolves on its own device."""
    import torch

    from semlens.enhancer.compiling import is_compiled

    net = getattr(up.model, "_orig_mod", up.model)  # torch.compile wraps the module
    compile_ = options.compile if options.compile is not None else is_compiled(up.model)
    batch = options.batch_windows
    if batch is None:
        batch = getattr(up, "batch_windows_asked", up.settings.batch_windows)
    if batch < 0:
        raise ValueError(f"batch_windows must be >= 0 (0 = automatic), got {batch}")
    state = {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}
    extractor = copy.copy(up.extractor)
    for key, value in vars(up.extractor).items():
        if isinstance(value, torch.nn.Module) and any(p.device.type != "cpu" for p in value.parameters()):
            setattr(extractor, key, copy.deepcopy(value).to("cpu"))
    extractor.reset()
    return _Payload(config=net.config, state=state, extractor=extractor, settings=up.settings, name=up.name,
                    device=options.device, dtype=options.dtype, threads=options.threads, compile=compile_,
                    batch_windows=batch)


def _build_upscaler(payload: _Payload, device: str) -> SemanticLensUpscaler:
    """The upscaler ``payload`` describes, on ``device``: compiled and with its windows per batch
    resolved for that device, with the driver's window, tiling and cut settings."""
    from semlens.enhancer import PixelEnhancer
    from semlens.enhancer.compiling import compile_network
    from semlens.upscaler import SemanticLensUpscaler

    model = PixelEnhancer(payload.config)
    model.load_state_dict(payload.state, strict=True)
    net: Any = compile_network(model) if payload.compile else model  # as from_pretrained(compile=True)
    s = payload.settings
    up = SemanticLensUpscaler(net, payload.extractor, device=device, dtype=payload.dtype, window=s.window,
                              overlap=s.overlap, tile=s.tile, detect_cuts=s.detect_cuts, name=payload.name,
                              batch_windows=payload.batch_windows, tile_overlap=s.tile_overlap,
                              memory_budget=s.memory_budget)
    up.settings = replace(s, device=up.device, dtype=up.dtype, batch_windows=up.settings.batch_windows)
    return up


def _worker_upscaler(box: list[Any]) -> SemanticLensUpscaler:
    """The upscaler of this worker process for the payload in ``box`` (built once per process)."""
    import ray
    import torch

    from semlens.upscaler import task_memory_budget

    ref = box[0]
    key = ref.hex()
    if key not in _BUILT:
        payload: _Payload = ray.get(ref)
        cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
        torch.set_num_threads(payload.threads or max(1, int(cpus)))
        device = payload.device
        if device == "auto":
            device = "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
        up = _build_upscaler(payload, device)
        gpus = float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0))  # a fraction: its share
        # On a CPU as many tasks run at once as the machine has CPUs for: each gets its share of the RAM.
        cpu_share = float(cpus) / (os.cpu_count() or 1)
        up.settings = replace(up.settings, memory_budget=task_memory_budget(up.settings.memory_budget, up.device,
                                                                            gpus, cpu_share))
        _BUILT.clear()
        _BUILT[key] = up
    return _BUILT[key]


class _Reporter:
    """Sends a running task's frame count to the progress actor, at most every half second (the
    driver takes the final counts from the tasks' results)."""

    def __init__(self, board: Any, key: str) -> None:
        self.board, self.key, self._last = board, key, 0.0

    def __call__(self, done: int, total: int | None = None) -> None:
        now = time.monotonic()
        if now - self._last >= 0.5:
            self._last = now
            self.board.update.remote(self.key, done)


def _video_task(box: list[Any], src: Path, dst: Path, overwrite: bool, video_options: dict[str, Any],
                board: Any, key: str) -> UpscaleResult:
    """Upscale one whole video on a worker; input errors become a failed result."""
    from semlens.upscaler import UpscaleResult

    up = _worker_upscaler(box)
    report = _Reporter(board, key)
    try:
        result = up.upscale_video(src, dst, overwrite=overwrite, progress=report, **video_options)
    except SemlensError as exc:
        return UpscaleResult(input=src, output=dst, status="failed", error=str(exc), exit_code=exc.exit_code)
    except (OSError, ValueError, RuntimeError) as exc:
        return UpscaleResult(input=src, output=dst, status="failed", error=f"{type(exc).__name__}: {exc}",
                             exit_code=1)
    return result


def _scan_task(box: list[Any], src: Path, seconds: float, max_frames: int | None) -> Any:
    """Scan one video and plan its segments (see :func:`semlens.segments.scan_video`)."""
    from semlens.segments import scan_video

    return scan_video(src, _worker_upscaler(box), seconds, max_frames=max_frames)


def _segment_task(box: list[Any], src: Path, part: Path, job: Any, video_options: dict[str, Any],
                  board: Any, key: str) -> int:
    """Upscale one segment into ``part``."""
    from semlens.segments import upscale_segment

    report = _Reporter(board, key)
    options = {k: video_options[k] for k in ("codec", "crf", "preset", "pix_fmt") if k in video_options}
    return upscale_segment(src, part, job, _worker_upscaler(box), progress=report, **options)


class _ProgressBoard:
    """Frames done per task (the latest count each task reported)."""

    def __init__(self) -> None:
        self.done: dict[str, int] = {}

    def update(self, key: str, done: int) -> None:
        self.done[key] = done

    def snapshot(self) -> dict[str, int]:
        return dict(self.done)


# -- the driver -------------------------------------------------------------------------------


@dataclass
class _Job:
    """One video of the run."""

    src: Path
    dst: Path
    started: float
    result: UpscaleResult | None = None
    plan: Any = None
    parts: list[Path] = field(default_factory=list)
    parts_dir: Path | None = None
    left: int = 0
    frames: int = 0


def _failure(job: _Job, exc: BaseException) -> UpscaleResult:
    """A failed result for ``exc`` raised by one of ``job``'s tasks (or the driver's join)."""
    from semlens.upscaler import UpscaleResult

    ray = import_ray()
    cause: BaseException = exc
    if isinstance(exc, ray.exceptions.RayTaskError) and getattr(exc, "cause", None) is not None:
        cause = exc.cause
    if isinstance(cause, SemlensError):
        return UpscaleResult(input=job.src, output=job.dst, status="failed", error=str(cause),
                             exit_code=cause.exit_code)
    if isinstance(cause, ray.exceptions.WorkerCrashedError | ray.exceptions.NodeDiedError):
        text = "a Ray worker died on every try; see the Ray logs (ray status, /tmp/ray/session_latest/logs)"
    else:
        lines = str(cause).strip().splitlines()
        text = f"{type(cause).__name__}: {lines[-1] if lines else ''}".rstrip(": ")
    return UpscaleResult(input=job.src, output=job.dst, status="failed", error=text, exit_code=1)


class _Driver:
    """Submits the tasks, follows them to the end, joins segments, reports progress."""

    def __init__(self, ray: ModuleType, up: SemanticLensUpscaler, options: RayOptions, *, overwrite: bool,
                 video_options: dict[str, Any], progress: Progress | None,
                 on_result: Callable[[UpscaleResult], None] | None) -> None:
        self.ray, self.options, self.overwrite = ray, options, overwrite
        self.video_options = video_options
        self.progress, self.on_result = progress, on_result
        gpus = options.num_gpus
        if gpus is None:
            gpus = 1 if options.device != "cpu" and ray.cluster_resources().get("GPU", 0) > 0 else 0
        resources = dict(num_cpus=options.num_cpus, num_gpus=gpus, max_retries=options.max_retries,
                         retry_exceptions=False)
        self.tasks = {fn: ray.remote(**resources)(fn) for fn in (_video_task, _scan_task, _segment_task)}
        self.box = [ray.put(_payload(up, options))]
        self.board = ray.remote(num_cpus=0)(_ProgressBoard).remote()
        self.pending: dict[Any, tuple[_Job, str, Any]] = {}
        self.total: int | None = 0
        self.finished: dict[str, int] = {}  # frames of the tasks that returned, by progress key

    def _submit(self, fn: Callable[..., Any], job: _Job, kind: str, extra: Any, *args: Any) -> None:
        ref = self.tasks[fn].remote(self.box, *args)
        self.pending[ref] = (job, kind, extra)

    def _finish(self, job: _Job, result: UpscaleResult) -> None:
        from semlens.io import remove_stale_partials

        job.result = result
        if job.parts_dir is not None:
            shutil.rmtree(job.parts_dir, ignore_errors=True)
            job.parts_dir = None
        # A worker killed mid-task (then retried) leaves its partial output behind; the retry's own
        # clean-up can run before the dead process is reaped, so clean again once the job is over.
        remove_stale_partials(job.dst)
        for ref in [r for r, (j, _, _) in self.pending.items() if j is job]:
            self.ray.cancel(ref, force=True)
            del self.pending[ref]
        if self.on_result is not None:
            self.on_result(result)

    def start(self, job: _Job, total: int | None) -> None:
        """Submit the first task of ``job``."""
        self.total = None if total is None or self.total is None else self.total + total
        seconds = self.options.segment_seconds
        splittable = seconds is not None and job.src.is_file() and job.dst.suffix.lower() in _video_suffixes()
        if not splittable:
            self._submit(_video_task, job, "video", None, job.src, job.dst, self.overwrite, self.video_options,
                         self.board, f"{job.src}")
            return
        from semlens.io import check_output_path, remove_stale_partials

        try:
            check_output_path(job.dst, source=job.src, overwrite=self.overwrite)
        except SemlensError as exc:
            self._finish(job, _failure(job, exc))
            return
        remove_stale_partials(_parts_base(job.dst))
        self._submit(_scan_task, job, "scan", None, job.src, seconds, self.video_options.get("max_frames"))

    def _planned(self, job: _Job, plan: Any) -> None:
        from semlens.io import partial_path

        job.plan = plan
        if not plan.splittable or len(plan.segments) < 2:
            self._submit(_video_task, job, "video", None, job.src, job.dst, self.overwrite, self.video_options,
                         self.board, f"{job.src}")
            return
        job.parts_dir = partial_path(_parts_base(job.dst))
        job.parts_dir.mkdir(parents=True)
        job.left = len(plan.segments)
        for seg in plan.segments:
            part = job.parts_dir / f"segment-{seg.number:05d}.mp4"
            job.parts.append(part)
            self._submit(_segment_task, job, "segment", seg.number, job.src, part, plan.job(seg.number),
                         self.video_options, self.board, f"{job.src}#{seg.number}")

    def _joined(self, job: _Job) -> UpscaleResult:
        from semlens.segments import join_segments
        from semlens.upscaler import UpscaleResult

        join_segments(job.parts, job.dst, source=job.src, copy_audio=self.video_options.get("copy_audio", True),
                      overwrite=self.overwrite, trim_aux=self.video_options.get("max_frames") is not None)
        result = UpscaleResult(input=job.src, output=job.dst, frames=job.frames,
                               seconds=time.perf_counter() - job.started)
        if job.plan.warnings:
            result.warnings.append(f"{job.src.name}: the file is truncated or damaged; upscaled the "
                                   f"{job.frames} frames that decode")
        return result

    def _done(self, ref: Any) -> None:
        job, kind, extra = self.pending.pop(ref)
        try:
            value = self.ray.get(ref)
        except Exception as exc:  # a failed task: its video fails, the others go on
            self._finish(job, _failure(job, exc))
            return
        if kind == "video":
            self.finished[str(job.src)] = value.frames
            self._finish(job, value)
        elif kind == "scan":
            self._planned(job, value)
        else:
            self.finished[f"{job.src}#{extra}"] = int(value)
            job.frames += int(value)
            job.left -= 1
            if job.left == 0:
                try:
                    result = self._joined(job)
                except (SemlensError, OSError, ValueError, RuntimeError) as exc:
                    result = _failure(job, exc)
                self._finish(job, result)

    def wait(self) -> None:
        """Follow the tasks until none is left, reporting progress every ``poll_seconds``."""
        while self.pending:
            ready, _ = self.ray.wait(list(self.pending), num_returns=1, timeout=self.options.poll_seconds)
            for ref in ready:
                self._done(ref)
            self._report()
        self._report()

    def _report(self) -> None:
        if self.progress is None:
            return
        try:
            running = self.ray.get(self.board.snapshot.remote(), timeout=10)
        except Exception:  # the counts of running tasks are best effort; the results are exact
            running = {}
        done = sum(self.finished.values()) + sum(v for k, v in running.items() if k not in self.finished)
        self.progress(done, self.total)

    def cancel(self, jobs: Sequence[_Job]) -> None:
        """Stop every task still running and remove what they left behind."""
        from semlens.io import remove_stale_partials

        refs = list(self.pending)
        for ref in refs:
            self.ray.cancel(ref, force=True)
        self.pending.clear()
        if refs:
            self.ray.wait(refs, num_returns=len(refs), timeout=5)
        for job in jobs:
            if job.parts_dir is not None:
                shutil.rmtree(job.parts_dir, ignore_errors=True)
            if job.result is None:
                remove_stale_partials(job.dst)


def _video_suffixes() -> frozenset[str]:
    from semlens.io import VIDEO_EXTENSIONS

    return VIDEO_EXTENSIONS


def _parts_base(dst: Path) -> Path:
    """The name that the folder of ``dst``'s segment files is derived from."""
    return dst.with_name(f"{dst.stem}-segments")


def _frame_total(src: Path, max_frames: int | None) -> int | None:
    from semlens.io import probe

    try:
        count = probe(src).frame_count
    except SemlensError:
        return None
    if count is None:
        return max_frames
    return count if max_frames is None else min(count, max_frames)


def _connect(ray: ModuleType, address: str | None) -> bool:
    """Connect to the cluster unless already connected; True when this call connected."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    kwargs: dict[str, Any] = {"log_to_driver": False}
    if address is None:
        kwargs["include_dashboard"] = False
    ray.init(address=address, **kwargs)
    return True


def run_on_ray(up: SemanticLensUpscaler, pairs: Sequence[tuple[Path, Path]], *, options: RayOptions | None = None,
               overwrite: bool = False, skip_existing: bool = False,
               on_start: Callable[[Path, Path], None] | None = None,
               on_result: Callable[[UpscaleResult], None] | None = None, progress: Progress | None = None,
               **video_options: Any) -> list[UpscaleResult]:
    """Upscale each ``(input, output)`` of ``pairs`` on Ray; return their results in the order of
    ``pairs``. A video that fails does not stop the others (``status == "failed"``, with the
    error's message and exit code, as in a local folder run); ``skip_existing`` skips complete
    outputs. ``video_options`` are those of
    :meth:`~semlens.upscaler.SemanticLensUpscaler.upscale_video` (codec, crf, ...)."""
    from semlens.io import remove_stale_partials
    from semlens.upscaler import UpscaleResult, check_task_device, is_complete_output

    options = options or RayOptions()
    if options.segment_seconds is not None and not options.segment_seconds > 0:
        raise ValueError(f"segment_seconds must be positive, got {options.segment_seconds}")
    check_task_device(options.device, options.num_gpus)
    ray = import_ray()
    connected = _connect(ray, options.address)
    jobs: list[_Job] = []
    driver: _Driver | None = None
    try:
        driver = _Driver(ray, up, options, overwrite=overwrite, video_options=video_options, progress=progress,
                         on_result=on_result)
        for src, dst in pairs:
            job = _Job(src=Path(src), dst=Path(dst), started=time.perf_counter())
            jobs.append(job)
            if on_start is not None:
                on_start(job.src, job.dst)
            remove_stale_partials(job.dst)
            if skip_existing and job.dst.exists() and is_complete_output(job.src, job.dst, up.scale):
                driver._finish(job, UpscaleResult(input=job.src, output=job.dst, status="skipped"))
                continue
            driver.start(job, _frame_total(job.src, video_options.get("max_frames")))
        driver.wait()
    except BaseException:
        if driver is not None:
            driver.cancel(jobs)
        raise
    finally:
        if connected:
            ray.shutdown()
    return [job.result for job in jobs if job.result is not None]


def upscale_video_on_ray(up: SemanticLensUpscaler, src: str | os.PathLike[str], dst: str | os.PathLike[str], *,
                         options: RayOptions | None = None, overwrite: bool = False, progress: Progress | None = None,
                         **video_options: Any) -> UpscaleResult:
    """:meth:`~semlens.upscaler.SemanticLensUpscaler.upscale_video` on Ray (in segments with
    ``options.segment_seconds``); raises a :class:`SemlensError` with the failure's exit code."""
    (result,) = run_on_ray(up, [(Path(src), Path(dst))], options=options, overwrite=overwrite, progress=progress,
                           **video_options)
    if result.status == "failed":
        error = SemlensError(result.error)
        error.exit_code = result.exit_code
        raise error
    for text in result.warnings:
        import warnings

        warnings.warn(text, stacklevel=2)
    return result


class RayExecutor:
    """Runs a folder on Ray (:func:`run_on_ray`) with ``options``: the executor object that
    :meth:`~semlens.upscaler.SemanticLensUpscaler.upscale_folder` takes (``executor=RayExecutor(...)``,
    or ``executor="ray", ray_options=...``)."""

    def __init__(self, options: RayOptions | None = None) -> None:
        self.options = options

    def run(self, up: Any, pairs: Sequence[tuple[Path, Path]], *, overwrite: bool = False,
            skip_existing: bool = False, on_start: Callable[[Path, Path], None] | None = None,
            on_result: Callable[[Any], None] | None = None, progress: Progress | None = None,
            **video_options: Any) -> list[UpscaleResult]:
        return run_on_ray(up, pairs, options=self.options, overwrite=overwrite, skip_existing=skip_existing,
                          on_start=on_start, on_result=on_result, progress=progress, **video_options)


register_executor("ray", RayExecutor)
