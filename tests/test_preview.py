"""A part of a video: --preview SECONDS from --start TIME, and --max-frames, with the copied audio
and subtitles trimmed to the video (and moved with it)."""

from __future__ import annotations

import av
import pytest
from clips import make_clip, packet_dump, read_frames
from conftest import invoke_cli

from semlens.io import probe

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ("--device", "cpu", "--threads", "1", "--preset", "ultrafast")


def audio_span(path) -> tuple[float, float]:
    """(first packet's start, last packet's end) of the audio stream, in seconds."""
    with av.open(str(path)) as c:
        stream = c.streams.audio[0]
        packets = [p for p in c.demux(stream) if p.size]
        first, last = packets[0], packets[-1]
        return float(first.pts * first.time_base), float((last.pts + last.duration) * last.time_base)


def video_times(path) -> list[float]:
    _, stamps, tb = read_frames(path)
    return [float(p * tb) for p in stamps]


@pytest.mark.parametrize("suffix", [".mp4", ".mkv"])
def test_max_frames_trims_the_audio(tmp_path, tiny_x2_path, suffix):
    src = make_clip(tmp_path / f"in{suffix}", frames=40, size=(32, 24), fps=25, audio=True)
    assert audio_span(src)[1] == pytest.approx(1.6, abs=0.03)
    dst = tmp_path / f"out{suffix}"
    out = invoke_cli(["upscale", str(src), str(dst), "--model", str(tiny_x2_path), "--max-frames", "6", *FAST])
    assert out.exit_code == 0, out.stderr
    assert video_times(dst) == pytest.approx([i / 25 for i in range(6)])
    first, end = audio_span(dst)
    assert first <= 0.001
    assert 0.24 - 0.001 <= end <= 0.24 + 1024 / 48000 + 0.001  # up to the video's end, within one AAC packet


def test_preview_from_a_start_time(tmp_path, tiny_x2_path):
    src = make_clip(tmp_path / "in.mkv", frames=50, size=(32, 24), fps=25, audio=True, subtitles=True)
    whole_audio = packet_dump(src, "audio")
    dst = tmp_path / "preview.mkv"
    out = invoke_cli(["upscale", str(src), str(dst), "--model", str(tiny_x2_path), "--start", "0:00.8",
                      "--preview", "0.4", *FAST])
    assert out.exit_code == 0, out.stderr
    images, _, _ = read_frames(dst)
    assert len(images) == 10  # frames 20 to 29
    assert video_times(dst) == pytest.approx([i / 25 for i in range(10)], abs=0.001)
    info = probe(dst)
    assert 0.4 - 0.001 <= info.duration <= 0.4 + 2 * 1024 / 48000  # the video's, or the last audio packet's
    # the audio is the source's from 0.8 s, moved to 0, and ends with the video
    kept = packet_dump(dst, "audio")
    first, end = audio_span(dst)
    assert -0.001 <= first < 1024 / 48000
    assert 0.4 - 0.001 <= end <= 0.4 + 1024 / 48000 + 0.001
    by_payload = {payload: t for t, payload in whole_audio}
    for t, payload in kept:
        assert by_payload[payload] == pytest.approx(t + 0.8, abs=0.001)
    # the subtitle cue showing at 0.8 s (the first: 0 to 1 s) is kept from there, the next one too
    cues = packet_dump(dst, "subtitle")
    assert [t for t, _ in cues] == pytest.approx([0.0, 0.2], abs=0.002)
    assert cues[0][1] == b"Hello from semlens"


def test_preview_of_the_first_seconds_keeps_times(tmp_path, tiny_x2_path):
    src = make_clip(tmp_path / "in.mp4", frames=30, size=(32, 24), fps=25, audio=True)
    dst = tmp_path / "out.mp4"
    out = invoke_cli(["upscale", str(src), str(dst), "--model", str(tiny_x2_path), "--preview", "0.2", *FAST])
    assert out.exit_code == 0, out.stderr
    assert video_times(dst) == pytest.approx([i / 25 for i in range(5)])
    assert audio_span(dst)[1] <= 0.2 + 1024 / 48000 + 0.001


@pytest.mark.parametrize(("args", "words"), [
    (["--preview", "0"], "--preview"),
    (["--start", "x"], "--start"),
    (["--start", "5"], "past the end"),
])
def test_bad_preview_options_are_usage_errors(tmp_path, tiny_x2_path, args, words):
    src = make_clip(tmp_path / "in.mp4", frames=4, size=(32, 24))
    out = invoke_cli(["upscale", str(src), str(tmp_path / "out.mp4"), "--model", str(tiny_x2_path), *args, *FAST])
    assert out.exit_code == 2, out.stderr
    assert words in out.stderr


@pytest.mark.parametrize(("trim", "end"), [(True, 0.24), (False, 1.6)])
def test_joined_segments_trim_the_audio_when_asked(tmp_path, trim, end):
    from semlens.segments import join_segments

    src = make_clip(tmp_path / "in.mp4", frames=40, size=(32, 24), fps=25, audio=True)
    part = make_clip(tmp_path / "part.mp4", frames=6, size=(64, 48), fps=25)  # the first 6 frames, upscaled
    dst = tmp_path / "joined.mp4"
    assert join_segments([part], dst, source=src, trim_aux=trim) == 6
    assert audio_span(dst)[1] == pytest.approx(end, abs=1024 / 48000 + 0.001)
