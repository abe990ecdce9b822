"""`semlens compare`: one picture of the same frame upscaled by bicubic, Lanczos and the model(s)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("compare")
@click.argument("input_path", metavar="INPUT", type=click.Path(path_type=Path))
@click.option("--scale", type=click.Choice(["2", "4"]), default=None,
              help="Upscaling factor; without --model picks the shipped model of that scale (default 4).")
@click.option("--model", "models", multiple=True,
              help="Model name, weights file/folder or repo id; give it twice to compare two models.")
@click.option("--at", "times", multiple=True,
              help="Time of the frame to show (SS, MM:SS or HH:MM:SS[.ms]); repeat for more rows "
                   "(default: the middle of the video).")
@click.option("--crop", default=None, help="X,Y,W,H in input pixels: show only that region, zoomed by the scale.")
@click.option("--out", "out_path", type=click.Path(path_type=Path), default=Path("compare.png"), show_default=True,
              help="The PNG to write.")
@click.option("--overwrite", is_flag=True, help="Replace an existing picture.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=int, default=0, help="CPU threads for the network (0 = all cores).")
def compare_command(input_path: Path, scale: str | None, models: tuple[str, ...], times: tuple[str, ...],
                    crop: str | None, out_path: Path, overwrite: bool, device: str, threads: int) -> None:
    """Write a PNG of the same frame(s) of INPUT side by side, labelled: bicubic, Lanczos and the
    model (and a second --model), at full output resolution or a zoomed --crop."""
    from semlens.compare import compare_video, parse_crop, parse_time
    from semlens.errors import OutputExistsError, SemlensError
    from semlens.io import probe
    from semlens_cli.upscale_commands import _build_upscaler

    try:
        seconds = [parse_time(t) for t in times]
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--at") from None
    try:
        region = parse_crop(crop) if crop is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--crop") from None
    if len(models) > 2:
        raise click.BadParameter("give at most two models", param_hint="--model")
    probe(input_path)  # a bad input fails before a model is loaded
    if out_path.exists() and not overwrite:
        raise OutputExistsError(f"output {str(out_path)!r} exists; pass overwrite=True to replace it")
    ups = [_build_upscaler(m, int(scale) if scale else None, device, "auto", None, None, 0, threads)
           for m in (models or (None,))]
    try:
        result = compare_video(input_path, out_path, ups, at=seconds, crop=region)
    except SemlensError:
        raise
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    times_text = ", ".join(f"{t:.3f} s" for t in result.times)
    click.echo(f"{result.path}: {result.width}x{result.height}, {' | '.join(result.labels)} at {times_text}")
