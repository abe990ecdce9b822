"""Occlusion from the masks: IMAGE's reach maps and the fusion that reads them (``mask_occlusion``)."""

from __future__ import annotations

import torch

from semlens.enhancer import EnhancerConfig, PixelEnhancer
from semlens.enhancer.image import ImplicitMaskedAlignment
from semlens.semantics.types import Semantics


def reach_maps_by_loops(ref: torch.Tensor, sup: torch.Tensor, r: int) -> torch.Tensor:
    """The maps computed pixel by pixel: (no own instance in reach, share of own instance)."""
    h, w = ref.shape
    out = torch.zeros(2, h, w)
    for y in range(h):
        for x in range(w):
            inside = same = 0
            for dy in range(-r, r + 1):
                for dx in range(-r, r + 1):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w:
                        inside += 1
                        same += int(sup[yy, xx] == ref[y, x])
            out[0, y, x] = float(same == 0)
            out[1, y, x] = same / inside
    return out


def moving_object_ids(shift: int, h: int = 12, w: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    ref = torch.zeros(h, w, dtype=torch.long)
    ref[3:9, 4:9] = 1
    ref[0:3, 15:20] = 2  # an object at the frame's corner that stays
    sup = torch.zeros_like(ref)
    sup[3:9, 4 + shift:9 + shift] = 1
    sup[0:3, 15:20] = 2
    return ref, sup


def test_reach_maps_mark_covered_and_uncovered_pixels_and_the_share_of_the_instance() -> None:
    image = ImplicitMaskedAlignment(8, 4, radius=2)
    ref, sup = moving_object_ids(shift=6)
    like = torch.zeros(1, 8, *ref.shape)
    maps = image.reach_maps(ref[None], sup[None], like)
    assert maps.shape == (1, 2, *ref.shape)
    assert torch.allclose(maps[0], reach_maps_by_loops(ref, sup, 2))
    # The object moved 6 pixels: its left part has none of itself within 2 pixels in the support
    # frame, its right edge has; the background it covers in the support frame has no background.
    assert maps[0, 0, 5, 4] == 1 and maps[0, 0, 5, 8] == 0
    assert maps[0, 0, 5, 12] == 1 and maps[0, 0, 5, 9] == 0
    assert maps[0, 0, 0, 18] == 0 and maps[0, 1, 0, 18] == 1  # the still corner object: all its own


def test_reach_maps_without_ids_or_with_one_instance_carry_nothing() -> None:
    image = ImplicitMaskedAlignment(8, 4, radius=2)
    like = torch.zeros(2, 8, 7, 9)
    none = image.reach_maps(None, None, like)
    one = image.reach_maps(torch.full((2, 7, 9), 3), torch.full((2, 7, 9), 3), like)
    assert torch.equal(none, one)
    assert torch.equal(none[:, 0], torch.zeros(2, 7, 9)) and torch.equal(none[:, 1], torch.ones(2, 7, 9))


def clip_with_moving_object() -> tuple[torch.Tensor, Semantics, Semantics]:
    g = torch.Generator().manual_seed(0)
    background = torch.rand(3, 16, 40, generator=g)
    thing = torch.rand(3, 8, 8, generator=g)
    frames, masks = [], []
    for t in range(3):
        f = background.clone()
        f[:, 4:12, 4 + 5 * t:12 + 5 * t] = thing
        m = torch.zeros(16, 40, dtype=torch.long)
        m[4:12, 4 + 5 * t:12 + 5 * t] = 1
        frames.append(f)
        masks.append(m)
    x = torch.stack(frames)[None]
    ids = torch.stack(masks)[None]

    def semantics(m: torch.Tensor) -> Semantics:
        return Semantics(masks=m, instance_tokens=torch.zeros(1, 3, 1, 8), global_tokens=torch.zeros(1, 3, 8),
                         valid=torch.ones(1, 3, 1, dtype=torch.bool), track_ids=torch.zeros(1, 1, dtype=torch.long))

    return x, semantics(ids), semantics(torch.zeros_like(ids))


def test_occlusion_starts_as_the_network_without_it_and_acts_only_where_masks_say_so() -> None:
    plain_cfg = EnhancerConfig.preset("tiny", scale=2, token_source="pooled", motion_search=4)
    on_cfg = EnhancerConfig.preset("tiny", scale=2, token_source="pooled", motion_search=4, mask_occlusion=True)
    assert "mask_occlusion" not in plain_cfg.to_dict() and on_cfg.to_dict()["mask_occlusion"] is True
    assert EnhancerConfig.from_dict(on_cfg.to_dict()) == on_cfg
    torch.manual_seed(0)
    plain = PixelEnhancer(plain_cfg).eval()
    on = PixelEnhancer(on_cfg).eval()
    result = on.load_state_dict(plain.state_dict(), strict=False)
    assert sorted(result.missing_keys) == ["backward_branch.occlusion.bias", "backward_branch.occlusion.weight",
                                           "forward_branch.occlusion.bias", "forward_branch.occlusion.weight"]
    x, true, one = clip_with_moving_object()
    with torch.no_grad():
        for semantics in (None, true, one):  # zero-initialised: exactly the network it was warm-started from
            assert torch.equal(plain(x, semantics), on(x, semantics))
        # Read only the "no own instance in reach" maps: one instance never sets them.
        for branch in (on.backward_branch, on.forward_branch):
            branch.occlusion.weight[:, 0::2].normal_(0, 1.0)
        assert torch.equal(plain(x, one), on(x, one))
        assert torch.equal(plain(x), on(x))
        changed = (plain(x, true) - on(x, true)).abs().amax(dim=2)[0]  # (T, 2h, 2w)
    assert changed.max() > 1e-3
    # The change starts where the object covers or uncovers pixels between neighbouring frames.
    _, _, h, w = x.shape[1:]
    image = on.forward_branch.align
    maps = image.reach_maps(true.masks[:, 1], true.masks[:, 0], torch.zeros(1, 1, h, w))
    assert maps[0, 0].any()


def test_an_occlusion_model_warm_starts_and_trains_from_the_command_line(tmp_path, monkeypatch) -> None:
    from click.testing import CliRunner
    from test_train import photos

    import semlens.train.data as data
    from semlens.hub import load_model, save_model
    from semlens.train.loop import TrainConfig, build_model
    from semlens_cli.main import cli

    base = build_model(TrainConfig(scale=2, token_source="pooled", motion_search=2))
    save_model(tmp_path / "base.safetensors", base)
    monkeypatch.setattr(data, "builtin_sources", lambda split: (photos(), []))
    result = CliRunner().invoke(cli, ["train", str(tmp_path / "run"), "--scale", "2", "--iterations", "2",
                                      "--batch", "2", "--patch", "8", "--frames", "3", "--token-source", "pooled",
                                      "--extractor", "none", "--true-mask-fraction", "1", "--occlusion",
                                      "--motion-search", "2", "--init", str(tmp_path / "base.safetensors"),
                                      "--lr", "1e-9", "--fresh-lr-scale", "1e7", "--quiet"])
    assert result.exit_code == 0, result.output
    loaded = load_model(tmp_path / "run" / "model.safetensors")
    assert loaded.model.config.mask_occlusion and loaded.model.config.motion_search == 2
    state = loaded.model.state_dict()
    # Only the new part learns at the scaled rate: the warm-started tensors stay where they were.
    assert state["forward_branch.occlusion.weight"].abs().max() > 1e-4
    assert all((state[k] - v).abs().max() < 1e-6 for k, v in base.state_dict().items())
