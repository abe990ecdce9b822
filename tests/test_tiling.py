"""Spatial tiling: geometry, seamless blending, the OOM retry, the automatic tile size, the pipeline hook.

How much overlap the exactness tests need: the enhancer's *theoretical* receptive field is large
(``receptive_radius``: 31 LR pixels for the tiny model on 3 frames, growing with depth, with IMAGE's
radius per propagation step, and with the window length), but its *effective* reach is short: a cut
changes the random tiny model's output by about 19, 6, 2 and 0.4 levels of 255 at 0, 1, 2 and 3
pixels from the cut. ``tiled_forward`` uses the outer quarter of every overlap band as context only
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
    tiled = run(memory_budget=1)
    assert calls and all(0 < tile < W for tile in calls)
    assert len(tiled) == len(whole) == 5 and tiled[0].shape == whole[0].shape == (2 * H, 2 * W, 3)
    diff = np.abs(np.stack(tiled).astype(int) - np.stack(whole).astype(int))
    assert diff.max() <= 1  # within rounding of the untiled frames


REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("scale", [4, 2])
def test_shipped_models_tile_within_one_level_with_the_default_overlap(scale: int) -> None:
    """Trained models reach further than random ones; the default overlap is sized for the shipped
    models, so tiles of the real example clip give the whole-frame output within 1/255."""
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
    assert (y - ref).abs().max().item() < 1 / 255


def test_cli_tile_overlap_reaches_the_tiles(tmp_path: Path, tiny_x2_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from clips import make_clip
    from conftest import invoke_cli

    import semlens.tiling as tiling

    seen: list[tuple[int, int]] = []
    original = tiling.tiled_forward_with_retry

    def spy(model: PixelEnhancer, x: torch.Tensor, semantics: Semantics | None, tile: int, tile_overlap: int,
            **kwargs: object) -> torch.Tensor:
        seen.append((tile, tile_overlap))
        return original(model, x, semantics, tile, tile_overlap, **kwargs)

    monkeypatch.setattr(tiling, "tiled_forward_with_retry", spy)
    src = make_clip(tmp_path / "in.mp4", frames=6, size=(48, 32))
    result = invoke_cli(["upscale", src, tmp_path / "out.mp4", "--model", tiny_x2_path, "--device", "cpu", "-q",
                         "--tile", "24", "--tile-overlap", "6"])
    assert result.exit_code == 0, result.stderr
    assert seen and all(pair == (24, 6) for pair in seen)
    bad = invoke_cli(["upscale", src, tmp_path / "bad.mp4", "--model", tiny_x2_path, "--tile-overlap", "-1"])
    assert bad.exit_code == 2 and not (tmp_path / "bad.mp4").exists()
