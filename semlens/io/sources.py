"""Which reader for which input: :func:`open_source`, and file-kind helpers."""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path

from ..errors import InputNotFoundError, InvalidInputError
from ._av import check_input_file
from .images import IMAGE_EXTENSIONS, ImageSequenceReader, is_image_folder
from .reader import FrameSource, VideoReader

__all__ = ["VIDEO_EXTENSIONS", "is_video_file", "open_source"]

VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {
        ".mp4",
        ".m4v",
        ".mkv",
        ".mov",
        ".avi",
        ".webm",
        ".mpg",
        ".mpeg",
        ".m2v",
        ".ts",
        ".m2ts",
        ".mts",
        ".wmv",
        ".asf",
        ".flv",
        ".3gp",
        ".3g2",
        ".ogv",
        ".vob",
        ".mxf",
        ".y4m",
        ".nut",
        ".dv",
        ".f4v",
        ".divx",
        ".rm",
        ".rmvb",
        ".hevc",
        ".h264",
        ".264",
        ".265",
        ".ivf",
        ".gif",
    }
)


def is_video_file(path: str | os.PathLike[str]) -> bool:
    """True if ``path`` is an existing file with a video extension (:data:`VIDEO_EXTENSIONS`)."""
    p = Path(path)
    return p.suffix.lower() in VIDEO_EXTENSIONS and p.is_file()


def open_source(
    path: str | os.PathLike[str], *, fps: float | Fraction | None = None, threads: int = 0
) -> FrameSource:
    """Open a video file (:class:`VideoReader`) or a folder of images (:class:`ImageSequenceReader`).

    ``fps`` applies to image folders only (default 25). Every failure is one of our errors with a
    one-line message: :class:`~semlens.errors.InputNotFoundError` for a missing path,
    :class:`~semlens.errors.InvalidInputError` for an empty file, a file that is not a video (a
    text file named .mp4, a corrupt file), a file with no video stream (audio only), a file of
    which no frame decodes, a single image, or a folder without images. A file that decodes only
    partly is opened; iterating it warns (:class:`TruncatedInputWarning`) and sets ``truncated``.
    """
    p = Path(path)
    if not p.exists():
        raise InputNotFoundError(f"input {str(p)!r} does not exist; check the path")
    if p.is_dir():
        if not is_image_folder(p):
            raise InvalidInputError(
                f"folder {str(p)!r} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}); give a video file or a folder of frames"
            )
        return ImageSequenceReader(p, fps=fps)
    check_input_file(p)
    if p.suffix.lower() in IMAGE_EXTENSIONS:
        raise InvalidInputError(
            f"input {str(p)!r} is a single image; put the frames in a folder and give the folder"
        )
    return VideoReader(p, threads=threads)
