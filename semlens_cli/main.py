"""The `semlens` command line: parse, call the library, print with rich."""

from __future__ import annotations

import traceback
from typing import Any

import click

from semlens import __version__
from semlens_cli.notices import DEBUG, clean_warnings


class SemlensGroup(click.Group):
    """Turns library errors into one-line messages and exit codes (a traceback only with --debug),
    and warnings into one-line notices."""

    def invoke(self, ctx: click.Context) -> Any:
        from semlens.errors import EXIT_INTERRUPTED, SemlensError
        from semlens.interrupts import EXIT_TERMINATED, Terminated

        def debug() -> bool:
            return bool(ctx.params.get("debug") or ctx.meta.get(DEBUG))

        try:
            with clean_warnings(ctx):
                return super().invoke(ctx)
        except click.UsageError as exc:
            # One line, like every other error (click's own form adds the usage and a hint).
            if debug():
                raise
            name = ctx.invoked_subcommand
            where = f"semlens {name} -h" if name else "semlens -h"
            click.echo(f"error: {exc.format_message()} (see {where})", err=True)
            ctx.exit(exc.exit_code)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except SemlensError as exc:
            if debug():
                raise
            from semlens_cli.wording import cli_wording

            name = ctx.invoked_subcommand
            command = self.get_command(ctx, name) if name else None
            click.echo(f"error: {cli_wording(str(exc), command)}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt:
            if debug():
                raise
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except Terminated:
            if debug():
                traceback.print_exc()
            click.echo("terminated", err=True)
            ctx.exit(EXIT_TERMINATED)
        except (OSError, ValueError, RuntimeError) as exc:
            if debug():
                raise
            from semlens_cli.wording import cli_wording

            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            name = ctx.invoked_subcommand
            click.echo(f"error: {cli_wording(message, self.get_command(ctx, name) if name else None)}", err=True)
            ctx.exit(1)


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[DEBUG] = True  # meta is shared by the group's context and the command's


@click.group(cls=SemlensGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="semlens")
@click.option("--debug", is_flag=True, callback=_set_debug, help="Show tracebacks (also accepted after the command).")
def cli(debug: bool) -> None:
    """semlens: video super-resolution with Semantic Lens."""


def _register() -> None:
    # Imported directly: a broken import is a broken installation and must fail loudly, not hide a
    # command. The commands import their optional extras (train, distributed) only when run.
    from semlens_cli.compare_commands import compare_command
    from semlens_cli.hub_commands import download_command, export_command, models_command
    from semlens_cli.info_commands import info_command
    from semlens_cli.train_commands import train_command
    from semlens_cli.upscale_commands import eval_command, upscale_command

    for command in (upscale_command, info_command, compare_command, eval_command, models_command, download_command, export_command,
                    train_command):
        command.params.append(click.Option(["--debug"], is_flag=True, expose_value=False, callback=_set_debug,
                                           help="Show tracebacks."))
        cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="semlens")
