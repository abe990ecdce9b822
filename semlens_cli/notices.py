"""Notices on stderr: every warning is one clean ``warning: ...`` line, shown once per run.

Python's own display of a warning takes two lines (``file.py:360: Category: text`` and the source
line); on the command line a warning is for the user, not for a developer, so it is shown as the
text alone. ``--debug`` shows the raw form; ``--quiet`` hides warnings.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

import click

__all__ = ["clean_warnings", "notice"]

DEBUG = "semlens.debug"
QUIET = "semlens.quiet"
_SHOWN = "semlens.notices"

# Warnings that say nothing a user can act on. torch notes the pickle protocol of a .pth file before
# its restricted unpickler reads it; semlens then loads the tensors or refuses the file itself.
_IGNORED = (r"Detected pickle protocol",)


def notice(text: str, ctx: click.Context | None = None) -> None:
    """Print ``warning: TEXT`` on stderr as one line, unless the same text was shown already in this
    run or ``--quiet`` was given."""
    ctx = ctx or click.get_current_context(silent=True)
    meta: dict[str, Any] = ctx.meta if ctx is not None else {}
    if meta.get(QUIET):
        return
    line = " ".join(str(text).split())
    shown: set[str] = meta.setdefault(_SHOWN, set())
    if not line or line in shown:
        return
    shown.add(line)
    click.echo(f"warning: {line}", err=True)


@contextlib.contextmanager
def clean_warnings(ctx: click.Context) -> Iterator[None]:
    """Within the block, warnings (from any thread) go through :func:`notice`, or are shown raw
    when ``--debug`` was given (``ctx.meta``, looked up when a warning comes)."""
    with warnings.catch_warnings():
        raw = warnings.showwarning
        for pattern in _IGNORED:
            warnings.filterwarnings("ignore", message=pattern)

        def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                 file: TextIO | None = None, line: str | None = None) -> None:
            if ctx.meta.get(DEBUG):
                raw(message, category, filename, lineno, file, line)
            else:
                notice(str(message), ctx)

        warnings.showwarning = show
        yield
