"""Interruptions and resuming.

- Ctrl-C (SIGINT) during a real ``python -m semlens_cli upscale``: the temporary output is
  removed, the exit code is 130, no traceback. SIGTERM (what kill, timeout, systemd and Docker
  send) does the same with exit code 143, for one video, a folder, and a script calling the API.
- An error or Ctrl-C mid-run stops and joins the decode thread before the input is closed, and
  removes the empty output folders the run created.
- SIGKILL: only a clearly named partial file (``.<stem>.semlens-partial-<pid>.<token><ext>``) is
  left; the next run of the same command removes it and writes the right output; a folder run
  with ``--skip-existing`` redoes the killed file instead of taking its partial for an output.
- Folder runs resume: ``--skip-existing`` skips finished outputs (verified complete: one truncated
  or damaged by hand is redone), a failing file does not stop the others, the summary lists the
  failures and the exit code is non-zero.

The killed runs use a 32-channel random model on a 24-60 frame 64x48 clip, so that the process is
still busy when the test sees the partial file appear (the partial exists only while writing).
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from clips import make_clip, read_frames, truncate_file
from conftest import cli_env, digest, invoke_cli, partials_under

from semlens.errors import EXIT_INTERRUPTED, BatchError, InvalidInputError
from semlens.interrupts import EXIT_TERMINATED
from semlens.upscaler import is_complete_output

pytestmark = pytest.mark.usefixtures("one_thread")

PARTIAL_NAME = re.compile(r"^\.(?P<stem>.+)\.semlens-partial-(?P<pid>\d+)\.[0-9a-f]{6}(?P<suffix>\.\w+)$")


def wait_for_partial(proc: subprocess.Popen[str], folder: Path, stem: str, timeout: float = 300) -> Path:
    """Poll until the running CLI has created the partial of ``stem`` under ``folder``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = [p for p in partials_under(folder) if p.name.startswith(f".{stem}.")] if folder.exists() else []
        if found:
            return found[0]
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the CLI ended (exit {proc.returncode}) before writing a partial:\n{err}")
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("no partial file appeared in time")


def summary(stdout: str) -> dict[str, str]:
    """``{relative input: status}`` from the folder summary table."""
    return {line.split("│")[1].strip(): line.split("│")[2].strip()
            for line in stdout.splitlines() if line.count("│") >= 5}


def assert_complete(src: Path, dst: Path, frames: int, scale: int = 2) -> None:
    images, stamps, _ = read_frames(dst)
    src_images, src_stamps, _ = read_frames(src)
    assert len(images) == frames == len(src_images)
    assert images[0].shape == (src_images[0].shape[0] * scale, src_images[0].shape[1] * scale, 3)
    assert stamps == src_stamps
    assert is_complete_output(src, dst, scale)


# -- signals ------------------------------------------------------------------------------------------


def test_ctrl_c_removes_the_temporary_output_and_exits_130(tmp_path, slow_x2_path, start_cli):
    src = make_clip(tmp_path / "long.mp4", frames=60, size=(64, 48), audio=True)
    before = digest(src)
    out = tmp_path / "out"
    dst = out / "long_x2.mp4"
    proc = start_cli(["upscale", src, dst, "--model", slow_x2_path, "--device", "cpu", "--threads", "1"])
    partial = wait_for_partial(proc, out, "long_x2")
    time.sleep(0.2)  # well inside the run: frames are being computed and written
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_INTERRUPTED == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr
    assert stderr.strip().splitlines()[-1] == "interrupted"
    assert not partial.exists() and not dst.exists()
    assert partials_under(tmp_path) == []
    assert digest(src) == before


def test_sigterm_removes_the_temporary_output_and_the_folders_it_made_and_exits_143(tmp_path, slow_x2_path,
                                                                                   start_cli):
    src = make_clip(tmp_path / "long.mp4", frames=60, size=(64, 48), audio=True)
    before = digest(src)
    out = tmp_path / "out"
    dst = out / "new" / "long_x2.mp4"  # both folders are made by the run
    proc = start_cli(["upscale", src, dst, "--model", slow_x2_path, "--device", "cpu", "--threads", "1"])
    partial = wait_for_partial(proc, dst.parent, "long_x2")
    time.sleep(0.2)  # well inside the run: frames are being computed and written
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_TERMINATED == 143, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1] == "terminated"
    assert not partial.exists() and not dst.exists()
    assert not out.exists()  # the empty folders the run made are gone too
    assert partials_under(tmp_path) == []
    assert digest(src) == before


def test_sigterm_stops_a_folder_run_and_keeps_the_finished_files(tmp_path, slow_x2_path, start_cli):
    src, out = tmp_path / "in", tmp_path / "out"
    a = make_clip(src / "a.mp4", frames=6, size=(32, 24))
    make_clip(src / "sub" / "b.mp4", frames=60, size=(64, 48))
    make_clip(src / "sub" / "c.mp4", frames=6, size=(32, 24))
    proc = start_cli(["upscale", src, out, "--model", slow_x2_path, "--device", "cpu", "--threads", "1"])
    wait_for_partial(proc, out / "sub", "b")  # a.mp4 is finished by then (files run in sorted order)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_TERMINATED, stderr
    assert "Traceback" not in stderr and stderr.strip().splitlines()[-1] == "terminated"
    assert_complete(a, out / "a.mp4", 6)
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["a.mp4"]  # no b, no c, no sub/
    assert partials_under(tmp_path) == []


def test_sigterm_to_a_script_using_the_api_removes_the_partial(tmp_path, slow_x2_path):
    src = make_clip(tmp_path / "long.mp4", frames=60, size=(64, 48))
    dst = tmp_path / "out" / "long_x2.mp4"
    script = textwrap.dedent(f"""
        import torch
        from semlens import SemanticLensUpscaler

        torch.set_num_threads(1)
        up = SemanticLensUpscaler.from_pretrained({str(slow_x2_path)!r}, device="cpu")
        up.upscale_video({str(src)!r}, {str(dst)!r})
        print("not reached")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=cli_env(), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_partial(proc, dst.parent, "long_x2")
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == EXIT_TERMINATED, stderr  # not killed by the signal (-15): cleaned up first
    assert stdout == "" and "Traceback" not in stderr, stderr
    assert partials_under(tmp_path) == [] and not dst.exists() and not dst.parent.exists()


def test_sigkill_leaves_a_named_partial_that_the_next_run_cleans_up(tmp_path, slow_x2_path, start_cli, run_cli):
    src = make_clip(tmp_path / "in" / "clip.mp4", frames=24, size=(64, 48), audio=True)
    before = digest(src)
    dst = tmp_path / "out" / "clip_x2.mp4"
    args = ["upscale", src, dst, "--model", slow_x2_path, "--device", "cpu", "--threads", "1", "-q"]
    proc = start_cli(args)
    wait_for_partial(proc, dst.parent, "clip_x2")
    proc.kill()
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    left = partials_under(tmp_path)
    assert len(left) == 1 and left[0].parent == dst.parent and not dst.exists()
    m = PARTIAL_NAME.match(left[0].name)
    assert m and m["stem"] == "clip_x2" and int(m["pid"]) == proc.pid and m["suffix"] == ".mp4", left[0].name
    assert not is_complete_output(src, left[0], 2)

    code, stdout, stderr = run_cli(args)  # the same command again
    assert code == 0 and stderr == "", stderr
    assert_complete(src, dst, 24)
    assert partials_under(tmp_path) == []  # the dead run's partial was removed
    assert digest(src) == before


def test_killed_folder_run_resumes_with_skip_existing(tmp_path, slow_x2_path, start_cli, run_cli):
    src, out = tmp_path / "in", tmp_path / "out"
    a = make_clip(src / "a.mp4", frames=6, size=(32, 24))
    b = make_clip(src / "b.mp4", frames=24, size=(64, 48))
    args = ["upscale", src, out, "--model", slow_x2_path, "--device", "cpu", "--threads", "1", "--skip-existing"]
    proc = start_cli(args)
    wait_for_partial(proc, out, "b")  # a.mp4 is finished by then (files run in sorted order)
    proc.kill()
    proc.communicate(timeout=60)

    assert_complete(a, out / "a.mp4", 6)
    assert not (out / "b.mp4").exists()
    assert [p.name for p in partials_under(out)][0].startswith(".b.semlens-partial-")
    a_state = (digest(out / "a.mp4"), (out / "a.mp4").stat().st_mtime_ns)

    code, stdout, stderr = run_cli(args)
    assert code == 0, stderr
    assert summary(stdout) == {"a.mp4": "skipped", "b.mp4": "done"}
    assert (digest(out / "a.mp4"), (out / "a.mp4").stat().st_mtime_ns) == a_state  # not rewritten
    assert_complete(b, out / "b.mp4", 24)
    assert partials_under(tmp_path) == []


# -- resuming folder runs (in-process: fast) ----------------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_skip_existing_redoes_damaged_outputs_and_reports_failures(tmp_path, tiny_upscaler, tiny_x2_path):
    src, out = tmp_path / "in", tmp_path / "out"
    counts = {"a.mp4": 6, "sub/b.mkv": 7, "sub/c.mp4": 5, "sub/d.mov": 6, "z.mp4": 4}
    for rel, n in counts.items():
        make_clip(src / rel, frames=n, size=(32, 24))
    results = tiny_upscaler.upscale_folder(src, out, preset="ultrafast")
    assert [r.status for r in results] == ["done"] * 5

    # Damage some outputs by hand, break one input, leave a dead run's partial behind.
    truncate_file(out / "sub" / "b.mkv", 0.5)
    data = bytearray((out / "sub" / "c.mp4").read_bytes())
    data[:64] = bytes(64)
    (out / "sub" / "c.mp4").write_bytes(bytes(data))
    shutil.copyfile(src / "sub" / "d.mov", out / "sub" / "d.mov")  # right frames, wrong size
    (src / "z.mp4").write_bytes((src / "z.mp4").read_bytes()[:300])
    stale = out / f".a.semlens-partial-{_dead_pid()}.abcdef.mp4"
    stale.write_bytes(b"half an mp4")
    kept = {"a.mp4": (digest(out / "a.mp4"), (out / "a.mp4").stat().st_mtime_ns)}
    inputs = digest(src)

    code, stdout, stderr = invoke_cli(["upscale", src, out, "--model", tiny_x2_path, "--device", "cpu",
                                       "--threads", "1", "--preset", "ultrafast", "--skip-existing"])
    assert code == BatchError.exit_code, stderr
    assert summary(stdout) == {"a.mp4": "skipped", "sub/b.mkv": "done", "sub/c.mp4": "done",
                               "sub/d.mov": "done", "z.mp4": "failed"}
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "z.mp4" in errors[0] and errors[1] == "error: 1 of 5 videos failed"
    assert "Traceback" not in stderr
    assert (digest(out / "a.mp4"), (out / "a.mp4").stat().st_mtime_ns) == kept["a.mp4"]
    for rel in ("sub/b.mkv", "sub/c.mp4", "sub/d.mov"):
        assert_complete(src / rel, out / rel, counts[rel])
    assert (out / "z.mp4").exists()  # the output of the first run is left alone, not deleted
    assert not stale.exists() and partials_under(tmp_path) == []
    assert digest(src) == inputs

    # The API reports the same, with the failure's exit code and message.
    results = tiny_upscaler.upscale_folder(src, out, skip_existing=True)
    by_rel = {str(r.input.relative_to(src)): r for r in results}
    assert {rel: r.status for rel, r in by_rel.items()} == {
        "a.mp4": "skipped", "sub/b.mkv": "skipped", "sub/c.mp4": "skipped", "sub/d.mov": "skipped", "z.mp4": "failed"}
    assert by_rel["z.mp4"].exit_code == InvalidInputError.exit_code and by_rel["z.mp4"].error


def test_a_live_runs_partial_is_left_alone_and_not_taken_for_an_output(tmp_path, tiny_upscaler):
    src, out = tmp_path / "in", tmp_path / "out"
    clip = make_clip(src / "a.mp4", frames=6, size=(32, 24))
    other = subprocess.Popen(["sleep", "60"])  # stands for another semlens process still writing
    try:
        out.mkdir()
        live = out / f".a.semlens-partial-{other.pid}.123abc.mp4"
        shutil.copyfile(clip, live)  # even a partial that happens to look complete
        results = tiny_upscaler.upscale_folder(src, out, skip_existing=True, preset="ultrafast")
        assert [r.status for r in results] == ["done"]
        assert_complete(clip, out / "a.mp4", 6)
        assert live.exists()  # another process's work in progress is not deleted
    finally:
        other.kill()
        other.wait()


# -- errors mid-run (in-process) --------------------------------------------------------------------


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_decode_thread_is_joined_before_the_reader_closes(tmp_path, tiny_upscaler, monkeypatch, error):
    import semlens.io

    src = make_clip(tmp_path / "in.mp4", frames=40, size=(32, 24))
    real_open = semlens.io.open_source
    alive_at_close: list[list[str]] = []  # decode threads still running each time the reader closes

    def spying_open(path, **kwargs):
        reader = real_open(path, **kwargs)
        real_close = reader.close

        def close() -> None:
            if threading.current_thread().name != "semlens-decode":  # the thread closing its own reader is fine
                alive_at_close.append([t.name for t in threading.enumerate()
                                       if t.name == "semlens-decode" and t.is_alive()])
            real_close()

        reader.close = close
        return reader

    monkeypatch.setattr(semlens.io, "open_source", spying_open)

    def progress(done: int, total: int | None) -> None:
        if done == 2:  # early: the decode thread is frames ahead, far from the end of the clip
            raise error("stop")

    with pytest.raises(error):
        tiny_upscaler.upscale_video(src, tmp_path / "out.mp4", preset="ultrafast", progress=progress)
    assert alive_at_close and all(names == [] for names in alive_at_close), alive_at_close
    assert not any(t.name == "semlens-decode" for t in threading.enumerate())
    assert partials_under(tmp_path) == [] and not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("out_name", ["out.mp4", "frames"])
def test_a_failed_run_removes_only_the_empty_folders_it_created(tmp_path, tiny_upscaler, out_name):
    src = make_clip(tmp_path / "in.mp4", frames=12, size=(32, 24))
    existing = tmp_path / "existing"
    existing.mkdir()
    dst = existing / "new" / "busy" / "deeper" / out_name

    def progress(done: int, total: int | None) -> None:
        # Meanwhile, someone else puts a file in one of the folders the run made.
        (existing / "new" / "busy" / "notes.txt").write_text("keep me")
        if done == 2:
            raise RuntimeError("stop")

    with pytest.raises(RuntimeError):
        tiny_upscaler.upscale_video(src, dst, preset="ultrafast", progress=progress)
    assert sorted(p.relative_to(existing).as_posix() for p in existing.rglob("*")) == [
        "new", "new/busy", "new/busy/notes.txt"]  # "deeper" went; the folders still in use and "existing" stay
    assert partials_under(tmp_path) == []

    shutil.rmtree(existing / "new")
    with pytest.raises(RuntimeError):
        tiny_upscaler.upscale_video(src, dst, preset="ultrafast",
                                    progress=lambda done, total: (_ for _ in ()).throw(RuntimeError("stop")))
    assert list(existing.iterdir()) == []  # all made by the run, all empty: all removed
