"""The bad-input matrix: every case ends in a correct output or a one-line error.

Each case builds its files in a fresh folder and says what must happen: success (exit code 0; the
output has the same frame count and ``scale`` times the size, plus case-specific checks) or an
error (the library's exception type, whose ``exit_code`` is the CLI's exit code, and a word of the
message). Whatever happens: no ``*semlens-partial*`` file is left anywhere, the input is
byte-identical afterwards (sha256), and a refused output is not created or changed.

Every case runs through the API and the in-process CLI; a few also through the real
``python -m semlens_cli`` subprocess (argv encoding, stderr free of warnings and tracebacks). Root
ignores permission bits, so when the tests run as root (as CI does) the read-only-folder cases run
in a forked child that has dropped its privileges to ``nobody``.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from clips import make_audio_only, make_clip, read_frames, truncate_file
from conftest import assert_one_line_error, digest, invoke_cli, partials_under, tiny_config

from semlens.errors import (
    InputNotFoundError,
    InvalidInputError,
    ModelNotFoundError,
    NothingToDoError,
    OutputError,
    OutputExistsError,
    SemlensError,
    WeightsError,
)
from semlens.io import probe
from semlens.upscaler import SemanticLensUpscaler

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = (32, 24)


@dataclass
class Case:
    src: Path
    dst: Path
    error: type[SemlensError] | None = None  # None: must succeed
    contains: str = ""  # a word of the error message
    model: Path | None = None  # --model (default: the tiny x2 model)
    cli_extra: list[str] = field(default_factory=list)
    check: Callable[[Case], None] | None = None  # extra checks of a successful output
    folder_run: bool = False  # the API call is upscale_folder
    marker: Path | None = None  # must not exist afterwards (code in a weights file did not run)
    before: dict[Path, str] = field(default_factory=dict)  # sha256 of the inputs before the run
    dst_before: str | None = None  # sha256 of an output that existed before the run
    root: Path = Path()  # the case's folder (no partial may be left under it)
    as_nobody: bool = False  # run as an unprivileged user (a read-only folder case, run by root)
    weights: Path | None = None  # a copy of the tiny weights that the unprivileged user can read

    @property
    def exit_code(self) -> int:
        return 0 if self.error is None else self.error.exit_code


# -- case builders: (folder, tiny x2 weights) -> Case ------------------------------------------------


def clip(tmp: Path, name: str = "in.mp4", **kwargs) -> Path:
    kwargs.setdefault("frames", 6)
    kwargs.setdefault("size", SIZE)
    return make_clip(tmp / name, **kwargs)


def missing_path(tmp, w):
    return Case(tmp / "nowhere" / "missing.mp4", tmp / "out.mp4", InputNotFoundError, "does not exist")


def empty_folder(tmp, w):
    (tmp / "empty").mkdir()
    return Case(tmp / "empty", tmp / "out", NothingToDoError, "no videos", folder_run=True)


def folder_without_videos(tmp, w):
    (tmp / "docs" / "sub").mkdir(parents=True)
    (tmp / "docs" / "notes.txt").write_text("hello")
    (tmp / "docs" / "sub" / "song.mp3").write_bytes(b"ID3")
    return Case(tmp / "docs", tmp / "out", NothingToDoError, "no videos", folder_run=True)


def empty_file(tmp, w):
    (tmp / "empty.mp4").write_bytes(b"")
    return Case(tmp / "empty.mp4", tmp / "out.mp4", InvalidInputError, "empty file")


def text_named_mp4(tmp, w):
    (tmp / "notes.mp4").write_text("this is not a video\n" * 20)
    return Case(tmp / "notes.mp4", tmp / "out.mp4", InvalidInputError, "not a video")


def half_mp4(tmp, w):
    # The mp4 index (moov) is written at the end: half the bytes hold no index, nothing decodes.
    full = clip(tmp, "full.mp4", frames=10)
    half = truncate_file(full, 0.5, tmp / "half.mp4")
    full.unlink()
    return Case(half, tmp / "out.mp4", InvalidInputError, "not a video")


def audio_only(tmp, w):
    return Case(make_audio_only(tmp / "song.m4a"), tmp / "out.mp4", InvalidInputError, "no video stream")


def audio_only_named_mp4(tmp, w):
    return Case(make_audio_only(tmp / "sound.mp4"), tmp / "out.mp4", InvalidInputError, "no video stream")


def not_black(case: Case) -> None:
    """The output's colours follow the input's (a NaN in the network would give black frames)."""
    src, _, _ = read_frames(case.src)
    out, _, _ = read_frames(case.dst)
    for a, b in zip(src, out, strict=True):
        assert abs(float(b.mean()) - float(a.mean())) < 60, (a.mean(), b.mean())


def one_by_one(tmp, w):
    src = clip(tmp, "dot.mkv", frames=4, size=(1, 1), codec="ffv1", pix_fmt="yuv444p")
    return Case(src, tmp / "dot_x2.mkv", check=not_black)


def seven_by_five(tmp, w):
    return Case(clip(tmp, "odd.mp4", frames=5, size=(7, 5), pix_fmt="yuv444p"), tmp / "odd_x2.mp4",
                check=not_black)


def single_frame(tmp, w):
    return Case(clip(tmp, "still.mp4", frames=1), tmp / "still_x2.mp4", check=not_black)


def gray_ffv1(tmp, w):
    return Case(clip(tmp, "gray.mkv", codec="ffv1", pix_fmt="gray"), tmp / "gray_x2.mkv", check=not_black)


def gray_png_folder(tmp, w):
    from PIL import Image

    folder = tmp / "gray frames"
    folder.mkdir()
    for i in range(5):
        ramp = (np.arange(SIZE[0])[None, :] * 7 + np.arange(SIZE[1])[:, None] * 3 + 20 * i) % 256
        Image.fromarray(ramp.astype(np.uint8), mode="L").save(folder / f"f{i}.png")

    def check(case: Case) -> None:
        out, _, _ = read_frames(case.dst)
        assert len(out) == 5 and out[0].shape == (48, 64, 3)

    return Case(folder, tmp / "gray_x2.mp4", check=check)


def yuv444p(tmp, w):
    return Case(clip(tmp, "full_chroma.mp4", pix_fmt="yuv444p"), tmp / "out.mp4", check=not_black)


def ten_bit(tmp, w):
    def check(case: Case) -> None:
        assert probe(case.dst).bit_depth == 10 and probe(case.dst).pix_fmt == "yuv420p10le"

    return Case(clip(tmp, "deep.mkv", pix_fmt="yuv420p10le"), tmp / "deep_x2.mkv", check=check)


def rotated(tmp, w):
    def check(case: Case) -> None:
        info = probe(case.dst)
        assert info.rotation == 90 == probe(case.src).rotation
        assert (info.width, info.height) == (64, 48)  # pixels are stored unrotated, the tag says how to show them

    return Case(clip(tmp, "phone.mp4", rotation=90), tmp / "phone_x2.mp4", check=check)


def variable_frame_rate(tmp, w):
    def check(case: Case) -> None:
        assert read_frames(case.dst)[1] == read_frames(case.src)[1]

    src = clip(tmp, "vfr.mkv", frames=6, pts=[0, 40, 50, 200, 240, 500],
               time_base=Fraction(1, 1000))
    return Case(src, tmp / "vfr_x2.mkv", check=check)


def unusual_names(tmp, w):
    src = clip(tmp / "dir with spaces", "vidéo ü 日本 #1.mp4", audio=True)
    return Case(src, tmp / "sortie é" / "結果 (x2).mp4")


def output_folder_missing(tmp, w):
    return Case(clip(tmp), tmp / "new" / "deeper" / "out.mp4")


def output_read_only(tmp, w):
    return Case(clip(tmp), tmp / "locked" / "out.mp4", OutputError, "permission denied")


def output_read_only_subfolder(tmp, w):
    return Case(clip(tmp), tmp / "locked" / "sub" / "out.mp4", OutputError, "permission denied")


def output_is_input(tmp, w):
    src = clip(tmp)
    return Case(src, src, OutputError, "is the input")


def output_is_input_via_hard_link(tmp, w):
    src = clip(tmp)
    os.link(src, tmp / "same.mp4")
    return Case(src, tmp / "same.mp4", OutputError, "is the input")


def output_exists(tmp, w):
    (tmp / "out.mp4").write_bytes(b"somebody's finished work")
    return Case(clip(tmp), tmp / "out.mp4", OutputExistsError, "overwrite")  # each front end spells it its own way: test_messages.py


def output_folder_run_into_itself(tmp, w):
    clip(tmp / "videos", "a.mp4")
    return Case(tmp / "videos", tmp / "videos", OutputError, "input folder", folder_run=True)


def weights_corrupt(tmp, w):
    bad = tmp / "corrupt.safetensors"
    bad.write_bytes((8).to_bytes(8, "little") + b"\xff\xfe not json" + os.urandom(100))
    return Case(clip(tmp), tmp / "out.mp4", WeightsError, "corrupt", model=bad)


def weights_truncated(tmp, w):
    bad = truncate_file(w, 0.6, tmp / "truncated.safetensors")
    return Case(clip(tmp), tmp / "out.mp4", WeightsError, "truncated", model=bad)


def weights_wrong_architecture(tmp, w):
    # Tensors of a 16-channel network under the config of the 8-channel one.
    from safetensors import safe_open
    from safetensors.torch import save_file

    from semlens.enhancer import PixelEnhancer

    with safe_open(str(w), "pt") as f:
        meta = f.metadata()
    other = PixelEnhancer(tiny_config(2, channels=16))
    bad = tmp / "wrong.safetensors"
    save_file({k: v.contiguous() for k, v in other.state_dict().items()}, str(bad), metadata=meta)
    return Case(clip(tmp), tmp / "out.mp4", WeightsError, "architecture", model=bad)


class _Payload:
    """Unpickling this calls ``os.mkdir(path)``: a stand-in for code hidden in a checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (os.mkdir, (str(self.path),))


def weights_carrying_code(tmp, w):
    marker = tmp / "code-ran"
    bad = tmp / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hook": _Payload(marker)}, bad)
    return Case(clip(tmp), tmp / "out.mp4", WeightsError, "code", model=bad, marker=marker)


def weights_pickled_module(tmp, w):
    from semlens.enhancer import PixelEnhancer

    bad = tmp / "whole_model.pth"
    torch.save(PixelEnhancer(tiny_config(2)), bad)  # a pickled nn.Module: classes, not just tensors
    return Case(clip(tmp), tmp / "out.mp4", WeightsError, "refused", model=bad)


def weights_missing(tmp, w):
    return Case(clip(tmp), tmp / "out.mp4", ModelNotFoundError, "does not exist",
                model=tmp / "nowhere.safetensors")


def weights_wrong_scale(tmp, w):
    return Case(clip(tmp), tmp / "out.mp4", ModelNotFoundError, "x2", cli_extra=["--scale", "4"])


CASES: dict[str, Callable[[Path, Path], Case]] = {f.__name__: f for f in [
    missing_path, empty_folder, folder_without_videos, empty_file, text_named_mp4, half_mp4, audio_only,
    audio_only_named_mp4, one_by_one, seven_by_five, single_frame, gray_ffv1, gray_png_folder, yuv444p,
    ten_bit, rotated, variable_frame_rate, unusual_names, output_folder_missing, output_read_only,
    output_read_only_subfolder, output_is_input, output_is_input_via_hard_link, output_exists,
    output_folder_run_into_itself, weights_corrupt, weights_truncated, weights_wrong_architecture,
    weights_carrying_code, weights_pickled_module, weights_missing, weights_wrong_scale,
]}

# Cases that need a folder the run cannot write in.
LOCKED_CASES = (output_read_only, output_read_only_subfolder)

# Also through a real subprocess: argv encoding, warnings on stderr, unpickling in a real process.
SUBPROCESS_CASES = ["one_by_one", "unusual_names", "weights_carrying_code"]


# -- running and checking -----------------------------------------------------------------------------

NOBODY = 65534


def _as_nobody(run: Callable[[], dict[str, Any]], timeout: float = 180) -> dict[str, Any]:
    """Call ``run()`` in a forked child with root's privileges dropped to ``nobody`` (root ignores
    permission bits, so a read-only folder is read-only only for an unprivileged user); return the
    dict it returns (sent back as JSON). Skips the test where privileges cannot be dropped."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never returns into pytest
        reply: dict[str, Any] = {"crash": "the child ended early"}
        try:
            os.close(read_fd)
            try:
                os.setgroups([])
                os.setgid(NOBODY)
                os.setuid(NOBODY)
            except OSError as exc:
                reply = {"cannot_drop": str(exc)}
            else:
                reply = run()
        except BaseException as exc:  # reported to the parent
            reply = {"crash": f"{type(exc).__name__}: {exc}"}
        finally:
            os.write(write_fd, json.dumps(reply).encode())
            os._exit(0)
    os.close(write_fd)
    chunks = []
    with os.fdopen(read_fd, "rb") as fh:
        while True:
            ready, _, _ = select.select([fh], [], [], timeout)
            if not ready:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise AssertionError(f"the unprivileged child did not finish within {timeout}s")
            chunk = fh.read1(65536)
            if not chunk:
                break
            chunks.append(chunk)
    os.waitpid(pid, 0)
    reply = json.loads(b"".join(chunks).decode())
    if "cannot_drop" in reply:
        pytest.skip(f"running as root and cannot drop privileges to nobody: {reply['cannot_drop']}")
    assert "crash" not in reply, reply["crash"]
    return reply


@pytest.fixture
def build(tmp_path, tiny_x2_path, request):
    """Build a case in a fresh folder; a ``locked`` folder is made read-only (mode 555). As root,
    which ignores permission bits, such a case is built in a world-readable folder outside pytest's
    root-only temporary tree, with a readable copy of the weights, and run as ``nobody``
    (``case.as_nobody``: the tests then call the API and the CLI through :func:`_as_nobody`)."""
    made: list[Path] = []

    def make(name: str) -> Case:
        root = tmp_path / "case"
        as_nobody = False
        if os.geteuid() == 0 and CASES[name] in LOCKED_CASES:
            base = Path(tempfile.mkdtemp(prefix="semlens-ro-"))
            base.chmod(0o755)
            made.append(base)
            root, as_nobody = base / "case", True
        root.mkdir()
        case = CASES[name](root, tiny_x2_path)
        case.root, case.as_nobody = root, as_nobody
        if as_nobody:
            case.weights = Path(shutil.copyfile(tiny_x2_path, root / "tiny.safetensors"))
            case.weights.chmod(0o644)
        if "locked" in case.dst.parts:
            folder = root / "locked"
            folder.mkdir()
            folder.chmod(0o555)
            made.append(folder)
        case.before = {p: digest(p) for p in (case.src, case.model) if p is not None and p.exists()}
        case.dst_before = digest(case.dst) if case.dst.exists() else None
        return case

    yield make
    for path in reversed(made):
        if path.name == "locked":
            path.chmod(0o755)
        else:
            shutil.rmtree(path, ignore_errors=True)


def check_outcome(case: Case) -> None:
    """What must hold after any run, successful or not."""
    assert partials_under(case.root) == [], "a temporary output was left behind"
    for path, before in case.before.items():
        assert digest(path) == before, f"{path} was modified"
    if case.marker is not None:
        assert not case.marker.exists(), "code from the weights file ran"
    if case.error is not None:
        if case.dst_before is not None:
            assert digest(case.dst) == case.dst_before
        elif case.dst != case.src and not case.folder_run:
            assert not case.dst.exists()
        return
    assert case.dst.exists()
    in_count = len(list(case.src.iterdir())) if case.src.is_dir() else len(read_frames(case.src)[0])
    frames, _, _ = read_frames(case.dst)
    a = probe(case.src)
    assert len(frames) == in_count
    assert frames[0].shape == (a.height * 2, a.width * 2, 3)
    if case.check is not None:
        case.check(case)


def cli_args(case: Case, tiny_x2_path: Path) -> list[str | Path]:
    return ["upscale", case.src, case.dst, "--model", case.model or case.weights or tiny_x2_path, "--device", "cpu",
            "--threads", "1", "--preset", "ultrafast", "-q", *case.cli_extra]


@pytest.mark.parametrize("name", list(CASES))
def test_api(name, build, tiny_x2_path, tiny_upscaler):
    case = build(name)

    def run() -> None:
        scale = int(case.cli_extra[1]) if "--scale" in case.cli_extra else None
        up = (tiny_upscaler if case.model is None and scale is None
              else SemanticLensUpscaler.from_pretrained(case.model or tiny_x2_path, scale=scale, device="cpu"))
        if case.folder_run:
            up.upscale_folder(case.src, case.dst, preset="ultrafast", raise_on_failure=True)
        else:
            up.upscale_video(case.src, case.dst, preset="ultrafast")

    def outcome() -> dict[str, Any]:
        try:
            run()
        except SemlensError as exc:
            return {"error": type(exc).__name__, "exit_code": exc.exit_code, "message": str(exc)}
        return {"error": None}

    got = _as_nobody(outcome) if case.as_nobody else outcome()
    assert got["error"] == (case.error.__name__ if case.error else None), got
    if case.error is not None:
        assert got["exit_code"] == case.exit_code
        message = got["message"]
        assert "\n" not in message and case.contains.lower() in message.lower(), message
    check_outcome(case)


@pytest.mark.parametrize("name", list(CASES))
def test_cli(name, build, tiny_x2_path):
    case = build(name)
    args = cli_args(case, tiny_x2_path)
    if case.as_nobody:
        code, stdout, stderr = _as_nobody(lambda: invoke_cli(args)._asdict()).values()
    else:
        code, stdout, stderr = invoke_cli(args)
    assert code == case.exit_code, stderr
    if case.error is None:
        assert "Traceback" not in stderr and "error" not in stderr.lower(), stderr
    else:
        assert_one_line_error(stderr, contains=case.contains)
        assert stdout == ""
    check_outcome(case)


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_real_cli(name, build, tiny_x2_path, run_cli):
    case = build(name)
    code, stdout, stderr = run_cli(cli_args(case, tiny_x2_path))
    assert code == case.exit_code, stderr
    if case.error is None:
        assert stderr == "" and stdout == "", stderr  # -q: no warning, no noise
    else:
        assert_one_line_error(stderr, contains=case.contains)
    check_outcome(case)


def test_exit_codes_are_distinct_per_error_type():
    kinds = {c.exit_code for c in (InputNotFoundError, InvalidInputError, OutputExistsError, OutputError,
                                   WeightsError, ModelNotFoundError, NothingToDoError)}
    assert len(kinds) == 7 and 0 not in kinds and 1 not in kinds and 130 not in kinds

