"""``GivenMasks``: masks the caller has, fed window by window at the right stream frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from clips import shot_frame

from semlens.enhancer import EnhancerConfig, PixelEnhancer
from semlens.errors import InvalidInputError
from semlens.semantics import GivenMasks, Semantics
from semlens.upscaler import SemanticLensUpscaler

W, H = 32, 24


def index_masks(count: int) -> list[np.ndarray]:
    """Mask ``i``: instance 1 a block at column ``i`` (so every frame's mask differs), instance 2
    the bottom rows, instance 3 only in even frames."""
    masks = []
    for i in range(count):
        m = np.zeros((H, W), np.int32)
        m[2:8, i % (W - 4):i % (W - 4) + 4] = 1
        m[18:, :] = 2
        if i % 2 == 0:
            m[10:14, 20:26] = 3
        masks.append(m)
    return masks


def test_round_trip_of_ids_slots_and_tracks() -> None:
    masks = index_masks(6)
    ext = GivenMasks(masks)
    assert ext.max_instances == 3 and len(ext) == 6
    x = torch.rand(2, 3, 3, H, W)
    ext.locate([[4, 5, 4], [0, 1, 2]])
    sem = ext(x)
    assert torch.equal(sem.masks[0], torch.from_numpy(np.stack([masks[4], masks[5], masks[4]])).long())
    assert torch.equal(sem.masks[1], torch.from_numpy(np.stack(masks[:3])).long())
    assert sem.track_ids.tolist() == [[0, 1, 2], [0, 1, 2]]
    assert sem.valid[1].tolist() == [[True, True, True], [True, True, False], [True, True, True]]
    assert sem.instance_tokens.shape == (2, 3, 3, 8) and sem.global_tokens.shape == (2, 3, 8)
    # Centroid of instance 2 (the bottom rows): y near the bottom, x in the middle.
    assert sem.instance_tokens[1, 0, 1, 4] > 0.8 and abs(sem.instance_tokens[1, 0, 1, 5] - 0.5) < 1e-5
    # Without locate, a call takes the frames after the last call's (from frame 0 after rewind()).
    ext.rewind()
    assert torch.equal(ext(x[:1, :2]).masks[0], torch.from_numpy(np.stack(masks[0:2])).long())
    assert torch.equal(ext(x[:1, :2]).masks[0], torch.from_numpy(np.stack(masks[2:4])).long())
    ext.reset()  # a new shot does not move the stream
    assert torch.equal(ext(x[:1, :1]).masks[0, 0], torch.from_numpy(masks[4]).long())


def test_bad_masks_and_frames_past_the_masks_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="integer"):
        GivenMasks([np.zeros((4, 4), np.float32)])
    with pytest.raises(InvalidInputError, match="negative"):
        GivenMasks([np.full((4, 4), -1)])
    with pytest.raises(InvalidInputError, match=r"\(h, w\)"):
        GivenMasks([np.zeros((4, 4, 1), np.int64)])
    ext = GivenMasks([np.zeros((4, 4), np.int64)] * 2)
    with pytest.raises(InvalidInputError, match="frame size|input frame size"):
        ext(torch.rand(1, 1, 3, 5, 4))
    ext.rewind()
    with pytest.raises(InvalidInputError, match="holds 2 masks"):
        ext(torch.rand(1, 3, 3, 4, 4))


class Recording(GivenMasks):
    """Records every call's frames and semantics, and the resets."""

    def __init__(self, masks: list[np.ndarray]) -> None:
        super().__init__(masks)
        self.calls: list[tuple[torch.Tensor, Semantics]] = []
        self.resets = 0

    def reset(self) -> None:
        self.resets += 1
        super().reset()

    def __call__(self, frames: torch.Tensor) -> Semantics:
        sem = super().__call__(frames)
        self.calls.append((frames.clone(), sem))
        return sem


def test_the_pipeline_gives_each_frame_its_own_mask_across_overlapping_windows_and_cuts() -> None:
    shots = (9, 8)
    frames = [shot_frame(i, 0 if i < shots[0] else 1, W, H) for i in range(sum(shots))]
    masks = index_masks(len(frames))
    ext = Recording(masks)
    torch.manual_seed(0)
    model = PixelEnhancer(EnhancerConfig.preset("tiny", scale=2, channels=8, token_dim=8, align_dim=8,
                                                token_source="pooled")).eval()
    up = SemanticLensUpscaler(model, ext, window=5, overlap=1)
    out = list(up.upscale_frames(frames))
    assert len(out) == len(frames)
    assert ext.resets == 2  # the stream's start and the cut
    stack = torch.from_numpy(np.stack(frames)).float().div(255)  # (L, H, W, 3)
    seen = set()
    for x, sem in ext.calls:
        shot: set[bool] = set()
        for j in range(x.shape[1]):
            frame = x[0, j].permute(1, 2, 0)
            (matches,) = torch.nonzero((stack - frame).abs().flatten(1).amax(1) < 1e-6, as_tuple=True)
            assert len(matches) == 1
            index = int(matches[0])
            seen.add(index)
            shot.add(index < shots[0])
            assert torch.equal(sem.masks[0, j], torch.from_numpy(masks[index]).long()), (index, j)
        assert len(shot) == 1  # no window reads frames of both shots
    assert seen == set(range(len(frames)))
    # Windows overlap: more frames were extracted than the clip has.
    assert sum(x.shape[1] for x, _ in ext.calls) > len(frames)


def test_given_masks_drive_a_model_trained_with_lite_tokens(tiny_x2_path) -> None:
    """8-d lite-style tokens: a model with extractor tokens of the lite sizes accepts GivenMasks."""
    frames = [shot_frame(i, 0, W, H) for i in range(4)]
    up = SemanticLensUpscaler.from_pretrained(tiny_x2_path, device="cpu", extractor=GivenMasks(index_masks(4)))
    assert not up.model.config.pooled_tokens
    assert len(list(up.upscale_frames(frames))) == 4
