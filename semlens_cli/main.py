"""The `semlens` command line: parse, call the library, print with rich."""

from __future__ import annotations

import sys
from typing import Any

import click

from semlens import __version__


class SemlensGroup(click.Group):
    """Turns library errors into one-line messages and exit codes (a traceback only with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        from semlens.errors import EXIT_INTERRUPTED, SemlensError

        debug = ctx.params.get("debug", False) or "--debug" in sys.argv
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except SemlensError as exc:
            if debug:
                raise
            click.echo(f"error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            if debug:
                raise
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except (OSError, ValueError, RuntimeError) as exc:
            if debug:
                raise
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            click.echo(f"error: {message}", err=True)
            ctx.exit(1)


@click.group(cls=SemlensGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="semlens")
@click.option("--debug", is_flag=True, help="Show tracebacks.")
def cli(debug: bool) -> None:
    """semlens: video super-resolution with Semantic Lens."""


def _register() -> None:
    from semlens_cli.train_commands import train_command

    cli.add_command(train_command)
    for module, names in (("semlens_cli.upscale_commands", ("upscale_command", "eval_command")),
                          ("semlens_cli.hub_commands", ("models_command", "download_command", "export_command"))):
        try:
            mod = __import__(module, fromlist=list(names))
        except ImportError:
            continue
        for name in names:
            if hasattr(mod, name):
                cli.add_command(getattr(mod, name))


_register()


def main() -> None:
    cli(prog_name="semlens")
