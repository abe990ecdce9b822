"""Image sequences as input clips and as output folders."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from clips import make_image_folder, pattern_frame, read_frames

from semlens.errors import InputNotFoundError, InvalidInputError
from semlens.io import (
    ImageSequenceReader,
    ImageSequenceWriter,
    VideoWriter,
    atomic_output,
    is_image_folder,
    list_images,
    natural_sort_key,
    open_source,
    probe,
)


def test_natural_sort():
    names = ["frame10.png", "frame2.png", "frame1.png", "Frame3.png", "frame_b.png", "frame_a.png"]
    assert sorted(names, key=natural_sort_key) == [
        "frame1.png",
        "frame2.png",
        "Frame3.png",
        "frame10.png",
        "frame_a.png",
        "frame_b.png",
    ]


def test_folder_is_read_in_natural_order_with_index_pts(tmp_path):
    folder = tmp_path / "frames"
    # written in the order of their content index: frame{i} holds pattern i
    make_image_folder(folder, names=[f"frame{i}.png" for i in range(12)])
    (folder / "notes.txt").write_text("ignored")
    (folder / ".hidden.png").write_bytes(b"ignored")
    assert is_image_folder(folder)
    assert [p.name for p in list_images(folder)][:4] == [
        "frame0.png",
        "frame1.png",
        "frame2.png",
        "frame3.png",
    ]
    assert probe(folder).frame_count == 12
    reader = open_source(folder)
    assert isinstance(reader, ImageSequenceReader)
    info = reader.info
    assert (info.width, info.height, info.frame_count) == (64, 48, 12)
    assert info.time_base == Fraction(1, 25) and info.fps == 25 and info.is_image_sequence
    assert not info.has_audio
    frames = list(reader)
    assert [f.pts for f in frames] == list(range(12))
    for i, frame in enumerate(frames):  # frame10 after frame9, not after frame1
        assert frame.image.dtype == np.uint8
        assert np.array_equal(frame.image, pattern_frame(i))


def test_fps_option_and_other_formats(tmp_path):
    folder = tmp_path / "mixed"
    make_image_folder(folder, names=["a1.jpg", "a2.bmp", "a3.tif", "a4.jpeg", "a5.TIFF"])
    with open_source(folder, fps=Fraction(30000, 1001)) as reader:
        assert reader.info.time_base == Fraction(1001, 30000)
        frames = list(reader)
    assert len(frames) == 5
    assert frames[2].time == pytest.approx(2 * 1001 / 30000)
    for i, frame in enumerate(frames):
        assert frame.image.shape == (48, 64, 3)
        assert np.abs(frame.image.astype(int) - pattern_frame(i)).mean() < 8  # jpeg is lossy


def test_sixteen_bit_pngs_read_as_uint16(tmp_path):
    folder = tmp_path / "deep"
    make_image_folder(folder, frames=3, bit16=True)
    with open_source(folder) as reader:
        assert reader.info.bit_depth == 16
        frames = list(reader)
    assert frames[1].image.dtype == np.uint16
    assert np.array_equal(frames[1].image, pattern_frame(1, dtype=np.uint16))


def test_folder_errors(tmp_path):
    with pytest.raises(InputNotFoundError):
        open_source(tmp_path / "nope")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidInputError, match="holds no images"):
        open_source(empty)
    (empty / "readme.txt").write_text("x")
    assert not is_image_folder(empty)
    with pytest.raises(InvalidInputError, match="holds no images"):
        ImageSequenceReader(empty)

    sizes = tmp_path / "sizes"
    make_image_folder(sizes, names=["f1.png", "f2.png"])
    make_image_folder(tmp_path / "small", names=["f3.png"], size=(32, 16))
    (tmp_path / "small" / "f3.png").rename(sizes / "f3.png")
    with pytest.raises(InvalidInputError, match="same size"):
        list(open_source(sizes))

    broken = tmp_path / "broken"
    make_image_folder(broken, names=["f1.png"])
    (broken / "f2.png").write_bytes(b"this is not a png")
    with pytest.raises(InvalidInputError, match="f2.png"):
        list(open_source(broken))


def test_single_image_file_is_refused(tmp_path):
    path = make_image_folder(tmp_path, names=["one.png"])[0]
    with pytest.raises(InvalidInputError, match="single image"):
        open_source(path)


def test_image_folder_to_video_and_back_to_images(tmp_path):
    folder = tmp_path / "in"
    make_image_folder(folder, frames=6)
    video = tmp_path / "out.mkv"
    with open_source(folder) as reader, atomic_output(video, source=folder) as tmp:
        with VideoWriter(tmp, source=reader.info, width=64, height=48, codec="ffv1") as writer:
            for frame in reader:
                writer.write(frame.image, frame.pts)
    info = probe(video)
    assert info.fps == 25
    _, pts, tb = read_frames(video)
    assert [p * tb for p in pts] == [Fraction(i, 25) for i in range(6)]

    out_folder = tmp_path / "frames_out"
    with open_source(video) as reader, atomic_output(out_folder, is_dir=True) as tmp:
        with ImageSequenceWriter(tmp, width=64, height=48) as writer:
            for frame in reader:
                writer.write(frame.image, frame.pts)
    names = [p.name for p in list_images(out_folder)]
    assert names == [f"frame_{i:06d}.png" for i in range(1, 7)]
    with open_source(out_folder) as reader:
        images = [f.image for f in reader]
    assert np.abs(images[3].astype(int) - pattern_frame(3)).mean() < 2
