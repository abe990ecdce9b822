"""Folder scans (no torch import: the command line checks its inputs before loading a model)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["find_videos", "links_leaving"]


def _video_names(folder: Path) -> tuple[list[Path], list[Path]]:
    """``(inside, leaving)``: video files under ``folder`` (recursive, sorted, partial outputs left
    out), split into those inside it and the links that point out of it."""
    from semlens.io import PARTIAL_MARKER, VIDEO_EXTENSIONS

    root = folder.resolve()
    inside: list[Path] = []
    leaving: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.suffix.lower() not in VIDEO_EXTENSIONS or PARTIAL_MARKER in name:
                continue
            try:
                path.resolve().relative_to(root)
            except ValueError:
                leaving.append(path)
                continue
            inside.append(path)
    return inside, leaving


def find_videos(folder: Path) -> list[Path]:
    """Video files under ``folder`` (recursive, sorted; partial outputs and links pointing out of the
    folder left out, see :func:`links_leaving`). Links to folders are not entered."""
    return _video_names(folder)[0]


def links_leaving(folder: Path) -> list[Path]:
    """Video names under ``folder`` that are symbolic links to files outside it: a folder run does
    not follow them (it only reads, and mirrors, what is inside the input folder)."""
    return _video_names(folder)[1]
