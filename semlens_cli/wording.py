"""Library messages in the command line's words.

The library names options as keyword arguments (``overwrite=True``, ``extractor='lite'``); on the
command line the same options are flags (``--overwrite``, ``--extractor lite``). :func:`cli_wording`
rewrites the keyword arguments that are options of the running command, and leaves the rest alone.
"""

from __future__ import annotations

import re

import click

__all__ = ["cli_wording"]

# name=True | name=False | name='text' | name="text" | name=12 | name=0.5
_KEYWORD = re.compile(r"\b([a-z][a-z0-9_]*)=(True|False|'[^'\s]*'|\"[^\"\s]*\"|-?\d+(?:\.\d+)?)(?![\w.])")


def cli_wording(text: str, command: click.Command | None = None) -> str:
    """``text`` with each ``name=value`` that is an option of ``command`` (default: the command
    running now) written as that option: ``overwrite=True`` -> ``--overwrite``,
    ``extractor='lite'`` -> ``--extractor lite``."""
    if command is None:
        ctx = click.get_current_context(silent=True)
        command = ctx.command if ctx is not None else None
    if command is None:
        return text
    options = {p.name: p for p in command.params if isinstance(p, click.Option) and p.name}

    def flag(match: re.Match[str]) -> str:
        option = options.get(match[1])
        if option is None:
            return match[0]
        name = max(option.opts, key=len)  # the long spelling
        if option.is_flag:
            return name if match[2] == "True" else match[0]
        return f"{name} {match[2].strip(chr(39) + chr(34))}"

    return _KEYWORD.sub(flag, text)
