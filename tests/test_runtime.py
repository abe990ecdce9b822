"""Allocator tuning: on unless turned off, once per process, and harmless where it does not apply."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CHECK = "from semlens.runtime import tune_allocator; print(tune_allocator(), tune_allocator())"


@pytest.mark.parametrize("value, expected", [(None, "True True"), ("0", "False False"), ("off", "False False"),
                                             ("1", "True True")])
def test_tuning_is_on_unless_turned_off(value: str | None, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if value is None:
        monkeypatch.delenv("SEMLENS_TUNE_MALLOC", raising=False)
    else:
        monkeypatch.setenv("SEMLENS_TUNE_MALLOC", value)
    if expected.startswith("True") and not sys.platform.startswith("linux"):
        expected = "False False"
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, check=True).stdout
    assert out.strip() == expected


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's allocator")
def test_tuned_allocator_reuses_freed_large_blocks_instead_of_faulting_them_in_again() -> None:
    """Rounds of large temporaries (like a network's activations at 720p): with glibc's defaults
    every round maps and faults in all of its blocks again; tuned, most come back from the heap."""
    script = (
        "import resource, torch\n"
        "from semlens.runtime import tune_allocator\n"
        "tune_allocator()\n"
        "def work():\n"
        "    x = torch.ones(8 * 1024 * 1024); y = x * 2; z = y + x; w = torch.cat([z, y]); return float(w[-1])\n"
        "work()\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(8):\n"
        "    work()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n")
    faults = {}
    for value in ("1", "0"):
        env = {**os.environ, "SEMLENS_TUNE_MALLOC": value, "OMP_NUM_THREADS": "1"}
        out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=env)
        faults[value] = int(out.stdout.strip().splitlines()[-1])
    pages = 8 * 160 * 1024 * 1024 // 4096  # eight rounds of 160 MiB of fresh 4 KiB pages
    assert faults["0"] > 0.8 * pages
    assert faults["1"] < 0.4 * faults["0"]


# -- devices and dtypes (CUDA mocked: these run on any machine) ------------------------------------

def _fake_cuda(monkeypatch: pytest.MonkeyPatch, count: int = 1, bf16: bool = True, memory: int = 16 * 1024**3,
               free: int | None = None, cached: int = 0) -> None:
    """CUDA devices of ``memory`` bytes with ``free`` of them free (``None``: all), and ``cached``
    bytes held unused by this process's caching allocator."""
    import contextlib
    import types

    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: bf16)
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device: types.SimpleNamespace(total_memory=memory))
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (memory if free is None else free, memory))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: cached + 123)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 123)


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
    with pytest.raises(ValueError, match="does not support bf16.*dtype='fp16'"):
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
        with pytest.raises(ValueError, match="cannot be used on Ray.*device='cuda'"):
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


# -- the memory budget follows the machine ---------------------------------------------------------

GIB = 1024**3


def test_a_gpu_budget_is_the_lesser_of_60_percent_and_90_percent_of_the_free_memory(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from semlens.tiling import default_memory_budget
    from semlens.upscaler import task_memory_budget

    cuda = torch.device("cuda")
    _fake_cuda(monkeypatch, memory=16 * GIB, free=4 * GIB)  # another program holds 12 GiB
    assert default_memory_budget(cuda) == int(0.9 * 4 * GIB)
    assert default_memory_budget(cuda, share=0.5) == int(0.45 * 4 * GIB)
    assert task_memory_budget(None, cuda, 0.5) == int(0.45 * 4 * GIB)
    _fake_cuda(monkeypatch, memory=16 * GIB, free=15 * GIB)  # nearly all free: 60% of the device
    assert default_memory_budget(cuda) == int(0.6 * 16 * GIB)
    # What this process's own allocator holds unused is free for it.
    _fake_cuda(monkeypatch, memory=16 * GIB, free=2 * GIB, cached=2 * GIB)
    assert default_memory_budget(cuda) == int(0.9 * 4 * GIB)


def _fake_meminfo(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str | None,
                  cgroup: dict[str, str] | None = None) -> None:
    """``/proc/meminfo`` holding ``text`` (``None``: missing), the control group folder holding
    ``cgroup``'s files (``None``: none), and no ``os.sysconf`` page counts."""
    import semlens.tiling as tiling

    meminfo = tmp_path / "meminfo"
    if text is not None:
        meminfo.write_text(text)
    folder = tmp_path / "cgroup"
    folder.mkdir(exist_ok=True)
    for name, content in (cgroup or {}).items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(content)
    monkeypatch.setattr(tiling, "MEMINFO", meminfo)
    monkeypatch.setattr(tiling, "CGROUP", folder)

    def no_sysconf(name: str) -> int:
        raise ValueError(name)

    monkeypatch.setattr(tiling.os, "sysconf", no_sysconf)


MEMINFO = "MemTotal:       32768000 kB\nMemFree:         1000000 kB\nMemAvailable:   {} kB\nBuffers: 1 kB\n"


def test_a_cpu_budget_is_half_the_available_memory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    from semlens.tiling import available_memory_bytes, default_memory_budget
    from semlens.upscaler import task_memory_budget

    cpu = torch.device("cpu")
    _fake_meminfo(monkeypatch, tmp_path, MEMINFO.format(24 * 1024 * 1024))  # 24 GiB available
    assert available_memory_bytes() == 24 * GIB
    assert default_memory_budget(cpu) == 12 * GIB
    assert default_memory_budget(cpu, share=0.25) == 3 * GIB
    # A Ray task given 2 of the machine's 16 CPUs: its share; a whole machine: the run's own default.
    assert task_memory_budget(None, cpu, 0, cpu_share=2 / 16) == int(12 * GIB * 2 / 16)
    assert task_memory_budget(None, cpu, 0, cpu_share=1.0) is None
    assert task_memory_budget(5 * GIB, cpu, 0, cpu_share=0.5) == 5 * GIB


def test_a_cpu_budget_is_never_below_1_gib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    from semlens.tiling import default_memory_budget

    cpu = torch.device("cpu")
    _fake_meminfo(monkeypatch, tmp_path, MEMINFO.format(1024 * 1024))  # 1 GiB available: half is 512 MiB
    assert default_memory_budget(cpu) == GIB
    _fake_meminfo(monkeypatch, tmp_path, MEMINFO.format(6 * 1024 * 1024))
    assert default_memory_budget(cpu, share=0.1) == GIB  # 0.3 GiB, floored


def test_without_meminfo_the_free_pages_then_2_gib(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import torch

    import semlens.tiling as tiling

    cpu = torch.device("cpu")
    _fake_meminfo(monkeypatch, tmp_path, None)
    assert tiling.available_memory_bytes() is None
    assert tiling.default_memory_budget(cpu) == 2 * GIB  # nothing known: the old fixed budget
    _fake_meminfo(monkeypatch, tmp_path, "MemTotal: 1000 kB\nMemFree: 10 kB\n")  # a kernel without MemAvailable
    pages = {"SC_AVPHYS_PAGES": 2 * 1024 * 1024, "SC_PAGE_SIZE": 4096}  # 8 GiB free
    monkeypatch.setattr(tiling.os, "sysconf", lambda name: pages[name])
    assert tiling.available_memory_bytes() == 8 * GIB
    assert tiling.default_memory_budget(cpu) == 4 * GIB


@pytest.mark.parametrize("files, room", [
    ({"memory.max": "6442450944\n", "memory.current": "2147483648\n",  # v2: 6 GiB limit, 2 GiB used ...
      "memory.stat": "anon 1\ninactive_file 1073741824\n"}, 5 * GIB),  # ... half of it droppable cache
    ({"memory.max": "max\n", "memory.current": "2147483648\n"}, None),  # no limit: the machine's memory
    ({"memory/memory.limit_in_bytes": "4294967296\n", "memory/memory.usage_in_bytes": "1073741824\n",
      "memory/memory.stat": "inactive_file 5\ntotal_inactive_file 0\n"}, 3 * GIB),  # v1
    ({"memory/memory.limit_in_bytes": "9223372036854771712\n", "memory/memory.usage_in_bytes": "1\n"}, None),
])
def test_a_container_limit_lowers_the_available_memory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        files: dict[str, str], room: int | None) -> None:
    from semlens.tiling import available_memory_bytes

    _fake_meminfo(monkeypatch, tmp_path, MEMINFO.format(24 * 1024 * 1024), files)
    assert available_memory_bytes() == (24 * GIB if room is None else room)


@pytest.mark.parametrize("text, expected", [
    ("4G", 4 * GIB), ("4g", 4 * GIB), ("4GB", 4 * GIB), ("4GiB", 4 * GIB), ("1.5GiB", 3 * GIB // 2),
    ("512M", 512 * 1024**2), ("512mb", 512 * 1024**2), ("64k", 65536), ("1T", 1024 * GIB),
    ("2147483648", 2 * GIB), (" 8 G ", 8 * GIB), ("100B", 100), (2048, 2048),
])
def test_memory_sizes_are_read_in_powers_of_1024(text: str | int, expected: int) -> None:
    from semlens.tiling import parse_memory_size

    assert parse_memory_size(text) == expected


@pytest.mark.parametrize("text", ["0", "0G", "0.5", "-4G", "abc", "", "4X", "G", "4 GG", "nan", "inf", 0, -1])
def test_bad_memory_sizes_are_refused(text: str | int) -> None:
    from semlens.tiling import parse_memory_size

    with pytest.raises(ValueError, match="memory size"):
        parse_memory_size(text)


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
