"""Parameter types shared by the commands."""

from __future__ import annotations

from typing import Any

import click


class GivenPath(click.Path):
    """A path that must not be empty: an empty argument ("" from an unset shell variable) would
    otherwise mean the current folder."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value.strip():
            self.fail("is empty; give a file or folder path", param, ctx)
        return super().convert(value, param, ctx)
