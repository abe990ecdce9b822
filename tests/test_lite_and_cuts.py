"""The lite extractor and the scene-cut detector."""

from __future__ import annotations

import numpy as np
import torch

from semlens.semantics.cuts import SceneCutDetector, colour_histogram, histogram_distance
from semlens.semantics.lite import LiteExtractor, exact_region_sums, region_sums


def panning_clip(frames: int = 8, h: int = 36, w: int = 48, step: int = 2) -> torch.Tensor:
    """A scene of coloured blocks panning right by ``step`` pixels per frame: (1, T, 3, h, w)."""
    gen = torch.Generator().manual_seed(0)
    wide = torch.zeros(3, h, w + step * frames)
    colours = torch.rand(12, 3, generator=gen)
    block = (w + step * frames) // 6
    for i in range(6):
        for j in range(2):
            wide[:, j * h // 2:(j + 1) * h // 2, i * block:(i + 1) * block] = colours[i * 2 + j, :, None, None]
    return torch.stack([wide[:, :, k * step:k * step + w] for k in range(frames)]).unsqueeze(0)


def test_lite_semantics_shapes_and_consistency() -> None:
    clip = panning_clip()
    sem = LiteExtractor(max_instances=6)(clip)
    assert sem.masks.shape == (1, 8, 36, 48)
    assert sem.instance_tokens.shape == (1, 8, 6, 8)
    assert sem.global_tokens.shape == (1, 8, 8)
    assert sem.masks.max() <= 6 and sem.masks.min() >= 0
    for t in range(8):  # valid slots are exactly those with pixels
        present = torch.stack([(sem.masks[0, t] == k + 1).any() for k in range(6)])
        assert torch.equal(present, sem.valid[0, t])


def test_lite_is_deterministic() -> None:
    clip = panning_clip()
    a, b = LiteExtractor()(clip), LiteExtractor()(clip)
    assert torch.equal(a.masks, b.masks) and torch.equal(a.instance_tokens, b.instance_tokens)


def test_lite_ids_stay_on_their_regions_while_panning() -> None:
    clip = panning_clip(frames=10, step=2)
    ext = LiteExtractor(max_instances=6)
    first = ext(clip[:, :6])
    second = ext(clip[:, 4:])  # an overlapping next window of the same stream
    masks = torch.cat([first.masks[0], second.masks[0, 2:]])
    # Content at column c of frame k is at column c - 2 of frame k + 1: ids must follow it.
    agree = [(masks[k + 1, :, :-2] == masks[k, :, 2:]).float().mean() for k in range(9)]
    assert min(agree) > 0.9


def test_lite_assignment_is_the_nearest_centre_and_sums_match_one_hot() -> None:
    gen = torch.Generator().manual_seed(3)
    ext = LiteExtractor(max_instances=5)
    frames = torch.rand(3, 3, 20, 28, generator=gen)
    centres = torch.rand(3, 5, 5, generator=gen)
    assign = ext._assign(frames, centres)
    reference = torch.cdist(ext._features(frames), centres)  # (n, hw, N), brute force
    chosen = reference.gather(2, assign[..., None])[..., 0]
    assert torch.allclose(chosen, reference.min(dim=-1).values, atol=1e-5)  # ties may pick either
    assert (assign == reference.argmin(dim=-1)).float().mean() > 0.999
    sums, count = ext._region_sums(frames, assign)
    onehot = torch.nn.functional.one_hot(assign, 5).float()  # (n, hw, N)
    assert torch.equal(count, onehot.sum(dim=1))
    assert torch.allclose(sums[:, :3], torch.einsum("npk,ncp->nck", onehot, frames.flatten(2)), atol=1e-4)


def test_exact_region_sums_do_not_depend_on_the_order_of_the_pixels() -> None:
    # A GPU scatter-add adds in the order its atomics land: the sums must not depend on that order.
    gen = torch.Generator().manual_seed(4)
    values = torch.rand(2, 6, 5000, generator=gen) * torch.tensor([1, 1, 1, 1, 1, 2.0])[:, None]
    assign = torch.randint(0, 5, (2, 5000), generator=gen)
    sums, count = exact_region_sums(values, assign, 5)
    order = torch.randperm(5000, generator=gen)
    again, count_again = exact_region_sums(values[..., order], assign[:, order], 5)
    assert torch.equal(sums, again) and torch.equal(count, count_again)
    onehot = torch.nn.functional.one_hot(assign, 5).double()
    reference = torch.einsum("npk,ncp->nck", onehot, values.double())
    assert torch.allclose(sums.double(), reference, rtol=0, atol=1e-4) and sums.dtype == torch.float32
    assert torch.equal(count, onehot.sum(dim=1).float())
    # On the CPU the float scatter-add stays (deterministic there): the same bits as before.
    plain = values.new_zeros(2, 6, 5).scatter_add_(2, assign[:, None].expand_as(values), values)
    assert torch.equal(region_sums(values, assign, 5)[0], plain)
    assert torch.equal(region_sums(values, assign, 5, exact=True)[0], sums)


def test_lite_exact_sums_give_the_same_regions() -> None:
    clip = panning_clip(frames=6)
    default, exact = LiteExtractor()(clip), LiteExtractor(exact_sums=True)(clip)
    assert torch.equal(default.masks, exact.masks) and torch.equal(default.valid, exact.valid)
    others = [0, 1, 2, 4, 5, 6, 7]
    assert torch.allclose(default.instance_tokens[..., others], exact.instance_tokens[..., others], atol=1e-5)
    # The luma std is sqrt(E[l^2] - E[l]^2): on flat regions it magnifies the last bits of the sums.
    assert torch.allclose(default.instance_tokens[..., 3], exact.instance_tokens[..., 3], atol=1e-3)


def test_lite_full_resolution_batches_do_not_change_the_result() -> None:
    clip = panning_clip(frames=7)
    whole = LiteExtractor()
    small = LiteExtractor()
    small.FULL_RES_PIXELS = 2 * 36 * 48 + 1  # two frames per batch, the last batch holds one
    a, b = whole(clip), small(clip)
    assert torch.equal(a.masks, b.masks) and torch.equal(a.valid, b.valid)
    assert torch.allclose(a.instance_tokens, b.instance_tokens, atol=1e-6)


def test_lite_reset_restarts_the_stream() -> None:
    clip = panning_clip()
    ext = LiteExtractor()
    fresh = ext(clip)
    ext(torch.rand(1, 3, 3, 36, 48))
    ext.reset()
    assert torch.equal(ext(clip).masks, fresh.masks)


def test_lite_batch_rows_are_independent_streams() -> None:
    # Two unrelated clips in one batch: each row keeps its own regions from window to window, as
    # if its clip were extracted alone; another batch size starts new streams.
    clip_a = panning_clip(frames=10)
    clip_b = torch.rand(1, 10, 3, 36, 48, generator=torch.Generator().manual_seed(5))
    batched = LiteExtractor(max_instances=6)
    alone = [LiteExtractor(max_instances=6) for _ in range(2)]
    for window in (slice(0, 6), slice(4, 10)):
        sem = batched(torch.cat([clip_a[:, window], clip_b[:, window]]))
        for row, clip in enumerate((clip_a, clip_b)):
            ref = alone[row](clip[:, window])
            assert torch.equal(sem.masks[row:row + 1], ref.masks) and torch.equal(sem.valid[row:row + 1], ref.valid)
            assert torch.allclose(sem.instance_tokens[row:row + 1], ref.instance_tokens, atol=1e-6)
            assert torch.equal(sem.track_ids[row:row + 1], ref.track_ids)
    assert torch.equal(batched(clip_a[:, 4:10]).masks, LiteExtractor(max_instances=6)(clip_a[:, 4:10]).masks)


def test_cut_detector_fires_once_at_the_splice() -> None:
    rng = np.random.default_rng(0)
    shot_a = [np.clip(rng.normal(60, 10, (24, 32, 3)), 0, 255).astype(np.uint8) for _ in range(6)]
    shot_b = [np.clip(rng.normal(200, 10, (24, 32, 3)) * [1, 0.5, 0.2], 0, 255).astype(np.uint8) for _ in range(6)]
    det = SceneCutDetector()
    cuts = [i for i, f in enumerate(shot_a + shot_b) if det.update(f)]
    assert cuts == [6]


def test_cut_detector_hysteresis_ignores_a_flash_burst() -> None:
    dark = np.full((8, 8, 3), 20, np.uint8)
    light = np.full((8, 8, 3), 240, np.uint8)
    det = SceneCutDetector()
    fired = [det.update(f) for f in [dark, light, dark, light, light, light]]
    assert fired.count(True) == 1


def test_histogram_distance_range() -> None:
    a = colour_histogram(np.zeros((4, 4, 3), np.uint8))
    b = colour_histogram(np.full((4, 4, 3), 255, np.uint8))
    assert histogram_distance(a, a) == 0.0
    assert histogram_distance(a, b) == 1.0
