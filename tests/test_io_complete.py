"""Which outputs ``--skip-existing`` may trust: whole files only, never one cut short."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from clips import make_clip

from semlens.io import VideoWriter, is_complete_output, open_source
from semlens.upscaler import is_complete_output as from_the_upscaler


def _upscale(src: Path, dst: Path, scale: int = 2) -> Path:
    """``dst``: ``src`` doubled by pixel repetition, written the way the upscaler writes."""
    with open_source(src) as reader:
        info = reader.info
        with VideoWriter(dst, source=info, source_path=src, width=info.width * scale,
                         height=info.height * scale) as writer:
            for frame in reader:
                writer.write(np.repeat(np.repeat(frame.image, scale, axis=0), scale, axis=1), frame.pts, frame.duration)
    return dst


def _cut(path: Path, count: int) -> Path:
    data = path.read_bytes()
    cut = path.with_name(f"cut{count}-{path.name}")
    cut.write_bytes(data[: len(data) - count])
    return cut


def test_the_upscaler_still_offers_it():
    assert from_the_upscaler is is_complete_output


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".mkv", ".ts"])
def test_a_finished_output_is_complete(tmp_path, suffix):
    src = make_clip(tmp_path / f"in{suffix}", frames=10, audio=True, preset="medium")
    dst = _upscale(src, tmp_path / f"out{suffix}")
    assert is_complete_output(src, dst, 2)
    assert not is_complete_output(src, dst, 4)  # not the size asked for


@pytest.mark.parametrize("suffix", [".mp4", ".mov", ".ts"])
@pytest.mark.parametrize("count", [8, 40, 200])
def test_an_output_whose_last_frame_was_cut_is_not_complete(tmp_path, suffix, count):
    # noise: large frames, so the cut falls inside the last video packet (every packet still
    # demuxes; only decoding shows that the last frame is damaged)
    src = make_clip(tmp_path / f"in{suffix}", frames=10, preset="medium", pattern="noise")
    dst = _upscale(src, tmp_path / f"out{suffix}")
    assert is_complete_output(src, dst, 2)
    assert not is_complete_output(src, _cut(dst, count), 2)


def test_an_output_missing_its_last_frame_is_not_complete(tmp_path):
    src = make_clip(tmp_path / "in.mkv", frames=10, preset="medium", pattern="noise")
    dst = _upscale(src, tmp_path / "out.mkv")
    assert not is_complete_output(src, _cut(dst, 200), 2)


# (the last 8 bytes of a Matroska file are part of its seek index, not of a frame or a sample)
@pytest.mark.parametrize(("suffix", "count"), [(s, c) for s in (".mp4", ".mov", ".mkv", ".ts") for c in (8, 50, 300)
                                               if (s, c) != (".mkv", 8)])
def test_an_output_whose_audio_was_cut_is_not_complete(tmp_path, suffix, count):
    # a small clip: the muxer puts the last audio packets after the last video frame
    src = make_clip(tmp_path / f"in{suffix}", frames=10, audio=True, preset="medium")
    dst = _upscale(src, tmp_path / f"out{suffix}")
    assert is_complete_output(src, dst, 2)
    assert not is_complete_output(src, _cut(dst, count), 2)


def test_an_output_without_the_audio_it_was_written_with_is_not_complete(tmp_path):
    src = make_clip(tmp_path / "in.mkv", frames=10, audio=True)
    other = make_clip(tmp_path / "other.mkv", frames=10, audio=True, sample_rate=44100)
    dst = _upscale(src, tmp_path / "out.mkv")
    assert is_complete_output(src, dst, 2)
    assert not is_complete_output(other, dst, 2)  # its audio ends elsewhere


def test_unreadable_outputs_are_not_complete(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=4)
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 100)
    assert not is_complete_output(src, junk, 2)
    assert not is_complete_output(src, tmp_path / "missing.mp4", 2)
