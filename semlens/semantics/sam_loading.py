"""Building SAM models and loading their checkpoints safely.

- :func:`build_sam_model`: a :class:`~semlens.semantics.sam_variants.SamVariant` with random
  weights (official variants through ``segment_anything``'s own ``sam_model_registry``, custom
  ones from its classes);
- :func:`read_sam_checkpoint` and :func:`load_sam`: read a checkpoint (``torch.load(...,
  weights_only=True)``), check it against the architecture before allocating anything, and load it
  with ``load_state_dict(strict=True)``; a checkpoint of another variant raises
  :class:`~semlens.errors.WeightsError` naming the variant the file looks like;
- :func:`resize_sam_input`: run a loaded SAM at another input resolution (speed knob).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.build_sam import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from torch import Tensor, nn

from semlens.errors import ModelNotFoundError, WeightsError
from semlens.semantics.sam_variants import SAM_VARIANTS, SamVariant, get_sam_variant

__all__ = [
    "build_sam_model",
    "identify_sam_variant",
    "load_sam",
    "load_sam_weights",
    "read_sam_checkpoint",
    "resize_sam_input",
]


def build_sam_model(variant: SamVariant) -> Sam:
    """Build ``variant`` with random weights (no file access), in eval mode.

    Official variants go through ``segment_anything.sam_model_registry[key](checkpoint=None)``;
    custom ones are assembled from ``Sam(image_encoder, prompt_encoder, mask_decoder)``. Works
    under ``with torch.device("meta")`` (used to read the expected state-dict shapes cheaply).
    """
    if variant.registry_key is not None:
        sam = sam_model_registry[variant.registry_key](checkpoint=None)
    else:
        grid = variant.image_size // variant.patch_size
        dim = variant.prompt_embed_dim
        sam = Sam(
            image_encoder=ImageEncoderViT(
                depth=variant.encoder_depth,
                embed_dim=variant.encoder_embed_dim,
                img_size=variant.image_size,
                mlp_ratio=4,
                norm_layer=partial(nn.LayerNorm, eps=1e-6),
                num_heads=variant.encoder_num_heads,
                patch_size=variant.patch_size,
                qkv_bias=True,
                use_rel_pos=True,
                global_attn_indexes=variant.encoder_global_attn_indexes,
                window_size=variant.window_size,
                out_chans=dim,
            ),
            prompt_encoder=PromptEncoder(
                embed_dim=dim,
                image_embedding_size=(grid, grid),
                input_image_size=(variant.image_size, variant.image_size),
                mask_in_chans=variant.mask_in_chans,
            ),
            mask_decoder=MaskDecoder(
                num_multimask_outputs=variant.num_multimask_outputs,
                transformer=TwoWayTransformer(
                    depth=variant.decoder_depth,
                    embedding_dim=dim,
                    mlp_dim=variant.decoder_mlp_dim,
                    num_heads=variant.decoder_num_heads,
                ),
                transformer_dim=dim,
                iou_head_depth=variant.iou_head_depth,
                iou_head_hidden_dim=variant.iou_head_hidden_dim,
            ),
        )
    return sam.eval()


@lru_cache(maxsize=16)
def _expected_shapes(variant: SamVariant) -> dict[str, tuple[int, ...]]:
    """State-dict key -> shape of ``variant`` (built on the meta device: no memory, no time)."""
    with torch.device("meta"):
        sam = build_sam_model(variant)
    return {k: tuple(v.shape) for k, v in sam.state_dict().items()}


def read_sam_checkpoint(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a SAM state dict safely: ``torch.load(path, map_location="cpu", weights_only=True)``.

    Accepts a bare state dict or one wrapped under ``"model"``/``"state_dict"``. Raises
    :class:`ModelNotFoundError` if the file does not exist, :class:`WeightsError` if it is corrupt,
    not a state dict, or carries pickled code (which is never executed).
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise ModelNotFoundError(
            f"SAM checkpoint not found: {p}; pass the path of an existing .pth file, or no path to "
            "use the cached or downloaded official checkpoint"
        )
    try:
        obj: Any = torch.load(p, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only load failed" in str(e).lower():
            raise WeightsError(
                f"refusing to load {p}: it holds pickled code or objects, not plain weights; "
                "use an official SAM checkpoint or re-save the state dict with torch.save"
            ) from e
        raise WeightsError(f"cannot read SAM checkpoint {p}: {e}; the file is corrupt, download it again") from e
    except Exception as e:  # torch raises RuntimeError/EOFError/... on truncated or foreign files
        raise WeightsError(
            f"cannot read SAM checkpoint {p} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
            "the file is corrupt or truncated, delete it and download it again"
        ) from e
    if isinstance(obj, Mapping):
        for wrapper in ("model", "state_dict"):
            inner = obj.get(wrapper)
            if isinstance(inner, Mapping) and not any(str(k).startswith("image_encoder.") for k in obj):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        raise WeightsError(f"{p} is not a SAM state dict (a mapping of parameter names to tensors)")
    return {str(k): v for k, v in obj.items()}


def _state_mismatch(state: Mapping[str, Tensor], expected: Mapping[str, tuple[int, ...]]) -> str:
    """Empty string if ``state`` fits ``expected`` exactly, else a short description."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [
        f"{k} {tuple(state[k].shape)} vs {expected[k]}"
        for k in sorted(set(state) & set(expected))
        if tuple(state[k].shape) != expected[k]
    ]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
    if shapes:
        parts.append(f"{len(shapes)} shape mismatches (e.g. {'; '.join(shapes[:2])})")
    return ", ".join(parts)


def identify_sam_variant(state: Mapping[str, Tensor]) -> SamVariant | None:
    """The registered variant whose architecture ``state`` fits exactly, or None."""
    for variant in SAM_VARIANTS.values():
        if not _state_mismatch(state, _expected_shapes(variant)):
            return variant
    return None


def _describe(state: Mapping[str, Tensor]) -> str:
    """What the encoder in ``state`` looks like (width, depth), for error messages."""
    patch = state.get("image_encoder.patch_embed.proj.weight")
    if patch is None:
        return "no SAM image encoder in it"
    blocks = {k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")}
    return f"image encoder width {patch.shape[0]}, {len(blocks)} blocks"


def load_sam_weights(sam: Sam, state: Mapping[str, Tensor], variant: SamVariant, source: str = "checkpoint") -> Sam:
    """Load ``state`` into ``sam`` (built for ``variant``) with ``strict=True``.

    ``sam`` may live on the meta device (then the checkpoint's tensors are assigned, cast to
    float32, instead of copied). Raises :class:`WeightsError` naming the variant the state looks
    like when it does not fit.
    """
    expected = {k: tuple(v.shape) for k, v in sam.state_dict().items()}
    problem = _state_mismatch(state, expected)
    if problem:
        found = identify_sam_variant(state)
        if found is not None and found != variant:
            hint = (
                f"the file looks like a '{found.name}' checkpoint: use the extractor "
                f"'{found.extractor_name}' with it, or pass a '{variant.name}' checkpoint"
            )
        else:
            hint = f"it matches no known SAM variant ({_describe(state)}); pass a '{variant.name}' checkpoint"
        raise WeightsError(f"SAM {source} does not match the '{variant.name}' architecture ({problem}); {hint}")
    on_meta = any(t.is_meta for t in sam.state_dict().values())
    state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}
    try:
        sam.load_state_dict(state, strict=True, assign=on_meta)
    except RuntimeError as e:
        raise WeightsError(f"SAM {source} does not fit the '{variant.name}' architecture: {e}") from e
    return sam


def load_sam(variant: SamVariant | str, checkpoint: str | os.PathLike[str]) -> Sam:
    """Build ``variant`` and load ``checkpoint`` into it (safe load, strict), in eval mode on CPU.

    The checkpoint is read and checked against the architecture *before* any weight is
    allocated (the model is built on the meta device and the checkpoint's tensors are assigned),
    so a wrong file fails fast and a right one is not initialised twice.
    """
    variant = get_sam_variant(variant)
    state = read_sam_checkpoint(checkpoint)
    source = f"checkpoint {Path(checkpoint).name}"
    with torch.device("meta"):
        sam = build_sam_model(variant)
    load_sam_weights(sam, state, variant, source)
    leftover = [n for n, t in [*sam.named_parameters(), *sam.named_buffers()] if t.is_meta]
    if leftover:  # a buffer outside the state dict was created on meta: build for real instead
        sam = load_sam_weights(build_sam_model(variant), state, variant, source)
    return sam.eval()


def resize_sam_input(sam: Sam, image_size: int) -> Sam:
    """Make ``sam`` (in place) take ``image_size x image_size`` inputs instead of its native size.

    The absolute positional embedding is resized bicubically to the new token grid;
    ``segment_anything`` already interpolates the relative position tables of global-attention
    blocks on the fly, and windowed blocks pad. This is an approximation of the model trained at
    1024: smaller inputs are much cheaper (at 512 the encoder has 4x fewer tokens, so roughly a
    quarter of the work or less) and give coarser masks. ``image_size`` must be a multiple of the patch size (16).
    """
    enc = sam.image_encoder
    patch = int(enc.patch_embed.proj.kernel_size[0])
    if image_size <= 0 or image_size % patch:
        raise ValueError(f"image_size must be a positive multiple of the patch size {patch}, got {image_size}")
    if image_size == enc.img_size:
        return sam
    grid = image_size // patch
    if enc.pos_embed is not None:
        pos = enc.pos_embed.detach().permute(0, 3, 1, 2)
        pos = F.interpolate(pos, size=(grid, grid), mode="bicubic", align_corners=False)
        enc.pos_embed = nn.Parameter(pos.permute(0, 2, 3, 1).contiguous(), requires_grad=enc.pos_embed.requires_grad)
    enc.img_size = image_size
    prompt = sam.prompt_encoder
    prompt.image_embedding_size = (grid, grid)
    prompt.input_image_size = (image_size, image_size)
    prompt.mask_input_size = (4 * grid, 4 * grid)
    return sam
