"""Progress display: a rich bar on a terminal, plain lines otherwise, nothing when quiet."""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["DeferredInterrupt", "FrameProgress", "console"]


def console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr)


class FrameProgress:
    """Per-file frame progress (frames, fps, ETA) plus an overall count of files."""

    def __init__(self, enabled: bool = True, interval: float = 5.0) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.interval = interval
        self._bar: Any = None
        self._task: Any = None
        self._name = ""
        self._files = 0
        self._last = 0.0
        self._started = 0.0

    def __enter__(self) -> FrameProgress:
        if self.enabled and self.tty:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            self._bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[fps]} fps"), TimeElapsedColumn(), TimeRemainingColumn(),
                                 console=console(stderr=True), transient=False)
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def start_file(self, name: str) -> None:
        self._files += 1
        self._name = name
        self._started = time.perf_counter()
        self._last = self._started
        if self._bar is not None:
            self._task = self._bar.add_task(f"[{self._files}] {name}", total=None, fps="-")

    def update(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        fps = done / max(now - self._started, 1e-9)
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done, total=total, fps=f"{fps:.2f}")
        elif not self.tty and now - self._last >= self.interval:
            self._last = now
            of = f"/{total}" if total else ""
            print(f"{self._name}: {done}{of} frames, {fps:.2f} fps", file=sys.stderr, flush=True)

    def finish_file(self) -> None:
        if self._bar is not None and self._task is not None:
            task = self._bar.tasks[-1]
            self._bar.update(self._task, total=task.completed)


class DeferredInterrupt:
    """Turns Ctrl-C (SIGINT) and SIGTERM into a flag checked between frames, so that the run stops
    at a safe point (never inside a decoder or muxer callback, where the exception could be
    swallowed) and removes its partial output: :meth:`check` raises :class:`KeyboardInterrupt`
    after SIGINT and :class:`~semlens.interrupts.Terminated` after SIGTERM. A second signal
    interrupts at once. A signal that arrived after the last check is raised when the block ends."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self) -> None:
        self.requested: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> DeferredInterrupt:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                signum = getattr(signal, name)
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested is not None:
            self._raise(signum)
        self.requested = signum

    @staticmethod
    def _raise(signum: int) -> None:
        import signal

        from semlens.interrupts import Terminated

        if signum == signal.SIGINT:
            raise KeyboardInterrupt
        raise Terminated(signum)

    def check(self) -> None:
        if self.requested is not None:
            self._raise(self.requested)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        import signal

        for signum, previous in self._previous.items():
            # None: the previous handler was not installed from Python; the default is the best guess
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()
        if exc_type is None:
            self.check()
