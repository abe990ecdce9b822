"""SAM extractor plumbing on a tiny random SAM loaded through the real checkpoint path."""

from __future__ import annotations

import ast
import os
from dataclasses import replace
from functools import partial
from pathlib import Path

import pytest
import torch
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import nn

import semlens.semantics
from semlens.errors import ModelNotFoundError, WeightsError
from semlens.semantics.registry import EXTRACTORS, build_extractor
from semlens.semantics.sam import (
    SAM_VARIANTS,
    SamExtractor,
    SamVariant,
    build_sam_extractor,
    get_sam_variant,
    load_sam,
    propagate_soft_labels,
)
from semlens.semantics.sam_loading import _expected_shapes
from semlens.semantics.types import InstanceExtractor, Semantics

TINY = SamVariant(
    "tiny-a",
    encoder_embed_dim=32,
    encoder_depth=1,
    encoder_num_heads=1,
    encoder_global_attn_indexes=(0,),
    image_size=64,
    window_size=2,
    mask_in_chans=4,
    decoder_depth=1,
    decoder_mlp_dim=64,
    decoder_num_heads=2,
    iou_head_hidden_dim=32,
)
TINY_B = replace(TINY, name="tiny-b", encoder_embed_dim=48, encoder_depth=2)

# Random weights predict random IoUs: open the filters so that instances come through.
OPEN = dict(
    points_per_side=4,
    pred_iou_thresh=-1e9,
    stability_score_thresh=0.0,
    min_mask_fraction=0.0,
    max_mask_fraction=1.0,
    box_nms_thresh=1.0,
)


def tiny_sam(seed: int = 0) -> Sam:
    """A tiny SAM assembled from segment_anything's classes (independently of semlens)."""
    torch.manual_seed(seed)
    return Sam(
        image_encoder=ImageEncoderViT(
            depth=1, embed_dim=32, img_size=64, mlp_ratio=4, norm_layer=partial(nn.LayerNorm, eps=1e-6),
            num_heads=1, patch_size=16, qkv_bias=True, use_rel_pos=True, global_attn_indexes=(0,),
            window_size=2, out_chans=256,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=256, image_embedding_size=(4, 4), input_image_size=(64, 64), mask_in_chans=4
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=256, mlp_dim=64, num_heads=2),
            transformer_dim=256,
            iou_head_depth=3,
            iou_head_hidden_dim=32,
        ),
    ).eval()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny tensors: on a busy 2-core machine, thread hand-offs cost more than the maths."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sam ckpt é") / "tiny a.pth"  # spaces and non-ASCII on purpose
    torch.save(tiny_sam().state_dict(), path)
    return path


def make_clip(t: int = 5, cut: int | None = 3, seed: int = 0) -> torch.Tensor:
    """(1, t, 3, 40, 56): still noisy grey background, a red square moving right 3 px per frame;
    colours inverted from frame ``cut`` on (a scene cut)."""
    g = torch.Generator().manual_seed(seed)
    clip = (torch.rand(1, 1, 3, 40, 56, generator=g) * 0.2 + 0.4).repeat(1, t, 1, 1, 1)
    for i in range(t):
        clip[0, i, :, 10:22, 5 + 3 * i : 17 + 3 * i] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    if cut is not None:
        clip[0, cut:] = 1.0 - clip[0, cut:]
    return clip


def count_encoder_calls(ext: SamExtractor) -> list[tuple[int, ...]]:
    calls: list[tuple[int, ...]] = []
    ext.sam.image_encoder.register_forward_hook(lambda _m, _i, out: calls.append(tuple(out.shape)))
    return calls


def check_semantics(sem: Semantics, b: int, t: int, n: int = 16) -> None:
    assert sem.masks.shape == (b, t, 40, 56) and sem.masks.dtype == torch.long
    assert sem.instance_tokens.shape == (b, t, n, 256) and sem.instance_tokens.dtype == torch.float32
    assert sem.global_tokens.shape == (b, t, 256) and sem.global_tokens.dtype == torch.float32
    assert sem.valid.shape == (b, t, n) and sem.valid.dtype == torch.bool
    assert sem.track_ids.shape == (b, n) and sem.track_ids.dtype == torch.long
    assert int(sem.masks.min()) >= 0 and int(sem.masks.max()) <= n
    assert torch.isfinite(sem.instance_tokens).all() and torch.isfinite(sem.global_tokens).all()
    for bi in range(b):
        for ti in range(t):
            present = torch.zeros(n + 1, dtype=torch.bool)
            present[sem.masks[bi, ti].unique()] = True
            assert torch.equal(present[1:], sem.valid[bi, ti])
            assert sem.instance_tokens[bi, ti][~sem.valid[bi, ti]].eq(0).all()
        used = sem.valid[bi].any(0)
        ids = sem.track_ids[bi]
        assert (ids[used] >= 0).all() and (ids[~used] == -1).all()
        assert len(set(ids[used].tolist())) == int(used.sum())
        # Used slots come first (ordered by first appearance).
        assert used.tolist() == sorted(used.tolist(), reverse=True)


def track_map(sem: Semantics, b: int, t: int) -> torch.Tensor:
    """Per-pixel track id (-1 background) of frame t of window b."""
    ids = torch.cat([torch.tensor([-1]), sem.track_ids[b]])
    return ids[sem.masks[b, t]]


def test_tiny_checkpoint_runs_with_keyframes_as_documented(checkpoint: Path) -> None:
    ext = build_sam_extractor(TINY, checkpoint, **OPEN)
    assert isinstance(ext, InstanceExtractor)
    assert (ext.name, ext.instance_dim, ext.global_dim, ext.max_instances) == ("sam-tiny-a", 256, 256, 16)
    assert ext.image_size == 64
    calls = count_encoder_calls(ext)
    sem = ext(make_clip())
    check_semantics(sem, 1, 5)
    # Frame 0 (window start) and frame 3 (the cut) are key frames; 1, 2, 4 are propagated.
    assert ext.last_keyframes == ((0, 3),)
    assert calls == [(1, 256, 4, 4)] * 2
    assert sem.valid[0, 0].any(), "the open filters should let instances through"
    assert ext.frames_seen == 5
    # Non-key frames reuse the key frame's scene token.
    assert torch.equal(sem.global_tokens[0, 1], sem.global_tokens[0, 0])
    assert not torch.equal(sem.global_tokens[0, 3], sem.global_tokens[0, 0])


def test_checkpoint_weights_are_loaded_exactly(checkpoint: Path) -> None:
    sam = load_sam(TINY, checkpoint)
    reference = tiny_sam().state_dict()
    loaded = sam.state_dict()
    assert loaded.keys() == reference.keys()
    assert all(torch.equal(loaded[k], reference[k]) for k in reference)
    assert not any(t.is_meta for t in [*sam.parameters(), *sam.buffers()])
    assert not sam.training


@pytest.mark.parametrize("overlap", [None, 2])
def test_overlapping_window_reuses_shared_frames(checkpoint: Path, overlap: int | None) -> None:
    ext = build_sam_extractor(TINY, checkpoint, overlap=overlap, **OPEN)
    calls = count_encoder_calls(ext)
    first_clip = make_clip(t=5, cut=None, seed=0)
    first = ext(first_clip)
    assert ext.last_keyframes == ((0,),) and len(calls) == 1
    # Next window: the last 2 frames of the first window, then 3 new similar frames.
    second_clip = torch.cat([first_clip[:, 3:], make_clip(t=5, cut=None, seed=1)[:, 2:]], dim=1)
    second = ext(second_clip)
    check_semantics(second, 1, 5)
    assert ext.last_keyframes == ((2,),)  # the first new frame; shared frames are not encoded
    assert len(calls) == 2
    assert ext.frames_seen == 8
    for t in range(2):  # shared frames: same masks, same track ids as in the first window
        assert torch.equal(track_map(second, 0, t), track_map(first, 0, 3 + t))
        assert torch.equal(second.global_tokens[0, t], first.global_tokens[0, 3 + t])
    shared_ids = set(second.track_ids[0, second.valid[0, 0]].tolist())
    assert shared_ids <= set(first.track_ids[0].tolist())


def test_no_overlap_detected_for_new_frames(checkpoint: Path) -> None:
    ext = build_sam_extractor(TINY, checkpoint, **OPEN)
    ext(make_clip(t=4, cut=None, seed=0))
    ext(make_clip(t=4, cut=None, seed=5))
    assert ext.last_keyframes == ((0,),)
    assert ext.frames_seen == 8


def _fields_equal(a: Semantics, b: Semantics) -> None:
    for name in ("masks", "instance_tokens", "global_tokens", "valid", "track_ids"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_batch_rows_are_independent_streams(checkpoint: Path) -> None:
    # Two unrelated clips in one batch (as training passes them): each row is its own stream, so
    # its tracks, ids and shared-frame detection are those of the clip alone (no track links
    # clip b to clip a).
    clip_a = make_clip(t=7, cut=None, seed=2)
    clip_b = 1.0 - make_clip(t=7, cut=None, seed=9)
    batched = build_sam_extractor(TINY, checkpoint, **OPEN)
    alone = [build_sam_extractor(TINY, checkpoint, **OPEN) for _ in range(2)]
    first = batched(torch.cat([clip_a[:, :4], clip_b[:, :4]]))
    check_semantics(first, 2, 4)
    assert batched.last_keyframes == ((0,), (0,))
    for row, clip in enumerate((clip_a, clip_b)):
        _fields_equal(first.index(row), alone[row](clip[:, :4]))
        assert first.valid[row].any(), "the open filters should let instances through"
        assert int(first.track_ids[row, 0]) == 0  # each stream numbers its own tracks
    # The next window of each stream (2 frames shared with its own previous window).
    second = batched(torch.cat([clip_a[:, 2:6], clip_b[:, 2:6]]))
    assert batched.last_keyframes == ((2,), (2,))
    assert batched.frames_seen == 2 * 6 and len(batched.trackers) == 2
    for row, clip in enumerate((clip_a, clip_b)):
        _fields_equal(second.index(row), alone[row](clip[:, 2:6]))
    # Another batch size starts new streams.
    again = batched(clip_a[:, 2:6])
    assert batched.last_keyframes == ((0,),) and batched.frames_seen == 4
    _fields_equal(again, build_sam_extractor(TINY, checkpoint, **OPEN)(clip_a[:, 2:6]))


def test_reset_and_size_change_restart_the_stream(checkpoint: Path) -> None:
    ext = build_sam_extractor(TINY, checkpoint, **OPEN)
    clip = make_clip(t=3, cut=None)
    first = ext(clip)
    ext.reset()
    assert ext.frames_seen == 0
    again = ext(clip)  # same frames, but the stream was forgotten: analysed afresh, same ids
    assert ext.last_keyframes == ((0,),)
    assert torch.equal(again.track_ids, first.track_ids) and torch.equal(again.masks, first.masks)
    smaller = ext(clip[..., :32, :48])
    assert smaller.masks.shape == (1, 3, 32, 48)
    assert ext.last_keyframes == ((0,),) and ext.frames_seen == 3
    assert int(smaller.track_ids.max()) < 16 and int(smaller.track_ids[0, 0]) == 0


def test_nothing_found_gives_background(checkpoint: Path) -> None:
    ext = build_sam_extractor(TINY, checkpoint, points_per_side=2, pred_iou_thresh=2.0, max_instances=4)
    sem = ext(make_clip())
    check_semantics(sem, 1, 5, n=4)
    assert sem.masks.eq(0).all() and not sem.valid.any()
    assert sem.track_ids.eq(-1).all() and sem.instance_tokens.eq(0).all()
    assert sem.global_tokens.abs().sum() > 0  # the scene token is still there


def test_default_thresholds_filter_random_masks(checkpoint: Path) -> None:
    # Random weights: whatever passes the default filters, the output stays consistent.
    sem = build_sam_extractor(TINY, checkpoint, points_per_side=2)(make_clip())
    check_semantics(sem, 1, 5)


def test_smaller_input_size(checkpoint: Path) -> None:
    ext = build_sam_extractor(TINY, checkpoint, image_size=32, **OPEN)
    calls = count_encoder_calls(ext)
    sem = ext(make_clip())
    check_semantics(sem, 1, 5)
    assert ext.image_size == 32 and calls[0] == (1, 256, 2, 2)
    with pytest.raises(ValueError, match="multiple"):
        build_sam_extractor(TINY, checkpoint, image_size=40)


def test_key_frames_keep_their_aspect_ratio_at_the_encoder(checkpoint: Path) -> None:
    # 40 x 56 at image_size 64 is resized to 46 x 64 (longest side 64), then padded to 64 x 64.
    # segment-anything 1.0's ResizeLongestSide.apply_image_torch would give 21 x 64 content (it
    # takes the size from the batch and channel dimensions).
    ext = build_sam_extractor(TINY, checkpoint, **OPEN)
    inputs: list[torch.Tensor] = []
    ext.sam.image_encoder.register_forward_pre_hook(lambda _m, args: inputs.append(args[0]))
    ext(make_clip(t=1, cut=None))
    assert len(inputs) == 1 and inputs[0].shape == (1, 3, 64, 64)
    content = inputs[0][0].abs().sum(0) > 0  # the padding is exactly zero after normalisation
    assert content.any(1).sum() == 46 and content[:46].any(1).all()
    assert content.any(0).sum() == 64


def test_propagation_follows_a_moving_square() -> None:
    background, colour = torch.tensor([0.2, 0.3, 0.2]), torch.tensor([0.9, 0.2, 0.1])

    def frame(x: int) -> torch.Tensor:
        img = background.view(3, 1, 1).repeat(1, 24, 32)
        img[:, 8:16, x : x + 8] = colour.view(3, 1, 1)
        return img

    labels = torch.zeros(24, 32, dtype=torch.long)
    labels[8:16, 4:12] = 1
    soft = torch.nn.functional.one_hot(labels, 2).permute(2, 0, 1).float()
    for x in (6, 8, 10, 12):  # 2 pixels per frame
        soft = propagate_soft_labels(soft, frame(x - 2), frame(x), radius=3)
        expected = torch.zeros(24, 32, dtype=torch.long)
        expected[8:16, x : x + 8] = 1
        assert torch.equal(soft.argmax(0), expected), x
        assert torch.allclose(soft.sum(0), torch.ones(24, 32))


def test_wrong_variant_checkpoint_names_the_variant(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(WeightsError, match="does not match the 'tiny-b' architecture") as info:
        load_sam(TINY_B, checkpoint)
    assert "matches no known SAM variant" in str(info.value)
    monkeypatch.setitem(SAM_VARIANTS, "tiny-a", TINY)
    monkeypatch.setitem(SAM_VARIANTS, "tiny-b", TINY_B)
    with pytest.raises(WeightsError, match="looks like a 'tiny-a' checkpoint.*'sam-tiny-a'"):
        build_sam_extractor("sam-tiny-b", checkpoint)
    assert get_sam_variant("sam-tiny-a") is TINY


def test_official_variant_checkpoint_is_checked_before_building(
    checkpoint: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The tiny file given for vit_b fails on shapes alone (vit_b is never allocated).
    monkeypatch.setitem(SAM_VARIANTS, "tiny-a", TINY)
    with pytest.raises(WeightsError, match="does not match the 'vit_b'.*looks like a 'tiny-a'"):
        build_sam_extractor("sam-vit-b", checkpoint)
    with pytest.raises(WeightsError, match="'vit_l'"):
        build_extractor("sam-vit-l", checkpoint=checkpoint)
    # No path: the extractor does not look for one itself, it says who does.
    with pytest.raises(ModelNotFoundError, match=r"checkpoint=.*load_extractor\('sam-vit-h'\)"):
        build_sam_extractor("vit_h")


def test_the_hub_resolves_the_official_checkpoint(checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import semlens.hub.loading
    from semlens.hub import load_extractor

    requests: list[tuple[str, object]] = []

    def resolve_sam_checkpoint(variant: str, path: object, **_: object) -> Path:
        requests.append((variant, path))
        return checkpoint

    monkeypatch.setattr(semlens.hub.loading, "resolve_sam_checkpoint", resolve_sam_checkpoint)
    monkeypatch.setitem(SAM_VARIANTS, "tiny-a", TINY)
    with pytest.raises(WeightsError, match="does not match the 'vit_b'.*looks like a 'tiny-a'"):
        load_extractor("sam-vit-b")
    mine = checkpoint.parent / "mine.pth"
    with pytest.raises(WeightsError, match="'vit_l'"):
        load_extractor("sam-vit-l", mine, points_per_side=2)
    assert requests == [("sam-vit-b", None), ("sam-vit-l", mine)]
    assert load_extractor("lite").name == "lite"
    with pytest.raises(ValueError, match="takes no checkpoint"):
        load_extractor("lite", checkpoint)


def test_semantics_never_imports_the_hub() -> None:
    # Layers look down only: the hub builds on the semantics, not the other way round.
    package = Path(semlens.semantics.__file__).parent
    imports = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                imports.append((path.name, node.module))
            elif isinstance(node, ast.Import):
                imports.extend((path.name, alias.name) for alias in node.names)
    assert any(module == "semlens.semantics.types" for _, module in imports)
    assert [(f, m) for f, m in imports if m == "semlens.hub" or m.startswith("semlens.hub.")] == []


def test_sam_variant_names_come_from_one_table(monkeypatch: pytest.MonkeyPatch) -> None:
    from semlens.hub.specs import registry, sam_spec

    for variant in [v for v in SAM_VARIANTS.values() if v.registry_key is not None]:
        spec = registry()[variant.extractor_name]
        assert (spec.kind, spec.variant, spec.extractor) == ("extractor", variant.name, variant.extractor_name)
        assert variant.extractor_name in EXTRACTORS
    # A name the semantics table resolves is understood by the hub the same way.
    monkeypatch.setitem(SAM_VARIANTS, "base", SAM_VARIANTS["vit_b"])
    assert get_sam_variant("sam-base") is SAM_VARIANTS["vit_b"]
    assert sam_spec("sam-base") is sam_spec("vit_b") is registry()["sam-vit-b"]
    with pytest.raises(ModelNotFoundError, match="vit_b, vit_l, vit_h"):
        sam_spec("vit_x")


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h"])
def test_official_variant_fields_match_segment_anything(name: str) -> None:
    # The fields describe the registry's architecture (used to recognise checkpoints).
    variant = SAM_VARIANTS[name]
    assert _expected_shapes(variant) == _expected_shapes(replace(variant, registry_key=None))
    assert variant.extractor_name == "sam-" + name.replace("_", "-")


_CODE_RAN: list[str] = []


def _side_effect(tag: str) -> str:
    _CODE_RAN.append(tag)
    return tag


class _Payload:
    def __reduce__(self):
        return (_side_effect, ("pwned",))


def test_pickled_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    state = tiny_sam().state_dict()
    state["payload"] = _Payload()  # type: ignore[assignment]
    torch.save(state, path)
    with pytest.raises(WeightsError, match="refusing to load"):
        load_sam(TINY, path)
    assert _CODE_RAN == []


def test_corrupt_and_missing_files(tmp_path: Path, checkpoint: Path) -> None:
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(checkpoint.read_bytes()[: os.path.getsize(checkpoint) // 2])
    with pytest.raises(WeightsError, match="corrupt"):
        load_sam(TINY, truncated)
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_a_dict)
    with pytest.raises(WeightsError, match="not a SAM state dict"):
        load_sam(TINY, not_a_dict)
    with pytest.raises(ModelNotFoundError, match="not found"):
        load_sam(TINY, tmp_path / "missing.pth")
    with pytest.raises(ModelNotFoundError, match="checkpoint="):
        build_sam_extractor(TINY)
    with pytest.raises(ModelNotFoundError, match="sam-vit-b"):
        get_sam_variant("sam-vit-x")


def test_wrapped_state_dict_is_accepted(tmp_path: Path) -> None:
    path = tmp_path / "wrapped.pth"
    torch.save({"model": tiny_sam().state_dict()}, path)
    ext = SamExtractor(load_sam(TINY, path), name="custom", points_per_side=2)
    assert ext.name == "custom"


def test_state_made_in_inference_mode_works_outside(checkpoint: Path) -> None:
    # The pipeline calls extractors under torch.inference_mode(); training code may not.
    ext = build_sam_extractor(TINY, checkpoint, **OPEN)
    clip = make_clip(t=6, cut=None)
    with torch.inference_mode():
        ext(clip[:, :4])
    sem = ext(clip[:, 2:])
    assert ext.last_keyframes == ((2,),)
    check_semantics(sem, 1, 4)


def test_windows_from_the_scheduler_encode_one_frame_each(checkpoint: Path) -> None:
    # semlens.windows: T = 6, context O = 1 -> consecutive windows share 2 frames; the ends are
    # reflect-padded (the last window, emitting frames 12-13, reads 11-13 and 12 reflected).
    # Shared frames are detected, so SAM encodes one frame per window.
    from semlens.windows import WindowScheduler

    ext = build_sam_extractor(TINY, checkpoint, **OPEN)
    calls = count_encoder_calls(ext)
    clip = make_clip(t=14, cut=None)[0]
    scheduler: WindowScheduler[torch.Tensor] = WindowScheduler(6, 1)
    windows = [w for frame in clip for w in scheduler.push(frame)] + scheduler.finish()
    assert [len(frames) for _, frames in windows] == [6, 6, 6, 4]
    previous = None
    for _, frames in windows:
        sem = ext(torch.stack(frames)[None])
        check_semantics(sem, 1, len(frames))
        assert ext.last_keyframes == (((0,),) if previous is None else ((2,),))
        if previous is not None:
            for t in range(2):
                assert torch.equal(track_map(sem, 0, t), track_map(previous, 0, 4 + t))
        previous = sem
    assert len(calls) == 4
    assert ext.frames_seen == 6 + 2 * 4 + 2
