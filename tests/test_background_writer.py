"""The encoding thread of upscale_video: order, completeness, errors, early exit."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from semlens.upscaler import _BackgroundWriter

IMAGE = np.zeros((2, 2, 3), np.uint8)


def test_every_frame_is_written_in_order_on_another_thread() -> None:
    seen: list[tuple[int | None, int | None, str]] = []
    with _BackgroundWriter(lambda image, pts, d: seen.append((pts, d, threading.current_thread().name)),
                           size=2) as w:
        for i in range(50):
            w.put(IMAGE, i, 1)
    assert [p for p, _, _ in seen] == list(range(50)) and w.written == 50
    assert {name for _, _, name in seen} == {"semlens-encode"}


def test_a_write_error_reaches_the_producer() -> None:
    def fail(image: np.ndarray, pts: int | None, d: int | None) -> None:
        if pts == 3:
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        with _BackgroundWriter(fail, size=2) as w:
            for i in range(100):
                w.put(IMAGE, i, None)
    assert w.written == 3


def test_an_error_in_the_producer_stops_the_thread_without_draining() -> None:
    release = threading.Event()
    written: list[int | None] = []

    def slow(image: np.ndarray, pts: int | None, d: int | None) -> None:
        release.wait(5)
        written.append(pts)

    with pytest.raises(KeyboardInterrupt):
        with _BackgroundWriter(slow, size=4) as w:
            for i in range(3):
                w.put(IMAGE, i, None)
            release.set()
            raise KeyboardInterrupt
    assert not w._thread.is_alive()
    assert written == list(range(len(written)))  # whatever was written before the stop, in order


def test_unthreaded_writes_in_the_caller() -> None:
    names: list[str] = []
    with _BackgroundWriter(lambda image, pts, d: names.append(threading.current_thread().name), threaded=False) as w:
        for i in range(5):
            w.put(IMAGE, i, None)
    assert names == [threading.current_thread().name] * 5 and w.written == 5
