"""Folder scans (no torch import: the command line checks its inputs before loading a model)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["find_videos"]


def find_videos(folder: Path) -> list[Path]:
    """Video files under ``folder`` (recursive, sorted, partial outputs and symlinks that leave the
    folder excluded)."""
    from semlens.io import PARTIAL_MARKER, VIDEO_EXTENSIONS

    root = folder.resolve()
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix.lower() not in VIDEO_EXTENSIONS or PARTIAL_MARKER in name:
                continue
            try:
                path.resolve().relative_to(root)
            except ValueError:
                continue  # a link pointing out of the folder
            found.append(path)
    return found
