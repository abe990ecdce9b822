"""The library's error types.

Every failure the user can cause or fix (a missing file, a file that is not a video, an existing
output, bad weights, no network) is raised as a :class:`SemlensError` subclass whose message is one
line saying what happened and what to do next. Each class carries the exit code that the command
line uses for it, so scripts can tell failures apart.
"""

from __future__ import annotations

__all__ = [
    "SemlensError",
    "InputNotFoundError",
    "InvalidInputError",
    "OutputExistsError",
    "OutputError",
    "WeightsError",
    "ModelNotFoundError",
    "DownloadError",
    "NothingToDoError",
    "BatchError",
    "ExtraNotInstalledError",
    "EXIT_INTERRUPTED",
]

EXIT_INTERRUPTED = 130


class SemlensError(Exception):
    """Base class of every error semlens raises on purpose."""

    exit_code = 1


class InputNotFoundError(SemlensError, FileNotFoundError):
    """The input path does not exist."""

    exit_code = 3


class InvalidInputError(SemlensError, ValueError):
    """The input exists but is not something semlens can read (not a video, truncated, no video
    stream, unreadable image, ...)."""

    exit_code = 4


class OutputExistsError(SemlensError, FileExistsError):
    """The output already exists and ``overwrite`` was not given."""

    exit_code = 5


class OutputError(SemlensError, OSError):
    """The output cannot be written (read-only folder, output equals input, bad codec, ...)."""

    exit_code = 6


class WeightsError(SemlensError, ValueError):
    """A weights file is corrupt, truncated, unsafe, or does not match the architecture."""

    exit_code = 7


class ModelNotFoundError(SemlensError, LookupError):
    """A model name, path or repo id cannot be resolved (unknown name, offline and not cached)."""

    exit_code = 8


class DownloadError(SemlensError, OSError):
    """A download failed (server unreachable, checksum mismatch)."""

    exit_code = 9


class NothingToDoError(SemlensError, ValueError):
    """A folder input holds no videos or images to process."""

    exit_code = 10


class BatchError(SemlensError):
    """Some files of a folder run failed; the others were processed."""

    exit_code = 11


class ExtraNotInstalledError(SemlensError, ImportError):
    """A feature needs an optional extra that is not installed (e.g. ``semlens[distributed]`` for Ray)."""

    exit_code = 1
