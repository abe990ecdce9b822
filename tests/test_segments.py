"""Segments of one video (semlens.segments), without Ray: the planner's index maths, the extractor
state hand-over, and that scanned, separately upscaled and joined segments give exactly the
frames, timestamps and audio of a single run. Also: ``--ray`` without Ray installed."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch
from clips import make_shots_clip, packet_dump, read_frames
from conftest import assert_one_line_error, invoke_cli, partials_under
from hypothesis import given, settings
from hypothesis import strategies as st

from semlens import pipeline
from semlens.io import probe
from semlens.segments import (
    Shot,
    SplitRule,
    choose_boundaries,
    extractor_state,
    join_segments,
    plan_segments,
    restore_extractor,
    scan_video,
    segment_windows,
    shots_from_cuts,
    upscale_segment,
    window_starts,
)
from semlens.semantics.lite import LiteExtractor
from semlens.upscaler import SemanticLensUpscaler
from semlens.windows import plan_windows

pytestmark = pytest.mark.usefixtures("one_thread")

# -- the planner ------------------------------------------------------------------------------


def test_shots_from_cuts() -> None:
    assert shots_from_cuts(10, []) == [Shot(0, 10)]
    assert shots_from_cuts(10, [7, 3, 3, 0, 12]) == [Shot(0, 3), Shot(3, 7), Shot(7, 10)]
    with pytest.raises(ValueError):
        shots_from_cuts(0, [])


def test_boundaries_are_window_starts_at_least_n_seconds_apart() -> None:
    # 25 fps, window 6 with overlap 1 (4 frames emitted per window), a cut at frame 30.
    shots = shots_from_cuts(80, [30])
    starts = window_starts(shots, 6, 1)
    assert starts[:9] == [0, 4, 8, 12, 16, 20, 24, 28, 30]
    times = [Fraction(i, 25) for i in range(80)]
    # Frame 28 is the first window start 1 s (25 frames) after 0; then 30 + 4k >= 28 + 25.
    assert choose_boundaries(times, starts, 1.0) == [0, 28, 54]
    assert choose_boundaries(times, starts, 100.0) == [0]
    with pytest.raises(ValueError):
        SplitRule(0)


def test_plan_refuses_boundaries_inside_a_window() -> None:
    shots = shots_from_cuts(20, [])
    with pytest.raises(ValueError, match="not window starts"):
        plan_segments(shots, [0, 5], 6, 1)
    with pytest.raises(ValueError, match="frame 0"):
        plan_segments(shots, [4], 6, 1)


windows = st.integers(min_value=1, max_value=12).flatmap(
    lambda t: st.tuples(st.just(t), st.integers(min_value=0, max_value=(t - 1) // 2)))


@settings(max_examples=200, deadline=None)
@given(lengths=st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=4), wo=windows,
       data=st.data())
def test_segments_split_the_single_plan_exactly(lengths: list[int], wo: tuple[int, int], data: st.DataObject) -> None:
    """Whatever the window starts chosen as boundaries, the segments' windows are the single run's
    windows, each exactly once and in order, and every segment reads every frame they need."""
    t, o = wo
    cuts = list(np.cumsum(lengths)[:-1])
    shots = shots_from_cuts(sum(lengths), cuts)
    starts = window_starts(shots, t, o)
    chosen = data.draw(st.lists(st.sampled_from(starts), unique=True))
    segments = plan_segments(shots, [0, *chosen], t, o)
    single = [(shot, w) for shot in shots for w in plan_windows(len(shot), t, o)]
    split = [pair for seg in segments for pair in segment_windows(seg.start, seg.stop, shots, t, o)]
    assert split == single
    assert [seg.start for seg in segments] == sorted({0, *chosen})
    assert segments[-1].stop == sum(lengths)
    for seg, nxt in zip(segments, segments[1:], strict=False):
        assert seg.stop == nxt.start
    for seg in segments:
        pairs = segment_windows(seg.start, seg.stop, shots, t, o)
        emitted = [shot.start + i for shot, w in pairs for i in w.emitted]
        assert emitted == list(range(seg.start, seg.stop))
        read = {shot.start + i for shot, w in pairs for i in w.indices}
        assert min(read) == seg.read_start and max(read) == seg.read_stop - 1


def test_extractor_state_resumes_the_stream_exactly() -> None:
    """A restored lite extractor (warm-started k-means) continues a stream bit for bit."""
    gen = torch.Generator().manual_seed(0)
    windows = [torch.rand(1, 4, 3, 12, 16, generator=gen) for _ in range(3)]
    whole = LiteExtractor()
    outputs = [whole(w) for w in windows]
    first = LiteExtractor()
    first(windows[0])
    resumed = restore_extractor(LiteExtractor(), extractor_state(first))
    for w, want in zip(windows[1:], outputs[1:], strict=True):
        got = resumed(w)
        assert torch.equal(got.masks, want.masks)
        assert torch.equal(got.instance_tokens, want.instance_tokens)
    cold = LiteExtractor()(windows[1])  # without the state the semantics differ
    assert not torch.equal(cold.instance_tokens, outputs[1].instance_tokens)


# -- scan, segments, join -----------------------------------------------------------------------


def _segments_run(src: Path, out: Path, up: SemanticLensUpscaler, seconds: float, *, fresh_state: bool = False,
                  **options: object) -> list:
    plan = scan_video(src, up, seconds)
    parts = []
    for seg in plan.segments:
        job = plan.job(seg.number)
        if fresh_state:
            up.extractor.reset()
            job.state = extractor_state(up.extractor)
        part = out.parent / f"part{seg.number}.mp4"
        assert upscale_segment(src, part, job, up, **options) == seg.stop - seg.start
        parts.append(part)
    join_segments(parts, out, source=src)
    return plan.segments


def test_joined_segments_equal_the_single_run(tmp_path: Path, tiny_x2_path: Path) -> None:
    src = make_shots_clip(tmp_path / "shots.mp4", shots=(13, 14, 13))
    up = SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu")
    single = tmp_path / "single.mkv"
    up.upscale_video(src, single, codec="ffv1")
    joined = tmp_path / "joined" / "joined.mkv"
    segments = _segments_run(src, joined, up, 0.3, codec="ffv1")
    assert len(segments) >= 4
    assert any(seg.start not in (0, 13, 27) for seg in segments)  # some start inside a shot
    a, a_pts, a_tb = read_frames(single)
    b, b_pts, b_tb = read_frames(joined)
    assert len(b) == 40 and b_pts == a_pts and b_tb == a_tb
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert packet_dump(joined, "audio") == packet_dump(single, "audio") != []
    assert probe(joined).colour == probe(single).colour
    assert partials_under(tmp_path) == []

    # The extractor's state is what makes segments that start inside a shot exact.
    control = tmp_path / "control" / "fresh.mkv"
    _segments_run(src, control, up, 0.3, fresh_state=True, codec="ffv1")
    c, _, _ = read_frames(control)
    inside = [s.start for s in segments if s.start not in (0, 13, 27)]
    assert not np.array_equal(c[inside[0]], a[inside[0]])


def test_one_window_plan_drives_the_single_run_and_the_scan(tmp_path: Path, tiny_x2_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The single run and the scan follow the same plan (:func:`semlens.pipeline.window_plan`):
    the same shot starts and windows, in the same order; the scan's shots and segment starts are
    read from it."""
    src = make_shots_clip(tmp_path / "shots.mp4", shots=(13, 14, 13), audio=False)
    up = SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu")
    runs: list[list[tuple[int, int]]] = []
    real = pipeline.window_plan

    def recorded(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        steps: list[tuple[int, int]] = []
        runs.append(steps)
        for step in real(*args, **kwargs):  # type: ignore[arg-type]
            steps.append((step.index, -1) if isinstance(step, pipeline.ShotStart)
                         else (step.shot_start, step.window.number))
            yield step

    monkeypatch.setattr(pipeline, "window_plan", recorded)
    plan = scan_video(src, up, 0.3)
    up.upscale_video(src, tmp_path / "single.mkv", codec="ffv1")
    assert len(runs) == 2 and runs[0] == runs[1]
    assert [first for first, number in runs[0] if number == -1] == [0, 13, 27] == [s.start for s in plan.shots]
    window_firsts = {first + number * (up.settings.window - 2 * up.settings.overlap)
                     for first, number in runs[0] if number >= 0}
    assert len(plan.segments) >= 4 and {seg.start for seg in plan.segments} <= window_firsts


def test_segments_batch_windows_and_equal_the_single_run(tmp_path: Path, tiny_x2_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """A segment sends ``batch_windows`` windows through the network together, as the single run
    does (a GPU worker batches), and its frames stay those of the single run."""
    src = make_shots_clip(tmp_path / "shots.mp4", shots=(13, 14, 13), audio=False)
    up = SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu", batch_windows=3)
    single = tmp_path / "single.mkv"
    up.upscale_video(src, single, codec="ffv1")
    sizes: list[int] = []
    batch = pipeline.WindowRunner.batch

    def counted(self: pipeline.WindowRunner, items: list) -> list:
        sizes.append(len(items))
        return batch(self, items)

    monkeypatch.setattr(pipeline.WindowRunner, "batch", counted)
    joined = tmp_path / "joined" / "joined.mkv"
    segments = _segments_run(src, joined, up, 0.5, codec="ffv1")
    assert len(segments) >= 2 and max(sizes) == 3
    a, a_pts, _ = read_frames(single)
    b, b_pts, _ = read_frames(joined)
    assert len(b) == 40 and b_pts == a_pts
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_joined_h264_with_b_frames_keeps_timestamps(tmp_path: Path, tiny_x2_path: Path) -> None:
    """A lossy codec with frame reordering: each segment starts with a key frame; the joined MP4
    has the single run's frame count and exact presentation times, and its audio."""
    src = make_shots_clip(tmp_path / "shots.mp4", shots=(20, 12))
    up = SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu")
    single = tmp_path / "single.mp4"
    up.upscale_video(src, single, codec="libx264", preset="medium", crf=30)
    joined = tmp_path / "joined" / "joined.mp4"
    _segments_run(src, joined, up, 0.25, codec="libx264", preset="medium", crf=30)
    _, a_pts, a_tb = read_frames(single)
    frames, b_pts, b_tb = read_frames(joined)
    assert len(frames) == 32 and b_pts == a_pts and b_tb == a_tb
    assert packet_dump(joined, "audio") == packet_dump(single, "audio") != []
    assert probe(joined).duration == pytest.approx(probe(single).duration, abs=0.002)


# -- without Ray --------------------------------------------------------------------------------


def test_ray_flag_without_ray_is_a_one_line_error(tmp_path: Path, tiny_x2_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # as if not installed: `import ray` fails
    src = make_shots_clip(tmp_path / "in.mp4", shots=(6,), audio=False)
    r = invoke_cli(["upscale", src, tmp_path / "out.mp4", "--model", tiny_x2_path, "--ray", "-q"])
    assert r.exit_code == 1
    assert_one_line_error(r.stderr, contains='pip install "semlens[distributed]"')
    assert not (tmp_path / "out.mp4").exists()


def test_segment_seconds_needs_ray(tmp_path: Path, tiny_x2_path: Path) -> None:
    src = make_shots_clip(tmp_path / "in.mp4", shots=(6,), audio=False)
    r = invoke_cli(["upscale", src, tmp_path / "out.mp4", "--model", tiny_x2_path, "--segment-seconds", "2"])
    assert r.exit_code == 2 and "--segment-seconds" in r.stderr and "needs --ray" in r.stderr


def test_importing_semlens_does_not_import_ray() -> None:
    code = "import sys, semlens, semlens_cli.main, semlens.segments; print('ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_segments_with_given_masks_equal_the_single_run(tmp_path: Path, tiny_x2_path: Path) -> None:
    """Each segment's windows get the masks of their own stream frames (the scan and the segment
    workers tell GivenMasks where each window is), so the joined file equals the single run."""
    from semlens.semantics import GivenMasks

    src = make_shots_clip(tmp_path / "shots.mp4", shots=(13, 14, 13))
    masks = []
    for i in range(40):
        m = np.zeros((24, 32), np.int64)
        m[3:12, i % 24:i % 24 + 8] = 1
        m[16:, (3 * i) % 20:(3 * i) % 20 + 12] = 2
        masks.append(m)
    up = SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu", extractor=GivenMasks(masks))
    single = tmp_path / "single.mkv"
    up.upscale_video(src, single, codec="ffv1")
    joined = tmp_path / "joined" / "joined.mkv"
    segments = _segments_run(src, joined, up, 0.3, codec="ffv1")
    assert any(seg.start not in (0, 13, 27) for seg in segments)
    a, _, _ = read_frames(single)
    b, _, _ = read_frames(joined)
    assert len(b) == 40 and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
