"""Spatial tiling: geometry, seamless blending, the OOM retry, the automatic tile size, the pipeline hook.

How much overlap the exactness tests need: the enhancer's *theoretical* receptive field is large
(``receptive_radius``: 31 LR pixels for the tiny model on 3 frames, growing with depth, with IMAGE's
radius per propagation step, and with the window length), but its *effective* reach is short for
random models. ``tiled_forward`` uses the outer quarter of every overlap band as context only
and ramps across the middle half, so an overlap of 8 (2 context pixels + a 4-pixel ramp) keeps the
convolution and IMAGE paths within 1/255. ISEE is not local (each instance token pools the instance's
pixels over the frame): tiles exchange their pooled sums (a gathering pass, then the output pass), and
with that the full model is within 1/255 too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from semlens.enhancer import EnhancerConfig, PixelEnhancer
from semlens.enhancer.isee import TilePooling
from semlens.errors import SemlensError
from semlens.pipeline import StreamSettings, enhance_stream
from semlens.semantics.lite import LiteExtractor
from semlens.semantics.types import Semantics
from semlens.tiling import (
    DEFAULT_TILE_OVERLAP,
    auto_tile_for,
    auto_tile_size,
    estimate_window_bytes,
    is_out_of_memory,
    receptive_radius,
    tile_starts,
    tiled_forward,
    tiled_forward_with_retry,
)

H, W, T = 40, 52, 3


def _model(**overrides: object) -> PixelEnhancer:
    torch.manual_seed(0)
    return PixelEnhancer(EnhancerConfig.preset("tiny", scale=2, **overrides)).eval()


@pytest.fixture(scope="module")
def clip() -> tuple[torch.Tensor, Semantics]:
    """``(1, T, 3, 40, 52)`` smooth random content plus a little noise, and its lite semantics."""
    gen = torch.Generator().manual_seed(1)
    x = F.interpolate(torch.rand(T, 3, 10, 13, generator=gen), size=(H, W), mode="bilinear").unsqueeze(0)
    x = (x + 0.05 * torch.rand(x.shape, generator=gen)).clamp(0, 1)
    with torch.inference_mode():
        semantics = LiteExtractor()(x)
    assert semantics.masks.unique().numel() > 2  # several instances, so cropping masks matters
    return x, semantics


class _Nearest(torch.nn.Module):
    """A pointwise stand-in for the enhancer: nearest upsampling, so any tiling must be exact."""

    scale = 3

    def forward(self, x: torch.Tensor, semantics: Semantics | None,
                emit: tuple[int, int] | None = None) -> torch.Tensor:
        b, t, c, h, w = x.shape
        if semantics is not None:
            assert tuple(semantics.masks.shape) == (b, t, h, w)
        up = F.interpolate(x.reshape(b * t, c, h, w), scale_factor=self.scale, mode="nearest")
        up = up.view(b, t, c, self.scale * h, self.scale * w)
        return up if emit is None else up[:, emit[0]:emit[1]]


@pytest.mark.parametrize(("size", "tile", "overlap"), [(40, 16, 8), (52, 16, 8), (52, 24, 12), (17, 16, 15), (16, 16, 8)])
def test_tile_starts_cover_with_overlap(size: int, tile: int, overlap: int) -> None:
    starts = tile_starts(size, tile, overlap)
    assert starts[0] == 0 and starts[-1] + min(tile, size) == size
    covered = np.zeros(size, dtype=bool)
    for a, b in zip(starts, starts[1:]):
        assert b > a and a + tile - b >= overlap  # neighbours share at least `overlap` pixels
    for a in starts:
        covered[a:a + tile] = True
    assert covered.all()


def test_tile_overlap_must_leave_a_stride() -> None:
    with pytest.raises(ValueError, match="overlap"):
        tile_starts(40, 8, 8)


@pytest.mark.parametrize(("tile", "overlap"), [(16, 8), (7, 3), (24, 12), (13, 0), (16, 15), (16, 12), (45, 40)])
def test_blend_is_exact_for_a_pointwise_model(clip: tuple[torch.Tensor, Semantics], tile: int, overlap: int) -> None:
    x, semantics = clip
    model = _Nearest()
    y = tiled_forward(model, x, semantics, tile, overlap)  # type: ignore[arg-type]
    assert y.shape == (1, T, 3, 3 * H, 3 * W)
    torch.testing.assert_close(y, model(x, None), atol=1e-5, rtol=0)


@torch.inference_mode()
def test_tiled_equals_untiled_through_the_local_paths(clip: tuple[torch.Tensor, Semantics]) -> None:
    """Convolutions, GPS and instance-masked IMAGE (ISEE off): tiles of 16 overlapping by 8 on a
    40x52 frame give the untiled output within 1/255 everywhere, borders included."""
    x, semantics = clip
    model = _model(use_isee=False)
    assert receptive_radius(model.config, T) > 8  # the theoretical field is wider than the overlap
    ref = model(x, semantics)
    y = tiled_forward(model, x, semantics, 16, 8)
    assert y.shape == ref.shape
    assert (y - ref).abs().max().item() < 1 / 255


@torch.inference_mode()
@pytest.mark.parametrize(("tile", "overlap"), [pytest.param(16, 8, marks=pytest.mark.slow), (24, 8),
                                               pytest.param(32, 16, marks=pytest.mark.slow)])
@pytest.mark.parametrize("with_semantics", [True, False])
def test_tiled_equals_untiled_with_isee(clip: tuple[torch.Tensor, Semantics], tile: int, overlap: int,
                                        with_semantics: bool) -> None:
    """The full tiny model, ISEE included: with the pooled sums exchanged between the tiles the
    output is within 1/255 of the untiled one everywhere; one pass alone (each tile pools only its
    own pixels) is not (measured max about 3/255 for 16-pixel tiles)."""
    x, semantics = clip
    semantics = semantics if with_semantics else None
    model = _model()
    ref = model(x, semantics)
    y = tiled_forward(model, x, semantics, tile, overlap)
    assert (y - ref).abs().max().item() < 1 / 255
    alone = (tiled_forward(model, x, semantics, tile, overlap, passes=1) - ref).abs()
    assert alone.mean().item() > (y - ref).abs().mean().item()
    if tile == 16 and with_semantics:
        assert alone.max().item() > 1 / 255


@pytest.mark.slow
@torch.inference_mode()
def test_tiled_with_isee_keeps_the_emitted_range_and_batches(clip: tuple[torch.Tensor, Semantics]) -> None:
    x, semantics = clip
    model = _model()
    pair = torch.cat([x, x.flip(-1)])
    both = Semantics.concat([semantics, LiteExtractor()(x.flip(-1))])
    ref = model(pair, both, (1, 3))
    y = tiled_forward(model, pair, both, 16, 8, emit=(1, 3))
    assert y.shape == ref.shape == (2, 2, 3, 2 * H, 2 * W)
    assert (y - ref).abs().max().item() < 1 / 255


def test_tile_pooling_adds_the_other_tiles_share() -> None:
    """A tile's pooled sums are its owned pixels plus what it is told about the rest; without that
    it pools all of its pixels; every call is recorded."""
    own = torch.tensor([[[1.0, 1.0, 0.0, 1.0]]])  # one slot over a 1x4 tile
    x = torch.tensor([[[1.0, 2.0, 3.0, 4.0]]])  # one channel
    owned = torch.tensor([[0.0, 1.0, 1.0, 1.0]])  # the first pixel belongs to the neighbour
    first = TilePooling(owned)
    sums, area = first.pool(own, x)
    assert sums.item() == 7.0 and area.item() == 3.0  # all of the tile
    assert [(s.item(), a.item()) for s, a in first.recorded] == [(6.0, 2.0)]  # owned only
    second = TilePooling(owned, outside=[(torch.tensor([[[10.0]]]), torch.tensor([[5.0]]))], want_output=False)
    sums, area = second.pool(own, x)
    assert sums.item() == 16.0 and area.item() == 7.0
    with pytest.raises(RuntimeError, match="more pooling calls"):
        second.pool(own, x)


@torch.inference_mode()
def test_tile_larger_than_the_frame_is_identical(clip: tuple[torch.Tensor, Semantics]) -> None:
    x, semantics = clip
    model = _model()
    ref = model(x, semantics)
    assert torch.equal(tiled_forward(model, x, semantics, 64, 8), ref)
    assert torch.equal(tiled_forward_with_retry(model, x, semantics, 0, 8), ref)


def _fail_once_when_large(model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch, limit: int,
                          error: BaseException) -> list[tuple[int, int]]:
    """Make ``model.forward`` raise ``error`` the first time it sees more than ``limit`` pixels."""
    seen: list[tuple[int, int]] = []
    original = model.forward
    state = {"raised": False}

    def forward(x: torch.Tensor, semantics: Semantics | None = None,
                emit: tuple[int, int] | None = None, pooling: TilePooling | None = None) -> torch.Tensor:
        seen.append((x.shape[-2], x.shape[-1]))
        if x.shape[-2] * x.shape[-1] > limit and not state["raised"]:
            state["raised"] = True
            raise error
        return original(x, semantics, emit, pooling)

    monkeypatch.setattr(model, "forward", forward)
    return seen


@pytest.mark.parametrize(("error", "oom"), [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123 bytes"), True),
    (RuntimeError("CUDA error: out of memory"), True),
    (MemoryError(), True),
    (RuntimeError("shape mismatch"), False),
    (ValueError("out of memory"), False),
])
def test_is_out_of_memory(error: BaseException, oom: bool) -> None:
    assert is_out_of_memory(error) is oom


@pytest.mark.slow
@torch.inference_mode()
def test_oom_halves_the_tile_and_keeps_every_frame(clip: tuple[torch.Tensor, Semantics],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    x, semantics = clip
    model = _model()
    expected = tiled_forward(model, x, semantics, 26, 8)  # whole frames fail, half the long side works
    error = RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9663676416 bytes")
    seen = _fail_once_when_large(model, monkeypatch, limit=H * W - 1, error=error)
    y = tiled_forward_with_retry(model, x, semantics, 0, 8)
    assert seen[0] == (H, W) and max(a * b for a, b in seen[1:]) <= 26 * 26
    assert y.shape == (1, T, 3, 2 * H, 2 * W)
    assert torch.equal(y, expected)


@torch.inference_mode()
def test_oom_retry_gives_up_with_advice_and_other_errors_pass(clip: tuple[torch.Tensor, Semantics],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    x, semantics = clip
    model = _model()

    def always_oom(x: torch.Tensor, semantics: Semantics | None = None, emit: object = None,
                   pooling: object = None) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(model, "forward", always_oom)
    with pytest.raises(SemlensError, match="out of memory even with .*window"):
        tiled_forward_with_retry(model, x, semantics, 32, 8)

    def broken(x: torch.Tensor, semantics: Semantics | None = None, emit: object = None,
               pooling: object = None) -> torch.Tensor:
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(model, "forward", broken)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        tiled_forward_with_retry(model, x, semantics, 32, 8)


def test_auto_tile_size() -> None:
    assert auto_tile_size(48, 64, 12, 32, 2 * 1024**3) == 0  # small frames fit
    tiny = auto_tile_size(1080, 1920, 12, 32, 1024**2)
    assert tiny >= 16  # a tiny budget still gives a usable tile
    sizes = [auto_tile_size(1080, 1920, 12, 32, budget) for budget in (2**28, 2**30, 2**32)]
    assert all(0 < s < 1920 for s in sizes) and sizes == sorted(sizes)
    # the chosen tile fits the budget it was chosen for (whole-frame tensors aside)
    assert estimate_window_bytes(sizes[1], sizes[1], 12, 32) <= 2**30
    # a frame a little too big is cut into balanced tiles, not one big tile and a sliver
    need = estimate_window_bytes(100, 200, 12, 32, scale=2)
    split = auto_tile_size(100, 200, 12, 32, int(need * 0.9), scale=2)
    assert 0 < split < 200 and len(tile_starts(200, split, 8)) == 2 and split <= 120


def test_memory_estimate_grows_with_the_network() -> None:
    small = estimate_window_bytes(180, 320, 12, 32, scale=2, radius=2)
    assert estimate_window_bytes(180, 320, 12, 128, scale=2, radius=2) > small
    assert estimate_window_bytes(180, 320, 12, 32, scale=4, radius=2) > small
    assert estimate_window_bytes(180, 320, 24, 32, scale=2, radius=2) > 1.5 * small
    assert estimate_window_bytes(180, 320, 12, 32, scale=2, radius=2, bytes_per_value=2) < small
    model = _model()
    x = torch.zeros(1, 12, 3, 360, 640)
    assert auto_tile_for(model, x, 2**40) == 0 and auto_tile_for(model, x, 2**28) > 0


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(3)
    base = rng.integers(0, 256, (10, 13, 3), dtype=np.uint8)
    return [np.kron(np.roll(base, i, axis=1), np.ones((4, 4, 1), dtype=np.uint8)) for i in range(n)]


@pytest.mark.slow
def test_pipeline_tiles_only_when_the_budget_needs_it(monkeypatch: pytest.MonkeyPatch) -> None:
    import semlens.tiling as tiling

    model, frames = _model(), _frames(5)
    calls: list[int] = []
    original = tiling.tiled_forward

    def spy(model: PixelEnhancer, x: torch.Tensor, semantics: Semantics | None, tile: int, overlap: int,
            emit: tuple[int, int] | None = None, passes: int | None = None) -> torch.Tensor:
        calls.append(tile)
        return original(model, x, semantics, tile, overlap, emit, passes)

    monkeypatch.setattr(tiling, "tiled_forward", spy)

    def run(**kwargs: object) -> list[np.ndarray]:
        settings = StreamSettings(device=torch.device("cpu"), window=5, overlap=1, detect_cuts=False, **kwargs)
        return list(enhance_stream(frames, model, LiteExtractor(), settings))

    whole = run()
    assert calls and all(tile == 0 for tile in calls)  # the default budget fits 40x52 frames
    calls.clear()
    tiled = run(memory_budget=1, tile_overlap=8)  # tiles stop at twice the overlap: 16 leaves room below W
    assert calls and all(0 < tile < W for tile in calls)
    assert len(tiled) == len(whole) == 5 and tiled[0].shape == whole[0].shape == (2 * H, 2 * W, 3)
    diff = np.abs(np.stack(tiled).astype(int) - np.stack(whole).astype(int))
    assert diff.max() <= 1  # within rounding of the untiled frames


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("scale", [4, 2])
def test_shipped_models_tile_within_a_few_levels_with_the_default_overlap(scale: int) -> None:
    """Trained models reach further than random ones, and IMAGE's block matching (run once on the
    whole frame, each tile reading its crop) moves what a pixel sees by up to 10 pixels per frame:
    with the default overlap, tiles of the real example clip give the whole-frame output within
    5/255, and all but a few values in ten thousand within 1/255."""
    from semlens import SemanticLensUpscaler
    from semlens.io import open_source
    from semlens.pipeline import to_tensor

    up = SemanticLensUpscaler.from_pretrained(str(REPO / "weights" / f"semlens-tiny-x{scale}.safetensors"),
                                              device="cpu")
    with open_source(REPO / "examples" / "sample.mp4") as reader:
        frames = [frame.image for _, frame in zip(range(12), reader)]
    x, _ = to_tensor(frames, torch.device("cpu"))
    with torch.inference_mode():
        semantics = up.extractor(x)
        ref = up.model(x, semantics, (2, 10)).clamp(0, 1)
        y = tiled_forward(up.model, x, semantics, 96, DEFAULT_TILE_OVERLAP, emit=(2, 10)).clamp(0, 1)
    assert up.settings.tile_overlap == DEFAULT_TILE_OVERLAP
    error = (y - ref).abs()
    assert error.max().item() < 5 / 255 and (error > 1 / 255).float().mean().item() < 1e-3
    assert error.mean().item() < 0.1 / 255


@torch.inference_mode()
def test_motion_fields_are_what_the_forward_pass_matches_and_tiles_read_their_crops() -> None:
    from semlens.semantics.types import Semantics

    torch.manual_seed(0)
    model = PixelEnhancer(EnhancerConfig.preset("tiny", scale=2, channels=8, token_dim=8, align_dim=8,
                                                motion_search=4, token_source="pooled")).eval()
    g = torch.Generator().manual_seed(1)
    scene = F.avg_pool2d(torch.rand(1, 3, 60, 90, generator=g), 3, 1, 1)
    x = torch.stack([scene[..., 2 * t:2 * t + 40, 3 * t:3 * t + 56] for t in range(4)], dim=1)
    masks = torch.zeros(1, 4, 40, 56, dtype=torch.long)
    semantics = Semantics(masks=masks, instance_tokens=torch.zeros(1, 4, 1, 8), global_tokens=torch.zeros(1, 4, 8),
                          valid=torch.ones(1, 4, 1, dtype=torch.bool), track_ids=torch.zeros(1, 1, dtype=torch.long))
    fields = model.motion_fields(x, semantics, stop=3)
    assert fields is not None and set(fields) == {(0, 1), (1, 2), (2, 3), (1, 0), (2, 1)}
    assert any(bool(f.any()) for f in fields.values())  # the camera moved
    assert torch.equal(model(x, semantics, (0, 3)), model(x, semantics, (0, 3), motion=fields))
    seen: list[dict] = []
    original = model.forward

    def spy(*args: object, **kwargs: object) -> torch.Tensor:
        seen.append(kwargs.get("motion"))  # type: ignore[arg-type]
        return original(*args, **kwargs)

    model.forward = spy  # type: ignore[method-assign]
    tiled_forward(model, x, semantics, 32, 8, emit=(0, 3))
    assert seen and all(m is not None and torch.equal(m[(1, 0)], fields[(1, 0)][..., :32, :32]) for m in seen[:1])
    assert PixelEnhancer(EnhancerConfig.preset("tiny", scale=2)).motion_fields(x) is None  # no reach


def test_cli_tile_overlap_reaches_the_tiles(tmp_path: Path, tiny_x2_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clips import make_clip
    from conftest import invoke_cli

    import semlens.tiling as tiling

    seen: list[tuple[int, int]] = []
    original = tiling.tiled_forward

    def spy(model: PixelEnhancer, x: torch.Tensor, semantics: Semantics | None, tile: int, tile_overlap: int,
            *args: object) -> torch.Tensor:
        seen.append((tile, tile_overlap))
        return original(model, x, semantics, tile, tile_overlap, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(tiling, "tiled_forward", spy)
    src = make_clip(tmp_path / "in.mp4", frames=6, size=(48, 32))
    result = invoke_cli(["upscale", src, tmp_path / "out.mp4", "--model", tiny_x2_path, "--device", "cpu", "-q",
                         "--tile", "24", "--tile-overlap", "6"])
    assert result.exit_code == 0, result.stderr
    assert seen and all(pair == (24, 6) for pair in seen)
    bad = invoke_cli(["upscale", src, tmp_path / "bad.mp4", "--model", tiny_x2_path, "--tile-overlap", "-1"])
    assert bad.exit_code == 2 and not (tmp_path / "bad.mp4").exists()



def test_cli_memory_budget_reaches_the_tiles(tmp_path: Path, tiny_x2_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """A run of small frames goes through whole on a machine with room, and is tiled when
    ``--memory-budget`` is too small for its windows."""
    from clips import make_clip
    from conftest import invoke_cli

    import semlens.tiling as tiling

    tiles: list[int] = []
    original = tiling.tiled_forward

    def spy(model: PixelEnhancer, x: torch.Tensor, semantics: Semantics | None, tile: int, *args: object) -> torch.Tensor:
        tiles.append(tile)
        return original(model, x, semantics, tile, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(tiling, "tiled_forward", spy)
    monkeypatch.setattr(tiling, "available_memory_bytes", lambda: 16 * GIB)
    src = make_clip(tmp_path / "in.mp4", frames=6, size=(48, 32))
    common = ["--model", tiny_x2_path, "--device", "cpu", "--threads", "1", "-q", "--tile-overlap", "6"]
    result = invoke_cli(["upscale", src, tmp_path / "whole.mp4", *common])
    assert result.exit_code == 0, result.stderr
    assert tiles and set(tiles) == {0}
    tiles.clear()
    result = invoke_cli(["upscale", src, tmp_path / "tiled.mp4", *common, "--memory-budget", "1"])
    assert result.exit_code == 0, result.stderr
    assert tiles and all(0 < tile < 48 for tile in tiles)


GIB = 1024**3
HD = (720, 1280)  # the shipped models' windows of 1280x720 frames


@pytest.mark.parametrize("scale", [2, 4])
def test_720p_windows_go_through_whole_when_the_machine_has_room(scale: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the shipped models a 1280x720 window is not tiled on a machine with 24 GiB available
    (a budget of 12 GiB); with 4 GiB available (a 2 GiB budget) or an explicit small budget it is."""
    import semlens.tiling as tiling
    from semlens import SemanticLensUpscaler
    from semlens.pipeline import WindowRunner

    monkeypatch.setattr(tiling, "available_memory_bytes", lambda: 24 * GIB)
    shipped = REPO / "weights" / f"semlens-tiny-x{scale}.safetensors"
    up = SemanticLensUpscaler.from_pretrained(shipped, device="cpu")
    assert up.settings.window >= 10 and up.settings.memory_budget is None
    x = torch.empty(1, up.settings.window, 3, *HD, device="meta")  # only the shape is read
    assert WindowRunner(up.model, up.extractor, up.settings)._tile_for(x) == 0
    monkeypatch.setattr(tiling, "available_memory_bytes", lambda: 4 * GIB)  # a 2 GiB budget
    assert 2 * DEFAULT_TILE_OVERLAP <= WindowRunner(up.model, up.extractor, up.settings)._tile_for(x) < 720
    small = SemanticLensUpscaler.from_pretrained(shipped, device="cpu", memory_budget="2G")
    monkeypatch.setattr(tiling, "available_memory_bytes", lambda: 24 * GIB)  # the explicit budget wins
    assert small.settings.memory_budget == 2 * GIB
    assert 2 * DEFAULT_TILE_OVERLAP <= WindowRunner(small.model, small.extractor, small.settings)._tile_for(x) < 720
    large = SemanticLensUpscaler.from_pretrained(shipped, device="cpu", memory_budget=16 * GIB)
    monkeypatch.setattr(tiling, "available_memory_bytes", lambda: 2 * GIB)
    assert WindowRunner(large.model, large.extractor, large.settings)._tile_for(x) == 0


def test_the_automatic_budget_is_read_once_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """What is free shrinks as the run takes memory: every window of a run is decided on the budget
    read at its first window."""
    import semlens.tiling as tiling
    from semlens.pipeline import WindowRunner
    from semlens.semantics import build_extractor

    readings = iter([24 * GIB, 2 * GIB, 2 * GIB])
    monkeypatch.setattr(tiling, "available_memory_bytes", lambda: next(readings))
    run = WindowRunner(_model(), build_extractor("none"), StreamSettings(device=torch.device("cpu")))
    assert run._budget() == run._budget() == 12 * GIB
    assert WindowRunner(_model(), build_extractor("none"), StreamSettings(device=torch.device("cpu")))._budget() == GIB


def test_memory_budget_reaches_the_settings_and_ray_workers(tiny_x2_path: Path) -> None:
    from semlens import SemanticLensUpscaler
    from semlens.distributed import RayOptions, _build_upscaler, _payload
    from semlens.upscaler import task_memory_budget

    up = SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu", memory_budget="1.5GiB")
    assert up.settings.memory_budget == 3 * GIB // 2
    worker = _build_upscaler(_payload(up, RayOptions()), "cpu")
    assert worker.settings.memory_budget == 3 * GIB // 2
    assert task_memory_budget(worker.settings.memory_budget, worker.device, 0, 0.25) == 3 * GIB // 2
    assert SemanticLensUpscaler(up.model, "none", memory_budget=123).settings.memory_budget == 123
    for bad in (0, -1, "abc", "0G", 1.5, True):
        with pytest.raises(ValueError, match="memory"):
            SemanticLensUpscaler(up.model, "none", memory_budget=bad)  # type: ignore[arg-type]


# -- memory: what tiling cannot shrink, what the retry remembers ------------------------------------

class _Limited(torch.nn.Module):
    """A pointwise stand-in for the enhancer that runs out of memory (``error``) when one call would
    hold more than ``limit`` LR pixels of the batch (``B * h * w``); records every call's shape."""

    def __init__(self, limit: int, error: BaseException | None = None, scale: int = 2) -> None:
        super().__init__()
        self.scale, self.limit = scale, limit
        self.error = error or torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 11.90 GiB")
        self.calls: list[tuple[int, int, int]] = []
        self.failures = 0

    def forward(self, x: torch.Tensor, semantics: Semantics | None = None, emit: tuple[int, int] | None = None,
                pooling: object = None) -> torch.Tensor:
        b, t, c, h, w = x.shape
        self.calls.append((b, h, w))
        if b * h * w > self.limit:
            self.failures += 1
            raise self.error
        up = F.interpolate(x.reshape(b * t, c, h, w), scale_factor=self.scale, mode="nearest")
        up = up.view(b, t, c, self.scale * h, self.scale * w)
        return up if emit is None else up[:, emit[0]:emit[1]]


def _windows(count: int, h: int = 24, w: int = 32, t: int = 3) -> list[tuple[object, list[np.ndarray]]]:
    from semlens.windows import Window

    rng = np.random.default_rng(5)
    return [(Window(number=i, start=1, stop=2, indices=tuple(range(t)), emit_offset=1),
             [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(t)]) for i in range(count)]


def _runner(model: torch.nn.Module, **settings: object) -> object:
    from semlens.pipeline import WindowRunner
    from semlens.semantics import build_extractor

    options: dict[str, object] = dict(device=torch.device("cpu"), window=3, overlap=1, detect_cuts=False,
                                      tile_overlap=4, batch_windows=4)
    options.update(settings)
    return WindowRunner(model, build_extractor("none"), StreamSettings(**options))  # type: ignore[arg-type]


def _expected(items: list[tuple[object, list[np.ndarray]]]) -> list[list[np.ndarray]]:
    return [[np.kron(f, np.ones((2, 2, 1), dtype=np.uint8)) for f in frames[1:2]] for _, frames in items]


def _same(a: list[list[np.ndarray]], b: list[list[np.ndarray]]) -> bool:
    return len(a) == len(b) and all(len(x) == len(y) and all(np.array_equal(p, q) for p, q in zip(x, y))
                                    for x, y in zip(a, b))


def test_oom_splits_the_batch_before_the_tile_and_remembers_it() -> None:
    model = _Limited(limit=24 * 32)  # one window of whole frames fits, two do not
    run = _runner(model)
    items = _windows(4)
    out = run.batch(items)  # type: ignore[attr-defined]
    assert _same(out, _expected(items))
    assert [b for b, _, _ in model.calls[:3]] == [4, 2, 1]  # 4 windows, then 2, then 1: whole frames kept
    assert all((h, w) == (24, 32) for _, h, w in model.calls)
    assert run.windows == 1 and run.tile is None  # type: ignore[attr-defined]
    failures = model.failures
    assert _same(run.batch(_windows(4)), _expected(_windows(4)))  # type: ignore[attr-defined]
    assert model.failures == failures  # the next batch does not run out of memory again


def test_oom_remembers_the_tile_that_fitted() -> None:
    model = _Limited(limit=20 * 20)  # whole 24x32 frames never fit; 16-pixel tiles do
    run = _runner(model, batch_windows=1)
    items = _windows(2)
    assert _same(run.batch(items[:1]), _expected(items[:1]))  # type: ignore[attr-defined]
    assert run.tile == 16 and model.failures == 1  # type: ignore[attr-defined]
    model.calls.clear()
    assert _same(run.batch(items[1:]), _expected(items[1:]))  # type: ignore[attr-defined]
    assert model.failures == 1 and all(h <= 16 and w <= 16 for _, h, w in model.calls)


def test_batch_shrinks_when_whole_frame_tensors_exceed_the_budget() -> None:
    """The float32 output of a batch, which no tile shrinks, is counted: with a budget that holds
    one window's whole-frame tensors twice but not two windows', windows go through one at a time
    without any out-of-memory error."""
    from semlens.tiling import whole_frame_bytes, windows_per_pass

    one = whole_frame_bytes(24, 32, 3, 2)
    model = _Limited(limit=10**9)
    run = _runner(model, memory_budget=2 * one + 1)
    items = _windows(4)
    assert _same(run.batch(items), _expected(items))  # type: ignore[attr-defined]
    assert model.failures == 0 and [b for b, _, _ in model.calls] == [1, 1, 1, 1]
    # 1080p to 4K (x2), windows of 12: 4 windows need about 11.6 GB of such tensors; 60% of 16 GB
    # holds one window's twice over.
    assert whole_frame_bytes(1080, 1920, 48, 2) > 11e9
    assert windows_per_pass(1080, 1920, 12, 2, int(0.6 * 16 * 1024**3), 4) == 1
    assert windows_per_pass(1080, 1920, 12, 2, 80 * 1024**3, 4) == 4


def test_oom_in_transfer_extractor_and_conversion_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    import semlens.pipeline as pipeline
    from semlens.semantics import build_extractor

    oom = RuntimeError("CUDA error: out of memory")
    original = pipeline.to_tensor
    state = {"to_tensor": 0, "extractor": 0}

    def to_tensor(frames: list[np.ndarray], device: torch.device) -> tuple[torch.Tensor, int]:
        state["to_tensor"] += 1
        if state["to_tensor"] == 1:
            raise oom
        return original(frames, device)

    monkeypatch.setattr(pipeline, "to_tensor", to_tensor)

    class Counting:
        """An extractor with stream state (windows seen) that runs out of memory once, mid-call."""

        name = "counting"

        def __init__(self) -> None:
            self.inner = build_extractor("none")
            self.seen = 0

        def reset(self) -> None:
            self.seen = 0

        def __call__(self, x: torch.Tensor) -> Semantics | None:
            self.seen = self.seen + 1
            state["extractor"] += 1
            if state["extractor"] == 1:
                raise oom
            return self.inner(x)

    converted: list[int] = []

    def convert(y: torch.Tensor, maxval: int) -> list[np.ndarray]:
        converted.append(y.shape[0])
        if y.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return pipeline.to_frames(y, maxval)

    extractor = Counting()
    run = pipeline.WindowRunner(_Limited(limit=10**9), extractor,  # type: ignore[arg-type]
                                StreamSettings(device=torch.device("cpu"), window=4, overlap=1, tile_overlap=4,
                                               batch_windows=2), convert)
    from semlens.windows import Window

    rng = np.random.default_rng(2)
    items = [(Window(number=i, start=1, stop=3, indices=tuple(range(4)), emit_offset=1),
              [rng.integers(0, 256, (8, 12, 3), dtype=np.uint8) for _ in range(4)]) for i in range(2)]
    out = run.batch(items)  # type: ignore[arg-type]
    expected = [[np.kron(f, np.ones((2, 2, 1), dtype=np.uint8)) for f in frames[1:3]] for _, frames in items]
    assert _same(out, expected)
    assert extractor.seen == 2  # the failed call's state change was undone
    assert converted == [2, 1, 1, 1, 1]  # a whole window once, then frame by frame
    assert run.frame_by_frame


def test_final_oom_advice_fits_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    from semlens.tiling import oom_message

    cuda = torch.device("cuda")
    assert "--dtype fp16" in oom_message(64, "oom", cuda, None, 8)
    for dtype in (torch.float16, torch.bfloat16):
        assert "--dtype" not in oom_message(64, "oom", cuda, dtype, 8)
    assert "--dtype" not in oom_message(64, "oom", torch.device("cpu"), None, 8)
    run = _runner(_Limited(limit=0), dtype=torch.float16, batch_windows=2)
    with pytest.raises(SemlensError, match="one window per batch") as info:
        run.batch(_windows(2))  # type: ignore[attr-defined]
    assert "--dtype" not in str(info.value) and "--window" in str(info.value)


def test_memory_estimate_counts_float32_parts_under_half_precision() -> None:
    """Under fp16/bf16 autocast the output (and the input) stay float32 and ISEE's softmax is
    float32 on top of the half-precision logits: those parts cost what they cost in float32."""
    def est(**kw: int) -> int:
        return estimate_window_bytes(180, 320, 12, 32, **kw)

    for size in (2, 4):
        assert (est(scale=4, bytes_per_value=size) - est(scale=2, bytes_per_value=size)
                == est(scale=4) - est(scale=2))
    assert (est(instances=32, bytes_per_value=2) - est(instances=16, bytes_per_value=2)
            >= est(instances=32) - est(instances=16))
    assert est(bytes_per_value=2) < est()


# -- the overlap is never cut to make tiles fit ------------------------------------------------------

def test_oom_retry_stops_at_twice_the_overlap(clip: tuple[torch.Tensor, Semantics]) -> None:
    x, semantics = clip
    model = _Limited(limit=0)
    with pytest.raises(SemlensError, match="20-pixel tiles .*tiles stop at 20 pixels, twice the overlap of 10"):
        tiled_forward_with_retry(model, x, semantics, 0, 10)  # type: ignore[arg-type]
    sides = sorted({max(h, w) for _, h, w in model.calls}, reverse=True)
    assert sides == [W, 26, 20]  # whole frames, half the long side, then twice the overlap: no smaller


def test_automatic_tiles_keep_the_overlap_and_small_tiles_are_refused(tiny_x2_path: Path) -> None:
    from semlens import SemanticLensUpscaler

    model = _model()
    x = torch.zeros(1, 6, 3, 360, 640)
    assert auto_tile_for(model, x, 1, overlap=DEFAULT_TILE_OVERLAP) >= 2 * DEFAULT_TILE_OVERLAP
    with pytest.raises(ValueError, match="tiles of 32 pixels cannot share 40"):
        SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu", tile=32)
    assert SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu", tile=32, tile_overlap=8).settings.tile == 32
