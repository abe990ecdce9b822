"""`semlens compare` and semlens.compare: the picture's size, its label strips, and panels equal to
each method's output."""

from __future__ import annotations

import numpy as np
import pytest
from clips import make_clip, read_frames
from conftest import invoke_cli
from PIL import Image

from semlens.compare import GAP, LABEL_HEIGHT, compare_video, parse_crop, parse_time
from semlens.evaluate import bicubic_frames, lanczos_frames

pytestmark = pytest.mark.usefixtures("one_thread")


def panel(picture: np.ndarray, row: int, col: int, w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """(label strip, image) of one panel of a compare picture."""
    top = GAP + row * (LABEL_HEIGHT + h + GAP)
    left = GAP + col * (w + GAP)
    return picture[top:top + LABEL_HEIGHT, left:left + w], picture[top + LABEL_HEIGHT:top + LABEL_HEIGHT + h,
                                                                   left:left + w]


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
