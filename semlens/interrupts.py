"""SIGTERM turned into an exception at a frame boundary, so that a stopped run cleans up.

SIGTERM is what ``kill``, ``timeout``, systemd, Docker and Ray send to stop a process. Python's
default action ends the process on the spot, skipping every ``finally`` block, so a run would leave
its partial output behind. While :func:`deferred_termination` is active (the library wraps
:meth:`~semlens.upscaler.SemanticLensUpscaler.upscale_video` and ``upscale_folder`` in it), a SIGTERM
only sets a flag; :func:`check_termination`, called between frames, then raises :class:`Terminated`,
the partial output is removed as on any error, and an uncaught :class:`Terminated` ends the process
with exit status 143 (128 + 15), without a traceback. A second SIGTERM raises at once.

Only the default action is replaced, and only in the main thread (where Python runs signal
handlers): a handler the application installed itself is left alone.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["EXIT_TERMINATED", "Terminated", "check_termination", "deferred_termination"]

EXIT_TERMINATED = 128 + int(signal.SIGTERM)


class Terminated(SystemExit):
    """Raised at a frame boundary after a SIGTERM. It is a :class:`SystemExit` with code 143, so an
    uncaught one ends the process quietly with that status after the cleanup has run."""

    def __init__(self, signum: int = int(signal.SIGTERM)) -> None:
        super().__init__(128 + signum)
        self.signum = signum

    def __str__(self) -> str:
        return f"terminated by {signal.Signals(self.signum).name}"


_pending: list[int] = []


def _handle(signum: int, frame: FrameType | None) -> None:
    if _pending:  # asked twice: stop now
        _pending.clear()
        raise Terminated(signum)
    _pending.append(signum)


def check_termination() -> None:
    """Raise :class:`Terminated` if a SIGTERM arrived since the last check (a safe point: between
    frames, never inside a decoder or muxer callback)."""
    if _pending:
        signum = _pending.pop()
        _pending.clear()
        raise Terminated(signum)


@contextlib.contextmanager
def deferred_termination() -> Iterator[None]:
    """Within the block, SIGTERM sets a flag that :func:`check_termination` raises as
    :class:`Terminated`. A SIGTERM not raised yet when the block ends is raised then (in place of
    any other exception leaving the block: the process was asked to stop). Does nothing outside the
    main thread, inside another such block, or when SIGTERM already has a handler other than the
    default."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        yield
        return
    signal.signal(signal.SIGTERM, _handle)
    try:
        yield
    except BaseException as exc:
        if _pending and not isinstance(exc, Terminated):
            raise Terminated(_pending[0]) from exc
        raise
    else:
        check_termination()
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _pending.clear()
