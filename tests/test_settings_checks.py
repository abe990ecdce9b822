"""Settings that cannot work are refused before any work, in one line, and say what to use.

- ``--crf`` outside the encoder's range and a ``--preset`` the encoder does not have: a usage
  error before the model loads (not the encoder's own lines and a false audio warning at the header).
- ``--threads`` and ``--tile`` below zero: usage errors.
- Every usage error is one ``error:`` line naming the option (and where help is), exit code 2.
- PCM audio into .mp4 (the muxer takes it, then cannot finish the file): dropped with a warning
  that names .mkv / .mov, and the video is written.
- A comparison clip in a container that cannot hold H.264 (.webm, .gif): a usage error naming
  the containers that can.
"""

from __future__ import annotations

import av
import pytest
from clips import make_clip
from conftest import assert_one_line_error, invoke_cli

from semlens.io.encoding import check_encoder_settings

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("codec, crf, preset, fragment", [
    ("libx264", -5, "medium", "outside libx264's range 0-51"),
    ("libx265", 99, "medium", "outside libx265's range 0-51"),
    ("libsvtav1", 64, None, "0-63"),
    ("libx264", 18, "bogus", "no preset 'bogus'"),
    ("libsvtav1", 30, "14", "no preset '14'"),
])
def test_encoder_settings_that_cannot_work_are_refused(codec, crf, preset, fragment) -> None:
    with pytest.raises(ValueError, match=fragment):
        check_encoder_settings(codec, crf, preset)


def test_encoder_settings_that_work_pass() -> None:
    for codec, crf, preset in [("libx264", 0, "placebo"), ("libx265", 51, "ultrafast"), ("libsvtav1", 63, "7"),
                               ("libsvtav1", 30, "slow"), ("ffv1", 99, "anything"), ("libvpx-vp9", 31, None)]:
        check_encoder_settings(codec, crf, preset)


@pytest.mark.parametrize("args, fragment", [
    (["--crf", "-5"], "range 0-51"),
    (["--crf", "99", "--codec", "libx265"], "range 0-51"),
    (["--preset", "bogus"], "no preset 'bogus'"),
    (["--threads", "-3"], "--threads"),
    (["--tile", "-5"], "--tile"),
])
def test_the_command_refuses_them_before_any_work(tmp_path, tiny_x2_path, args, fragment) -> None:
    clip = make_clip(tmp_path / "in.mp4", frames=2, size=(32, 24))
    code, _, err = invoke_cli(["upscale", clip, tmp_path / "out.mp4", "--model", tiny_x2_path, *args])
    assert code == 2 and fragment in err, err
    assert_one_line_error(err)  # not click's usage, hint and error lines; no encoder noise
    assert "x264 [error]" not in err and "not copied" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]


def test_pcm_audio_into_mp4_is_dropped_with_a_warning_and_the_video_written(tmp_path, tiny_x2_path) -> None:
    clip = make_clip(tmp_path / "in.mkv", frames=4, size=(32, 24), audio=True, audio_codec="pcm_s16le")
    code, _, err = invoke_cli(["upscale", clip, tmp_path / "out.mp4", "--model", tiny_x2_path, "--threads", "1",
                               "--preset", "ultrafast"])
    assert code == 0, err
    assert "pcm_s16le not copied" in err and ".mov" in err
    with av.open(str(tmp_path / "out.mp4")) as out:
        assert [s.type for s in out.streams] == ["video"] and out.streams.video[0].frames == 4
    code, _, err = invoke_cli(["upscale", clip, tmp_path / "out.mov", "--model", tiny_x2_path, "--threads", "1",
                               "--preset", "ultrafast"])
    assert code == 0, err
    with av.open(str(tmp_path / "out.mov")) as out:  # .mov holds it: kept
        assert sorted(s.type for s in out.streams) == ["audio", "video"]


@pytest.mark.parametrize("name", ["w.webm", "w.gif"])
def test_a_comparison_clip_goes_into_a_container_that_holds_h264(tmp_path, tiny_x2_path, name) -> None:
    clip = make_clip(tmp_path / "in.mp4", frames=4, size=(32, 24))
    code, _, err = invoke_cli(["compare", clip, "--model", tiny_x2_path, "--video", "--out", tmp_path / name])
    assert code == 2 and ".mp4, .mkv or .mov" in err and "--codec" not in err, err
    assert not (tmp_path / name).exists()


def test_eval_refuses_a_clip_too_small_to_score(tmp_path) -> None:
    tiny = make_clip(tmp_path / "tiny.mkv", frames=2, size=(12, 12), codec="ffv1")
    code, _, err = invoke_cli(["eval", tiny, "--scale", "2", "--no-baselines", "--threads", "1"])
    assert code == 4 and "too small to score at x2" in assert_one_line_error(err, alone=False)


def test_an_output_name_that_is_no_video_says_it_becomes_a_folder_of_frames(tmp_path, tiny_x2_path) -> None:
    clip = make_clip(tmp_path / "in.mp4", frames=2, size=(32, 24))
    code, _, err = invoke_cli(["upscale", clip, tmp_path / "a.xyz", "--model", tiny_x2_path, "--threads", "1"])
    assert code == 0 and "'a.xyz' has no video extension: writing a folder of PNG frames" in err, err
    assert sorted(p.name for p in (tmp_path / "a.xyz").iterdir()) == ["frame_000001.png", "frame_000002.png"]
    code, _, err = invoke_cli(["upscale", clip, tmp_path / "frames", "--model", tiny_x2_path, "--threads", "1"])
    assert code == 0 and "warning" not in err  # a plain folder name is what it says
