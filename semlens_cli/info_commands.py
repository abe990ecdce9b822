"""`semlens info`: what is in a video, and what upscaling it would cost here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from semlens_cli.params import GivenPath


def _bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _lines(report: Any) -> list[str]:
    i = report.info
    rate = "unknown"
    if report.vfr:
        rate = f"variable, {report.min_fps:.3g} to {report.max_fps:.3g} fps (average {report.fps:.3g})"
    elif report.fps:
        rate = f"{report.fps:.6g} fps"
    container = i.container_format or ("image sequence" if i.is_image_sequence else "unknown")
    lines = [
        f"file:       {report.path} ({_bytes(report.size_bytes)})",
        f"container:  {container}",
        f"video:      {i.codec}, {i.width}x{i.height}, {i.pix_fmt} ({i.bit_depth}-bit)",
        f"frames:     {report.frame_count}" + (f", {i.duration:.3f} s" if i.duration else ""),
        f"frame rate: {rate}",
        f"rotation:   {i.rotation} degrees" + (" (kept as metadata, pixels are not turned)" if i.rotation else ""),
    ]
    for t in report.tracks:
        if t.kind == "video" and t.index == min(x.index for x in report.tracks if x.kind == "video"):
            continue
        language = f" [{t.language}]" if t.language else ""
        detail = f", {t.detail}" if t.detail else ""
        lines.append(f"{t.kind + ':':<11} #{t.index} {t.codec}{detail}{language}")
    return lines


def _estimate_lines(est: Any) -> list[str]:
    return [
        f"estimate:   {est.model} x{est.scale} on {est.device}: {est.output_width}x{est.output_height}, "
        f"about {_duration(est.seconds)} ({est.seconds / max(est.frames, 1):.2f} s per frame), "
        f"about {_bytes(est.output_bytes)}",
        f"measured:   {est.method}",
    ]


@click.command("info")
@click.argument("input_path", metavar="INPUT", type=GivenPath(path_type=Path))
@click.option("--scale", type=click.Choice(["2", "4"]), default=None,
              help="Upscaling factor of the estimate; without --model picks the shipped model (default 4).")
@click.option("--model", default=None, help="Model of the estimate: name, weights file/folder, or repo id.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--frames", "sample_frames", type=click.IntRange(min=1), default=4, show_default=True,
              help="Frames upscaled and encoded to measure the estimate.")
@click.option("--codec", default="libx264", show_default=True, help="Codec of the estimated output.")
@click.option("--crf", type=float, default=18, show_default=True, help="Quality of the estimated output.")
@click.option("--preset", default="medium", show_default=True, help="Encoder preset of the estimated output.")
@click.option("--threads", type=click.IntRange(min=0), default=0, help="CPU threads for the network (0 = all cores).")
@click.option("--no-estimate", is_flag=True, help="Only describe the file (no model is loaded).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
def info_command(input_path: Path, scale: str | None, model: str | None, device: str, sample_frames: int,
                 codec: str, crf: float, preset: str, threads: int, no_estimate: bool, as_json: bool) -> None:
    """Describe INPUT (a video or a folder of images): container, streams, codec, size, frames,
    frame rate (or variable), bit depth, rotation, audio and subtitle tracks; and estimate the time
    and output size of upscaling it on this machine, measured on the first few frames."""
    from semlens.describe import describe_file, estimate_run

    report = describe_file(input_path)
    result: dict[str, Any] = report.to_dict()
    if not as_json:
        click.echo("\n".join(_lines(report)))
    if report.damage is not None:
        from semlens_cli.notices import notice

        notice(f"{input_path.name} looks truncated or damaged: {report.damage}; upscaling it keeps only what decodes "
               f"and exits with an error")
    if not no_estimate:
        from semlens_cli.upscale_commands import _build_upscaler

        up = _build_upscaler(model, int(scale) if scale else None, device, "auto", None, None, 0, threads)
        est = estimate_run(up, report, sample_frames=sample_frames, codec=codec, crf=crf, preset=preset)
        result["estimate"] = est.to_dict()
        if not as_json:
            click.echo("\n".join(_estimate_lines(est)))
    if as_json:
        click.echo(json.dumps(result, indent=2))
