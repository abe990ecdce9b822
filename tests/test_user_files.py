"""Nothing the user had is lost: outputs that would replace or re-read the user's own files.

- ``--overwrite`` replaces a folder of frames only when it holds frames semlens wrote; a folder
  with anything else in it (notes, the input video) is refused and kept whole.
- ``compare`` never writes over its input, and writes the picture format its name says.
- A folder of videos that also holds a picture is a folder of videos (the picture is left alone);
  an output folder inside the input folder is never read back as input.
- ``export`` does not replace model files already in its folder without ``--overwrite``.
- Empty paths and outputs that name no file are usage errors, not the current folder.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from clips import make_clip, make_image_folder
from conftest import assert_one_line_error, digest, invoke_cli

pytestmark = pytest.mark.usefixtures("one_thread")


def _upscale(tiny_x2_path: Path, *args: object) -> tuple[int, str, str]:
    return invoke_cli(["upscale", *args, "--model", tiny_x2_path, "--device", "cpu", "--threads", "1",
                       "--preset", "ultrafast", "-q"])


def test_overwrite_never_replaces_a_folder_holding_other_files_or_the_input(tmp_path, tiny_x2_path) -> None:
    folder = tmp_path / "p2"
    clip = make_clip(folder / "in.mp4", frames=4, size=(32, 24))
    (folder / "notes.txt").write_text("keep")
    before = digest(folder)
    code, _, err = _upscale(tiny_x2_path, clip, folder, "--overwrite")
    assert code != 0 and digest(folder) == before
    assert_one_line_error(err, contains="holds the input")
    # The input elsewhere, the folder with the user's files only: refused the same way.
    other = make_clip(tmp_path / "elsewhere.mp4", frames=4, size=(32, 24))
    (folder / "in.mp4").unlink()
    before = digest(folder)
    code, _, err = _upscale(tiny_x2_path, other, folder, "--overwrite")
    assert code != 0 and digest(folder) == before
    assert_one_line_error(err, contains="'notes.txt'")


def test_overwrite_replaces_a_folder_of_frames_semlens_wrote(tmp_path, tiny_x2_path) -> None:
    clip = make_clip(tmp_path / "in.mp4", frames=4, size=(32, 24))
    frames = tmp_path / "frames"
    assert _upscale(tiny_x2_path, clip, frames)[0] == 0
    assert sorted(p.name for p in frames.iterdir()) == [f"frame_{i:06d}.png" for i in range(1, 5)]
    shorter = make_clip(tmp_path / "short.mp4", frames=2, size=(32, 24))
    code, _, err = _upscale(tiny_x2_path, shorter, frames, "--overwrite")
    assert code == 0, err
    assert sorted(p.name for p in frames.iterdir()) == ["frame_000001.png", "frame_000002.png"]


def test_output_naming_no_file_is_refused(tmp_path, tiny_x2_path, monkeypatch) -> None:
    clip = make_clip(tmp_path / "in.mp4", frames=2, size=(32, 24))
    monkeypatch.chdir(tmp_path)
    before = digest(tmp_path)
    code, _, err = _upscale(tiny_x2_path, clip, ".", "--overwrite")
    assert code != 0 and digest(tmp_path) == before
    assert_one_line_error(err, contains="names no file")


def test_empty_paths_are_usage_errors(tmp_path, tiny_x2_path, monkeypatch) -> None:
    make_image_folder(tmp_path, frames=1, size=(32, 24))  # "" would have meant this folder
    monkeypatch.chdir(tmp_path)
    before = digest(tmp_path)
    for args in (["upscale", "", "out.mp4"], ["upscale", "in.mp4", ""], ["info", ""], ["compare", ""]):
        code, _, err = invoke_cli(args)
        assert code == 2 and "is empty" in err, (args, err)
    assert digest(tmp_path) == before


def test_compare_never_writes_over_its_input_and_writes_the_named_format(tmp_path, tiny_x2_path) -> None:
    from PIL import Image

    pictures = tmp_path / "pics"
    make_image_folder(pictures, frames=3, size=(32, 24))
    clip = make_clip(tmp_path / "in.mp4", frames=6, size=(32, 24))
    image = pictures / "frame0.png"
    before = digest(image)
    code, _, err = invoke_cli(["compare", image, "--scale", "2", "--model", tiny_x2_path, "--out", image,
                               "--overwrite", "--threads", "1"])
    assert code != 0 and digest(image) == before
    assert_one_line_error(err, contains="is the input", alone=False)
    code, _, err = invoke_cli(["compare", clip, "--model", tiny_x2_path, "--out", tmp_path / "c.jpg", "--threads", "1"])
    assert code == 0, err
    with Image.open(tmp_path / "c.jpg") as shown:
        assert shown.format == "JPEG"
    code, _, err = invoke_cli(["compare", clip, "--model", tiny_x2_path, "--out", tmp_path / "c.xyz"])
    assert code == 2 and ".png, .jpg or .webp" in err and not (tmp_path / "c.xyz").exists()


def test_a_folder_of_videos_with_a_picture_is_a_folder_of_videos(tmp_path, tiny_x2_path) -> None:
    src = tmp_path / "d"
    make_clip(src / "a.mp4", frames=3, size=(32, 24))
    make_clip(src / "c.mkv", frames=3, size=(32, 24))
    make_image_folder(src, frames=1, size=(32, 24), names=["poster.png"])
    code, _, err = invoke_cli(["upscale", src, tmp_path / "out", "--model", tiny_x2_path, "--device", "cpu",
                               "--threads", "1", "--preset", "ultrafast"])
    assert code == 0, err
    assert "holds videos and pictures" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.mp4", "c.mkv"]
    # A folder of videos goes into a folder, not into a video file name.
    code, _, err = _upscale(tiny_x2_path, src, tmp_path / "all.mp4")
    assert code == 2 and "folder of videos" in err and not (tmp_path / "all.mp4").exists()


def test_an_output_folder_inside_the_input_folder_is_not_read_back(tmp_path, tiny_x2_path) -> None:
    src = tmp_path / "f"
    make_clip(src / "a.mp4", frames=3, size=(32, 24))
    assert _upscale(tiny_x2_path, src, src / "out")[0] == 0
    assert sorted(str(p.relative_to(src)) for p in src.rglob("*.mp4")) == ["a.mp4", "out/a.mp4"]
    code, out, err = invoke_cli(["upscale", src, src / "out", "--model", tiny_x2_path, "--device", "cpu",
                                 "--threads", "1", "--skip-existing"])
    assert code == 0, err
    assert "skipped" in out and not (src / "out" / "out").exists()


def test_export_keeps_model_files_already_there_unless_told(tmp_path) -> None:
    from conftest import save_tiny_model

    weights = save_tiny_model(tmp_path / "m.safetensors")
    folder = tmp_path / "e"
    folder.mkdir()
    (folder / "README.md").write_text("mine")
    (folder / "other.txt").write_text("also mine")
    code, _, err = invoke_cli(["export", weights, folder])
    assert code != 0 and (folder / "README.md").read_text() == "mine"
    assert_one_line_error(err, contains="--overwrite")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "other.txt"]
    old = os.umask(0o022)
    try:
        code, _, err = invoke_cli(["export", weights, folder, "--overwrite"])
    finally:
        os.umask(old)
    assert code == 0, err
    assert (folder / "README.md").read_text() != "mine" and (folder / "other.txt").read_text() == "also mine"
    for name in ("model.safetensors", "config.json", "README.md"):
        assert stat.S_IMODE((folder / name).stat().st_mode) == 0o644, name  # as any new file, not private
