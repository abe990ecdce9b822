"""The library's error types.

Every failure the user can cause or fix (a missing file, a file that is not a video, an existing
output, bad weights, no network) is raised as a :class:`SemlensError` subclass whose message is one
line saying what happened and what to do next. Each class carries the exit code that the command
line uses for it, so scripts can tell failures apart.

Messages name options as the library spells them, as keyword arguments (``overwrite=True``,
``extractor='lite'``); the command line words them as its flags (``--overwrite``,
``--extractor lite``). A message may give both, ``overwrite=True (--overwrite)``: ``str(error)``
then keeps the library's spelling only.
"""

from __future__ import annotations

import re

__all__ = [
    "SemlensError",
    "InputNotFoundError",
    "InvalidInputError",
    "OutputExistsError",
    "OutputError",
    "WeightsError",
    "ModelNotFoundError",
    "ExtractorMismatchError",
    "DownloadError",
    "NothingToDoError",
    "BatchError",
    "ExtraNotInstalledError",
    "EXIT_INTERRUPTED",
]

EXIT_INTERRUPTED = 130

# "name=value (--flag)": an option in both spellings; str() keeps "name=value".
_BOTH_SPELLINGS = re.compile(r"\b([A-Za-z_]\w*=\S+) \(--[a-z][a-z0-9-]*\)")


class SemlensError(Exception):
    """Base class of every error semlens raises on purpose."""

    exit_code = 1

    def __str__(self) -> str:
        return _BOTH_SPELLINGS.sub(r"\1", super().__str__())


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


class ExtractorMismatchError(SemlensError, ValueError):
    """The extractor asked for cannot drive the model (its tokens have other sizes than those the
    model was built for): a usage error, fixed by choosing the extractor the model was trained with."""

    exit_code = 12


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
