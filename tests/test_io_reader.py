"""Reading real encoded clips: probe(), VideoReader, open_source()."""

from __future__ import annotations

import tracemalloc
from fractions import Fraction

import numpy as np
import pytest
from clips import make_clip, pattern_frame

from semlens.io import Frame, VideoInfo, VideoReader, is_video_file, open_source, probe


def _psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def test_probe_reports_stream_facts(tmp_path):
    clip = make_clip(
        tmp_path / "in.mp4",
        frames=10,
        size=(64, 48),
        fps=25,
        audio=True,
        subtitles=True,
        metadata={"title": "A clip"},
        video_metadata={"handler_name": "Semlens video"},
    )
    info = probe(clip)
    assert isinstance(info, VideoInfo)
    assert (info.width, info.height) == (64, 48)
    assert info.pix_fmt == "yuv420p" and info.bit_depth == 8
    assert info.codec == "h264"
    assert info.frame_count == 10
    assert info.fps == 25
    assert isinstance(info.time_base, Fraction) and info.time_base > 0
    assert info.duration == pytest.approx(0.4, abs=0.05)
    assert info.has_audio and info.audio_codecs == ("aac",)
    assert info.has_subtitles and info.subtitle_codecs == ("mov_text",)
    assert info.rotation == 0 and info.display_matrix is None
    assert info.metadata["title"] == "A clip"
    assert info.video_metadata["handler_name"] == "Semlens video"
    assert set(info.colour) == {"range", "primaries", "trc", "colorspace"}


def test_probe_colour_tags(tmp_path):
    clip = make_clip(
        tmp_path / "bt709.mkv", colour=dict(color_range=1, color_primaries=1, color_trc=1, colorspace=1)
    )
    info = probe(clip)
    assert (info.color_range, info.color_primaries, info.color_trc, info.colorspace) == (1, 1, 1, 1)
    assert info.colour == {"range": "tv", "primaries": "bt709", "trc": "bt709", "colorspace": "bt709"}


def test_frames_pts_and_pixels(tmp_path):
    clip = make_clip(tmp_path / "in.mkv", frames=12, size=(64, 48), codec="ffv1", pix_fmt="yuv444p")
    with open_source(clip) as reader:
        assert isinstance(reader, VideoReader)
        frames = list(reader)
    assert len(frames) == 12
    assert all(isinstance(f, Frame) for f in frames)
    assert [f.index for f in frames] == list(range(12))
    pts = [f.pts for f in frames]
    assert pts == sorted(pts) and len(set(pts)) == 12
    times = [f.time for f in frames]
    assert times == pytest.approx([i / 25 for i in range(12)], abs=1e-3)
    for i, f in enumerate(frames):
        assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8
        # ffv1 is lossless: only the RGB<->YUV conversion separates us from the pattern
        assert _psnr(f.image, pattern_frame(i, 64, 48)) > 40


def test_ten_bit_source_is_read_as_uint16(tmp_path):
    clip = make_clip(tmp_path / "ten.mkv", frames=4, codec="ffv1", pix_fmt="yuv444p10le")
    with open_source(clip) as reader:
        assert reader.info.bit_depth == 10 and reader.info.is_high_bit_depth
        frames = list(reader)
    img = frames[2].image
    assert img.dtype == np.uint16 and img.shape == (48, 64, 3)
    ref = pattern_frame(2, 64, 48, dtype=np.uint16)
    # full 0..65535 scale (not 0..1023), and close to the 16-bit pattern
    assert img.max() > 50000
    assert _psnr(img, ref, peak=65535.0) > 45
    # more levels than 8 bits can hold: 10-bit was not squashed
    assert len(np.unique(img[..., 0] >> 6)) > len(np.unique(img[..., 0] >> 8))


def test_rotation_is_reported_not_applied(tmp_path):
    clip = make_clip(tmp_path / "rot.mp4", frames=3, size=(64, 48), rotation=90)
    with open_source(clip) as reader:
        assert reader.info.rotation == 90
        assert reader.info.display_matrix is not None and len(reader.info.display_matrix) == 9
        frame = next(iter(reader))
    assert frame.image.shape == (48, 64, 3)  # pixels as stored


def test_vfr_pts_are_kept(tmp_path):
    pts = [0, 1, 2, 4, 7, 8, 12]
    clip = make_clip(tmp_path / "vfr.mkv", frames=len(pts), pts=pts, time_base=Fraction(1, 25))
    with open_source(clip) as reader:
        times = [f.time for f in reader]
    assert times == pytest.approx([p / 25 for p in pts], abs=1e-3)


def test_reader_is_reiterable_and_lazy(tmp_path):
    clip = make_clip(tmp_path / "in.mp4", frames=6)
    reader = open_source(clip)
    it = iter(reader)
    first = next(it)
    assert first.index == 0 and reader.frames_read == 1  # nothing decoded ahead of the consumer
    it.close()
    assert len(list(reader)) == 6  # a second pass starts again from the first frame
    reader.close()
    reader.close()  # idempotent


def test_memory_does_not_grow_with_length(tmp_path):
    clip = make_clip(tmp_path / "long.mp4", frames=150, size=(64, 48))
    frame_bytes = 64 * 48 * 3
    with open_source(clip) as reader:
        tracemalloc.start()
        try:
            count = 0
            for frame in reader:
                count += 1
                del frame
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert count == 150
    assert peak < 40 * frame_bytes  # a handful of frames, not the whole clip (150 frames)


def test_is_video_file(tmp_path):
    clip = make_clip(tmp_path / "Clip.MKV", frames=2)
    assert is_video_file(clip)
    assert not is_video_file(tmp_path / "missing.mp4")
    (tmp_path / "notes.txt").write_text("hi")
    assert not is_video_file(tmp_path / "notes.txt")
