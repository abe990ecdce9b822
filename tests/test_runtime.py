"""Allocator tuning: opt-in, once per process, and harmless where it does not apply."""

from __future__ import annotations

import subprocess
import sys

import pytest

CHECK = "from semlens.runtime import tune_allocator; print(tune_allocator(), tune_allocator())"


@pytest.mark.parametrize("value, expected", [(None, "False False"), ("0", "False False"), ("1", "True True")])
def test_tuning_is_opt_in(value: str | None, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if value is None:
        monkeypatch.delenv("SEMLENS_TUNE_MALLOC", raising=False)
    else:
        monkeypatch.setenv("SEMLENS_TUNE_MALLOC", value)
    if value == "1" and not sys.platform.startswith("linux"):
        expected = "False False"
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True).stdout
    assert out.strip() == expected


# -- devices and dtypes (CUDA mocked: these run on any machine) ------------------------------------

def _fake_cuda(monkeypatch: pytest.MonkeyPatch, count: int = 1, bf16: bool = True, memory: int = 16 * 1024**3) -> None:
    import contextlib
    import types

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(total_memory=memory))


def test_cuda_index_must_exist(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from semlens.upscaler import resolve_device

    _fake_cuda(monkeypatch, count=1)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    assert resolve_device("cuda") == torch.device("cuda")
    with pytest.raises(ValueError, match=r"'cuda:1' does not exist: this process sees 1 CUDA device "
                                         r"\(CUDA_VISIBLE_DEVICES=3\), only cuda:0"):
        resolve_device("cuda:1")
    with pytest.raises(ValueError, match="sees 1 CUDA device"):
        resolve_device(torch.device("cuda", 2))
    _fake_cuda(monkeypatch, count=2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")


def test_bf16_needs_the_device_support(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from semlens.upscaler import resolve_dtype

    cuda = torch.device("cuda")
    _fake_cuda(monkeypatch, bf16=False)
    with pytest.raises(ValueError, match="does not support bf16.*--dtype fp16"):
        resolve_dtype("bf16", cuda)
    with pytest.raises(ValueError, match="does not support bf16"):
        resolve_dtype(torch.bfloat16, cuda)
    assert resolve_dtype("fp16", cuda) == torch.float16 and resolve_dtype("auto", cuda) == torch.float16
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16  # the CPU has it
    _fake_cuda(monkeypatch, bf16=True)
    assert resolve_dtype("bf16", cuda) == torch.bfloat16


def test_ray_tasks_refuse_gpus_they_cannot_see() -> None:
    from semlens.upscaler import check_task_device

    for device in ("auto", "cpu", "cuda", "cuda:0"):
        check_task_device(device, None)
    check_task_device("cuda:1", 2)
    for device, gpus in (("cuda:1", None), ("cuda:1", 1), ("cuda:1", 0.5), ("cuda:2", 2)):
        with pytest.raises(ValueError, match="cannot be used on Ray.*--device cuda"):
            check_task_device(device, gpus)


def test_a_fraction_of_a_gpu_gets_that_fraction_of_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from semlens.tiling import default_memory_budget
    from semlens.upscaler import task_memory_budget

    memory = 16 * 1024**3
    _fake_cuda(monkeypatch, memory=memory)
    cuda = torch.device("cuda")
    whole = default_memory_budget(cuda)
    assert whole == int(0.6 * memory)
    assert default_memory_budget(cuda, share=0.5) == int(0.3 * memory)  # two such tasks: 60% together
    assert task_memory_budget(None, cuda, 0.5) == int(0.3 * memory)
    assert task_memory_budget(None, cuda, 0.25) == int(0.15 * memory)
    assert task_memory_budget(None, cuda, 1) is None  # a whole GPU: the default
    assert task_memory_budget(123, cuda, 0.5) == 123  # a budget that was set is kept
    assert task_memory_budget(None, torch.device("cpu"), 0) is None
    with pytest.raises(ValueError, match="share"):
        default_memory_budget(cuda, share=1.5)


# -- --compile: a bounded number of graphs ---------------------------------------------------------

def test_compile_builds_a_bounded_number_of_graphs(one_thread: None) -> None:
    """``compile_network`` compiles the per-frame stages with dynamic shapes: after two short
    streams (batches of 2 and 1 windows, whole frames and tiles), other frame sizes, tile sizes,
    emitted ranges and batch sizes build no new graph (compiling the whole network built one per
    emitted range, batch size, tile size and pooling object). The output is the eager one."""
    import numpy as np
    import torch
    from conftest import tiny_config

    from semlens.enhancer import PixelEnhancer
    from semlens.enhancer.compiling import compile_network, compiled_stages
    from semlens.pipeline import StreamSettings, enhance_stream
    from semlens.semantics.lite import LiteExtractor

    graphs: list[object] = []

    def backend(gm: torch.fx.GraphModule, inputs: list[torch.Tensor]) -> object:
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    torch.manual_seed(0)
    model = PixelEnhancer(tiny_config()).eval()
    reference = PixelEnhancer(tiny_config()).eval()
    reference.load_state_dict(model.state_dict())
    keys = set(model.state_dict())
    assert compile_network(model, backend=backend) is model and set(model.state_dict()) == keys
    assert len(compiled_stages(model)) > 5

    def run(net: torch.nn.Module, frames: int, size: tuple[int, int], tile: int, batch: int) -> list[np.ndarray]:
        rng = np.random.default_rng(frames)
        clip = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(frames)]
        settings = StreamSettings(device=torch.device("cpu"), window=3, overlap=1, detect_cuts=False,
                                  tile=tile, tile_overlap=2, batch_windows=batch)
        return list(enhance_stream(clip, net, LiteExtractor(max_instances=3), settings))  # type: ignore[arg-type]

    warm_up = [(5, (16, 20), 12, 2), (3, (10, 18), 0, 2)]  # square tiles, whole frames; batches of 2 and 1
    other = [(7, (18, 22), 14, 3), (5, (11, 20), 14, 3), (4, (13, 17), 0, 1)]  # new sizes, tiles, batches
    try:
        first = [frame for args in warm_up for frame in run(model, *args)]
        warm = len(graphs)
        assert warm > 0
        later = [frame for args in other for frame in run(model, *args)]
        assert len(graphs) == warm
    finally:
        torch._dynamo.reset()
    expected = [frame for args in warm_up + other for frame in run(reference, *args)]
    assert all(np.array_equal(a, b) for a, b in zip(first + later, expected, strict=True))


def test_from_pretrained_compiles_the_stages(monkeypatch: pytest.MonkeyPatch, tiny_x2_path: object) -> None:
    import semlens.upscaler as upscaler

    seen: list[object] = []
    monkeypatch.setattr(upscaler, "compile_network", lambda net: seen.append(net) or net)
    up = upscaler.SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu", compile=True)  # type: ignore[arg-type]
    assert seen == [up.model]
