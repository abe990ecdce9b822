"""The streaming pipeline: windows, scene cuts, chunking invariance, conversions."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from semlens.enhancer import EnhancerConfig, PixelEnhancer
from semlens.errors import InvalidInputError
from semlens.io import PlanarLayout
from semlens.pipeline import PlannedWindow, ShotStart, to_frames, to_planar, to_tensor, window_plan
from semlens.upscaler import SemanticLensUpscaler
from semlens.windows import plan_windows


def upscaler(window: int = 5, overlap: int = 1, detect_cuts: bool = True) -> SemanticLensUpscaler:
    torch.manual_seed(0)
    model = PixelEnhancer(EnhancerConfig.preset("tiny", scale=2, channels=8, token_dim=8))
    return SemanticLensUpscaler(model, "lite", device="cpu", window=window, overlap=overlap, detect_cuts=detect_cuts)


def shot(seed: int, frames: int, base: tuple[int, int, int]) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(frames):
        img = np.clip(rng.normal(0, 25, (12, 16, 3)) + base, 0, 255).astype(np.uint8)
        img[4:8, k % 12:(k % 12) + 4] = 255 - np.array(base, np.uint8)
        out.append(img)
    return out


def test_output_frames_match_inputs_in_count_size_and_dtype() -> None:
    frames = shot(0, 9, (60, 90, 120))
    out = list(upscaler().upscale_frames(frames))
    assert len(out) == 9
    assert all(o.shape == (24, 32, 3) and o.dtype == np.uint8 for o in out)


def test_result_does_not_depend_on_chunking() -> None:
    frames = shot(1, 11, (60, 90, 120))
    up = upscaler()
    from_list = list(up.upscale_frames(frames))
    from_generator = list(up.upscale_frames(f for f in frames))
    assert all(np.array_equal(a, b) for a, b in zip(from_list, from_generator, strict=True))


def test_spliced_clip_equals_its_shots_processed_separately() -> None:
    a = shot(2, 7, (40, 60, 80))
    b = shot(3, 6, (220, 120, 30))
    up = upscaler()
    spliced = list(up.upscale_frames(a + b))
    separate = list(up.upscale_frames(a)) + list(up.upscale_frames(b))
    assert len(spliced) == 13
    assert all(np.array_equal(x, y) for x, y in zip(spliced, separate, strict=True))
    # Without cut detection the windows mix the shots and the result differs.
    mixed = list(upscaler(detect_cuts=False).upscale_frames(a + b))
    assert not all(np.array_equal(x, y) for x, y in zip(mixed, separate, strict=True))


def test_window_plan_is_every_shots_windows_in_order() -> None:
    """The plan: a shot start before any frame and at each cut, then that shot's windows (those of
    :func:`plan_windows`, reading the shot's own frames), a shot's windows before the next start;
    frames are pulled one at a time, so only about one window is held."""
    a, b, c = shot(2, 7, (40, 60, 80)), shot(3, 6, (220, 120, 30)), shot(6, 9, (30, 200, 60))
    frames = a + b + c
    pulled: list[int] = []

    def stream():
        for i, f in enumerate(frames):
            pulled.append(i)
            yield f

    plan = window_plan(stream(), 5, 1)
    assert next(plan) == ShotStart(0) and pulled == []
    steps = [next(plan)]
    assert isinstance(steps[0], PlannedWindow) and len(pulled) < 5 + 3 + 1
    steps += list(plan)
    starts = [s.index for s in steps if isinstance(s, ShotStart)]
    assert starts == [7, 13]
    expected: list[object] = []
    for first, stop in ((0, 7), (7, 13), (13, 22)):
        if first:
            expected.append(("shot", first))
        expected += [(first, w.number, [id(frames[first + i]) for i in w.indices])
                     for w in plan_windows(stop - first, 5, 1)]
    got = [("shot", s.index) if isinstance(s, ShotStart) else (s.shot_start, s.window.number, [id(f) for f in s.frames])
           for s in steps]
    assert got == expected
    # Without cut detection: one shot.
    flat = list(window_plan(frames, 5, 1, detect_cuts=False))
    assert [s for s in flat if isinstance(s, ShotStart)] == [ShotStart(0)]
    assert [s.window for s in flat if isinstance(s, PlannedWindow)] == plan_windows(22, 5, 1)


def test_uint16_frames_stay_uint16() -> None:
    frames = [f.astype(np.uint16) * 257 for f in shot(4, 3, (10, 20, 30))]
    out = list(upscaler().upscale_frames(frames))
    assert out[0].dtype == np.uint16 and out[0].shape == (24, 32, 3)


def test_bad_frames_raise_our_error() -> None:
    up = upscaler()
    with pytest.raises(InvalidInputError):
        list(up.upscale_frames([np.zeros((4, 4), np.uint8)]))
    with pytest.raises(InvalidInputError):
        list(up.upscale_frames([np.zeros((4, 4, 3), np.uint8), np.zeros((5, 4, 3), np.uint8)]))
    with pytest.raises(InvalidInputError):
        list(up.upscale_frames([np.zeros((4, 4, 3), np.float32)]))


def test_conversions_round_trip() -> None:
    frames = shot(5, 2, (1, 2, 3))
    x, maxval = to_tensor(frames, torch.device("cpu"))
    assert x.shape == (1, 2, 3, 12, 16) and maxval == 255
    back = to_frames(x[0], maxval)
    assert all(np.array_equal(a, b) for a, b in zip(frames, back))


@pytest.mark.parametrize("full_range", [False, True])
@pytest.mark.parametrize("matrix, sws", [((0.299, 0.114), 5), ((0.2126, 0.0722), 1), ((0.2627, 0.0593), 9)])
@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv444p", "yuv420p10le"])
def test_planar_conversion_agrees_with_ffmpeg(pix_fmt: str, matrix: tuple[float, float], sws: int,
                                              full_range: bool) -> None:
    import av

    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (16, 24, 3), dtype=np.uint8)
    frame[:, :12] = frame[:, :12] // 64 * 64 + 32  # flat blocks and noise
    depth, subsampled = (10, True) if pix_fmt.endswith("10le") else (8, pix_fmt == "yuv420p")
    layout = PlanarLayout(pix_fmt, 24, 16, depth, subsampled, *matrix, full_range=full_range)
    x = torch.from_numpy(frame).permute(2, 0, 1)[None].float() / 255
    (ours,) = to_planar(x, layout)
    assert ours.shape == layout.shape and ours.dtype == (np.uint16 if depth > 8 else np.uint8)
    # FFmpeg's per-pixel 8-bit conversion (its 16-bit output reads back with garbage in PyAV 18),
    # 4:2:0 chroma then as the means of 2x2 blocks, rescaled to ``depth`` bits.
    ref = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
        format="yuv444p", dst_colorspace=sws, dst_color_range=2 if full_range else 1).to_ndarray().astype(float)
    if ref.shape[-1] == 3:  # (H, W, 3) -> planes first
        ref = np.moveaxis(ref, -1, 0)
    if depth > 8:
        if full_range:  # 0..255 -> 0..1023, chroma centred on 128 -> 512
            factor = ((1 << depth) - 1) / 255
            ref = np.stack([ref[0] * factor, (ref[1] - 128) * factor + 512, (ref[2] - 128) * factor + 512])
        else:  # limited range is the 8-bit range times 4
            ref = ref * (1 << (depth - 8))
    planes = list(ours.astype(float)) if not subsampled else [
        ours[:16], ours[16:20].reshape(8, 12), ours[20:].reshape(8, 12)]
    if subsampled:
        ref = [ref[0]] + [c.reshape(8, 2, 12, 2).mean(axis=(1, 3)) for c in ref[1:]]
    # One 8-bit step for luma; chroma adds FFmpeg's own rounding before the block means and its
    # full-range offset (about half a step low): two steps. Above 8 bits the reference's own 8-bit
    # rounding adds half a step. A wrong matrix is off by tens of steps.
    step = float(1 << (depth - 8))
    extra = 0.5 if depth > 8 else 0.0
    for plane, expected, tolerance in zip(planes, ref, (1, 2, 2), strict=True):
        assert np.abs(plane - expected).max() <= (tolerance + extra) * step


@pytest.mark.parametrize("batch", [2, 3, 8])
def test_batched_windows_give_the_frames_of_one_at_a_time(batch: int) -> None:
    """Windows batched through the network (the GPU default) give the frames of unbatched runs:
    across a scene cut, with a shorter last window, and with windows whose extractor found
    different numbers of instances (the batch pads their slots)."""
    frames = shot(3, 13, (60, 90, 120)) + shot(4, 9, (200, 40, 30))
    one = list(upscaler().upscale_frames(frames))
    up = upscaler()
    up.settings.batch_windows = batch
    many = list(up.upscale_frames(frames))
    assert len(many) == len(one) == 22
    assert all(np.array_equal(a, b) for a, b in zip(one, many))


def test_padded_instance_slots_change_nothing() -> None:
    from semlens.semantics import Semantics

    torch.manual_seed(0)
    model = PixelEnhancer(EnhancerConfig.preset("tiny", scale=2)).eval()
    gen = torch.Generator().manual_seed(1)

    def sem(n: int) -> Semantics:
        return Semantics(masks=torch.randint(0, n + 1, (1, 4, 10, 12), generator=gen),
                         instance_tokens=torch.randn(1, 4, n, 8, generator=gen),
                         global_tokens=torch.randn(1, 4, 8, generator=gen),
                         valid=torch.ones(1, 4, n, dtype=torch.bool), track_ids=torch.arange(n)[None])

    x = torch.rand(2, 4, 3, 10, 12)
    few, more = sem(2), sem(5)
    both = Semantics.concat([few, more])
    assert both.num_instances == 5 and both.track_ids[0].tolist() == [0, 1, -1, -1, -1]
    assert not both.valid[0, :, 2:].any()
    with torch.no_grad():
        batched = model(x, both)
        torch.testing.assert_close(batched[:1], model(x[:1], few), rtol=0, atol=1e-5)
        torch.testing.assert_close(batched[1:], model(x[1:], more), rtol=0, atol=1e-5)
