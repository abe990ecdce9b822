"""The temporal-use benchmark: every variant runs the same weights and is scored."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from clips import make_clip

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
temporal_use = pytest.importorskip("temporal_use")


def test_variants_run_on_a_tiny_clip_and_are_scored(tmp_path) -> None:
    clip = make_clip(tmp_path / "c.mp4", frames=4, size=(48, 32))
    report = temporal_use.measure([clip], None, 4, max_frames=4)
    names = {"bicubic", "window", "single frame", "centre copies", "one instance", "shuffled masks"}
    assert set(report["mean"]["psnr"]) == names and report["model"] == "semlens-tiny-x4"
    assert report["clips"][0]["frames"] == 4 and report["gain_vs_window_db"]["window"] == 0.0
    assert all(report["mean"]["tpsnr"][m] is not None for m in names)
    # Each variant really changes what the network sees: no two model variants score the same.
    scores = [report["mean"]["psnr"][m] for m in names - {"bicubic"}]
    assert len(set(scores)) == len(scores)


def test_instance_motion_runs_the_same_weights_with_the_per_instance_estimate(tmp_path) -> None:
    clip = make_clip(tmp_path / "c.mp4", frames=3, size=(48, 32))
    report = temporal_use.measure([clip], "semlens-tiny-x2", 2, max_frames=3, instance_motion=True)
    assert report["instance_motion"] is True and report["model"] == "semlens-tiny-x2"
    plain = temporal_use.variants("semlens-tiny-x2", 2)["upscaler"].model
    moved = temporal_use.with_instance_motion(plain)
    assert moved.config.instance_motion and not plain.config.instance_motion
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), moved.state_dict().values()))


def test_mask_edits_keep_the_layouts_and_change_what_they_say() -> None:
    from semlens.semantics.types import Semantics

    masks = torch.tensor([[[[0, 1], [2, 2]], [[1, 1], [2, 0]]]])  # (B=1, T=2, 2, 2)
    tokens = torch.arange(2 * 2 * 3, dtype=torch.float32).reshape(1, 2, 2, 3)
    sem = Semantics(masks=masks, instance_tokens=tokens, global_tokens=torch.zeros(1, 2, 4),
                    valid=torch.ones(1, 2, 2, dtype=torch.bool), track_ids=torch.tensor([[5, 6]]))
    one = temporal_use.one_instance(sem)
    assert torch.equal(one.masks, torch.ones_like(masks)) and one.num_instances == 1
    # Frame 0: instance 1 has 1 pixel, instance 2 has 2 -> weights 1/3, 2/3.
    assert torch.allclose(one.instance_tokens[0, 0, 0], tokens[0, 0, 0] / 3 + tokens[0, 0, 1] * 2 / 3)
    shuffled = temporal_use.shuffled(sem, torch.Generator().manual_seed(3))
    assert torch.equal(shuffled.masks == 0, masks == 0)  # background kept
    for t in range(2):  # each frame's ids permuted: every old id maps to one new id, distinct ones apart
        new = {k: shuffled.masks[0, t][masks[0, t] == k].unique().tolist() for k in (1, 2)}
        present = [k for k in (1, 2) if new[k]]
        assert all(len(new[k]) == 1 and new[k][0] in (1, 2) for k in present)
        assert len({new[k][0] for k in present}) == len(present)


def test_true_masks_rows_use_the_masks_beside_a_synthetic_clip(tmp_path) -> None:
    import numpy as np

    from semlens.train.valset import masks_path

    clip = make_clip(tmp_path / "s.mkv", frames=4, size=(48, 32))
    plain = make_clip(tmp_path / "p.mp4", frames=4, size=(48, 32))
    masks = np.zeros((4, 32, 48), dtype=np.uint8)
    masks[:, 8:24, 8:28] = 1
    np.save(masks_path(clip), masks)
    rows = temporal_use.true_mask_rows([clip, plain], None, 4, max_frames=4)
    assert [c["clip"] for c in rows["clips"]] == ["s.mkv"]  # only the clip with masks
    mean = rows["mean_psnr"]
    names = {"extractor masks", "true masks", "true masks, one instance", "true masks, single frame",
             "true masks, IMAGE unmasked"}
    assert set(mean) == names and set(rows["objects_psnr"]) == names
    assert mean["true masks"] != mean["true masks, one instance"]
    assert rows["true_vs_one_instance_db"] == mean["true masks"] - mean["true masks, one instance"]
    objects = rows["objects_psnr"]
    assert rows["objects_true_vs_one_instance_db"] == objects["true masks"] - objects["true masks, one instance"]
    assert objects["true masks"] != objects["true masks, single frame"]
    assert objects["true masks"] != objects["true masks, IMAGE unmasked"]
    from semlens.enhancer.image import ImplicitMaskedAlignment
    assert ImplicitMaskedAlignment.forward.__name__ == "forward"  # the unmasked row put it back
    # The object region: the 16x20 object grown by 8 px (rows 0-31, columns 0-35), the 4 px border
    # left out (rows 4-27, columns 4-35): 24 x 32 of 32 x 48 pixels.
    assert rows["objects_area"] == pytest.approx(24 * 32 / (32 * 48))
    share = rows["clips"][0]["objects_error_share"]
    assert 0 < share < 1 and rows["objects_ceiling_db"] == pytest.approx(-10 * np.log10(1 - share))
    assert temporal_use.true_mask_rows([plain], None, 4, max_frames=4) == {}


def test_region_psnr_scores_only_the_pixels_inside() -> None:
    import numpy as np

    truth = [np.zeros((8, 8, 3), np.uint8)]
    out = np.zeros((8, 8, 3), np.uint8)
    out[:, 4:] = 10  # wrong outside the region only
    region = np.zeros((1, 8, 8), bool)
    region[0, :, :4] = True
    scores = temporal_use.region_psnr({"a": [out]}, truth, region)
    assert scores["a"] == pytest.approx(10 * np.log10(255.0**2 / 1e-10))  # no error inside: the floor
    region[0, :, 4:6] = True
    half = temporal_use.region_psnr({"a": [out]}, truth, region)["a"]
    err = (10 * (65.481 + 128.553 + 24.966) / 255) ** 2 / 3  # Y error 8.59 on 2 of the 6 columns
    assert half == pytest.approx(10 * np.log10(255.0**2 / err))
