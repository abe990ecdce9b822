"""Scale-out on Ray (semlens.distributed) on a local two-CPU Ray cluster started by the tests
(loopback only, no dashboard): a folder gives the same outputs, results and exit codes as a local
run; a video split into three segments gives exactly the frames and timestamps of the unsplit run;
a worker killed in the middle of its task is replaced and the output is still complete.

Outputs are compared after decoding; the lossless ``ffv1`` codec makes that a comparison of the
network's output pixels."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from clips import make_clip, make_shots_clip, packet_dump, read_frames
from conftest import TINY_OVERLAP, TINY_WINDOW, invoke_cli, partials_under

from semlens.semantics.lite import LiteExtractor
from semlens.upscaler import SemanticLensUpscaler, UpscaleResult

ray = pytest.importorskip("ray")

import semlens.distributed as distributed  # noqa: E402
from semlens.distributed import RayOptions, _build_upscaler, _payload  # noqa: E402
from semlens.segments import scan_video  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

WORKERS = RayOptions(threads=1, poll_seconds=0.2)


@pytest.fixture(scope="module", autouse=True)
def cluster() -> Any:
    """A local Ray cluster of 2 CPUs on 127.0.0.1 for this module."""
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
             configure_logging=False)
    # The test's own extractor class travels to the workers by value (they cannot import tests/).
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield
    ray.shutdown()


def assert_same_video(a: Path, b: Path) -> None:
    """Same decoded frames (bit for bit), same timestamps and time base, same audio packets."""
    fa, pa, ta = read_frames(a)
    fb, pb, tb = read_frames(b)
    assert len(fa) == len(fb) > 0
    assert (pb, tb) == (pa, ta)
    assert all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))
    assert packet_dump(b, "audio") == packet_dump(a, "audio")


def make_folder(root: Path) -> list[Path]:
    return [make_clip(root / "a.mp4", frames=9, size=(32, 24), audio=True),
            make_clip(root / "sub" / "b.mkv", frames=7, size=(24, 16))]


def test_folder_on_ray_equals_local_run(tmp_path: Path, tiny_x2_path: Path) -> None:
    src = tmp_path / "in"
    make_folder(src)
    up = SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu")
    local = up.upscale_folder(src, tmp_path / "local", codec="ffv1")
    seen: list[tuple[int, int | None]] = []
    finished: list[Path] = []
    remote = up.upscale_folder(src, tmp_path / "ray", codec="ffv1", executor="ray", ray_options=WORKERS,
                               progress=lambda done, total: seen.append((done, total)),
                               on_result=lambda r: finished.append(r.input))
    assert [(r.input, r.status, r.frames) for r in remote] == [(r.input, r.status, r.frames) for r in local]
    assert all(r.status == "done" for r in remote) and sorted(finished) == sorted(r.input for r in local)
    for r_local, r_remote in zip(local, remote, strict=True):
        assert r_remote.output == tmp_path / "ray" / r_local.output.relative_to(tmp_path / "local")
        assert_same_video(r_local.output, r_remote.output)
    # Progress adds up the frames of all videos (b.mkv has no frame count in its header).
    assert seen and seen[-1][0] == 9 + 7
    assert partials_under(tmp_path) == []


def test_folder_cli_on_ray_has_the_local_summary_and_exit_code(tmp_path: Path, tiny_x2_path: Path) -> None:
    src = tmp_path / "in"
    make_clip(src / "good.mp4", frames=6, size=(32, 24))
    (src / "broken.mp4").write_text("not a video")
    common = ["--model", tiny_x2_path, "--device", "cpu", "--threads", "1", "--preset", "ultrafast"]
    local = invoke_cli(["upscale", src, tmp_path / "local", *common])
    remote = invoke_cli(["upscale", src, tmp_path / "ray", *common, "--ray"])
    assert local.exit_code == remote.exit_code == 11
    for r in (local, remote):
        assert "good.mp4" in r.stdout and "broken.mp4" in r.stdout and "failed" in r.stdout
        assert r.stderr.strip().splitlines()[-1] == "error: 1 of 2 videos failed"
    local_errors = [line for line in local.stderr.splitlines() if "broken.mp4" in line]
    remote_errors = [line for line in remote.stderr.splitlines() if "broken.mp4" in line]
    assert remote_errors == local_errors != []
    assert read_frames(tmp_path / "ray" / "good.mp4")[1] == read_frames(tmp_path / "local" / "good.mp4")[1]


def test_video_in_three_segments_equals_unsplit_run(tmp_path: Path, tiny_x2_path: Path) -> None:
    src = make_shots_clip(tmp_path / "long.mp4", shots=(13, 14, 13))  # 1.6 s at 25 fps, cuts at 13 and 27
    up = SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu")
    assert (up.settings.window, up.settings.overlap) == (TINY_WINDOW, TINY_OVERLAP)
    # The plan the Ray run makes: three segments, both joints inside a shot, the first spanning a cut.
    plan = scan_video(src, up, 0.6)
    assert plan.shots[1].start == 13 and plan.shots[2].start == 27
    assert [(s.start, s.stop) for s in plan.segments] == [(0, 17), (17, 35), (35, 40)]
    single = tmp_path / "single.mkv"
    up.upscale_video(src, single, codec="ffv1")
    split = tmp_path / "out" / "split.mkv"
    r = invoke_cli(["upscale", src, split, "--model", tiny_x2_path, "--ray", "--segment-seconds", "0.6",
                    "--codec", "ffv1", "--threads", "1", "-q"])
    assert r.exit_code == 0, r.stderr
    assert_same_video(single, split)
    assert sorted(p.name for p in split.parent.iterdir()) == ["split.mkv"]  # segment files removed


class CrashOnceExtractor(LiteExtractor):
    """The lite extractor, whose worker process dies at its first window the first time (a
    process killed in the middle of a task); later runs record their process id."""

    def __init__(self, marker: Path) -> None:
        super().__init__()
        self.marker = marker

    def __call__(self, frames: Any) -> Any:
        if not self.marker.exists():
            self.marker.write_text(str(os.getpid()))
            os._exit(1)
        self.marker.with_suffix(".survivor").write_text(str(os.getpid()))
        return super().__call__(frames)


def test_killed_task_is_retried_and_output_complete(tmp_path: Path, tiny_x2_path: Path) -> None:
    src = tmp_path / "in"
    make_clip(src / "a.mp4", frames=9, size=(32, 24), audio=True)
    reference = SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu")
    local = reference.upscale_folder(src, tmp_path / "local", codec="ffv1")
    marker = tmp_path / "crashed.pid"
    crashing = SemanticLensUpscaler(reference.model, CrashOnceExtractor(marker), device="cpu", window=TINY_WINDOW,
                                    overlap=TINY_OVERLAP, name=reference.name)
    remote = crashing.upscale_folder(src, tmp_path / "ray", codec="ffv1", executor="ray",
                                     ray_options=RayOptions(threads=1, max_retries=2))
    assert [(r.status, r.frames) for r in remote] == [("done", 9)]
    crashed, survived = marker.read_text(), marker.with_suffix(".survivor").read_text()
    assert crashed != survived  # a second worker process finished the task
    assert_same_video(local[0].output, remote[0].output)
    assert partials_under(tmp_path) == []


def _describe_worker(box: list[Any]) -> tuple[int, bool, str]:
    """What the upscaler a Ray worker builds from ``box`` batches, compiles and runs on."""
    from semlens.distributed import _worker_upscaler
    from semlens.enhancer.compiling import is_compiled

    up = _worker_upscaler(box)
    return up.settings.batch_windows, is_compiled(up.model), up.device.type


def _worker_budget(box: list[Any]) -> int | None:
    from semlens.distributed import _worker_upscaler

    return _worker_upscaler(box).settings.memory_budget


def test_workers_resolve_batch_windows_and_compile_on_their_device(tiny_x2_path: Path) -> None:
    """The driver (a CPU) ships "automatic" windows per batch, not its own resolution (1), so each
    worker resolves it on its device; compile and an explicit batch size reach the workers."""
    auto = SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu")
    assert auto.settings.batch_windows == 1  # the driver's own resolution, on its CPU
    shipped = _payload(auto, RayOptions())
    assert (shipped.batch_windows, shipped.compile) == (0, False)
    assert _build_upscaler(shipped, "cpu").settings.batch_windows == 1
    asked = SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu", batch_windows=2, compile=True)
    assert (_payload(asked, RayOptions()).batch_windows, _payload(asked, RayOptions()).compile) == (2, True)
    overridden = _payload(asked, RayOptions(batch_windows=0, compile=False))
    assert (overridden.batch_windows, overridden.compile) == (0, False)
    with pytest.raises(ValueError, match="batch_windows"):
        _payload(auto, RayOptions(batch_windows=-1))
    # On a Ray worker: the upscaler it builds has the options (compiled lazily: nothing runs here).
    box = [ray.put(_payload(auto, RayOptions(batch_windows=3, compile=True, threads=1)))]
    assert ray.get(ray.remote(num_cpus=1)(_describe_worker).remote(box)) == (3, True, "cpu")
    # The memory budget: a task on a CPU gets its share of the machine's, an explicit one is kept.
    budget = ray.get(ray.remote(num_cpus=1)(_worker_budget).remote(box))
    assert (budget is not None) == ((os.cpu_count() or 1) > 1)
    given = SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu", memory_budget="3G")
    box = [ray.put(_payload(given, RayOptions(threads=1)))]
    assert ray.get(ray.remote(num_cpus=1)(_worker_budget).remote(box)) == 3 * 1024**3


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_worker_of_a_cpu_driver_batches_four_windows(tiny_x2_path: Path) -> None:
    auto = SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu")
    assert _build_upscaler(_payload(auto, RayOptions()), "cuda").settings.batch_windows == 4


def test_cli_passes_compile_and_batch_windows_to_ray(tmp_path: Path, tiny_x2_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[RayOptions | None] = []

    def recorded(up: Any, pairs: Any, *, options: RayOptions | None = None, **kwargs: Any) -> list[UpscaleResult]:
        seen.append(options)
        return [UpscaleResult(input=a, output=b, frames=1) for a, b in pairs]

    monkeypatch.setattr(distributed, "run_on_ray", recorded)
    clip = make_clip(tmp_path / "in" / "a.mp4", frames=2, size=(16, 16))
    common = ["--model", tiny_x2_path, "--ray", "--compile", "--batch-windows", "3", "-q"]
    assert invoke_cli(["upscale", clip, tmp_path / "a.mp4", *common]).exit_code == 0
    assert invoke_cli(["upscale", tmp_path / "in", tmp_path / "out", *common]).exit_code == 0
    assert [(o.compile, o.batch_windows) for o in seen if o is not None] == [(True, 3), (True, 3)]
