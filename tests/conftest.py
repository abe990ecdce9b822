"""Shared test helpers: tiny random models saved as real weights files, and the real command line.

Trained weights are not needed for plumbing tests: :func:`save_tiny_model` saves a random
:class:`~semlens.enhancer.PixelEnhancer` (8 channels, ``lite`` extractor, window 6, overlap 1) as a
self-describing ``.safetensors`` file with :func:`semlens.hub.save_model`, which is then given to
``--model PATH`` or ``SemanticLensUpscaler.from_pretrained(PATH)``.

Fixtures: ``tiny_weights(scale=2, channels=8)`` (session-scoped factory, files cached),
``tiny_x2_path``, ``tiny_x4_path``, ``slow_x2_path`` (32 channels: a few seconds for ~100 frames,
for interrupt tests), ``tiny_upscaler`` (x2, CPU), ``run_cli`` / ``start_cli`` / ``run_cli_many``
(``python -m semlens_cli`` in a real subprocess with ``HF_HUB_OFFLINE=1``: exit codes, signals and
tracebacks are real) and ``invoke_cli`` (the same click group in-process, for speed).

Plain helpers (import them with ``from conftest import ...``): :func:`digest` (sha256 of a file or
a folder tree), :func:`partials_under` (``*semlens-partial*`` leftovers), :func:`assert_one_line_error`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest

TINY_WINDOW = 6
TINY_OVERLAP = 1
PARTIAL_TEXT = "semlens-partial"

Args = Sequence["str | os.PathLike[str]"]


# ---------------------------------------------------------------------------------------------
# Tiny random models
# ---------------------------------------------------------------------------------------------


def tiny_config(scale: int = 2, channels: int = 8) -> Any:
    """An :class:`~semlens.enhancer.EnhancerConfig` small enough for CPU tests (``lite`` tokens: 8-d)."""
    from semlens.enhancer import EnhancerConfig

    return EnhancerConfig.preset("tiny", scale=scale, channels=channels, token_dim=8, align_dim=8,
                                 instance_dim=8, global_dim=8)


def save_tiny_model(path: str | os.PathLike[str], scale: int = 2, channels: int = 8, seed: int = 0) -> Path:
    """Save a random tiny model with a complete semlens config; return the path. The global torch
    RNG is left as it was."""
    import torch

    from semlens.enhancer import PixelEnhancer
    from semlens.hub import save_model

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PixelEnhancer(tiny_config(scale, channels))
    meta = {"name": f"test-tiny-x{scale}" + ("" if channels == 8 else f"-c{channels}"), "extractor": "lite",
            "window": TINY_WINDOW, "overlap": TINY_OVERLAP, "description": "random weights, for tests only"}
    return save_model(path, model, meta)


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """``tiny_weights(scale=2, channels=8) -> Path`` of a saved random model (made once per session)."""
    folder = tmp_path_factory.mktemp("weights")
    made: dict[tuple[int, int], Path] = {}

    def get(scale: int = 2, channels: int = 8) -> Path:
        key = (scale, channels)
        if key not in made:
            made[key] = save_tiny_model(folder / f"tiny-x{scale}-c{channels}.safetensors", scale, channels)
        return made[key]

    return get


@pytest.fixture(scope="session")
def tiny_x2_path(tiny_weights: Callable[..., Path]) -> Path:
    return tiny_weights(2)


@pytest.fixture(scope="session")
def tiny_x4_path(tiny_weights: Callable[..., Path]) -> Path:
    return tiny_weights(4)


@pytest.fixture(scope="session")
def slow_x2_path(tiny_weights: Callable[..., Path]) -> Path:
    """A heavier x2 model (32 channels) that keeps the CLI busy for a while on a longer clip."""
    return tiny_weights(2, 32)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run the test with one torch thread (as the CLI's ``--threads 1`` does; float results can
    differ in the last bit between thread counts), restoring the count afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_upscaler(tiny_x2_path: Path) -> Any:
    """``SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu")`` (shared; it keeps no
    state between calls)."""
    from semlens.upscaler import SemanticLensUpscaler

    return SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu")


# ---------------------------------------------------------------------------------------------
# The command line
# ---------------------------------------------------------------------------------------------


class CliResult(NamedTuple):
    exit_code: int
    stdout: str
    stderr: str


def cli_command(args: Args) -> list[str]:
    """``python -m semlens_cli ARGS`` with this interpreter (no shell)."""
    return [sys.executable, "-m", "semlens_cli", *(os.fspath(a) for a in args)]


def cli_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of CLI subprocesses: offline hub, no colours, wide tables, one thread."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", PYTHONIOENCODING="utf-8", NO_COLOR="1",
               COLUMNS="300", OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", TERM="dumb")
    for key in ("FORCE_COLOR", "PYTHONWARNINGS"):
        env.pop(key, None)
    env.update(extra or {})
    return env


def start_cli(args: Args, *, cwd: str | os.PathLike[str] | None = None,
              env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """Start ``python -m semlens_cli ARGS`` (stdout/stderr piped, text) and return the process."""
    return subprocess.Popen(cli_command(args), cwd=cwd, env=cli_env(env), stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
                            errors="replace")


def _finish(proc: subprocess.Popen[str], timeout: float) -> CliResult:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"the CLI did not finish within {timeout}s; stderr:\n{err}") from None
    return CliResult(proc.returncode, out, err)


def run_cli(args: Args, *, cwd: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None,
            timeout: float = 240) -> CliResult:
    """Run ``python -m semlens_cli ARGS`` to the end: ``(exit_code, stdout, stderr)``."""
    return _finish(start_cli(args, cwd=cwd, env=env), timeout)


def run_cli_many(arg_lists: Sequence[Args], *, parallel: int = 3, cwd: str | os.PathLike[str] | None = None,
                 timeout: float = 300) -> list[CliResult]:
    """Run several independent CLI invocations, ``parallel`` at a time; results in the given order."""
    results: list[CliResult | None] = [None] * len(arg_lists)
    running: list[tuple[int, subprocess.Popen[str]]] = []
    pending = list(enumerate(arg_lists))
    deadline = time.monotonic() + timeout
    while pending or running:
        while pending and len(running) < parallel:
            i, args = pending.pop(0)
            running.append((i, start_cli(args, cwd=cwd)))
        i, proc = running.pop(0)
        results[i] = _finish(proc, max(1.0, deadline - time.monotonic()))
    return [r for r in results if r is not None]


@pytest.fixture(name="run_cli")
def run_cli_fixture() -> Callable[..., CliResult]:
    return run_cli


@pytest.fixture(name="start_cli")
def start_cli_fixture() -> Callable[..., subprocess.Popen[str]]:
    return start_cli


@pytest.fixture(name="run_cli_many")
def run_cli_many_fixture() -> Callable[..., list[CliResult]]:
    return run_cli_many


def invoke_cli(args: Args) -> CliResult:
    """Run the click group in this process (fast; same error handling as the real command). Fails
    the test if an exception other than the normal exit escapes; torch's thread count is restored
    (``--threads`` changes it process-wide)."""
    import torch
    from click.testing import CliRunner

    from semlens_cli.main import cli

    threads = torch.get_num_threads()
    try:
        result = CliRunner().invoke(cli, [os.fspath(a) for a in args], catch_exceptions=True,
                                    env={"HF_HUB_OFFLINE": "1", "COLUMNS": "300", "NO_COLOR": "1"})
    finally:
        torch.set_num_threads(threads)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        import traceback

        tb = "".join(traceback.format_exception(result.exception))
        raise AssertionError(f"the CLI let an exception escape:\n{tb}")
    return CliResult(result.exit_code, result.stdout, result.stderr)


@pytest.fixture(name="invoke_cli")
def invoke_cli_fixture() -> Callable[[Args], CliResult]:
    return invoke_cli


# ---------------------------------------------------------------------------------------------
# Assertions
# ---------------------------------------------------------------------------------------------


def digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, or of a folder tree (relative names and contents, sorted)."""
    p = Path(path)
    h = hashlib.sha256()
    if p.is_dir():
        for child in sorted(p.rglob("*")):
            h.update(str(child.relative_to(p)).encode("utf-8", "surrogateescape") + b"\0")
            if child.is_file():
                h.update(child.read_bytes())
    else:
        h.update(p.read_bytes())
    return h.hexdigest()


def partials_under(root: str | os.PathLike[str]) -> list[Path]:
    """Every file or folder under ``root`` whose name marks it as a partial output."""
    return sorted(p for p in Path(root).rglob("*") if PARTIAL_TEXT in p.name)


def assert_one_line_error(stderr: str, *, contains: str | None = None, alone: bool = True) -> str:
    """``stderr`` holds no traceback and ends in one ``error: ...`` line; with ``alone`` (runs with
    ``-q``) that line is all there is (no warning or other noise). Returns the line."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), f"stderr does not end in an error line: {stderr!r}"
    if alone:
        assert len(lines) == 1, f"expected a single line on stderr, got: {stderr!r}"
    last = lines[-1]
    assert len(last) > len("error: ") + 10, last
    if contains is not None:
        assert contains.lower() in last.lower(), last
    return last
