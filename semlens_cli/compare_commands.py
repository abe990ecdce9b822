"""`semlens compare`: one picture (or, with --video, a short clip) of the same frames upscaled by
bicubic, Lanczos and the model(s)."""

from __future__ import annotations

from pathlib import Path

import click

from semlens_cli.params import GivenPath


@click.command("compare")
@click.argument("input_path", metavar="INPUT", type=GivenPath(path_type=Path))
@click.option("--scale", type=click.Choice(["2", "4"]), default=None,
              help="Upscaling factor; without --model picks the shipped model of that scale (default 4).")
@click.option("--model", "models", multiple=True,
              help="Model name, weights file/folder or repo id; give it twice to compare two models.")
@click.option("--at", "times", multiple=True,
              help="Time of the frame to show (SS, MM:SS or HH:MM:SS[.ms]); repeat for more rows "
                   "(default: the middle of the video). With --video: where the clip starts (default: the start).")
@click.option("--crop", default=None, help="X,Y,W,H in input pixels: show only that region, zoomed by the scale.")
@click.option("--video", is_flag=True,
              help="Write a short side-by-side clip (every frame laid out like the picture) instead of a PNG.")
@click.option("--seconds", type=float, default=None, metavar="N",
              help="With --video: the clip's length in seconds of the input (default 3).")
@click.option("--out", "out_path", type=GivenPath(path_type=Path), default=None,
              help="The picture to write (.png, .jpg or .webp; default compare.png); with --video a video file "
                   "(default compare.mp4).")
@click.option("--overwrite", is_flag=True, help="Replace an existing picture or clip.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="CPU threads for the network (0 = all cores).")
def compare_command(input_path: Path, scale: str | None, models: tuple[str, ...], times: tuple[str, ...],
                    crop: str | None, video: bool, seconds: float | None, out_path: Path | None, overwrite: bool,
                    device: str, threads: int) -> None:
    """Write a PNG of the same frame(s) of INPUT side by side, labelled: bicubic, Lanczos and the
    model (and a second --model), at full output resolution or a zoomed --crop. With --video, a
    short clip of --seconds from the first --at, each frame laid out the same way, with the
    input's frame rate, timestamps and audio."""
    from semlens.compare import (
        CLIP_SECONDS,
        check_clip_path,
        check_picture_path,
        compare_clip,
        compare_video,
        parse_crop,
        parse_time,
    )
    from semlens.errors import SemlensError
    from semlens.io import VIDEO_EXTENSIONS, check_output_path, probe
    from semlens_cli.upscale_commands import _build_upscaler

    try:
        at = [parse_time(t) for t in times]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None
    try:
        region = parse_crop(crop) if crop is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--crop") from None
    if len(models) > 2:
        raise click.BadParameter("give at most two models", param_hint="--model")
    if video:
        if len(at) > 1:
            raise click.BadParameter("give one --at with --video: the time the clip starts", param_hint="--at")
        if seconds is not None and not seconds > 0:
            raise click.BadParameter(f"must be a positive number of seconds, got {seconds:g}", param_hint="--seconds")
        out_path = out_path if out_path is not None else Path("compare.mp4")
        try:
            check_clip_path(out_path)
        except ValueError as exc:
            raise click.BadParameter(f"{exc}; drop --video for a PNG", param_hint="--out") from None
    else:
        if seconds is not None:
            raise click.BadParameter("only with --video (the length of the clip)", param_hint="--seconds")
        out_path = out_path if out_path is not None else Path("compare.png")
        if out_path.suffix.lower() in VIDEO_EXTENSIONS:
            raise click.BadParameter(f"{str(out_path)!r} is a video name; add --video for a clip, or give a .png",
                                     param_hint="--out")
        try:
            check_picture_path(out_path)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--out") from None
    probe(input_path)  # a bad input fails before a model is loaded
    check_output_path(out_path, source=input_path, overwrite=overwrite, is_dir=False)
    ups = [_build_upscaler(m, int(scale) if scale else None, device, "auto", None, None, 0, threads)
           for m in (models or (None,))]
    try:
        if video:
            result = compare_clip(input_path, out_path, ups, start=at[0] if at else None,
                                  seconds=seconds if seconds is not None else CLIP_SECONDS, crop=region,
                                  overwrite=overwrite)
        else:
            result = compare_video(input_path, out_path, ups, at=at, crop=region, overwrite=overwrite)
    except SemlensError:
        raise
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    times_text = ", ".join(f"{t:.3f} s" for t in result.times)
    if video:
        click.echo(f"{result.path}: {result.width}x{result.height}, {result.frames} frames from {times_text}, "
                   f"{' | '.join(result.labels)}")
    else:
        click.echo(f"{result.path}: {result.width}x{result.height}, {' | '.join(result.labels)} at {times_text}")
