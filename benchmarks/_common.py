"""Helpers shared by the benchmark scripts (run by hand, never by the test suite).

Each script prints a markdown table and writes the same numbers as JSON to ``--out``. Timings are
wall-clock seconds; every measured call is repeated ``--repeats`` times and the fastest run is
reported (the least disturbed by other processes), all runs are kept in the JSON.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
TESTS = REPO / "tests"


def clips_module() -> Any:
    """``tests/clips.py`` (deterministic PyAV clips and pattern frames), imported from the repo."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    import clips

    return clips


def parse_size(text: str) -> tuple[int, int]:
    """``"320x180"`` -> ``(320, 180)`` (width, height)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"bad size {text!r}; use WIDTHxHEIGHT, e.g. 320x180") from None
    return w, h


def set_threads(threads: int) -> int:
    """Use ``threads`` CPU threads for torch (0 = torch's default); returns the number in use."""
    if threads > 0:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, list[float]]:
    """Run ``fn`` ``repeats`` times; (fastest seconds, all seconds)."""
    runs = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return min(runs), runs


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_json(path: str | os.PathLike[str] | None, data: dict[str, Any]) -> None:
    if not path:
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"\nwrote {target}")


def pattern_frames(count: int, width: int, height: int) -> list[np.ndarray]:
    """``count`` deterministic ``(height, width, 3)`` uint8 frames (moving squares on a gradient)."""
    clips = clips_module()
    return [clips.pattern_frame(i, width, height) for i in range(count)]


def load_upscaler(model: str | None, scale: int, *, extractor: str | None = None) -> tuple[Any, str]:
    """The upscaler to measure: ``model`` (name, file, folder or repo id), else the shipped model of
    ``scale``; when that has no weights here, a random tiny model of the same architecture (speed
    does not depend on the weights). Returns the upscaler and a note saying which was used."""
    from semlens.errors import SemlensError
    from semlens.upscaler import SemanticLensUpscaler

    try:
        up = SemanticLensUpscaler.from_pretrained(model, scale=None if model else scale, device="cpu",
                                                  dtype="fp32", extractor=extractor)
        return up, f"model {up.name}"
    except SemlensError as exc:
        if model:
            raise SystemExit(f"cannot load --model {model}: {exc}") from None
        from semlens.enhancer import EnhancerConfig, PixelEnhancer

        torch.manual_seed(0)
        net = PixelEnhancer(EnhancerConfig.preset("tiny", scale=scale)).eval()
        up = SemanticLensUpscaler(net, extractor or "lite", device="cpu", dtype="fp32", name=f"random-tiny-x{scale}")
        print(f"note: {exc}", file=sys.stderr)
        note = f"random tiny x{scale} model (no trained semlens-tiny-x{scale} weights installed; speed does not depend on them)"
        print(f"note: timing a {note}", file=sys.stderr)
        return up, note


def model_file(model: str | None, scale: int, folder: Path) -> tuple[str, str]:
    """A ``--model`` argument for the command line: ``model`` itself, the shipped name when its weights
    are installed, else a random tiny model saved into ``folder``. Returns it and a note."""
    if model:
        return model, f"model {model}"
    from semlens.errors import SemlensError
    from semlens.hub import resolve
    from semlens.upscaler import default_model_name

    name = default_model_name(scale)
    try:
        resolve(name)
        return name, f"model {name}"
    except SemlensError as exc:
        from semlens.enhancer import EnhancerConfig, PixelEnhancer
        from semlens.hub.format import save_model

        torch.manual_seed(0)
        net = PixelEnhancer(EnhancerConfig.preset("tiny", scale=scale))
        path = save_model(folder / f"random-tiny-x{scale}.safetensors", net, {"name": f"random-tiny-x{scale}"})
        print(f"note: {exc}", file=sys.stderr)
        note = f"random tiny x{scale} model (no trained {name} weights installed)"
        print(f"note: using a {note}", file=sys.stderr)
        return str(path), note


def parameters(module: torch.nn.Module | Any) -> int:
    """Parameter count of a module (0 for objects without parameters, e.g. the lite extractor)."""
    params = getattr(module, "parameters", None)
    if params is None:
        inner = getattr(module, "model", None)
        return parameters(inner) if isinstance(inner, torch.nn.Module) else 0
    return sum(p.numel() for p in params())
