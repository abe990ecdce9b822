"""Folder scans (no torch import: the command line checks its inputs before loading a model)."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["find_videos", "links_leaving", "top_level_videos"]


def _video_name(path: Path) -> bool:
    """A video file's name (a known video extension), and not a partial output's."""
    from semlens.io import PARTIAL_MARKER, VIDEO_EXTENSIONS

    return path.suffix.lower() in VIDEO_EXTENSIONS and PARTIAL_MARKER not in path.name


def _video_names(folder: Path, exclude: Path | None = None) -> tuple[list[Path], list[Path]]:
    """``(inside, leaving)``: video files under ``folder`` (recursive, sorted, partial outputs left
    out), split into those inside it and the links that point out of it. The folder ``exclude``
    (a run's output folder inside its input folder) is not entered."""

    root = folder.resolve()
    skip = exclude.resolve() if exclude is not None else None
    inside: list[Path] = []
    leaving: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        if skip is not None:
            dirnames[:] = [d for d in dirnames if (Path(dirpath) / d).resolve() != skip]
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if not _video_name(path):
                continue
            try:
                path.resolve().relative_to(root)
            except ValueError:
                leaving.append(path)
                continue
            inside.append(path)
    return inside, leaving


def find_videos(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Video files under ``folder`` (recursive, sorted; partial outputs and links pointing out of the
    folder left out, see :func:`links_leaving`). Links to folders are not entered, nor the folder
    ``exclude``: a run's output folder inside its input folder is never read as input."""
    return _video_names(folder, exclude)[0]


def links_leaving(folder: Path, exclude: Path | None = None) -> list[Path]:
    """Video names under ``folder`` that are symbolic links to files outside it: a folder run does
    not follow them (it only reads, and mirrors, what is inside the input folder)."""
    return _video_names(folder, exclude)[1]


def top_level_videos(folder: Path) -> list[Path]:
    """The video files directly in ``folder`` (sorted): a folder holding videos is a folder of
    videos even when it also holds pictures (a thumbnail, a poster)."""
    try:
        return sorted(p for p in folder.iterdir() if _video_name(p) and p.is_file())
    except OSError:
        return []
