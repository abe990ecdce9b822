"""The model commands: ``semlens models``, ``semlens download NAME``, ``semlens export``.

Thin wrappers over :mod:`semlens.hub`. The click group (``semlens_cli.main``) adds them with
``cli.add_command(...)`` and turns :class:`~semlens.errors.SemlensError` into a one-line message.
"""

from __future__ import annotations

import json
from dataclasses import asdict

import click

__all__ = ["models_command", "download_command", "export_command"]


def _size(n: int | None, approx: int | None = None) -> str:
    """``n`` bytes (exact), else ``approx`` bytes as ``~1.25 GB`` (its known digits only), else ``-``."""
    if n is None and approx is None:
        return "-"
    value = float(n if n is not None else approx)  # type: ignore[arg-type]
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            break
        value /= 1000
    if n is None:
        return f"~{value:.3g} {unit}"
    return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"


def _params(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f}M" if n >= 1_000_000 else f"{n / 1e3:.1f}k"


_STATUS_STYLE = {"bundled": "green", "cached": "cyan", "remote": "yellow", "missing": "red"}


@click.command("models", short_help="List models and where their weights are.")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON instead of a table.")
def models_command(as_json: bool) -> None:
    """List the models: upscaling networks and extractor checkpoints, with where their weights
    are (bundled with semlens, in the Hugging Face cache, or downloadable)."""
    from rich.console import Console
    from rich.table import Table

    from semlens.hub import list_models

    infos = list_models(include_extractors=True, include_unavailable=True)
    if as_json:
        click.echo(json.dumps([asdict(i) for i in infos], indent=2))
        return
    table = Table(title="semlens models", title_justify="left")
    for column in ("name", "scale", "params", "extractor", "status", "size"):
        # Names are what users type: never cut or wrapped (the other columns give way).
        table.add_column(column, justify="right" if column in ("scale", "params", "size") else "left",
                         no_wrap=column == "name")
    for info in infos:
        name = f"{info.name} (default)" if info.default else info.name
        scale = f"x{info.scale}" if info.scale else "-"
        extractor = info.extractor if info.kind == "enhancer" else "(extractor weights)"
        if info.any_extractor:
            extractor += " (any fits)"
        style = _STATUS_STYLE.get(info.status, "")
        status = "not installed" if info.status == "missing" else info.status
        table.add_row(name, scale, _params(info.parameters), extractor, f"[{style}]{status}[/]", _size(info.size, info.approx_size))
    console = Console()
    console.print(table)
    if any(i.size is None and i.approx_size is not None for i in infos):
        console.print("[dim]~: approximate size (the exact size is not known)[/]")
    clean = [i.name for i in infos if i.kind == "enhancer" and i.name.endswith("-bi")]
    if clean:
        console.print("[dim]real footage (phone clips, downloads, anything compressed): the defaults; "
                      f"clean bicubic downscales and benchmarks: {', '.join(clean)}[/]")
    if any(i.status == "remote" for i in infos):
        console.print("[dim]remote models are downloaded on first use, or ahead of time with `semlens download NAME`[/]")


@click.command("download", short_help="Fetch a model or SAM checkpoint for offline use.")
@click.argument("name")
@click.option("--force", is_flag=True, help="Download again even if the file is cached.")
def download_command(name: str, force: bool) -> None:
    """Fetch NAME into the Hugging Face cache so it works offline: a model name (see `semlens
    models`), a SAM checkpoint (`sam-vit-b`, `sam-vit-l`, `sam-vit-h`) or a Hub repo id
    (user/repo[@revision]). The file's sha256 is checked."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from semlens.hub import download

    err = Console(stderr=True)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), console=err, transient=True,
    ) as bar:
        tasks: dict[str, int] = {}

        def progress(desc: str, done: int, total: int | None) -> None:
            if desc not in tasks:
                tasks[desc] = bar.add_task(desc or name, total=total)
            bar.update(tasks[desc], completed=done, total=total)

        resolved = download(name, progress=progress, force=force)
    how = {"bundled": "is bundled with semlens", "cached": "was already cached", "downloaded": "downloaded"}
    click.echo(f"{name} {how.get(resolved.origin, resolved.origin)}: {resolved.weights}")


@click.command("export", short_help="Write a Hub-ready model folder (and push it).")
@click.argument("checkpoint")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--push", "push", metavar="REPO_ID", default=None, help="Also upload the folder to this Hub repo.")
@click.option("--card", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Use this markdown file as the model card instead of the generated one.")
@click.option("--name", default=None, help="Name of the model in its config.")
@click.option("--overwrite", is_flag=True, help="Replace the model files already in OUT_DIR.")
def export_command(checkpoint: str, out_dir: str, push: str | None, card: str | None, name: str | None,
                   overwrite: bool) -> None:
    """Write a Hub-ready folder (model.safetensors, config.json, README.md) for CHECKPOINT (a
    training checkpoint with its config, a .safetensors, a model folder or a model name), and with
    --push upload it to the Hugging Face Hub."""
    from semlens.hub import export_model

    result = export_model(checkpoint, out_dir, push=push, card=card, name=name, overwrite=overwrite)
    click.echo(f"wrote {result.folder} ({_params(result.parameters)} parameters, sha256 {result.sha256})")
    if result.repo_id is not None:
        click.echo(f"pushed to {result.url}")
        click.echo(
            f"registry pin: repo_id={result.repo_id!r}, revision={result.revision!r}, "
            f"filename='model.safetensors', sha256={result.sha256!r}"
        )
