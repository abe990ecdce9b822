"""Models with pooled tokens (``token_source="pooled"``): the network makes its instance tokens from
its own features over the masks, so any extractor drives it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from semlens.enhancer import EnhancerConfig, PixelEnhancer
from semlens.enhancer.tokens import pooled_means, region_maps
from semlens.errors import ExtractorMismatchError
from semlens.semantics import GivenMasks, NoneExtractor, Semantics
from semlens.semantics.lite import LiteExtractor
from semlens.tiling import tiled_forward
from semlens.upscaler import SemanticLensUpscaler, check_extractor_fits


def pooled_model(seed: int = 0, **overrides: object) -> PixelEnhancer:
    torch.manual_seed(seed)
    config = EnhancerConfig.preset("tiny", scale=2, channels=8, token_dim=8, align_dim=8, token_source="pooled",
                                   **overrides)
    return PixelEnhancer(config).eval()


def two_instances(t: int = 3, h: int = 20, w: int = 24, shift: int = 0) -> torch.Tensor:
    """``(1, t, h, w)`` ids: instance 1 a block (moved ``shift`` pixels right in frame 0), instance 2
    the bottom right corner."""
    ids = torch.zeros(1, t, h, w, dtype=torch.long)
    for i in range(t):
        dx = shift if i == 0 else 0
        ids[0, i, 2:9, 2 + dx:9 + dx] = 1
        ids[0, i, 12:, 14:] = 2
    return ids


def semantics_of(ids: torch.Tensor, instance_dim: int = 8, tokens: float = 0.0) -> Semantics:
    b, t = ids.shape[:2]
    n = int(ids.max())
    valid = torch.stack([(ids == k + 1).flatten(2).any(-1) for k in range(n)], dim=-1)
    return Semantics(masks=ids, instance_tokens=torch.full((b, t, n, instance_dim), tokens),
                     global_tokens=torch.full((b, t, 5), tokens), valid=valid,
                     track_ids=torch.arange(n).expand(b, -1).clone())


def test_config_round_trips_and_default_models_keep_their_config() -> None:
    pooled = EnhancerConfig.preset("tiny", token_source="pooled")
    assert EnhancerConfig.from_dict(pooled.to_dict()) == pooled and pooled.pooled_tokens
    # Models without the option (the shipped ones) have exactly the configuration they had.
    assert "token_source" not in EnhancerConfig.preset("tiny").to_dict()
    assert EnhancerConfig.from_dict(EnhancerConfig.preset("tiny").to_dict()).token_source == "extractor"
    with pytest.raises(ValueError, match="token_source"):
        EnhancerConfig(token_source="sam")
    # A pooled model has no projection of the extractor's tokens.
    names = set(PixelEnhancer(pooled).state_dict())
    assert "pooled.instance.weight" in names and not any(n.startswith("instance_proj") for n in names)


@torch.inference_mode()
def test_moving_a_mask_changes_the_tokens_of_that_instance_only() -> None:
    model = pooled_model()
    x = torch.rand(1, 3, 3, 20, 24, generator=torch.Generator().manual_seed(1))
    feats = [model.extract(x[:, i]) for i in range(3)]
    still, _ = model._pooled_tokens(feats, semantics_of(two_instances()), None)
    moved, _ = model._pooled_tokens(feats, semantics_of(two_instances(shift=6)), None)
    # Slots: 0 scene, 1 instance 1, 2 instance 2. The scene token pools the whole frame.
    torch.testing.assert_close(moved[:, :, 0], still[:, :, 0], rtol=0, atol=0)
    torch.testing.assert_close(moved[:, :, 2], still[:, :, 2], rtol=0, atol=0)
    assert (moved[:, 0, 1] - still[:, 0, 1]).abs().max() > 1e-3
    # The instance's event (its track over the window) carries the change to its other frames.
    assert (moved[:, 1:, 1] - still[:, 1:, 1]).abs().max() > 1e-4


@torch.inference_mode()
def test_the_extractor_tokens_are_not_read() -> None:
    model = pooled_model()
    x = torch.rand(1, 3, 3, 20, 24, generator=torch.Generator().manual_seed(2))
    a = model(x, semantics_of(two_instances(), instance_dim=8, tokens=0.0))
    b = model(x, semantics_of(two_instances(), instance_dim=256, tokens=5.0))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    c = model(x, semantics_of(two_instances(shift=6)))
    assert (c - a).abs().max() > 1e-5  # the masks are read


def test_pooling_is_float32_under_autocast() -> None:
    x = torch.full((1, 4, 300 * 300), 100.0, dtype=torch.bfloat16)
    maps = region_maps(None, 0, 1, 300 * 300, x.device)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        means, area = pooled_means(maps, x, None)
    assert means.dtype == torch.float32 and area.dtype == torch.float32
    assert torch.equal(means, torch.full((1, 1, 4), 100.0)) and area.item() == 300 * 300


@torch.inference_mode()
def test_tiled_pooled_tokens_are_the_whole_frame_tokens() -> None:
    """Tiles exchange the pooled sums: after the gathering pass every tile's tokens are the untiled
    ones (the shallow features reach 3 pixels, less than half the overlap), and the output is
    within 1/255 of the untiled output."""
    model = pooled_model()
    x = torch.rand(1, 3, 3, 36, 44, generator=torch.Generator().manual_seed(3))
    sem = LiteExtractor(max_instances=4)(x)
    seen: list[torch.Tensor] = []
    hook = model.pooled.register_forward_hook(lambda _m, _i, out: seen.append(torch.cat([out[0][:, None], out[1]], 1)))
    ref = model(x, sem)
    untiled = list(seen)
    seen.clear()
    y = tiled_forward(model, x, sem, 16, 8)
    hook.remove()
    tiles = len(seen) // (2 * 3)  # two passes, three frames each
    last = seen[tiles * 3:]
    for k, tokens in enumerate(last):
        torch.testing.assert_close(tokens, untiled[k % 3], rtol=0, atol=1e-5)
    assert (y - ref).abs().max().item() < 1 / 255


def tiny_sam_extractor() -> object:
    from test_sam_extractor import OPEN, TINY, tiny_sam

    from semlens.semantics.sam import SamExtractor

    return SamExtractor(tiny_sam(), name=TINY.name, **OPEN)


@pytest.mark.parametrize("kind", ["lite", "none", "given", "sam"])
def test_any_extractor_drives_a_pooled_model(kind: str) -> None:
    frames = [np.random.default_rng(i).integers(0, 256, (24, 32, 3), dtype=np.uint8) for i in range(5)]
    masks = [np.zeros((24, 32), np.int64) for _ in frames]
    for i, m in enumerate(masks):
        m[4:12, 2 + i:12 + i] = 1
    extractor = {"lite": lambda: LiteExtractor(max_instances=4), "none": NoneExtractor,
                 "given": lambda: GivenMasks(masks), "sam": tiny_sam_extractor}[kind]()
    model = pooled_model()
    check_extractor_fits(model, extractor.name, (extractor.instance_dim, extractor.global_dim))
    up = SemanticLensUpscaler(model, extractor, window=4, overlap=1)
    out = list(up.upscale_frames(frames))
    assert len(out) == 5 and out[0].shape == (48, 64, 3)


def test_a_model_with_extractor_tokens_still_refuses_other_sizes() -> None:
    torch.manual_seed(0)
    model = PixelEnhancer(EnhancerConfig.preset("tiny", scale=2, channels=8, token_dim=8, align_dim=8))
    with pytest.raises(ExtractorMismatchError):
        check_extractor_fits(model, "sam-vit-b", (256, 256))
    check_extractor_fits(pooled_model(), "sam-vit-b", (256, 256))


def test_saved_pooled_model_loads_with_any_named_extractor(tmp_path: Path) -> None:
    from semlens.hub import save_model

    path = save_model(tmp_path / "pooled.safetensors", pooled_model(),
                      {"name": "test-pooled", "extractor": "lite", "window": 4, "overlap": 1})
    for name in ("lite", "none"):
        up = SemanticLensUpscaler.from_pretrained(path, device="cpu", extractor=name)
        assert up.model.config.pooled_tokens and up.extractor.name == name
    masks = [np.zeros((16, 16), np.int64)] * 3
    up = SemanticLensUpscaler.from_pretrained(path, device="cpu", extractor=GivenMasks(masks))
    frames = [np.full((16, 16, 3), 9 * i, np.uint8) for i in range(3)]
    assert len(list(up.upscale_frames(frames))) == 3


def test_the_default_model_with_sam_and_the_hub_unreachable_fails_only_for_the_download(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Online, with the Hub unreachable and no SAM checkpoint cached, ``--extractor sam-vit-b`` with
    the shipped default fails for the download alone: exit 9, one line naming the checkpoint."""
    from click.testing import CliRunner
    from clips import make_clip
    from hubserver import fake_hub_env

    from semlens.errors import DownloadError
    from semlens_cli.main import cli

    src = make_clip(tmp_path / "in.mp4", frames=3, size=(32, 24))
    with fake_hub_env(tmp_path, monkeypatch) as hub:
        hub.stop()  # the endpoint now refuses connections
        result = CliRunner().invoke(cli, ["upscale", str(src), str(tmp_path / "out.mp4"), "--scale", "4",
                                          "--extractor", "sam-vit-b", "--device", "cpu", "--threads", "1", "-q"],
                                    env={"COLUMNS": "300", "NO_COLOR": "1"})
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == DownloadError.exit_code == 9, result.output
    assert len(lines) == 1 and "sam-vit-b" in lines[0], result.output
    assert not (tmp_path / "out.mp4").exists()


@pytest.mark.parametrize("scale", [2, 4])
def test_the_default_models_take_sam(scale: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The shipped defaults pool their own tokens: offline without SAM's checkpoint the only error is
    the missing download (exit 8, "not in the local cache"); with a SAM (a tiny random one here) they run."""
    from clips import make_clip
    from conftest import assert_one_line_error, invoke_cli

    from semlens.errors import ModelNotFoundError

    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no SAM in this cache
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    src = make_clip(tmp_path / "in.mp4", frames=3, size=(32, 24))
    code, _, stderr = invoke_cli(["upscale", src, tmp_path / "out.mp4", "--scale", str(scale),
                                  "--extractor", "sam-vit-b", "--device", "cpu", "--threads", "1", "-q"])
    line = assert_one_line_error(stderr, contains="semlens download sam-vit-b")
    assert code == ModelNotFoundError.exit_code == 8 and "not in the local cache" in line, line
    assert not (tmp_path / "out.mp4").exists()

    up = SemanticLensUpscaler.from_pretrained(f"semlens-tiny-x{scale}", device="cpu", extractor=tiny_sam_extractor())
    frames = [np.random.default_rng(i).integers(0, 256, (24, 32, 3), dtype=np.uint8) for i in range(3)]
    out = list(up.upscale_frames(frames))
    assert len(out) == 3 and out[0].shape == (24 * scale, 32 * scale, 3)
