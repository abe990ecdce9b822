"""The command line's own behaviour: option checks, ``--debug`` anywhere, warnings as one clean
line each, loud failures of broken imports, a missing extra named, links a folder run does not
follow listed in its summary, and ``eval`` taking the scale from the model."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from clips import make_clip, read_frames, truncate_file
from conftest import assert_one_line_error, cli_env, invoke_cli, partials_under

from semlens.errors import BatchError, ExtraNotInstalledError, InputNotFoundError, InvalidInputError
from semlens_cli.main import cli

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ("--device", "cpu", "--threads", "1", "--preset", "ultrafast")


def summary(stdout: str) -> dict[str, str]:
    """``{relative input: status}`` from the folder summary table."""
    return {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in stdout.splitlines() if line.count("│") >= 5}


# -- options ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["upscale", "IN", "OUT", "--max-frames", "0"],
                                  ["upscale", "IN", "OUT", "--window", "0"],
                                  ["eval", "IN", "--window", "0"],
                                  ["eval", "IN", "--max-frames", "0"]])
def test_zero_frames_or_window_is_a_usage_error(tmp_path, args, tiny_x2_path):
    src = make_clip(tmp_path / "in.mp4", frames=4, size=(32, 24))
    args = [str(src) if a == "IN" else str(tmp_path / "out.mp4") if a == "OUT" else a for a in args]
    code, stdout, stderr = invoke_cli([*args, "--model", tiny_x2_path])
    assert code == 2, stderr  # click's usage error, before any work
    option = args[-2]
    assert option in stderr and "Traceback" not in stderr
    assert not (tmp_path / "out.mp4").exists() and partials_under(tmp_path) == []


def test_the_api_refuses_zero_frames_and_a_zero_window(tmp_path, tiny_upscaler, tiny_x2_path):
    from semlens.upscaler import SemanticLensUpscaler

    src = make_clip(tmp_path / "in.mp4", frames=4, size=(32, 24))
    with pytest.raises(ValueError, match="max_frames"):
        tiny_upscaler.upscale_video(src, tmp_path / "out.mp4", max_frames=0)
    with pytest.raises(ValueError, match="window"):
        SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu", window=0)
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("value", ["0", "abc", "-2G", "0.5"])
def test_a_bad_memory_budget_is_a_usage_error(tmp_path, value):
    code, stdout, stderr = invoke_cli(["upscale", tmp_path / "in.mp4", tmp_path / "out.mp4", "--memory-budget", value])
    assert code == 2 and "Traceback" not in stderr, stderr  # click's usage error, before the input is looked at
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--memory-budget" in errors[0] and repr(value) in errors[0], stderr
    assert "does not exist" not in stderr and not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_is_accepted_before_and_after_the_command(tmp_path, where):
    args = ["upscale", str(tmp_path / "missing.mp4"), str(tmp_path / "out.mp4")]
    args = ["--debug", *args] if where == "before" else [*args, "--debug"]
    result = CliRunner().invoke(cli, args, catch_exceptions=True)
    assert isinstance(result.exception, InputNotFoundError), result.output  # raised: a traceback, not a line


def test_crf_and_preset_are_explained_in_the_help():
    code, stdout, _ = invoke_cli(["upscale", "--help"])
    assert code == 0
    text = " ".join(stdout.split())
    assert "--crf FLOAT Quality of lossy codecs" in text
    assert "--preset TEXT Encoder speed against file size" in text
    assert "--debug Show tracebacks" in text


# -- eval -----------------------------------------------------------------------------------------------


def test_eval_takes_the_scale_from_the_model(tmp_path, tiny_x2_path):
    hr = make_clip(tmp_path / "hr.mp4", frames=4, size=(32, 24))
    code, stdout, stderr = invoke_cli(["eval", hr, "--model", tiny_x2_path, "--max-frames", "3", "--no-baselines",
                                       "--threads", "1", "--json", "-"])
    assert code == 0, stderr
    report = json.loads(stdout[stdout.index("{\n"):])
    assert report["scale"] == 2 and report["model"] == "test-tiny-x2" and report["clips"][0]["frames"] == 3
    # The weights are named by content too: a name can later be given to other weights.
    assert report["weights_sha256"] == hashlib.sha256(Path(tiny_x2_path).read_bytes()).hexdigest()
    code, _, stderr = invoke_cli(["eval", hr, "--model", tiny_x2_path, "--scale", "4", "--no-baselines"])
    assert code == 8 and "x2" in assert_one_line_error(stderr)  # an explicit, contradicting --scale is refused



def test_overlap_is_an_option_of_eval_and_upscale(tmp_path, tiny_x2_path):
    hr = make_clip(tmp_path / "hr.mp4", frames=6, size=(32, 24))
    reports = {}
    for overlap in ("0", "1"):
        code, stdout, stderr = invoke_cli(["eval", hr, "--model", tiny_x2_path, "--window", "3", "--overlap", overlap,
                                           "--no-baselines", "--threads", "1", "--json", "-"])
        assert code == 0, stderr
        reports[overlap] = json.loads(stdout[stdout.index("{\n"):])
    assert (reports["0"]["window"], reports["0"]["overlap"], reports["1"]["overlap"]) == (3, 0, 1)
    assert reports["0"]["clips"][0]["frames"] == reports["1"]["clips"][0]["frames"] == 6
    out = tmp_path / "out.mp4"
    code, _, stderr = invoke_cli(["upscale", hr, out, "--model", tiny_x2_path, "--window", "3", "--overlap", "1", *FAST])
    assert code == 0 and out.exists(), stderr
    # A window that would emit nothing is refused in one line, and nothing is written.
    bad = tmp_path / "bad.mp4"
    code, _, stderr = invoke_cli(["upscale", hr, bad, "--model", tiny_x2_path, "--window", "4", "--overlap", "2", *FAST])
    assert code != 0 and "overlap 2" in assert_one_line_error(stderr)
    assert not bad.exists() and partials_under(tmp_path) == []


# -- warnings -------------------------------------------------------------------------------------------


def _warning_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    assert ".py:" not in stderr and "Warning:" not in stderr, stderr  # no raw `file.py:N: Category: text`
    lines = [line for line in stderr.splitlines() if line.strip()]
    return [line for line in lines if line.startswith("warning: ")]


def test_a_truncated_input_is_one_clean_error_and_its_decodable_frames_are_kept(tmp_path, tiny_x2_path, run_cli):
    full = make_clip(tmp_path / "full.mkv", frames=10, size=(32, 24))
    src = truncate_file(full, 0.7, tmp_path / "cut.mkv")
    for name, quiet in (("out.mkv", []), ("out2.mkv", ["-q"])):
        code, stdout, stderr = run_cli(["upscale", src, tmp_path / name, "--model", tiny_x2_path, *FAST, *quiet])
        assert code == InvalidInputError.exit_code, stderr  # a bad input: not a success
        line = assert_one_line_error(stderr, contains="truncated or damaged", alone=bool(quiet))
        assert "cut.mkv" in line and name in line and not _warning_lines(stderr)
        frames, _, _ = read_frames(tmp_path / name)  # what decodes is upscaled, a valid video
        assert 0 < len(frames) < 10 and f"first {len(frames)} frames" in line


def test_audio_dropped_for_gif_is_one_clean_warning(tmp_path, tiny_x2_path, run_cli):
    src = make_clip(tmp_path / "in.mp4", frames=4, size=(32, 24), audio=True)
    code, stdout, stderr = run_cli(["upscale", src, tmp_path / "out.gif", "--codec", "gif", "--model", tiny_x2_path,
                                    *FAST])
    assert code == 0, stderr
    notes = _warning_lines(stderr)
    assert len(notes) == 1 and "audio" in notes[0] and "not copied" in notes[0], stderr


def test_pickled_weights_of_another_protocol_give_only_the_error(tmp_path, tiny_x2_path, run_cli):
    import torch
    from conftest import tiny_config

    from semlens.enhancer import PixelEnhancer

    weights = tmp_path / "whole.pth"
    torch.save(PixelEnhancer(tiny_config(2)), weights, pickle_protocol=4)  # torch warns about protocol 4
    src = make_clip(tmp_path / "in.mp4", frames=2, size=(32, 24))
    code, stdout, stderr = run_cli(["upscale", src, tmp_path / "out.mp4", "--model", weights, *FAST])
    assert code == 7
    assert "refused" in assert_one_line_error(stderr)  # the error alone: no torch warning before it


def test_folder_run_shows_each_files_warning(tmp_path, tiny_x2_path):
    src = tmp_path / "in"
    full = make_clip(tmp_path / "full.mkv", frames=10, size=(32, 24))
    src.mkdir()
    truncate_file(full, 0.7, src / "a.mkv")
    truncate_file(full, 0.7, src / "b.mkv")
    code, stdout, stderr = invoke_cli(["upscale", src, tmp_path / "out", "--model", tiny_x2_path, *FAST])
    assert code == BatchError.exit_code, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 3 and "a.mkv" in errors[0] and "b.mkv" in errors[1], stderr
    assert errors[2] == "error: 2 of 2 videos failed (2 cut short)" and not _warning_lines(stderr)
    assert stdout.count("cut short") == 2 and (tmp_path / "out" / "a.mkv").exists()


# -- folders --------------------------------------------------------------------------------------------


def test_links_leaving_the_folder_are_listed_as_not_followed(tmp_path, tiny_x2_path):
    src, out = tmp_path / "in", tmp_path / "out"
    make_clip(src / "a.mp4", frames=4, size=(32, 24))
    outside = make_clip(tmp_path / "elsewhere" / "b.mp4", frames=4, size=(32, 24))
    (src / "sub").mkdir()
    (src / "sub" / "link.mp4").symlink_to(outside)
    (src / "inner.mp4").symlink_to(src / "a.mp4")  # a link inside the folder is a video like any other
    code, stdout, stderr = invoke_cli(["upscale", src, out, "--model", tiny_x2_path, *FAST])
    assert code == 0, stderr
    assert summary(stdout) == {"a.mp4": "done", "inner.mp4": "done", "sub/link.mp4": "not followed"}
    assert "outside the input folder" in " ".join(stdout.split())
    assert not (out / "sub").exists()


# -- imports and extras -----------------------------------------------------------------------------------


def test_a_broken_import_fails_loudly_instead_of_hiding_a_command():
    code = ("import sys; sys.modules['semlens_cli.hub_commands'] = None\n"  # importing it now raises ImportError
            "from semlens_cli.main import main\n"
            "sys.argv = ['semlens', 'models']\n"
            "main()\n")
    proc = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "No such command" not in proc.stderr
    assert "Traceback" in proc.stderr and "import of semlens_cli.hub_commands" in proc.stderr, proc.stderr


def test_train_without_the_extra_names_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "skvideo", None)  # as if scikit-video were not installed
    code, stdout, stderr = invoke_cli(["train", tmp_path / "run", "--iterations", "1"])
    assert code == ExtraNotInstalledError.exit_code
    line = assert_one_line_error(stderr)
    assert 'pip install "semlens[train]"' in line and "scikit-video" in line
    assert not (tmp_path / "run").exists() or os.listdir(tmp_path / "run") == []
