"""Writing real files: timing kept, streams remuxed, metadata carried, pixel formats chosen."""

from __future__ import annotations

import errno
import io
import os
import warnings
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from clips import make_clip, packet_dump, pattern_frame, read_frames

from semlens.errors import OutputError
from semlens.io import (
    ImageSequenceWriter,
    OutputWarning,
    PlanarImage,
    VideoWriter,
    atomic_output,
    choose_pix_fmt,
    list_images,
    open_source,
    probe,
    read_image,
)
from semlens.io.writer import OutputFile


def transcode(src: Path, dst: Path, scale: int = 1, **kwargs) -> VideoWriter:
    """Read ``src``, upscale by pixel repetition, write ``dst`` with the library's writer."""
    with open_source(src) as reader:
        info = reader.info
        with atomic_output(dst, source=src) as tmp:
            with VideoWriter(
                tmp,
                source=info,
                source_path=src,
                width=info.width * scale,
                height=info.height * scale,
                **kwargs,
            ) as writer:
                for frame in reader:
                    image = frame.image
                    if scale != 1:
                        image = np.repeat(np.repeat(image, scale, axis=0), scale, axis=1)
                    writer.write(image, frame.pts, frame.duration)
    return writer


def _times(path: Path) -> list[Fraction]:
    _, pts, tb = read_frames(path)
    return [p * tb for p in pts]


def _psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(peak**2 / mse)


def test_round_trip_keeps_count_and_pts(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=12)
    dst = tmp_path / "out.mp4"
    writer = transcode(src, dst)
    assert writer.frames_written == 12
    _, src_pts, src_tb = read_frames(src)
    images, out_pts, out_tb = read_frames(dst)
    assert len(images) == 12
    assert out_tb == src_tb and out_pts == src_pts  # same time base, identical pts
    info = probe(dst)
    assert info.codec == "h264" and info.pix_fmt == "yuv420p" and info.frame_count == 12
    assert _psnr(images[6], read_frames(src)[0][6]) > 30


def test_x264_encodes_on_frame_threads(tmp_path):
    # Not PyAV's default slice threads: slice boundaries cost compression at the same crf.
    with VideoWriter(tmp_path / "out.mp4", width=64, height=48) as writer:
        assert writer._stream.codec_context.thread_type == av.codec.context.ThreadType.FRAME
        for i in range(3):
            writer.write(pattern_frame(i, 64, 48), i)
    assert len(read_frames(tmp_path / "out.mp4")[0]) == 3


def test_upscaled_size_output(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=6, size=(64, 48))
    dst = tmp_path / "out x2 ü.mp4"  # spaces and non-ASCII in the path
    transcode(src, dst, scale=2)
    info = probe(dst)
    assert (info.width, info.height) == (128, 96)
    assert info.frame_count == 6


@pytest.mark.parametrize("preset", ["ultrafast", "medium"])  # medium: B-frames, packet reordering
@pytest.mark.parametrize(
    ("suffix", "time_base", "pts"),
    [
        (".mp4", Fraction(1, 25), [0, 1, 2, 4, 7, 8, 12, 13, 14, 20]),
        (".mkv", Fraction(1, 1000), [0, 40, 80, 160, 280, 320, 480, 530, 555, 900]),
    ],
)
def test_vfr_stays_vfr_with_identical_pts(tmp_path, suffix, time_base, pts, preset):
    src = make_clip(tmp_path / f"vfr{suffix}", frames=len(pts), pts=pts, time_base=time_base)
    dst = tmp_path / f"out{suffix}"
    transcode(src, dst, scale=2, preset=preset)
    src_times, out_times = _times(src), _times(dst)
    assert out_times == src_times == [p * time_base for p in pts]
    gaps = {b - a for a, b in zip(out_times, out_times[1:])}
    assert len(gaps) > 2  # still variable
    # the container's duration is kept too
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        assert b.duration == pytest.approx(a.duration, abs=2000)  # microseconds


def test_audio_copied_packet_for_packet(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=12, audio=True, audio_language="deu")
    dst = tmp_path / "out.mp4"
    writer = transcode(src, dst, scale=2)
    assert writer.copied_streams and not writer.skipped_streams
    src_info, out_info = probe(src), probe(dst)
    assert out_info.audio_codecs == src_info.audio_codecs == ("aac",)
    src_packets, out_packets = packet_dump(src, "audio"), packet_dump(dst, "audio")
    assert len(out_packets) == len(src_packets) > 10
    assert [p for _, p in out_packets] == [p for _, p in src_packets]  # byte-identical payloads
    assert [t for t, _ in out_packets] == pytest.approx([t for t, _ in src_packets], abs=1e-6)
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        sa, sb = a.streams.audio[0], b.streams.audio[0]
        assert sb.language == "deu"
        assert sb.codec_context.sample_rate == sa.codec_context.sample_rate
        assert float(sb.duration * sb.time_base) == pytest.approx(float(sa.duration * sa.time_base), abs=1e-3)


def test_audio_is_interleaved_while_writing(tmp_path):
    """Copied packets are read as the video advances, not all at the end (bounded memory)."""
    src = make_clip(tmp_path / "in.mkv", frames=30, audio=True)
    total = len(packet_dump(src, "audio"))
    progress = []
    with (
        open_source(src) as reader,
        VideoWriter(tmp_path / "out.mkv", source=reader.info, source_path=src, width=64, height=48) as writer,
    ):
        for frame in reader:
            writer.write(frame.image, frame.pts)
            progress.append(writer.copied_packets)
    assert writer.copied_packets == total
    assert 0 < progress[len(progress) // 2] < total  # half-way through: about half of the audio
    assert progress == sorted(progress)


def test_audio_into_mkv_keeps_payloads(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=8, audio=True)
    dst = tmp_path / "out.mkv"
    transcode(src, dst)
    assert [p for _, p in packet_dump(dst, "audio")] == [p for _, p in packet_dump(src, "audio")]


def test_no_audio_drops_it(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=6, audio=True)
    dst = tmp_path / "out.mp4"
    transcode(src, dst, copy_audio=False)
    info = probe(dst)
    assert not info.has_audio
    assert info.frame_count == 6


def test_subtitles_copied_mkv(tmp_path):
    src = make_clip(tmp_path / "in.mkv", frames=10, audio=True, subtitles=True, subtitle_language="fra")
    dst = tmp_path / "out.mkv"
    transcode(src, dst)
    info = probe(dst)
    assert info.subtitle_codecs == ("subrip",) or info.subtitle_codecs == ("srt",)
    assert info.has_audio
    assert packet_dump(dst, "subtitle") == packet_dump(src, "subtitle")
    assert [text for _, text in packet_dump(dst, "subtitle")] == [
        b"Hello from semlens",
        "Second cue, with ümlauts".encode(),
    ]
    with av.open(str(dst)) as c:
        assert c.streams.subtitles[0].language == "fra"


def test_subtitles_copied_mp4(tmp_path):
    src = make_clip(tmp_path / "in.mp4", frames=10, subtitles=True)
    dst = tmp_path / "out.mp4"
    transcode(src, dst)
    assert probe(dst).subtitle_codecs == ("mov_text",)

    def texts(path: Path) -> list[bytes]:  # the mp4 muxer adds empty filler samples on its own
        return [p for _, p in packet_dump(path, "subtitle") if len(p) > 2]

    assert texts(dst) == texts(src) and len(texts(src)) == 2


def test_subtitles_the_container_cannot_hold_are_skipped_with_a_warning(tmp_path):
    src = make_clip(tmp_path / "in.mkv", frames=6, audio=True, subtitles=True)
    dst = tmp_path / "out.mp4"
    with pytest.warns(OutputWarning, match="subtitle"):
        writer = transcode(src, dst)
    assert writer.skipped_streams and "subtitle" in writer.skipped_streams[0]
    info = probe(dst)
    assert info.has_audio and not info.has_subtitles


def test_stream_the_muxer_refuses_at_header_time_is_dropped(tmp_path):
    # the mov muxer accepts an Opus stream when it is added but refuses it when writing the header
    src = make_clip(tmp_path / "in.mkv", frames=6, audio=True, audio_codec="libopus")
    dst = tmp_path / "out.mov"
    with pytest.warns(OutputWarning, match="opus not copied"):
        writer = transcode(src, dst)
    assert writer.skipped_streams == ["#1 audio opus"] and writer.copied_streams == []
    info = probe(dst)
    assert not info.has_audio and info.frame_count == 6


def test_ten_bit_source_written_ten_bit_by_default(tmp_path):
    src = make_clip(tmp_path / "ten.mp4", frames=6, pix_fmt="yuv420p10le", pattern="gradient")
    dst = tmp_path / "out.mp4"
    writer = transcode(src, dst)
    assert writer.pix_fmt == "yuv420p10le"
    info = probe(dst)
    assert info.pix_fmt == "yuv420p10le" and info.bit_depth == 10
    with open_source(dst) as reader:
        frames = list(reader)
    image = frames[3].image
    assert image.dtype == np.uint16
    assert _psnr(image, read_frames(src)[0][3], peak=65535.0) > 35
    # the smooth gradient keeps levels between the 8-bit steps
    assert len(np.unique(image[..., 1] >> 6)) > 1.5 * len(np.unique(image[..., 1] >> 8))


@pytest.mark.parametrize(
    ("codec", "suffix", "expected"), [("libx265", ".mp4", "yuv420p10le"), ("ffv1", ".mkv", "yuv444p10le")]
)
def test_ten_bit_other_codecs(tmp_path, codec, suffix, expected):
    src = make_clip(tmp_path / "ten.mkv", frames=4, codec="ffv1", pix_fmt="yuv444p10le")
    dst = tmp_path / f"out{suffix}"
    transcode(src, dst, codec=codec)
    assert probe(dst).pix_fmt == expected


def test_pix_fmt_choices():
    assert choose_pix_fmt("libx264", bit_depth=8, width=64, height=48) == "yuv420p"
    assert choose_pix_fmt("libx264", bit_depth=10, width=64, height=48) == "yuv420p10le"
    assert choose_pix_fmt("h264", bit_depth=8, width=64, height=48, requested="yuv444p") == "yuv444p"
    assert choose_pix_fmt("ffv1", bit_depth=12, width=64, height=48) == "yuv444p12le"
    with pytest.warns(OutputWarning, match="8-bit"):
        assert choose_pix_fmt("libvpx-vp9", bit_depth=10, width=64, height=48) == "yuv420p"
    with pytest.raises(OutputError, match="cannot encode pixel format"):
        choose_pix_fmt("libsvtav1", width=64, height=48, requested="yuv444p")
    with pytest.raises(OutputError, match="unknown video encoder"):
        choose_pix_fmt("no-such-codec", width=64, height=48)


def test_odd_size_falls_back_to_yuv444(tmp_path):
    src = make_clip(tmp_path / "odd.mkv", frames=4, size=(63, 47), pix_fmt="yuv444p")
    dst = tmp_path / "out.mp4"
    with pytest.warns(OutputWarning, match="odd"):
        writer = transcode(src, dst)
    assert writer.pix_fmt == "yuv444p"
    info = probe(dst)
    assert (info.width, info.height) == (63, 47)  # displayed size exact, no padding


def test_odd_size_with_explicit_420_is_refused(tmp_path):
    with pytest.raises(OutputError, match="even width and height"):
        VideoWriter(tmp_path / "x.mp4", width=63, height=47, pix_fmt="yuv420p")
    assert not (tmp_path / "x.mp4").exists()


def test_rotation_and_metadata_carried(tmp_path):
    src = make_clip(
        tmp_path / "rot.mp4",
        frames=4,
        rotation=90,
        metadata={"title": "Holiday", "comment": "kept"},
        video_metadata={"handler_name": "Camera"},
    )
    dst = tmp_path / "out.mp4"
    transcode(src, dst, scale=2)
    src_info, info = probe(src), probe(dst)
    assert info.rotation == src_info.rotation == 90
    assert info.display_matrix == src_info.display_matrix
    assert (info.width, info.height) == (128, 96)  # pixels not rotated
    assert info.metadata["title"] == "Holiday" and info.metadata["comment"] == "kept"
    assert info.video_metadata["handler_name"] == "Camera"


def test_colour_tags_carried(tmp_path):
    colour = dict(color_range=1, color_primaries=1, color_trc=1, colorspace=1)
    src = make_clip(tmp_path / "bt709.mkv", frames=4, codec="ffv1", pix_fmt="yuv444p", colour=colour)
    dst = tmp_path / "out.mkv"
    transcode(src, dst, codec="ffv1", pix_fmt="yuv444p")
    info = probe(dst)
    assert info.colour == {"range": "tv", "primaries": "bt709", "trc": "bt709", "colorspace": "bt709"}
    # converted back to YUV with the BT.709 matrix: the lossless round trip is (almost) exact
    a, b = read_frames(src)[0], read_frames(dst)[0]
    assert _psnr(a[2], b[2]) > 45


def test_planar_layout_follows_the_source_colours_and_pixel_format(tmp_path):
    colour = dict(color_range=2, color_primaries=1, color_trc=1, colorspace=1)
    src = make_clip(tmp_path / "bt709.mkv", frames=2, codec="ffv1", pix_fmt="yuv444p", colour=colour)
    with open_source(src) as reader:
        info = reader.info
    with VideoWriter(tmp_path / "a.mp4", width=64, height=48, source=info) as writer:
        layout = writer.planar_layout
        assert (layout.pix_fmt, layout.depth, layout.subsampled, layout.full_range) == ("yuv420p", 8, True, True)
        assert (layout.kr, layout.kb) == (0.2126, 0.0722) and layout.shape == (72, 64)
        writer.write(PlanarImage(np.full((72, 64), 128, np.uint8), "yuv420p"), 0)
    with VideoWriter(tmp_path / "b.mkv", width=63, height=48, codec="ffv1") as writer:  # untagged: BT.601
        layout = writer.planar_layout
        assert (layout.pix_fmt, layout.kr, layout.kb, layout.full_range) == ("yuv444p", 0.299, 0.114, False)
        assert layout.shape == (3, 48, 63)
        writer.write(pattern_frame(0, 63, 48), 0)
    with VideoWriter(tmp_path / "c.mkv", width=64, height=48, codec="ffv1", pix_fmt="yuv422p") as writer:
        assert writer.planar_layout is None  # a format producers do not make: RGB only
        writer.write(pattern_frame(0, 64, 48), 0)


def test_planar_frames_of_the_wrong_kind_are_refused(tmp_path):
    with VideoWriter(tmp_path / "out.mp4", width=64, height=48) as writer:
        with pytest.raises(ValueError, match="shape"):
            writer.write(PlanarImage(np.zeros((48, 64), np.uint8), "yuv420p"))
        with pytest.raises(ValueError, match="uint8"):
            writer.write(PlanarImage(np.zeros((72, 64), np.uint16), "yuv420p"))
        with pytest.raises(ValueError, match="yuv444p"):
            writer.write(PlanarImage(np.zeros((3, 48, 64), np.uint8), "yuv444p"))
        writer.write(pattern_frame(0, 64, 48), 0)


def test_writer_without_source_and_pts_synthesis(tmp_path):
    dst = tmp_path / "gen.mkv"
    with VideoWriter(dst, width=32, height=16, fps=10, codec="ffv1") as writer:
        for i in range(5):
            writer.write(pattern_frame(i, 32, 16))  # no pts: one frame apart
        assert writer.time_base == Fraction(1, 10)
    assert _times(dst) == [Fraction(i, 10) for i in range(5)]


def test_non_increasing_pts_is_moved_with_a_warning(tmp_path):
    dst = tmp_path / "dup.mkv"
    with VideoWriter(dst, width=32, height=16, fps=25, time_base=Fraction(1, 1000), codec="ffv1") as writer:
        writer.write(pattern_frame(0, 32, 16), 0)
        writer.write(pattern_frame(1, 32, 16), 40)
        with pytest.warns(OutputWarning, match="non-increasing"):
            writer.write(pattern_frame(2, 32, 16), 40)
    assert _times(dst) == [0, Fraction(40, 1000), Fraction(41, 1000)]


def test_uint16_frames_into_eight_bit_output(tmp_path):
    dst = tmp_path / "deep.mkv"
    with VideoWriter(dst, width=32, height=16, codec="ffv1", pix_fmt="yuv444p") as writer:
        writer.write(pattern_frame(0, 32, 16, dtype=np.uint16))
    images = read_frames(dst)[0]
    assert _psnr(images[0], pattern_frame(0, 32, 16)) > 35


def test_bad_frames_and_codecs(tmp_path):
    with VideoWriter(tmp_path / "a.mkv", width=32, height=16, codec="ffv1") as writer:
        with pytest.raises(ValueError, match="opened for 32x16"):
            writer.write(np.zeros((16, 33, 3), np.uint8))
        with pytest.raises(ValueError, match="uint8 or uint16"):
            writer.write(np.zeros((16, 32, 3), np.float32))
        with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
            writer.write(np.zeros((16, 32), np.uint8))
        writer.write(np.zeros((16, 32, 3), np.uint8))
    with pytest.raises(OutputError, match="unknown video encoder"):
        VideoWriter(tmp_path / "b.mp4", width=32, height=16, codec="nope")
    with pytest.raises(OutputError, match="cannot hold"):
        VideoWriter(tmp_path / "c.webm", width=32, height=16, codec="ffv1")
    with pytest.raises(OutputError, match="no frame"):
        with VideoWriter(tmp_path / "d.mkv", width=32, height=16, codec="ffv1"):
            pass


def test_other_codecs_encode(tmp_path):
    src = make_clip(tmp_path / "in.mkv", frames=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error", OutputWarning)
        transcode(src, tmp_path / "av1.mkv", codec="av1", preset="ultrafast", crf=40)
    info = probe(tmp_path / "av1.mkv")
    assert info.codec == "av1" and info.frame_count in (None, 4)
    assert len(read_frames(tmp_path / "av1.mkv")[0]) == 4


def test_image_sequence_writer(tmp_path):
    out = tmp_path / "frames"
    with atomic_output(out, is_dir=True) as tmp:
        with ImageSequenceWriter(tmp, width=32, height=16) as writer:
            for i in range(3):
                writer.write(pattern_frame(i, 32, 16), i)
            writer.write(pattern_frame(3, 32, 16, dtype=np.uint16), 3)
    files = list_images(out)
    assert [f.name for f in files] == [f"frame_{i:06d}.png" for i in range(1, 5)]
    assert np.array_equal(read_image(files[1]), pattern_frame(1, 32, 16))
    deep = read_image(files[3])
    assert deep.dtype == np.uint16 and np.array_equal(deep, pattern_frame(3, 32, 16, dtype=np.uint16))


# -- reproducible encoding --------------------------------------------------------------------------


def _encode_upscaled_clip(path: Path, options: dict[str, str] | None = None) -> bytes:
    """The frames of a 160x90 gradient clip with moving squares, doubled to 320x180, through the
    default libx264 writer (RGB frames, converted by the writer between encoder calls)."""
    with VideoWriter(path, width=320, height=180, fps=24, options=options) as writer:
        for i in range(24):
            small = pattern_frame(i, 160, 90)
            writer.write(np.repeat(np.repeat(small, 2, axis=0), 2, axis=1), i)
    return path.read_bytes()


def test_x264_output_is_the_same_file_every_time(tmp_path):
    runs = [_encode_upscaled_clip(tmp_path / f"run{k}.mp4") for k in range(4)]
    assert all(run == runs[0] for run in runs[1:])
    # and the same as x264's plain C code gives: the file does not depend on the CPU's SIMD
    # (x264's vectorised macroblock-tree code rounds differently, and its AVX-512 version read
    # memory it never wrote, so files differed from run to run)
    assert _encode_upscaled_clip(tmp_path / "c.mp4", {"x264-params": "asm=0"}) == runs[0]


def test_the_callers_encoder_parameters_are_added_to_the_writers(tmp_path):
    data = _encode_upscaled_clip(tmp_path / "a.mp4", {"x264-params": "bframes=0"})
    assert b" bframes=0 " in data  # x264 writes its settings into the stream
    assert _encode_upscaled_clip(tmp_path / "b.mp4", {"x264-params": "bframes=0:asm=0"}) == data


# -- timestamps in every container ------------------------------------------------------------------


def _stream_times(path: Path, kind: str) -> list[Fraction]:
    """Presentation times of the decoded frames of the first ``kind`` stream, in decoding order."""
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == kind)
        return [frame.pts * stream.time_base for frame in container.decode(stream)]


@pytest.mark.parametrize("sample_rate", [48000, 44100])  # AAC priming: 21.3 ms, 23.2 ms
@pytest.mark.parametrize(
    ("source", "target"),
    [(".mp4", t) for t in (".mp4", ".m4v", ".mov", ".mkv", ".ts")]
    + [(".mkv", t) for t in (".mkv", ".mp4", ".ts")]
    + [(".ts", ".ts"), (".mov", ".mkv")],
)
def test_every_output_frame_keeps_its_input_frames_time(tmp_path, source, target, sample_rate):
    # medium: B-frames in the source and in the output; an AAC track that starts before the video
    src = make_clip(tmp_path / f"in{source}", frames=12, fps=24, audio=True, preset="medium",
                    sample_rate=sample_rate)
    dst = tmp_path / f"out{target}"
    writer = transcode(src, dst, scale=2)
    assert writer.copied_streams  # the audio went along
    src_times, out_times = _stream_times(src, "video"), _stream_times(dst, "video")
    assert len(out_times) == len(src_times) == 12
    if target == ".mkv":  # Matroska stores milliseconds
        assert out_times == [round(t * 1000) / Fraction(1000) for t in src_times]
    else:
        assert out_times == src_times
    # the audio keeps its time against the video (within Matroska's millisecond)
    src_audio, out_audio = packet_dump(src, "audio"), packet_dump(dst, "audio")
    assert len(out_audio) == len(src_audio)
    if target != ".ts":  # MPEG-TS carries AAC with ADTS headers
        assert [p for _, p in out_audio] == [p for _, p in src_audio]
    with av.open(str(src)) as a, av.open(str(dst)) as b:
        first = [next(c.demux(c.streams.audio[0])) for c in (a, b)]
        starts = [p.pts * p.time_base for p in first]
    assert abs(starts[1] - starts[0]) <= Fraction(1, 2000)


def test_webm_output_keeps_the_times(tmp_path):
    src = make_clip(tmp_path / "in.mkv", frames=8, fps=24, audio=True, audio_codec="libopus")
    dst = tmp_path / "out.webm"
    transcode(src, dst, codec="libvpx-vp9", crf=40)
    assert _stream_times(dst, "video") == [round(t * 1000) / Fraction(1000) for t in _stream_times(src, "video")]
    assert probe(dst).audio_codecs == ("opus",)


def test_avi_output_is_refused_with_the_reason(tmp_path):
    with pytest.raises(OutputError, match="AVI stores no timestamps.*write .mkv or .mp4") as info:
        VideoWriter(tmp_path / "out.avi", width=64, height=48)
    assert info.value.exit_code == 6
    assert not (tmp_path / "out.avi").exists()


# -- what to use instead ----------------------------------------------------------------------------


@pytest.mark.parametrize(("suffix", "codec"), [(".webm", "libvpx-vp9"), (".gif", "gif")])
def test_a_container_that_cannot_hold_the_codec_names_one_that_works(tmp_path, suffix, codec):
    with pytest.raises(OutputError, match=f"use codec {codec} \\(--codec {codec}\\)") as info:
        VideoWriter(tmp_path / f"out{suffix}", width=64, height=48)
    assert "codec libx264" not in str(info.value)  # libx264 is what was refused
    # and the suggestion works
    with VideoWriter(tmp_path / f"out{suffix}", width=64, height=48, fps=10, codec=codec) as writer:
        for i in range(3):
            writer.write(pattern_frame(i, 64, 48), i)
    assert len(read_frames(tmp_path / f"out{suffix}")[0]) == 3


# -- disk errors ------------------------------------------------------------------------------------


class _FullDisk(io.FileIO):
    """A file on a disk with ``room`` bytes left: writing past them fails with ENOSPC."""

    room = 0

    def write(self, data):  # type: ignore[override]
        if self.tell() + len(memoryview(data)) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


@pytest.mark.parametrize(("codec", "suffix"), [("libx264", ".mp4"), ("ffv1", ".mkv"), ("libx264", ".mkv")])
@pytest.mark.parametrize("room", [0, 3000, 12000])  # the header, the frames, the trailer and close
def test_a_full_disk_is_an_output_error_naming_the_file_and_the_cause(tmp_path, monkeypatch, capfd, codec, suffix,
                                                                       room):
    monkeypatch.setattr(_FullDisk, "room", room)
    monkeypatch.setattr(OutputFile, "opener", staticmethod(lambda path: io.BufferedRandom(_FullDisk(path, "w+b"))))
    src = make_clip(tmp_path / "in.mp4", frames=10, audio=True)
    dst = tmp_path / f"out{suffix}"
    with pytest.raises(OutputError) as info:
        transcode(src, dst, scale=4, codec=codec)
    message = str(info.value)
    assert info.value.exit_code == 6
    assert repr(str(dst)) in message and ".semlens-partial" not in message  # named as the user knows it
    assert "No space left on device" in message and "\n" not in message
    assert "PyAV" not in message and "Errno" not in message
    assert not dst.exists() and list(tmp_path.iterdir()) == [src]  # the partial file is gone
    assert "exception being dropped" not in capfd.readouterr().err
