"""`semlens compare` and semlens.compare: the picture's size, its label strips, and panels equal to
each method's output; with --video a clip of such rows with the input's timestamps."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
from clips import make_clip, packet_dump, read_frames
from conftest import invoke_cli, partials_under
from PIL import Image

from semlens.compare import GAP, LABEL_HEIGHT, compare_clip, compare_video, parse_crop, parse_time
from semlens.evaluate import bicubic_frames, lanczos_frames
from semlens.io import probe

pytestmark = pytest.mark.usefixtures("one_thread")

LUMA = np.array([0.299, 0.587, 0.114])


def panel(picture: np.ndarray, row: int, col: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """(label strip, image) of one panel of a compare picture."""
    top = GAP + row * (LABEL_HEIGHT + h + GAP)
    left = GAP + col * (w + GAP)
    return picture[top:top + LABEL_HEIGHT, left:left + w], picture[top + LABEL_HEIGHT:top + LABEL_HEIGHT + h,
                                                                   left:left + w]


def luma_error(image: np.ndarray, want: np.ndarray) -> float:
    """Mean absolute luma difference: a lossy yuv420p clip keeps luma closely, chroma less so."""
    return float(np.abs(image @ LUMA - want @ LUMA).mean())


def test_times_and_crops_parse():
    assert parse_time("00:01:05") == 65
    assert parse_time("1:05.5") == 65.5
    assert parse_time("2") == 2
    for bad in ("", "a:b", "1:2:3:4", "-1", "1::2"):
        with pytest.raises(ValueError):
            parse_time(bad)
    assert parse_crop("4,2,16,8") == (4, 2, 16, 8)
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,5", "-1,0,4,4"):
        with pytest.raises(ValueError):
            parse_crop(bad)


def test_panels_are_the_methods_outputs_under_label_strips(tmp_path, tiny_upscaler):
    clip = make_clip(tmp_path / "in.mp4", frames=12, size=(32, 24))
    frames, _, _ = read_frames(clip)
    result = compare_video(clip, tmp_path / "c.png", [tiny_upscaler], at=[0.2])  # frame 5 at 25 fps
    s = tiny_upscaler.scale
    w, h = 32 * s, 24 * s
    picture = np.asarray(Image.open(result.path).convert("RGB"))
    assert picture.shape == (GAP + LABEL_HEIGHT + h + GAP, GAP + 3 * (w + GAP), 3)
    assert (result.width, result.height, result.panel) == (picture.shape[1], picture.shape[0], (w, h))
    assert result.labels == ("bicubic", "Lanczos", "test-tiny-x2")
    assert result.times == (pytest.approx(0.2),)
    ctx = tiny_upscaler.settings.window // 2
    expected = [next(iter(bicubic_frames(s)([frames[5]]))), next(iter(lanczos_frames(s)([frames[5]]))),
                list(tiny_upscaler.upscale_frames(frames[5 - ctx:5 + ctx + 1]))[ctx]]
    for col, want in enumerate(expected):
        strip, image = panel(picture, 0, col, w, h)
        np.testing.assert_array_equal(image, want)
        assert strip.max() > 200 and (strip == 0).mean() > 0.5  # light text on black
    # the three labels are different texts
    strips = [panel(picture, 0, c, w, h)[0] for c in range(3)]
    assert not np.array_equal(strips[0], strips[1]) and not np.array_equal(strips[1], strips[2])


def test_crop_two_times_and_two_models_on_the_command_line(tmp_path, tiny_weights):
    clip = make_clip(tmp_path / "in.mkv", frames=10, size=(32, 24))
    frames, _, _ = read_frames(clip)
    other = tiny_weights(2, 12)
    out = tmp_path / "pics" / "cmp.png"
    result = invoke_cli(["compare", str(clip), "--model", str(tiny_weights(2)), "--model", str(other),
                         "--at", "0:00.08", "--at", "0.32", "--crop", "4,2,16,8", "--out", str(out),
                         "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    assert "bicubic | Lanczos | test-tiny-x2 | test-tiny-x2-c12" in result.stdout
    picture = np.asarray(Image.open(out).convert("RGB"))
    w, h = 32, 16
    assert picture.shape == (GAP + 2 * (LABEL_HEIGHT + h + GAP), GAP + 4 * (w + GAP), 3)
    for row, index in enumerate((2, 8)):
        _, image = panel(picture, row, 0, w, h)
        full = next(iter(bicubic_frames(2)([frames[index]])))
        np.testing.assert_array_equal(image, full[4:20, 8:40])
    # an existing picture is kept without --overwrite
    again = invoke_cli(["compare", str(clip), "--model", str(tiny_weights(2)), "--out", str(out), "--device", "cpu"])
    assert again.exit_code == 5 and "--overwrite" in again.stderr


@pytest.mark.parametrize(("args", "code", "words"), [
    (["--crop", "30,0,16,8"], 2, "leaves the 32x24 frame"),
    (["--crop", "1,2"], 2, "not a crop"),
    (["--at", "9"], 2, "past the end of the video (0.160 s)"),
    (["--at", "x"], 2, "not a time"),
])
def test_bad_crops_and_times_are_usage_errors(tmp_path, tiny_x2_path, args, code, words):
    clip = make_clip(tmp_path / "in.mp4", frames=4, size=(32, 24))
    result = invoke_cli(["compare", str(clip), "--model", str(tiny_x2_path), "--device", "cpu",
                         "--out", str(tmp_path / "c.png"), *args])
    assert result.exit_code == code, result.stderr
    assert words in result.stderr
    assert not (tmp_path / "c.png").exists()


def test_clip_rows_keep_the_inputs_timestamps(tmp_path, tiny_upscaler):
    pts = [0, 1, 2, 4, 5, 7, 8, 9, 11, 12, 14, 15, 16, 18, 19]  # a variable frame rate, 1/25 s ticks
    clip = make_clip(tmp_path / "in.mkv", frames=len(pts), size=(32, 24), pts=pts)
    frames, _, _ = read_frames(clip)
    result = compare_clip(clip, tmp_path / "c.mkv", [tiny_upscaler], start=0.2, seconds=0.4)
    kept = [i for i, p in enumerate(pts) if 5 <= p < 15]  # shown from 0.2 s to before 0.6 s
    s = tiny_upscaler.scale
    w, h = 32 * s, 24 * s
    width, height = GAP + 3 * (w + GAP), GAP + LABEL_HEIGHT + h + GAP
    assert width % 2 == 0 and height % 2 == 0
    assert (result.width, result.height, result.panel, result.frames) == (width, height, (w, h), len(kept))
    assert result.labels == ("bicubic", "Lanczos", "test-tiny-x2")
    assert result.times == (pytest.approx(0.2),)
    images, stamps, tb = read_frames(result.path)
    assert len(images) == len(kept) and images[0].shape == (height, width, 3)
    assert [float(p * tb) for p in stamps] == pytest.approx([(pts[i] - 5) / 25 for i in kept], abs=1e-3)
    # each row is the picture's layout: panels under label strips (the clip is lossy: compare the luma;
    # a neighbouring frame or another column is 5 or more off)
    model = list(tiny_upscaler.upscale_frames([frames[i] for i in kept]))
    for n, i in enumerate(kept):
        expected = [next(iter(bicubic_frames(s)([frames[i]]))), next(iter(lanczos_frames(s)([frames[i]]))), model[n]]
        for col, want in enumerate(expected):
            strip, image = panel(images[n], 0, col, w, h)
            assert luma_error(image, want) < 3
            assert strip.max() > 150 and (strip < 40).mean() > 0.5  # light text on black


def test_video_on_the_command_line(tmp_path, tiny_x2_path, monkeypatch):
    clip = make_clip(tmp_path / "in.mp4", frames=30, size=(32, 24), fps=25, audio=True)
    monkeypatch.chdir(tmp_path)
    result = invoke_cli(["compare", str(clip), "--model", str(tiny_x2_path), "--video", "--at", "0.4",
                         "--seconds", "0.2", "--crop", "4,2,16,8", "--device", "cpu"])
    assert result.exit_code == 0, result.stderr
    out = tmp_path / "compare.mp4"  # the default name with --video
    assert "compare.mp4: 112x44, 5 frames from 0.400 s, bicubic | Lanczos | test-tiny-x2" in result.stdout
    info = probe(out)
    assert (info.width, info.height, info.fps, info.frame_count) == (GAP + 3 * (32 + GAP), GAP + LABEL_HEIGHT + 16 + GAP,
                                                                    25, 5)
    assert info.has_audio
    audio = packet_dump(out, "audio")
    assert audio and audio[-1][0] < 0.2  # the audio of that span only
    images, _, _ = read_frames(out)
    frames, _, _ = read_frames(clip)
    _, image = panel(images[0], 0, 0, 32, 16)
    want = next(iter(bicubic_frames(2)([frames[10]])))[4:20, 8:40]
    assert luma_error(image, want) < 3


@pytest.mark.parametrize(("args", "words"), [
    (["--video", "--out", "c.png"], "needs a video extension such as .mp4"),
    (["--out", "c.mp4"], "is a video name; add --video"),
    (["--seconds", "1", "--out", "c.png"], "only with --video"),
    (["--video", "--at", "0.04", "--at", "0.08", "--out", "c.mp4"], "give one --at with --video"),
    (["--video", "--seconds", "0", "--out", "c.mp4"], "positive number of seconds"),
    (["--video", "--at", "9", "--out", "c.mp4"], "past the end of the video (0.160 s)"),
    (["--video", "--crop", "30,0,16,8", "--out", "c.mp4"], "leaves the 32x24 frame"),
])
def test_bad_video_requests_are_usage_errors(tmp_path, tiny_x2_path, args, words):
    clip = make_clip(tmp_path / "in.mp4", frames=4, size=(32, 24))
    out = tmp_path / "out"
    out.mkdir()
    args = [str(out / a) if a.startswith("c.") else a for a in args]
    result = invoke_cli(["compare", str(clip), "--model", str(tiny_x2_path), "--device", "cpu", *args])
    assert result.exit_code == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and words in errors[0], result.stderr
    assert list(out.iterdir()) == []


def test_a_failing_clip_leaves_the_old_file_and_no_partial(tmp_path, tiny_upscaler):
    clip = make_clip(tmp_path / "in.mp4", frames=20, size=(32, 24))

    def failing(frames):
        for n, image in enumerate(tiny_upscaler.upscale_frames(frames)):
            if n == 8:
                raise RuntimeError("the model failed")
            yield image

    broken = SimpleNamespace(scale=2, name="broken", settings=tiny_upscaler.settings, upscale_frames=failing)
    dst = tmp_path / "out" / "c.mp4"
    dst.parent.mkdir()
    dst.write_bytes(b"the earlier clip")
    with pytest.raises(RuntimeError, match="the model failed"):
        compare_clip(clip, dst, [broken], overwrite=True)
    assert dst.read_bytes() == b"the earlier clip"
    assert partials_under(tmp_path) == []
