"""The file a video is muxed into, which keeps the real cause of a failed write."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["OutputFile"]


def _open_binary(path: Path) -> Any:
    return open(path, "w+b")


class OutputFile:
    """The file a :class:`~semlens.io.VideoWriter` muxes into: a binary file that remembers its first error.

    PyAV turns an exception of a Python file object into "Error in PyAV callback", or drops it
    where FFmpeg ignores a failed write (while writing the trailer, for one). So the first
    ``OSError`` (e.g. ``ENOSPC``, disk full) is kept in ``error`` instead of raised, the file is
    closed, and later writes and seeks go nowhere; the writer checks ``error`` after each step and
    reports the real cause, and never a file that lost data as finished.
    """

    opener = staticmethod(_open_binary)

    def __init__(self, path: str | Path) -> None:
        self.name = str(path)  # muxers that rewrite the file (mp4 faststart) reopen it by name
        self._file = self.opener(Path(path))
        self.error: OSError | None = None
        self._pos = 0  # the position once the file failed

    def _fail(self, exc: OSError) -> None:
        self.error = exc
        self._pos = self._file.tell() if not self._file.closed else 0
        try:
            self._file.close()
        except OSError:
            pass  # the buffered bytes are lost either way

    def read(self, size: int = -1) -> bytes:
        if self.error is not None:
            return b""
        try:
            return self._file.read(size)
        except OSError as exc:
            self._fail(exc)
            return b""

    def write(self, data: bytes) -> int:
        if self.error is None:
            try:
                return self._file.write(data)
            except OSError as exc:
                self._fail(exc)
        self._pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        if self.error is None:
            try:
                return self._file.seek(offset, whence)
            except OSError as exc:  # seeking flushes the buffer
                self._fail(exc)
        self._pos = offset if whence == os.SEEK_SET else self._pos + offset
        return self._pos

    def tell(self) -> int:
        return self._pos if self.error is not None else self._file.tell()

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    @property
    def closed(self) -> bool:
        return bool(self._file.closed)

    def close(self) -> None:
        """Flush and close; a failed flush is kept in ``error`` (and not raised)."""
        if self._file.closed:
            return
        try:
            self._file.close()
        except OSError as exc:
            self.error = self.error or exc
