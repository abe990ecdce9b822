"""Where a folder runs (semlens.executors): the upscaler takes an executor object or the name of a
registered one, and never imports the layers above it (the Ray layer imports the upscaler)."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from clips import make_clip

from semlens import executors
from semlens.upscaler import SemanticLensUpscaler, UpscaleResult

ROOT = Path(__file__).resolve().parents[1]


class RecordingExecutor:
    """Records what it is asked to run and reports every video as done."""

    def __init__(self, options: Any = None) -> None:
        self.options = options
        self.calls: list[tuple[Any, list[tuple[Path, Path]], dict[str, Any]]] = []

    def run(self, up: Any, pairs: Sequence[tuple[Path, Path]], **kwargs: Any) -> list[Any]:
        self.calls.append((up, list(pairs), kwargs))
        return [UpscaleResult(input=a, output=b, frames=1) for a, b in pairs]


def _folder(root: Path) -> Path:
    make_clip(root / "in" / "a.mp4", frames=2, size=(16, 16), audio=False)
    make_clip(root / "in" / "sub" / "b.mkv", frames=2, size=(16, 16), audio=False)
    return root / "in"


def test_folder_runs_on_an_executor_object(tmp_path: Path, tiny_upscaler: SemanticLensUpscaler) -> None:
    src = _folder(tmp_path)
    runner = RecordingExecutor()
    results = tiny_upscaler.upscale_folder(src, tmp_path / "out", executor=runner, codec="ffv1", overwrite=True)
    ((up, pairs, kwargs),) = runner.calls
    assert up is tiny_upscaler
    assert pairs == [(src / "a.mp4", tmp_path / "out" / "a.mp4"), (src / "sub" / "b.mkv", tmp_path / "out" / "sub" / "b.mkv")]
    assert kwargs["codec"] == "ffv1" and kwargs["overwrite"] is True and kwargs["skip_existing"] is False
    assert [r.input for r in results] == [a for a, _ in pairs]
    assert not (tmp_path / "out").exists()  # nothing ran locally


def test_registered_names_and_unknown_ones(tmp_path: Path, tiny_upscaler: SemanticLensUpscaler,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    src = _folder(tmp_path)
    made: list[RecordingExecutor] = []

    def factory(options: Any) -> RecordingExecutor:
        made.append(RecordingExecutor(options))
        return made[-1]

    monkeypatch.setattr(executors, "_FACTORIES", dict(executors._FACTORIES))
    executors.register_executor("recording", factory)
    assert "recording" in executors.executor_names() and "ray" in executors.executor_names()
    tiny_upscaler.upscale_folder(src, tmp_path / "out", executor="recording", ray_options="opts")
    assert [e.options for e in made] == ["opts"] and len(made[0].calls) == 1
    with pytest.raises(ValueError, match="unknown executor 'nowhere'"):
        tiny_upscaler.upscale_folder(src, tmp_path / "out", executor="nowhere")
    with pytest.raises(TypeError, match="run"):
        tiny_upscaler.upscale_folder(src, tmp_path / "out", executor=42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="local"):
        executors.register_executor("local", factory)


def test_ray_name_resolves_to_the_ray_executor_without_starting_ray() -> None:
    code = ("import sys\nfrom semlens.executors import get_executor\nfrom semlens.distributed import RayExecutor\n"
            "e = get_executor('ray', 'opts')\n"
            "print(type(e) is RayExecutor, e.options, 'ray' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.split() == ["True", "opts", "False"]


def _imports(path: Path) -> set[str]:
    """Every module ``path`` imports, at any level (functions included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_lower_layers_do_not_import_the_distributed_layer() -> None:
    """The Ray layer imports the upscaler and the segments; none of those (nor the executor
    registry below them) imports it back, even inside a function."""
    for module in ("upscaler.py", "executors.py", "segments.py", "pipeline.py"):
        assert not {m for m in _imports(ROOT / "semlens" / module) if m.startswith("semlens.distributed")}, module
    assert not {m for m in _imports(ROOT / "semlens" / "executors.py") if m.startswith("semlens")}
    code = "import sys, semlens.upscaler; print('semlens.distributed' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "False"
