"""IMAGE's motion-centred reach: block matching, the shift it drives, and the network option."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from semlens.enhancer import EnhancerConfig, PixelEnhancer
from semlens.enhancer.motion import BLOCK, block_offsets, shift_by_offsets
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
