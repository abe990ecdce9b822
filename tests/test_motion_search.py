"""IMAGE's motion-centred reach: block matching, the shift it drives, and the network option."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from semlens.enhancer import EnhancerConfig, PixelEnhancer, motion
from semlens.enhancer.motion import BLOCK, ShiftPlan, block_offsets, shift_by_offsets
from semlens.tiling import receptive_radius


def texture(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return F.avg_pool2d(torch.rand(1, 3, h, w, generator=g), 3, 1, 1)


@pytest.mark.parametrize("dy, dx", [(-6, 8), (4, -2), (0, 6), (8, 8)])
def test_block_matching_finds_a_translation_within_reach(dy: int, dx: int) -> None:
    scene = texture(96, 128)
    reference = scene[:, :, 20:68, 20:100]
    support = scene[:, :, 20 + dy:68 + dy, 20 + dx:100 + dx]  # reference[y, x] == support[y - dy, x - dx]
    offsets = block_offsets(reference, support, reach=8)
    inner = offsets[0, :, BLOCK:-BLOCK, BLOCK:-BLOCK]
    assert (inner[0] == -dy).all() and (inner[1] == -dx).all()
    aligned = shift_by_offsets(support, offsets)
    assert torch.equal(aligned[..., BLOCK:-BLOCK, BLOCK:-BLOCK], reference[..., BLOCK:-BLOCK, BLOCK:-BLOCK])


def test_block_matching_stays_put_without_motion_and_within_reach() -> None:
    frame = texture(40, 56)
    assert not block_offsets(frame, frame, reach=8).any()
    flat = torch.full((2, 3, 40, 56), 0.5)
    assert not block_offsets(flat, flat, reach=8).any()
    assert not block_offsets(frame, texture(40, 56, seed=1), reach=0).any()
    far = block_offsets(texture(64, 64, 2), texture(64, 64, 3), reach=4)
    assert far.abs().max() <= 4 and far.shape == (1, 2, 64, 64) and far.dtype == torch.long


def test_shift_by_offsets_reads_displaced_positions_clamped_to_the_frame() -> None:
    x = torch.arange(2 * 5 * 7, dtype=torch.float32).view(1, 2, 5, 7)
    offsets = torch.zeros(1, 2, 5, 7, dtype=torch.long)
    assert torch.equal(shift_by_offsets(x, offsets), x)
    offsets[:, 1] = 2  # read two pixels to the right
    shifted = shift_by_offsets(x, offsets)
    assert torch.equal(shifted[..., :5], x[..., 2:])
    assert torch.equal(shifted[..., 5:], x[..., 6:7].expand(-1, -1, -1, 2))  # clamped at the edge
    ids = torch.arange(35).view(1, 5, 7)
    assert torch.equal(shift_by_offsets(ids, offsets)[..., :5], ids[..., 2:])


def test_motion_search_is_off_by_default_and_not_written_when_off() -> None:
    config = EnhancerConfig.preset("tiny")
    assert config.motion_search == 0 and "motion_search" not in config.to_dict()
    on = EnhancerConfig.preset("tiny", motion_search=8)
    assert EnhancerConfig.from_dict(on.to_dict()) == on
    with pytest.raises(ValueError, match="motion_search"):
        EnhancerConfig.preset("tiny", motion_search=33)
    assert receptive_radius(on, 5) > receptive_radius(config, 5)


def test_same_weights_same_output_on_a_still_clip_and_different_on_a_moving_one() -> None:
    torch.manual_seed(0)
    plain = PixelEnhancer(EnhancerConfig.preset("tiny", scale=2)).eval()
    moving = PixelEnhancer(EnhancerConfig.preset("tiny", scale=2, motion_search=8)).eval()
    moving.load_state_dict(plain.state_dict())
    still = texture(40, 48).unsqueeze(1).expand(-1, 3, -1, -1, -1).contiguous()
    scene = texture(64, 96)
    pan = torch.stack([scene[:, :, 10:50, 8 * i:8 * i + 48] for i in range(3)], dim=1)
    with torch.no_grad():
        assert torch.equal(plain(still), moving(still))
        assert not torch.allclose(plain(pan), moving(pan))


def object_on_background(dy: int, dx: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A reference frame with a textured object over a still background, the next frame with the
    object moved by (dy, dx), and the reference's instance ids (1 on the object)."""
    background, thing = texture(80, 80, 4), texture(80, 80, 5)
    ids = torch.zeros(1, 64, 64, dtype=torch.long)
    ids[:, 20:44, 10:30] = 1
    reference = background[..., 8:72, 8:72].clone()
    reference[..., ids[0] == 1] = thing[..., 8:72, 8:72][..., ids[0] == 1]
    support = background[..., 8:72, 8:72].clone()
    moved = torch.zeros(64, 64, dtype=torch.bool)
    moved[20 + dy:44 + dy, 10 + dx:30 + dx] = True
    support[..., moved] = thing[..., 8 - dy:72 - dy, 8 - dx:72 - dx][..., moved]
    return reference, support, ids


@pytest.mark.parametrize("with_ids", [False, True])
def test_matching_in_batches_of_candidates_gives_the_field_of_one_batch(monkeypatch: pytest.MonkeyPatch,
                                                                       with_ids: bool) -> None:
    reference = torch.cat([texture(50, 70, 4), texture(50, 70, 5)])
    support = torch.roll(reference, (3, -5), (2, 3)) * 0.9
    support[1] = texture(50, 70, 6)[0]  # a pair with no true match: many near-ties
    ids = None
    if with_ids:
        ids = torch.zeros(2, 50, 70, dtype=torch.long)
        ids[:, 10:30, 20:45] = 1
        ids[1, 30:, :30] = 2
    whole = block_offsets(reference, support, reach=8, ids=ids)  # all 81 candidates at once
    assert whole.any()
    for values in (1, 25 * 35 * 2 * 3 * 7):  # one candidate at a time; seven at a time
        monkeypatch.setattr(motion, "_BATCH_ELEMENTS", values)
        assert torch.equal(block_offsets(reference, support, reach=8, ids=ids), whole)


def test_a_shift_plan_moves_channels_last_tensors_as_it_moves_plain_ones() -> None:
    g = torch.Generator().manual_seed(0)
    offsets = torch.randint(-5, 6, (3, 2, 20, 30), generator=g)
    plan = ShiftPlan(offsets)
    x = torch.randn(3, 7, 20, 30, generator=g)
    last = x.contiguous(memory_format=torch.channels_last)
    assert not last.is_contiguous()
    shifted = plan(last)
    assert torch.equal(shifted, plan(x))
    assert shifted.is_contiguous(memory_format=torch.channels_last) and plan(x).is_contiguous()
    rows = (torch.arange(20).view(1, 20, 1) + offsets[:, 0]).clamp(0, 19)
    cols = (torch.arange(30).view(1, 1, 30) + offsets[:, 1]).clamp(0, 29)
    for b in range(3):
        assert torch.equal(shifted[b], x[b][:, rows[b], cols[b]])
    # Gradients reach the same positions whichever way the tensor was laid out.
    grads = []
    for inp in (x, last):
        leaf = inp.clone().requires_grad_()
        (plan(leaf) * shifted).sum().backward()
        grads.append(leaf.grad)
    assert torch.allclose(grads[0], grads[1])


def test_per_instance_matching_separates_an_object_from_the_background_in_shared_blocks() -> None:
    reference, support, ids = object_on_background(4, 6)
    blocks = block_offsets(reference, support, reach=8)
    by_instance = block_offsets(reference, support, reach=8, ids=ids)
    # The block field cannot give both the object and the background their motion...
    errors = [(shift_by_offsets(support, f) - reference).abs().mean(1)[0] for f in (blocks, by_instance)]
    on_object = ids[0] == 1
    assert errors[0][on_object].mean() > 0.01
    # ...the per-instance one does: the object matches exactly and the background no worse.
    assert errors[1][on_object].max() == 0
    assert (by_instance[0, :, on_object] == torch.tensor([[4], [6]])).all()
    assert errors[1][~on_object].mean() <= errors[0][~on_object].mean()
    # One instance over the frame is the block field.
    assert torch.equal(block_offsets(reference, support, reach=8, ids=torch.full_like(ids, 3)), blocks)


def test_instance_motion_is_an_option_off_by_default_that_changes_only_masked_runs() -> None:
    from semlens.semantics.types import Semantics

    config = EnhancerConfig.preset("tiny", scale=2, motion_search=8)
    assert not config.instance_motion and "instance_motion" not in config.to_dict()
    on = EnhancerConfig.preset("tiny", scale=2, motion_search=8, instance_motion=True, token_source="pooled")
    assert EnhancerConfig.from_dict(on.to_dict()) == on and on.to_dict()["instance_motion"] is True
    torch.manual_seed(0)
    plain = PixelEnhancer(EnhancerConfig.preset("tiny", scale=2, motion_search=8, token_source="pooled")).eval()
    per_instance = PixelEnhancer(on).eval()
    per_instance.load_state_dict(plain.state_dict())
    reference, support, ids = object_on_background(4, 6)
    frames = torch.stack([reference, support], dim=1)
    masks = torch.stack([ids, ids], dim=1)
    semantics = Semantics(masks=masks, instance_tokens=torch.zeros(1, 2, 1, 8), global_tokens=torch.zeros(1, 2, 8),
                          valid=torch.ones(1, 2, 1, dtype=torch.bool), track_ids=torch.zeros(1, 1, dtype=torch.long))
    one = Semantics(masks=torch.ones_like(masks), instance_tokens=torch.zeros(1, 2, 1, 8),
                    global_tokens=torch.zeros(1, 2, 8), valid=torch.ones(1, 2, 1, dtype=torch.bool),
                    track_ids=torch.zeros(1, 1, dtype=torch.long))
    with torch.no_grad():
        assert torch.equal(plain(frames), per_instance(frames))  # no masks: the block estimate
        assert torch.equal(plain(frames, one), per_instance(frames, one))  # one instance: the same
        assert not torch.allclose(plain(frames, semantics), per_instance(frames, semantics))
