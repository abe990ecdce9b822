"""The built wheel ships the bundled weights, and an installed wheel upscales offline.

The wheel is built from a copy of the repository (so the work tree is not touched) without build
isolation (no download of build tools). It is installed with ``--no-deps`` into a fresh venv that
sees the current environment's packages (torch, PyAV, ...) but not the editable semlens, and run
from outside the repository with ``HF_HUB_OFFLINE=1`` and an empty Hugging Face cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT / "weights"
CANARY = "zz-wheel-canary.safetensors"
_IGNORE = shutil.ignore_patterns(
    ".git", "build", "dist", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache",
    ".hypothesis", "runs", ".venv", "*.semlens-partial*",
)


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload]
    assert result.returncode == 0, f"{cmd[:4]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel built from a copy of the repo, with a canary file added to weights/."""
    base = tmp_path_factory.mktemp("wheel")
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=_IGNORE)
    (src / "weights" / CANARY).write_bytes(b"canary")
    _run([sys.executable, "-m", "build", "--wheel", "--no-isolation", "--skip-dependency-check",
          "--outdir", str(base / "dist"), str(src)])
    (found,) = (base / "dist").glob("semlens-*.whl")
    return found


def test_wheel_ships_the_weights_folder(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert f"semlens/weights/{CANARY}" in names, "package data rule for semlens.weights is broken"
    shipped = sorted(p.name for p in WEIGHTS.glob("*.safetensors"))
    for name in shipped:
        assert f"semlens/weights/{name}" in names
    assert {"semlens/hub/__init__.py", "semlens/hub/specs.py", "semlens_cli/hub_commands.py"} <= names


def _fresh_venv(where: Path, wheel: Path) -> Path:
    """A venv with --system-site-packages, the current environment's site-packages appended (for
    torch etc. when running from a venv), and the wheel installed with --no-deps."""
    venv = where / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    ours = sysconfig.get_paths()["purelib"]
    # A plain path line: the editable semlens finder (a .pth *inside* that folder) is not run.
    (site / "zz_parent_env.pth").write_text(ours + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
          "--quiet", str(wheel)])
    return python


def test_installed_wheel_upscales_offline_with_the_default_model(wheel: Path, tmp_path: Path) -> None:
    from semlens.hub import DEFAULT_MODEL, get_spec

    bundled = get_spec(DEFAULT_MODEL).bundled
    if bundled is None or not (WEIGHTS / bundled).is_file():
        pytest.skip(f"the default model's weights (weights/{bundled}) are not trained yet")
    clips = pytest.importorskip("clips", reason="tests/clips.py (make_clip) is needed for a real clip")
    src = clips.make_clip(tmp_path / "in clip é.mp4", frames=6, size=(32, 24))
    dst = tmp_path / "out clip.mp4"
    python = _fresh_venv(tmp_path, wheel)
    script = textwrap.dedent(
        f"""
        import sys
        from pathlib import Path
        import semlens
        assert Path(semlens.__file__).resolve().is_relative_to(Path({str(tmp_path / "venv")!r}).resolve()), semlens.__file__
        from semlens import SemanticLensUpscaler
        from semlens.hub import list_models
        assert any(m.name == {DEFAULT_MODEL!r} and m.status == "bundled" for m in list_models())
        upscaler = SemanticLensUpscaler.from_pretrained()
        upscaler.upscale_video({str(src)!r}, {str(dst)!r})
        print("ok")
        """
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PYTHON"))}
    env.update(HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "empty-hf-home"), HF_HUB_DISABLE_TELEMETRY="1")
    result = _run([str(python), "-c", script], cwd=work, env=env)
    assert result.stdout.strip().endswith("ok")
    assert not (tmp_path / "empty-hf-home" / "hub").exists() or not any((tmp_path / "empty-hf-home" / "hub").iterdir())

    import av

    with av.open(str(dst)) as container:
        stream = container.streams.video[0]
        frames = sum(1 for _ in container.decode(stream))
        size = (stream.codec_context.width, stream.codec_context.height)
    scale = get_spec(DEFAULT_MODEL).scale
    assert frames == 6 and size == (32 * scale, 24 * scale)
