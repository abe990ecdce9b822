"""End to end on generated clips (issue 2), through the API and the command line.

A tiny random model (tests/conftest.py) does the upscaling: the tests check plumbing, not quality:
frame count, size times the scale, identical timestamps (VFR kept), audio copied with the same
duration, 10-bit kept, image sequences in and out, folder mirroring, refusal to overwrite, no
temporary file after a failure, one-line CLI errors with exit codes, and that ``upscale_frames``
gives exactly what ``upscale_video`` writes whatever the chunking of its input.

``cli`` cases run the click group in-process (fast); the ``subprocess`` tests run
``python -m semlens_cli`` for real (exit codes, stderr, no traceback).
"""

from __future__ import annotations

import itertools
import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from clips import make_clip, make_image_folder, packet_dump, read_frames
from conftest import assert_one_line_error, digest, invoke_cli, partials_under

from semlens.errors import BatchError, InvalidInputError, OutputExistsError
from semlens.io import VideoWriter, list_images, open_source, probe, read_image, write_png
from semlens.upscaler import SemanticLensUpscaler

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ("--device", "cpu", "--threads", "1", "--preset", "ultrafast")


def upscale(interface: str, model: Path, src: Path, dst: Path, *cli_args: str, **api_kwargs: object) -> None:
    """Upscale ``src`` into ``dst`` with the API or the (in-process) CLI; fail on error."""
    if interface == "api":
        up = SemanticLensUpscaler.from_pretrained(model, device="cpu")
        api_kwargs.setdefault("preset", "ultrafast")
        result = up.upscale_video(src, dst, **api_kwargs)  # type: ignore[arg-type]
        assert result.output == dst and result.frames > 0
    else:
        r = invoke_cli(["upscale", src, dst, "--model", model, *FAST, "-q", *cli_args])
        assert r.exit_code == 0, r.stderr
        assert r.stderr.strip() == "", r.stderr


def times(path: Path) -> tuple[list[Fraction], int]:
    """Presentation times (exact fractions of a second) of the decoded video frames, and their count."""
    _, stamps, tb = read_frames(path)
    assert all(s is not None for s in stamps)
    return [s * tb for s in stamps], len(stamps)


def video_stream(path: Path) -> tuple[int, int, str, Fraction]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return s.codec_context.width, s.codec_context.height, s.codec_context.pix_fmt, Fraction(s.time_base)


INTERFACES = pytest.mark.parametrize("interface", ["api", "cli"])


# -- one video --------------------------------------------------------------------------------------


@INTERFACES
def test_video_keeps_frames_size_timestamps_and_audio(tmp_path, tiny_x2_path, interface):
    src = make_clip(tmp_path / "in put.mp4", frames=9, size=(32, 24), audio=True)
    before = digest(src)
    dst = tmp_path / "out" / "up.mp4"
    upscale(interface, tiny_x2_path, src, dst)

    w, h, pix_fmt, tb = video_stream(dst)
    assert (w, h, pix_fmt) == (64, 48, "yuv420p")
    assert tb == video_stream(src)[3]  # same time base: pts are copied, not re-timed
    _, in_pts, _ = read_frames(src)
    frames, out_pts, _ = read_frames(dst)
    assert len(frames) == 9 and out_pts == in_pts
    assert all(f.shape == (48, 64, 3) for f in frames)
    # The audio is copied packet for packet: same payloads at the same times, so the same duration.
    audio_in, audio_out = packet_dump(src, "audio"), packet_dump(dst, "audio")
    assert audio_in and audio_out == audio_in
    a, b = probe(src), probe(dst)
    assert b.has_audio and b.duration == pytest.approx(a.duration, abs=0.002)
    assert digest(src) == before
    assert partials_under(tmp_path) == []


@INTERFACES
@pytest.mark.parametrize("suffix, pts, time_base", [
    (".mkv", [0, 40, 120, 160, 330, 370, 600], Fraction(1, 1000)),
    (".mp4", [0, 1, 3, 4, 9, 10, 16], Fraction(1, 25)),
])
def test_variable_frame_rate_is_kept(tmp_path, tiny_x2_path, interface, suffix, pts, time_base):
    src = make_clip(tmp_path / f"vfr{suffix}", frames=len(pts), size=(32, 24), pts=pts, time_base=time_base)
    dst = tmp_path / f"up{suffix}"
    upscale(interface, tiny_x2_path, src, dst)
    want, _ = times(src)
    got, count = times(dst)
    assert count == len(pts) and got == want
    gaps = {b - a for a, b in itertools.pairwise(got)}
    assert len(gaps) > 1  # still variable: nothing was re-timed to a constant rate
    assert probe(dst).duration == pytest.approx(probe(src).duration, abs=0.002)


@INTERFACES
def test_ten_bit_input_stays_ten_bit(tmp_path, tiny_x4_path, interface):
    src = make_clip(tmp_path / "deep.mkv", frames=6, size=(16, 12), pix_fmt="yuv420p10le")
    dst = tmp_path / "deep_x4.mkv"
    upscale(interface, tiny_x4_path, src, dst)
    info = probe(dst)
    assert (info.width, info.height, info.pix_fmt, info.bit_depth) == (64, 48, "yuv420p10le", 10)
    frames, _, _ = read_frames(dst)
    assert len(frames) == 6 and frames[0].dtype == np.uint16
    assert times(dst) == times(src)


# -- image sequences ------------------------------------------------------------------------------


@INTERFACES
def test_image_folder_in_video_out(tmp_path, tiny_x2_path, interface):
    folder = tmp_path / "frames"
    make_image_folder(folder, frames=7, size=(32, 24))
    before = digest(folder)
    dst = tmp_path / "from_images.mp4"
    upscale(interface, tiny_x2_path, folder, dst)
    frames, _, _ = read_frames(dst)
    assert len(frames) == 7 and frames[0].shape == (48, 64, 3)
    got, _ = times(dst)
    assert got == [Fraction(i, 25) for i in range(7)]  # image sequences are read at 25 fps
    assert digest(folder) == before


@pytest.mark.parametrize("deep", [False, True], ids=["8bit", "10bit"])
@INTERFACES
def test_video_to_png_folder_equals_upscale_frames(tmp_path, tiny_x2_path, tiny_upscaler, interface, deep):
    """The frames written by ``upscale_video`` (lossless PNG) are exactly ``upscale_frames`` of the
    decoded input frames."""
    src = make_clip(tmp_path / "clip.mkv", frames=9, size=(32, 24),
                    pix_fmt="yuv420p10le" if deep else "yuv420p")
    dst = tmp_path / "png out"
    upscale(interface, tiny_x2_path, src, dst)
    files = list_images(dst)
    assert [f.name for f in files] == [f"frame_{i:06d}.png" for i in range(1, 10)]
    written = [read_image(f) for f in files]
    with open_source(src) as reader:
        expected = list(tiny_upscaler.upscale_frames([fr.image for fr in reader]))
    assert len(written) == len(expected) == 9
    for a, b in zip(written, expected, strict=True):
        assert a.dtype == b.dtype == (np.uint16 if deep else np.uint8)
        assert a.shape == (48, 64, 3)
        assert np.array_equal(a, b)


@pytest.mark.parametrize("codec, suffix, pix_fmt", [("libx264", ".mp4", "yuv420p"), ("ffv1", ".mkv", "yuv444p")])
def test_video_gets_yuv_made_on_the_compute_device(tmp_path, tiny_upscaler, monkeypatch, codec, suffix, pix_fmt):
    """The writer is handed YUV frames (no RGB->YUV pass on the CPU); losslessly encoded, they equal
    FFmpeg's conversion of ``upscale_frames``' RGB output within rounding."""
    src = make_clip(tmp_path / "clip.mkv", frames=5, size=(32, 24), pattern="noise")
    handed = []
    write = VideoWriter.write

    def spy(self, image, pts=None, duration=None):
        handed.append(type(image).__name__)
        return write(self, image, pts, duration)

    monkeypatch.setattr(VideoWriter, "write", spy)
    dst = tmp_path / f"out{suffix}"
    tiny_upscaler.upscale_video(src, dst, codec=codec, crf=0, preset="ultrafast")  # crf 0: lossless x264
    assert handed == ["PlanarImage"] * 5
    with open_source(src) as reader:
        expected = list(tiny_upscaler.upscale_frames([fr.image for fr in reader]))
    with av.open(str(dst)) as container:
        got = [frame.to_ndarray() for frame in container.decode(video=0)]
    assert len(got) == 5
    for rgb, yuv in zip(expected, got, strict=True):
        # FFmpeg's per-pixel conversion (BT.601, limited range: the clip's untagged colours) ...
        ffmpeg = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv444p", dst_color_range=1)
        y, cb, cr = ffmpeg.to_ndarray().astype(float)
        if pix_fmt == "yuv420p":  # ... with 4:2:0 chroma as the means of 2x2 blocks
            cb, cr = (c.reshape(24, 2, 32, 2).mean(axis=(1, 3)) for c in (cb, cr))
            planes = [yuv[:48], yuv[48:60].reshape(24, 32), yuv[60:].reshape(24, 32)]
        else:
            planes = list(yuv)
        for plane, ref in zip(planes, (y, cb, cr), strict=True):
            assert plane.shape == ref.shape
            assert np.abs(plane - ref).max() <= 1.0


def test_upscale_frames_does_not_depend_on_chunking(tmp_path, tiny_upscaler):
    # Two shots (a scene cut at frame 7) and a length that is not a multiple of the window.
    first = make_clip(tmp_path / "a.mkv", frames=7, size=(32, 24))
    second = make_clip(tmp_path / "b.mkv", frames=6, size=(32, 24), pattern="noise")
    frames = [f.image for src in (first, second) for f in open_source(src)]
    assert len(frames) == 13

    def chunked(sizes: list[int]):
        it = iter(frames)
        for n in itertools.cycle(sizes):
            chunk = list(itertools.islice(it, n))
            if not chunk:
                return
            yield from chunk

    from_list = list(tiny_upscaler.upscale_frames(frames))
    assert len(from_list) == 13 and from_list[0].shape == (48, 64, 3)
    for variant in ((f for f in frames), chunked([1, 5, 2])):
        out = []
        for image in tiny_upscaler.upscale_frames(variant):  # outputs pulled one at a time
            out.append(image)
        assert len(out) == 13
        assert all(np.array_equal(a, b) for a, b in zip(out, from_list, strict=True))


# -- folders --------------------------------------------------------------------------------------


def make_tree(root: Path) -> dict[str, int]:
    """A nested input folder with three good videos, one corrupt one and a non-video; returns the
    frame count of each good video by relative path."""
    make_clip(root / "a.mp4", frames=6, size=(32, 24), audio=True)
    make_clip(root / "sub" / "b c.mkv", frames=7, size=(32, 24))
    make_clip(root / "sub" / "deeper" / "ü.mov", frames=5, size=(32, 24))
    good = root / "sub" / "ok.mkv"
    make_clip(good, frames=6, size=(32, 24))
    (root / "sub" / "broken.mp4").write_bytes(good.read_bytes()[:200])  # cut inside the header
    good.unlink()
    (root / "notes.txt").write_text("not a video\n")
    return {"a.mp4": 6, "sub/b c.mkv": 7, "sub/deeper/ü.mov": 5}


def check_mirror(out: Path, good: dict[str, int]) -> None:
    produced = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert produced == sorted(good)  # same relative paths, nothing for the broken file or the .txt
    for rel, count in good.items():
        frames, _, _ = read_frames(out / rel)
        assert len(frames) == count and frames[0].shape == (48, 64, 3)


def test_folder_is_mirrored_and_one_bad_file_does_not_stop_the_others(tmp_path, tiny_upscaler):
    src, out = tmp_path / "in", tmp_path / "out"
    good = make_tree(src)
    before = digest(src)
    seen: list[str] = []
    results = tiny_upscaler.upscale_folder(src, out, preset="ultrafast",
                                           on_result=lambda r: seen.append(r.status))
    by_rel = {str(r.input.relative_to(src)): r for r in results}
    assert sorted(by_rel) == sorted([*good, "sub/broken.mp4"])
    assert seen == [r.status for r in results]
    for rel in good:
        assert by_rel[rel].status == "done" and by_rel[rel].frames == good[rel]
        assert by_rel[rel].output == out / rel
    bad = by_rel["sub/broken.mp4"]
    assert bad.status == "failed" and bad.exit_code == InvalidInputError.exit_code and bad.error
    assert "\n" not in bad.error
    check_mirror(out, good)
    assert packet_dump(out / "a.mp4", "audio") == packet_dump(src / "a.mp4", "audio")
    assert digest(src) == before
    assert partials_under(tmp_path) == []

    # Again with raise_on_failure (and skip_existing: the good ones are done): BatchError at the end.
    statuses: list[str] = []
    with pytest.raises(BatchError, match="1 of 4"):
        tiny_upscaler.upscale_folder(src, out, skip_existing=True, raise_on_failure=True,
                                     on_result=lambda r: statuses.append(r.status))
    assert statuses == ["skipped", "skipped", "failed", "skipped"]
    check_mirror(out, good)


def test_folder_run_through_the_real_cli(tmp_path, tiny_x2_path, run_cli):
    src, out = tmp_path / "in", tmp_path / "out"
    good = make_tree(src)
    before = digest(src)
    code, stdout, stderr = run_cli(["upscale", src, out, "--model", tiny_x2_path, *FAST])
    assert code == BatchError.exit_code, stderr
    assert "Traceback" not in stderr and "Warning" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 2 and "broken.mp4" in errors[0] and errors[1] == "error: 1 of 4 videos failed"
    # The summary lists every file with its status.
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in stdout.splitlines()
            if line.count("│") >= 5}
    assert rows == {"a.mp4": "done", "sub/b c.mkv": "done", "sub/deeper/ü.mov": "done", "sub/broken.mp4": "failed"}
    check_mirror(out, good)
    assert digest(src) == before
    assert partials_under(tmp_path) == []


# -- refusing to overwrite, failures leave nothing behind ------------------------------------------


@INTERFACES
@pytest.mark.parametrize("kind", ["video", "png folder"])
def test_existing_output_is_refused_unless_overwrite(tmp_path, tiny_x2_path, interface, kind):
    src = make_clip(tmp_path / "in.mp4", frames=6, size=(32, 24))
    if kind == "video":
        dst = tmp_path / "out.mp4"
        dst.write_bytes(b"precious")
    else:
        dst = tmp_path / "frames"
        dst.mkdir()
        write_png(dst / "frame_000001.png", np.zeros((2, 2, 3), np.uint8))
    old = digest(dst)
    if interface == "api":
        up = SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu")
        with pytest.raises(OutputExistsError, match="overwrite=True") as info:
            up.upscale_video(src, dst)
        assert "--overwrite" not in str(info.value)  # the library's spelling only
    else:
        code, _, stderr = invoke_cli(["upscale", src, dst, "--model", tiny_x2_path, *FAST, "-q"])
        assert code == OutputExistsError.exit_code
        assert_one_line_error(stderr, contains="--overwrite")
    assert digest(dst) == old
    upscale(interface, tiny_x2_path, src, dst, "--overwrite", overwrite=True)
    if kind == "video":
        assert len(read_frames(dst)[0]) == 6
    else:
        assert len(list_images(dst)) == 6 and read_image(list_images(dst)[0]).shape == (48, 64, 3)
    assert partials_under(tmp_path) == []


def broken_sequence(folder: Path, frames: int = 10, bad_at: int = 7) -> Path:
    """Image folder whose frame ``bad_at`` has another size: the run fails after writing frames."""
    make_image_folder(folder, frames=frames, size=(32, 24))
    write_png(folder / f"frame{bad_at}.png", np.zeros((20, 30, 3), np.uint8))
    return folder


@INTERFACES
@pytest.mark.parametrize("out_name", ["out.mp4", "out.mkv", "png_out"])
def test_failure_mid_run_leaves_no_temporary_output(tmp_path, tiny_x2_path, interface, out_name):
    src = broken_sequence(tmp_path / "seq")
    dst = tmp_path / "results" / out_name
    if interface == "api":
        up = SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu")
        with pytest.raises(InvalidInputError, match="same size"):
            up.upscale_video(src, dst, preset="ultrafast")
    else:
        code, _, stderr = invoke_cli(["upscale", src, dst, "--model", tiny_x2_path, *FAST, "-q"])
        assert code == InvalidInputError.exit_code
        assert_one_line_error(stderr, contains="same size")
    assert not dst.exists()
    assert partials_under(tmp_path) == []


def test_exception_from_a_progress_callback_leaves_no_temporary_output(tmp_path, tiny_upscaler):
    src = make_clip(tmp_path / "in.mp4", frames=10, size=(32, 24))
    dst = tmp_path / "out.mp4"
    calls = []

    def progress(done: int, total: int | None) -> None:
        calls.append((done, total))
        if done == 3:
            assert partials_under(tmp_path), "the output is written to a partial file while running"
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        tiny_upscaler.upscale_video(src, dst, progress=progress)
    assert calls == [(1, 10), (2, 10), (3, 10)]
    assert not dst.exists() and partials_under(tmp_path) == []


# -- the real command line ----------------------------------------------------------------------------


def test_single_video_through_the_real_cli(tmp_path, tiny_x2_path, run_cli):
    src = make_clip(tmp_path / "clip with spaces.mp4", frames=8, size=(32, 24), audio=True)
    dst = tmp_path / "new folder" / "up.mp4"
    code, stdout, stderr = run_cli(["upscale", src, dst, "--model", tiny_x2_path, *FAST])
    assert code == 0, stderr
    assert "Traceback" not in stderr and "error" not in stderr.lower()
    assert "test-tiny-x2 x2 on cpu" in stderr
    assert f"{dst}: 8 frames" in stdout
    frames, stamps, _ = read_frames(dst)
    assert len(frames) == 8 and frames[0].shape == (48, 64, 3) and stamps == read_frames(src)[1]
    assert packet_dump(dst, "audio") == packet_dump(src, "audio")
    assert partials_under(tmp_path) == []


def test_version_and_help(run_cli):
    import semlens

    code, stdout, stderr = run_cli(["--version"])
    assert code == 0 and stdout.strip() == f"semlens, version {semlens.__version__}", stderr
    script = Path(sys.executable).parent / "semlens"  # the console script of the installed package
    if script.exists():
        import subprocess

        from conftest import cli_env

        proc = subprocess.run([str(script), "--version"], capture_output=True, text=True, env=cli_env(),
                              timeout=120)
        assert proc.returncode == 0 and proc.stdout.strip() == stdout.strip()
    code, stdout, stderr = run_cli(["--help"])
    assert code == 0 and stderr == ""
    assert "Usage:" in stdout and "upscale" in stdout
    code, stdout, _ = run_cli(["upscale", "--help"])
    assert code == 0 and "--overwrite" in stdout and "--skip-existing" in stdout
    code, _, stderr = run_cli(["upscale"])  # usage error: click's own exit code 2, no traceback
    assert code == 2 and "Traceback" not in stderr and "Missing argument" in stderr
