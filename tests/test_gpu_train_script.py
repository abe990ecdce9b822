"""``scripts/gpu_train.py``: the budgeted GPU training run, checked on the CPU at toy sizes."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu_train.py"


def photos() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    ys, xs = torch.meshgrid(torch.linspace(0, 1, 96), torch.linspace(0, 1, 96), indexing="ij")
    smooth = torch.stack([ys, xs, (ys + xs) / 2])
    return [smooth, torch.rand(3, 96, 96, generator=gen) * 0.5 + smooth * 0.5]


def _script():
    spec = importlib.util.spec_from_file_location("gpu_train", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_steps_fit_the_minutes_given() -> None:
    gpu = _script()
    assert gpu.steps_for(420, 0.25) == 1680
    assert gpu.steps_for(10, 1.0, floor=50) == 50
    with pytest.raises(ValueError):
        gpu.steps_for(10, 0.0)


def test_smoke_run_sizes_its_schedule_and_writes_weights_that_load_in_float16(tmp_path, monkeypatch) -> None:
    import semlens.train.data as data
    from semlens.hub import load_model

    monkeypatch.setattr(data, "builtin_sources", lambda split: (photos(), []))
    gpu = _script()
    summary = gpu.main([str(tmp_path / "run"), "--scale", "2", "--preset", "tiny", "--minutes", "0.02",
                        "--smoke", "--copy-to", str(tmp_path / "back")])
    assert summary["iterations"] >= 4 and summary["device"] == "cpu"
    cfg = json.loads((tmp_path / "run" / "train_config.json").read_text())
    assert cfg["iterations"] == summary["iterations"] and cfg["degradation"] == gpu.RECIPE
    assert sorted(p.name for p in (tmp_path / "back").iterdir()) == ["log.jsonl", "model-fp16.safetensors",
                                                                     "summary.json"]
    full = load_model(tmp_path / "run" / "model.safetensors")
    half = load_model(tmp_path / "back" / "model-fp16.safetensors")
    assert (half.window, half.overlap) == (12, 1)
    x = torch.rand(1, 3, 3, 16, 16)
    with torch.no_grad():
        a, b = full.model(x, None), half.model(x, None)
    assert b.dtype == torch.float32
    assert float((a - b).abs().max()) < 2e-3  # float16 storage of the weights, float32 arithmetic
    assert (tmp_path / "back" / "model-fp16.safetensors").stat().st_size < 0.6 * summary["weights"]["bytes"]
