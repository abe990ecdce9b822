"""`semlens upscale` and `semlens eval`."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any

import click

from semlens_cli.notices import QUIET, notice
from semlens_cli.params import GivenPath
from semlens_cli.progress import DeferredInterrupt, FrameProgress, console
from semlens_cli.wording import cli_wording


class MemorySize(click.ParamType):
    """A memory size such as ``4G``, ``512M``, ``1.5GiB`` or plain bytes, as bytes
    (:func:`semlens.tiling.parse_memory_size`); anything else, or no more than zero, is a usage error."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        from semlens.tiling import parse_memory_size

        try:
            return parse_memory_size(value)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def _build_upscaler(model: str | None, scale: int | None, device: str, dtype: str, extractor: str | None,
                    window: int | None, tile: int, threads: int, compile_: bool = False,
                    batch_windows: int = 0, tile_overlap: int | None = None,
                    memory_budget: int | None = None, overlap: int | None = None) -> Any:
    import torch

    from semlens.upscaler import SemanticLensUpscaler

    if threads:
        torch.set_num_threads(threads)
    return SemanticLensUpscaler.from_pretrained(model, scale=scale, device=device, dtype=dtype, extractor=extractor,
                                                window=window, overlap=overlap, tile=tile, compile=compile_,
                                                batch_windows=batch_windows, tile_overlap=tile_overlap,
                                                memory_budget=memory_budget)


@click.command("upscale")
@click.argument("input_path", metavar="INPUT", type=GivenPath(path_type=Path))
@click.argument("output_path", metavar="OUTPUT", type=GivenPath(path_type=Path))
@click.option("--scale", type=click.Choice(["2", "4"]), default=None,
              help="Upscaling factor; without --model picks the shipped model of that scale (default 4).")
@click.option("--model", default=None, help="Model name, weights file/folder, or Hugging Face repo id.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--dtype", type=click.Choice(["auto", "fp32", "fp16", "bf16"]), default="auto", show_default=True)
@click.option("--extractor", default=None, help="Instance extractor (default: the model's).")
@click.option("--window", type=click.IntRange(min=1), default=None,
              help="Frames per temporal window (default: the model's).")
@click.option("--overlap", type=click.IntRange(min=0), default=None,
              help="Context frames read on each side of a window and not emitted by it (default: the "
                   "model's, as much of it as the window allows).")
@click.option("--tile", type=click.IntRange(min=0), default=0, show_default=True,
              help="Spatial tile size in input pixels (0 = auto).")
@click.option("--tile-overlap", type=click.IntRange(min=0), default=None,
              help="Input pixels neighbouring tiles share (default: enough for the shipped models).")
@click.option("--memory-budget", type=MemorySize(), default=None, metavar="SIZE",
              help="Memory a window may take before its frames are tiled, e.g. 4G, 512M, 1.5GiB or bytes "
                   "(default: half the available RAM on a CPU; on a GPU 60% of its memory or 90% of the "
                   "free memory, whichever is less).")
@click.option("--codec", default="libx264", show_default=True, help="libx264, libx265, libsvtav1, ffv1, ...")
@click.option("--crf", type=float, default=18, show_default=True,
              help="Quality of lossy codecs: lower is better and bigger (x264/x265 0-51, about 18 looks "
                   "lossless; SVT-AV1 and VP9 0-63; ignored by ffv1 and gif).")
@click.option("--preset", default="medium", show_default=True,
              help="Encoder speed against file size: ultrafast, superfast, veryfast, faster, fast, medium, "
                   "slow, slower, veryslow (x264/x265; mapped to SVT-AV1's numbers).")
@click.option("--pix-fmt", default=None, help="Output pixel format (default: yuv420p, 10-bit kept for 10-bit input).")
@click.option("--no-audio", is_flag=True, help="Drop audio streams.")
@click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
@click.option("--skip-existing", is_flag=True,
              help="Folders: skip outputs that exist and are complete (the others are written again).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None,
              help="Only the first N frames (audio and subtitles end with them).")
@click.option("--preview", type=float, default=None, metavar="SECONDS",
              help="Only this many seconds of video from --start, audio and subtitles trimmed to match.")
@click.option("--start", "start_text", default=None, metavar="TIME",
              help="Begin at this time (SS, MM:SS or HH:MM:SS[.ms]); the output starts at 0.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="CPU threads for the network (0 = all cores).")
@click.option("--compile", "compile_", is_flag=True,
              help="torch.compile the network's per-frame stages (dynamic shapes; compiles during the first "
                   "windows, for long GPU runs).")
@click.option("--batch-windows", type=click.IntRange(min=0), default=0, show_default=True,
              help="Windows per network batch (0 = 4 on a GPU, 1 on a CPU); the output is the same.")
@click.option("--quiet", "-q", is_flag=True, help="Print errors only.")
@click.option("--ray", "use_ray", is_flag=True,
              help="Run on a Ray cluster, one task per video (needs semlens[distributed]).")
@click.option("--ray-address", default=None,
              help="Ray cluster to join (implies --ray; default: RAY_ADDRESS, else a new local cluster).")
@click.option("--segment-seconds", type=float, default=None,
              help="With --ray: split each video into segments of at least N seconds, one task each.")
@click.option("--cpus-per-task", type=float, default=1.0, show_default=True, help="With --ray: CPUs per task.")
@click.option("--gpus-per-task", type=float, default=None,
              help="With --ray: GPUs per task (default: 1 if the cluster has GPUs, else 0).")
def upscale_command(input_path: Path, output_path: Path, scale: str | None, model: str | None, device: str,
                    dtype: str, extractor: str | None, window: int | None, overlap: int | None, tile: int,
                    tile_overlap: int | None,
                    memory_budget: int | None, codec: str, crf: float,
                    preset: str, pix_fmt: str | None, no_audio: bool, overwrite: bool, skip_existing: bool,
                    max_frames: int | None, preview: float | None, start_text: str | None, threads: int, compile_: bool, batch_windows: int, quiet: bool,
                    use_ray: bool,
                    ray_address: str | None, segment_seconds: float | None, cpus_per_task: float,
                    gpus_per_task: float | None) -> None:
    """Upscale INPUT (a video, a folder of videos, or a folder of images) into OUTPUT.

    A folder of videos is mirrored into OUTPUT with the same relative paths. OUTPUT is a video when
    it has a video extension, else a folder of PNG frames.
    """
    from semlens.errors import BatchError, InputNotFoundError
    from semlens.io import TruncatedInputWarning, is_image_folder
    from semlens.scan import find_videos, links_leaving, top_level_videos

    click.get_current_context().meta[QUIET] = quiet
    # A truncated input is reported once, by the run's result (result.warnings), not by the reader too.
    warnings.filterwarnings("ignore", category=TruncatedInputWarning)

    use_ray = use_ray or ray_address is not None
    start = _start_seconds(start_text)
    if preview is not None and not preview > 0:
        raise click.BadParameter(f"must be a positive number of seconds, got {preview:g}", param_hint="--preview")
    if use_ray and (preview is not None or start is not None):
        raise click.BadParameter("not with --ray; preview on one machine", param_hint="--preview/--start")
    if segment_seconds is not None and not use_ray:
        raise click.BadParameter("needs --ray", param_hint="--segment-seconds")
    if segment_seconds is not None and not segment_seconds > 0:
        raise click.BadParameter(f"must be positive, got {segment_seconds}", param_hint="--segment-seconds")
    if use_ray:
        from semlens.distributed import import_ray

        import_ray()  # a one-line error without the extra, before any work

    if not input_path.exists():
        raise InputNotFoundError(f"input {str(input_path)!r} does not exist")
    from semlens.io.encoding import check_encoder_settings, resolve_codec

    try:
        check_encoder_settings(resolve_codec(codec), crf, preset)  # before hours of work, not at the header
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--crf/--preset") from None
    # A folder is a folder of frames when it holds pictures and no video of its own; a folder of
    # videos may hold pictures too (a poster, a thumbnail), which are left alone.
    has_images = is_image_folder(input_path)
    folder_of_videos = input_path.is_dir() and (not has_images or bool(top_level_videos(input_path)))
    if folder_of_videos:
        from semlens.io import VIDEO_EXTENSIONS

        if output_path.suffix.lower() in VIDEO_EXTENSIONS:
            raise click.BadParameter(f"{str(input_path)!r} is a folder of videos: their upscaled copies go into a "
                                     f"folder, and {str(output_path)!r} is a video file name", param_hint="OUTPUT")
        if not find_videos(input_path, exclude=output_path):
            from semlens.errors import NothingToDoError

            raise NothingToDoError(f"no videos found in {str(input_path)!r}; nothing to do")
        if has_images:
            notice(f"{str(input_path)!r} holds videos and pictures: upscaling the videos (a folder of frames must "
                   f"hold frames only)")
    if not folder_of_videos:
        from semlens.io import VIDEO_EXTENSIONS, check_output_path, open_source

        # Bad inputs and outputs fail before the model is loaded.
        with open_source(input_path) as source:
            duration = source.info.duration
        if start is not None and duration is not None and start >= duration:
            raise click.BadParameter(f"{start:g} s is past the end of the video ({duration:.3f} s)",
                                     param_hint="--start")
        check_output_path(output_path, source=input_path, overwrite=overwrite,
                          is_dir=output_path.suffix.lower() not in VIDEO_EXTENSIONS)
        if output_path.suffix and output_path.suffix.lower() not in VIDEO_EXTENSIONS and not output_path.is_dir():
            notice(f"{output_path.name!r} has no video extension: writing a folder of PNG frames there "
                   f"(name it .mp4, .mkv or .mov for a video)")
    ray_options: Any = None
    if use_ray:  # the driver only loads the weights; each worker resolves --device, --dtype, --compile
        # and --batch-windows on its own device
        from semlens.distributed import RayOptions

        ray_options = RayOptions(address=ray_address, device=device, dtype=dtype, num_cpus=cpus_per_task,
                                 num_gpus=gpus_per_task, threads=threads, segment_seconds=segment_seconds,
                                 compile=compile_, batch_windows=batch_windows)
        up = _build_upscaler(model, int(scale) if scale else None, "cpu", "fp32", extractor, window, tile, 0,
                             tile_overlap=tile_overlap, memory_budget=memory_budget, overlap=overlap)
    else:
        up = _build_upscaler(model, int(scale) if scale else None, device, dtype, extractor, window, tile, threads,
                             compile_, batch_windows, tile_overlap, memory_budget, overlap)
    options: dict[str, Any] = dict(codec=codec, crf=crf, preset=preset, pix_fmt=pix_fmt, copy_audio=not no_audio,
                                   max_frames=max_frames)
    if preview is not None or start is not None:  # not passed otherwise: the Ray path takes no part
        options.update(start=start, seconds=preview)
    progress = FrameProgress(enabled=not quiet)
    interrupt = DeferredInterrupt()

    def on_frame(done: int, total: int | None) -> None:
        interrupt.check()
        progress.update(done, total)

    def on_start(src: Path, dst: Path) -> None:
        interrupt.check()  # a signal between two files stops the run before the next one
        progress.start_file(str(src.relative_to(input_path)))

    def on_result(result: Any) -> None:
        progress.finish_file()
        _notices(result)

    if not quiet:
        where = "on Ray" if use_ray else f"on {up.device}"
        console(stderr=True).print(f"model [bold]{up.name}[/] x{up.scale} {where}", highlight=False)
    if not folder_of_videos:
        with progress, interrupt:
            progress.start_file(input_path.name)
            if use_ray:
                from semlens.distributed import upscale_video_on_ray

                result = upscale_video_on_ray(up, input_path, output_path, options=ray_options, overwrite=overwrite,
                                              progress=on_frame, **options)
            else:
                result = up.upscale_video(input_path, output_path, overwrite=overwrite, progress=on_frame, **options)
            progress.finish_file()
        _notices(result)
        if result.truncated:  # a bad input: said as an error, with a non-zero exit, the output kept
            from semlens.errors import InvalidInputError

            raise InvalidInputError(_truncation(result))
        if not quiet:
            click.echo(f"{result.output}: {result.frames} frames in {result.seconds:.1f} s ({result.fps:.2f} fps)")
        return
    with progress, interrupt:
        if use_ray:  # one progress line for all the videos, which run at the same time
            from semlens.distributed import RayExecutor

            progress.start_file(f"{len(find_videos(input_path, exclude=output_path))} videos on Ray")
            results = up.upscale_folder(input_path, output_path, skip_existing=skip_existing, overwrite=overwrite,
                                        progress=on_frame, executor=RayExecutor(ray_options), **options)
            progress.finish_file()
            for r in results:
                _notices(r)
        else:
            results = up.upscale_folder(input_path, output_path, skip_existing=skip_existing, overwrite=overwrite,
                                        on_start=on_start, on_result=on_result, progress=on_frame, **options)
    failed = [r for r in results if r.status == "failed" or r.truncated]
    if not quiet:
        _summary(results, input_path, links_leaving(input_path, exclude=output_path))
    for r in failed:
        text = _truncation(r) if r.status != "failed" else f"{r.input}: {cli_wording(r.error or '')}"
        click.echo(f"error: {text}", err=True)
    if failed:
        cut = sum(1 for r in failed if r.status != "failed")
        raise BatchError(f"{len(failed)} of {len(results)} videos failed" + (f" ({cut} cut short)" if cut else ""))


def _notices(result: Any) -> None:
    """A run's warnings as notices, less the one about a truncated input: that one is its error."""
    for text in result.warnings:
        if not result.truncated or "truncated" not in text:
            notice(text)


def _truncation(result: Any) -> str:
    return (f"{result.input} is truncated or damaged: only its first {result.frames} frames decode; "
            f"they were upscaled into {result.output}")


def _start_seconds(text: str | None) -> float | None:
    from semlens.compare import parse_time

    if text is None:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--start") from None


def _summary(results: list[Any], root: Path, links: list[Path]) -> None:
    """The folder run's table; ``links`` (video names that are links leaving ``root``, which a
    folder run does not follow) are listed as ``not followed``."""
    from rich.table import Table

    table = Table(title="semlens upscale")
    for col in ("input", "status", "frames", "fps", "output"):
        table.add_column(col)
    for r in results:
        status = "cut short" if r.truncated and r.status == "done" else r.status
        colour = {"done": "green", "skipped": "yellow", "failed": "red", "cut short": "red"}[status]
        table.add_row(str(r.input.relative_to(root)), f"[{colour}]{status}[/]", str(r.frames),
                      f"{r.fps:.2f}" if r.frames else "-", str(r.output))
    for link in links:
        table.add_row(str(link.relative_to(root)), "[yellow]not followed[/]", "-", "-",
                      "(a link to outside the input folder)")
    console().print(table)


@click.command("eval")
@click.argument("hr_path", metavar="HR_VIDEO_OR_FOLDER", type=GivenPath(path_type=Path))
@click.option("--scale", type=click.Choice(["2", "4"]), default=None,
              help="Upscaling factor (default: the --model's, else 4).")
@click.option("--model", default=None, help="Model to evaluate (default: the shipped model of --scale).")
@click.option("--extractor", default=None, help="Override the model's extractor.")
@click.option("--window", type=click.IntRange(min=1), default=None,
              help="Frames per temporal window (default: the model's).")
@click.option("--overlap", type=click.IntRange(min=0), default=None,
              help="Context frames read on each side of a window and not emitted by it (default: the "
                   "model's, as much of it as the window allows).")
@click.option("--max-frames", type=click.IntRange(min=1), default=None,
              help="Score only the first N frames of each clip.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None, help="Also write the results as JSON here (- for stdout).")
@click.option("--threads", type=click.IntRange(min=0), default=0)
@click.option("--no-baselines", is_flag=True, help="Skip bicubic and Lanczos.")
@click.option("--degradation", default="bi", show_default=True,
              help="How LR inputs are made: bi, or BI followed by a chain such as x264:crf=23, "
                   "x265:crf=30,preset=fast, blur:sigma=1+noise:sigma=2, jpeg:quality=60.")
def eval_command(hr_path: Path, scale: str | None, model: str | None, extractor: str | None, window: int | None,
                 overlap: int | None, max_frames: int | None, json_path: Path | None, threads: int, no_baselines: bool,
                 degradation: str) -> None:
    """Degrade HR clips (BI, optionally compressed), upscale them, and print PSNR / SSIM / tPSNR (Y, BT.601)
    per clip and on average."""
    from rich.table import Table

    from semlens.evaluate import bicubic_frames, evaluate, find_clips, lanczos_frames
    from semlens.train.degrade import parse_degradation

    try:
        chain = parse_degradation(degradation)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--degradation") from None
    clips = find_clips(hr_path)
    up = _build_upscaler(model, int(scale) if scale else None, "auto", "auto", extractor, window, 0, threads,
                         overlap=overlap)
    s = up.scale
    methods = {up.name: up.upscale_frames}
    if not no_baselines:
        methods = {"bicubic": bicubic_frames(s), "lanczos": lanczos_frames(s), **methods}
    started = time.perf_counter()
    report = evaluate(clips, s, methods, max_frames=max_frames, degradation=chain)
    report["model"] = up.name
    report["weights_sha256"] = up.weights_sha256
    report["extractor"] = up.extractor.name
    report["window"] = up.settings.window
    report["overlap"] = up.settings.overlap
    report["seconds"] = round(time.perf_counter() - started, 1)
    table = Table(title=f"semlens eval x{s}, {chain.text()} (PSNR-Y dB / SSIM-Y / tPSNR-Y dB, border {s} px)")
    table.add_column("clip")
    table.add_column("frames")
    for m in methods:
        table.add_column(m)

    def cell(scores: dict[str, Any], m: str) -> str:
        t = scores["tpsnr"][m]
        return f"{scores['psnr'][m]:.2f} / {scores['ssim'][m]:.4f} / " + ("-" if t is None else f"{t:.2f}")

    for c in report["clips"]:
        table.add_row(c["clip"], str(c["frames"]), *[cell(c, m) for m in methods])
    table.add_row("[bold]mean", "", *[cell(report["mean"], m) for m in methods])
    console().print(table)
    text = json.dumps(report, indent=2)
    if json_path is not None and str(json_path) == "-":
        click.echo(text)
    elif json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text + "\n")
