"""Sliding temporal windows: pure index maths (no torch).

A shot of ``L`` frames is covered by windows of ``T`` frames. Each window feeds ``T`` frames to the
network but emits only its ``S = T - 2 * O`` inner frames, ``O`` being the overlap (context) on each
side; window ``k`` emits frames ``[k*S, min((k+1)*S, L))`` and reads frames ``k*S - O`` to
``k*S - O + T - 1``, except that the last window of a shot reads no further than ``O`` frames past
its last emitted frame (a shot shorter than a window, a single image above all, costs its own frames
and their context, not ``T``). Indices outside ``[0, L)`` are reflected at the shot's ends
(``-1 -> 1``, ``L -> L - 2``), so the first and last frames get as much context as the others.
Every frame is emitted exactly once, in order.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["Window", "reflect_index", "plan_windows", "window_at", "WindowScheduler", "check_window"]

F = TypeVar("F")


def check_window(window: int, overlap: int) -> None:
    """Raise ``ValueError`` unless ``window >= 1``, ``overlap >= 0`` and at least one frame is emitted
    (``TypeError`` unless both are whole numbers)."""
    for name, value in (("window", window), ("overlap", overlap)):
        try:
            if isinstance(value, bool):
                raise TypeError
            operator.index(value)  # int and NumPy integers; not floats or strings
        except TypeError:
            raise TypeError(f"{name} must be a whole number of frames, got {value!r}") from None
    if window < 1:
        raise ValueError(f"window must be at least 1 frame, got {window}")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0, got {overlap}")
    if window - 2 * overlap < 1:
        raise ValueError(f"window {window} with overlap {overlap} emits no frame (need window > 2 * overlap)")


def reflect_index(index: int, length: int) -> int:
    """Reflect ``index`` into ``[0, length)`` without repeating the edge frame (``-1 -> 1``)."""
    if length < 1:
        raise ValueError("length must be >= 1")
    if length == 1:
        return 0
    period = 2 * (length - 1)
    m = index % period
    return m if m < length else period - m


@dataclass(frozen=True)
class Window:
    """Window ``k`` of a shot: ``indices`` are the ``T`` (reflected) frames it reads; positions
    ``emit_offset .. emit_offset + (stop - start) - 1`` of the window are emitted as frames
    ``start .. stop - 1``."""

    number: int
    start: int
    stop: int
    indices: tuple[int, ...]
    emit_offset: int

    @property
    def emitted(self) -> range:
        return range(self.start, self.stop)

    @property
    def last_needed(self) -> int:
        """The largest unreflected index this window reads (before reflection)."""
        return self.start - self.emit_offset + len(self.indices) - 1


def window_at(number: int, length: int | None, window: int, overlap: int) -> Window:
    """Window ``number`` of a shot of ``length`` frames (``None``: length not known yet, which is
    fine as long as the window does not reach past the known frames). A window that emits the
    shot's last frame reads ``overlap`` frames past it, not up to ``window`` frames."""
    check_window(window, overlap)
    step = window - 2 * overlap
    start = number * step
    stop = start + step if length is None else min(start + step, length)
    first = start - overlap
    raw = range(first, first + window if length is None else min(first + window, stop + overlap))
    if length is None:
        indices = tuple(reflect_index(i, 10**12) if i < 0 else i for i in raw)
    else:
        indices = tuple(reflect_index(i, length) for i in raw)
    return Window(number=number, start=start, stop=stop, indices=indices, emit_offset=overlap)


def plan_windows(length: int, window: int, overlap: int) -> list[Window]:
    """All windows of a shot of ``length >= 1`` frames."""
    check_window(window, overlap)
    step = window - 2 * overlap
    count = -(-length // step)
    return [window_at(k, length, window, overlap) for k in range(count)]


class WindowScheduler(Generic[F]):
    """Streams frames into windows while holding at most about ``T + S`` frames.

    ``push(frame)`` returns the windows that became complete (as ``(Window, [frames])``);
    ``finish()`` returns the rest, reflect-padded at the end of the shot.
    """

    def __init__(self, window: int, overlap: int) -> None:
        check_window(window, overlap)
        self.window, self.overlap = window, overlap
        self.step = window - 2 * overlap
        self._frames: dict[int, F] = {}
        self._count = 0
        self._next = 0

    @property
    def count(self) -> int:
        """Frames pushed so far."""
        return self._count

    def buffered(self) -> int:
        return len(self._frames)

    def _emit(self, length: int | None) -> Iterator[tuple[Window, list[F]]]:
        while True:
            w = window_at(self._next, length, self.window, self.overlap)
            if length is not None and w.start >= length:
                return
            if length is None and w.last_needed >= self._count:
                return
            yield w, [self._frames[i] for i in w.indices]
            self._next += 1
            self._drop()

    def _drop(self) -> None:
        # The lowest frame a future window can read: its first raw index, or a reflection at the
        # end of the shot, which reaches back at most S - 1 frames further.
        keep_from = self._next * self.step - self.overlap - self.step + 1
        for i in [i for i in self._frames if i < keep_from]:
            del self._frames[i]

    def push(self, frame: F) -> list[tuple[Window, list[F]]]:
        self._frames[self._count] = frame
        self._count += 1
        return list(self._emit(None))

    def finish(self) -> list[tuple[Window, list[F]]]:
        if self._count == 0:
            return []
        out = list(self._emit(self._count))
        self._frames.clear()
        return out
