"""Sliding-window index maths: every frame emitted once, in order, with reflected context."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semlens.windows import WindowScheduler, check_window, plan_windows, reflect_index, window_at

windows = st.integers(min_value=1, max_value=16).flatmap(
    lambda t: st.tuples(st.just(t), st.integers(min_value=0, max_value=(t - 1) // 2))
)


@settings(max_examples=300, deadline=None)
@given(length=st.integers(min_value=1, max_value=80), wo=windows)
def test_plan_emits_every_frame_once_in_order(length: int, wo: tuple[int, int]) -> None:
    t, o = wo
    plan = plan_windows(length, t, o)
    emitted = [i for w in plan for i in w.emitted]
    assert emitted == list(range(length))
    for w in plan:
        # Full windows, but the shot's last reads only its context past the last emitted frame.
        assert len(w.indices) == (t if w is not plan[-1] else min(t, w.stop - w.start + 2 * o))
        assert all(0 <= i < length for i in w.indices)
        # The emitted positions hold exactly the emitted frames.
        assert [w.indices[w.emit_offset + j] for j in range(w.stop - w.start)] == list(w.emitted)


@settings(max_examples=300, deadline=None)
@given(length=st.integers(min_value=1, max_value=80), wo=windows)
def test_scheduler_matches_plan_and_bounds_memory(length: int, wo: tuple[int, int]) -> None:
    t, o = wo
    sched: WindowScheduler[int] = WindowScheduler(t, o)
    got = []
    peak = 0
    for i in range(length):
        got.extend(sched.push(i))
        peak = max(peak, sched.buffered())
    got.extend(sched.finish())
    plan = plan_windows(length, t, o)
    assert [w for w, _ in got] == plan
    for w, frames in got:
        assert frames == list(w.indices)  # frames are their own indices here
    step = t - 2 * o
    assert peak <= t + step + 1


def test_reflection_gives_edge_frames_full_context() -> None:
    assert [reflect_index(i, 5) for i in range(-3, 8)] == [3, 2, 1, 0, 1, 2, 3, 4, 3, 2, 1]
    assert reflect_index(-7, 1) == 0
    first = window_at(0, 100, 7, 2)
    assert first.indices == (2, 1, 0, 1, 2, 3, 4)
    last = plan_windows(10, 7, 2)[-1]
    assert last.indices[-1] in range(10) and 9 in last.emitted


def test_a_shot_shorter_than_a_window_reads_its_frames_and_their_context_only() -> None:
    assert plan_windows(1, 12, 1) == [window_at(0, 1, 12, 1)]
    assert window_at(0, 1, 12, 1).indices == (0, 0, 0)  # a single image: 3 frames, not 12
    assert window_at(0, 3, 12, 1).indices == (1, 0, 1, 2, 1)
    last = plan_windows(48, 12, 1)[-1]  # emits 40..47, reads 39..48 (48 reflected to 46)
    assert (last.start, last.stop, last.indices) == (40, 48, (39, 40, 41, 42, 43, 44, 45, 46, 47, 46))
    assert len(plan_windows(50, 12, 1)[-1].indices) == 12  # a last window that emits a full step


@pytest.mark.parametrize("t,o", [(0, 0), (4, 2), (5, -1)])
def test_bad_windows_are_refused(t: int, o: int) -> None:
    with pytest.raises(ValueError):
        check_window(t, o)
