"""SAM-derived instance extractor: Segment Anything on key frames, propagation and tracking between.

Pieces (each usable on its own):

- :class:`SamVariant` and :data:`SAM_VARIANTS`: the architecture hyper-parameters of the official
  SAM image encoders (``vit_b``, ``vit_l``, ``vit_h``, built with ``segment_anything``'s own
  ``sam_model_registry``) plus any variant registered with :func:`register_sam_variant` (tests use
  tiny ones, built from ``segment_anything``'s classes);
- :func:`load_sam`: build a variant and load a checkpoint safely (``torch.load(...,
  weights_only=True)``, ``load_state_dict(strict=True)``); a checkpoint of another variant raises
  :class:`~semlens.errors.WeightsError` naming the variant the file looks like;
- :func:`resize_sam_input`: run a loaded SAM at another input resolution (speed knob);
- :class:`SamExtractor`: the :class:`~semlens.semantics.types.InstanceExtractor`;
- :func:`build_sam_extractor`: name + optional checkpoint -> ready extractor.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.build_sam import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from segment_anything.utils.amg import batched_mask_to_box, build_point_grid, calculate_stability_score
from segment_anything.utils.transforms import ResizeLongestSide
from torch import Tensor, nn
from torchvision.ops import nms

from semlens.errors import ModelNotFoundError, WeightsError
from semlens.semantics.tracking import (
    TrackedFrame,
    Tracker,
    labels_from_masks,
    masks_from_labels,
    paint_order,
    window_semantics,
)
from semlens.semantics.types import Semantics

__all__ = [
    "SAM_VARIANTS",
    "SamExtractor",
    "SamVariant",
    "build_sam_extractor",
    "build_sam_model",
    "get_sam_variant",
    "identify_sam_variant",
    "load_sam",
    "load_sam_weights",
    "propagate_soft_labels",
    "read_sam_checkpoint",
    "register_sam_variant",
    "resize_sam_input",
]


# --------------------------------------------------------------------------------------------
# Variants


@dataclass(frozen=True)
class SamVariant:
    """Architecture hyper-parameters of one SAM model (what a checkpoint must match).

    ``registry_key`` set: the model is built by ``segment_anything``'s ``sam_model_registry``
    (official variants; the other fields then describe that architecture). ``registry_key`` None:
    built from ``segment_anything``'s classes with these fields (custom or tiny test variants).
    ``image_size`` is the encoder's native square input (its positional embedding size).
    """

    name: str
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3
    registry_key: str | None = None

    @property
    def extractor_name(self) -> str:
        """The extractor name of this variant: ``vit_b`` -> ``sam-vit-b``."""
        return "sam-" + self.name.replace("_", "-")


SAM_VARIANTS: dict[str, SamVariant] = {
    "vit_b": SamVariant("vit_b", 768, 12, 12, (2, 5, 8, 11), registry_key="vit_b"),
    "vit_l": SamVariant("vit_l", 1024, 24, 16, (5, 11, 17, 23), registry_key="vit_l"),
    "vit_h": SamVariant("vit_h", 1280, 32, 16, (7, 15, 23, 31), registry_key="vit_h"),
}
"""Known variants by name. Filled here; :func:`register_sam_variant` adds custom ones."""


def register_sam_variant(variant: SamVariant, *, overwrite: bool = False) -> SamVariant:
    """Add ``variant`` to :data:`SAM_VARIANTS` (so names resolve and checkpoints are recognised)."""
    if variant.name in SAM_VARIANTS and not overwrite and SAM_VARIANTS[variant.name] != variant:
        raise ValueError(f"a different SAM variant named {variant.name!r} is already registered")
    SAM_VARIANTS[variant.name] = variant
    return variant


def get_sam_variant(name: str | SamVariant) -> SamVariant:
    """Resolve ``"sam-vit-b"``, ``"vit_b"``, ``"vit-b"`` (any case) or a :class:`SamVariant`."""
    if isinstance(name, SamVariant):
        return name
    key = name.strip().lower()
    for prefix in ("sam-", "sam_"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    for candidate in (key, key.replace("-", "_")):
        if candidate in SAM_VARIANTS:
            return SAM_VARIANTS[candidate]
    known = ", ".join(v.extractor_name for v in SAM_VARIANTS.values())
    raise ModelNotFoundError(f"unknown SAM variant {name!r}; choose one of: {known}")


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


# --------------------------------------------------------------------------------------------
# Checkpoints


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


def propagate_soft_labels(
    soft: Tensor, prev_thumb: Tensor, thumb: Tensor, radius: int = 4, colour_sigma: float = 0.1
) -> Tensor:
    """Carry soft labels from one frame to the next by local colour matching.

    ``soft``: ``(C, ph, pw)`` float label probabilities of the previous frame (channel 0 is the
    background); ``prev_thumb`` and ``thumb``: ``(3, ph, pw)`` float RGB in [0, 1] of the previous
    and the current frame. Each current pixel averages the labels of the previous pixels within
    ``radius`` (a ``(2r+1)^2`` neighbourhood, borders replicated), weighted by
    ``exp(-|colour difference|^2 / (2 colour_sigma^2) - distance^2 / (2 radius^2))``. Returns
    ``(C, ph, pw)`` float (columns still sum to 1).
    """
    r = int(radius)
    if r <= 0:
        return soft
    c, ph, pw = soft.shape
    k = 2 * r + 1
    pad = (r, r, r, r)
    prev_colour = F.unfold(F.pad(prev_thumb[None].float(), pad, mode="replicate"), k).view(3, k * k, ph, pw)
    prev_soft = F.unfold(F.pad(soft[None].float(), pad, mode="replicate"), k).view(c, k * k, ph, pw)
    colour = ((prev_colour - thumb[:, None].float()) ** 2).sum(0)  # (k*k, ph, pw)
    offsets = torch.arange(-r, r + 1, device=soft.device, dtype=torch.float32)
    dist = (offsets.view(-1, 1) ** 2 + offsets.view(1, -1) ** 2).reshape(k * k, 1, 1)
    weights = torch.softmax(-colour / (2 * colour_sigma**2) - dist / (2 * float(r) ** 2), dim=0)
    return (prev_soft * weights[None]).sum(1)


# --------------------------------------------------------------------------------------------
# Extractor


@dataclass
class _FrameRecord:
    """What is kept of a processed frame: its thumbnail (3, ph, pw) float (overlap detection,
    key-frame decisions), its tracked instances (labels at full size) and its scene token (G,)."""

    thumb: Tensor
    tracked: TrackedFrame
    global_token: Tensor


@dataclass
class _Propagation:
    """Propagation state after the last frame: soft labels (1 + K, ph, pw) (channel 0 background)
    of the last key frame's instances, that frame's thumbnail, and the instances' ids/tokens."""

    soft: Tensor
    thumb: Tensor
    track_ids: Tensor
    tokens: Tensor
    global_token: Tensor


@dataclass
class _Detections:
    """Instances found on a key frame, best first: low-res logits (K, L, L) in SAM's padded input
    frame, binary masks at thumbnail size (K, ph, pw), predicted IoU scores (K,)."""

    logits: Tensor
    thumb_masks: Tensor
    scores: Tensor


def _compact(labels: Tensor, count: int) -> Tensor:
    """Store a label map in the smallest integer dtype that holds ``count`` instances."""
    return labels.to(torch.uint8 if count < 256 else torch.int16 if count < 32768 else torch.int64)


class SamExtractor:
    """Instance extractor built on Segment Anything (SAM): masks, tokens and tracks of windows.

    **Cost.** SAM's ViT-B image encoder takes about 17 s per 1024 x 1024 image on a 2-core CPU
    (ViT-L/H much more), so it runs on *key frames only*; the other frames get their masks by
    cheap propagation. Lower ``image_size`` (see :func:`build_sam_extractor`) to trade mask
    quality for speed.

    **Call contract.** ``extractor(frames)`` takes ``(B, T, 3, h, w)`` float RGB in [0, 1] and
    returns :class:`Semantics` with masks ``(B, T, h, w)`` int64, instance tokens
    ``(B, T, N, 256)`` (``N = max_instances``), global tokens ``(B, T, 256)``, valid ``(B, T, N)``
    and track ids ``(B, N)``. The ``B`` windows are taken as *consecutive windows of one stream*
    (window 0 first); use ``reset()`` between streams. SAM runs on the frames' device (the model
    is moved there on first use); tokens are float32.

    **Key frames** (where the image encoder runs): (1) the first frame of each window that was
    not already part of the previous window — the window's first frame, or the first frame after
    the overlap; (2) any later frame whose thumbnail differs from the last key frame's by a mean
    absolute difference above ``keyframe_threshold`` (RGB in [0, 1]; cuts and large motion).
    ``last_keyframes`` lists the key-frame positions of each window of the last call.

    **Overlap.** Frames shared with the previous window are never analysed again: their masks,
    tokens, scene tokens and track ids are reused as they were, so both windows agree on them.
    With ``overlap=None`` (default) the shared frames are *detected*: the longest run of the new
    window's first frames whose thumbnails are bitwise equal to the previous window's last
    frames (frames decoded once and passed twice compare equal; identical frames can safely share
    results). An integer ``overlap`` trusts the caller instead (the first ``overlap`` frames of
    every window after the first are the previous window's last ones). Note that ``overlap``
    counts *shared frames*: with :mod:`semlens.windows` (context ``O`` on each side of a window)
    consecutive windows share ``2 * O`` frames. A change of frame size resets the stream.

    **Key-frame instances.** A ``points_per_side`` x ``points_per_side`` grid of point prompts
    (``build_point_grid``) goes through SAM's prompt encoder and mask decoder (three masks per
    point, batches of ``points_per_batch`` points); masks are kept when the predicted IoU is
    above ``pred_iou_thresh``, the stability score (``calculate_stability_score``, offset
    ``stability_score_offset``) above ``stability_score_thresh`` and the area between
    ``min_mask_fraction`` and ``max_mask_fraction`` of the frame; duplicates are removed by box
    NMS (``box_nms_thresh``) and the best ``max_instances`` are kept (by predicted IoU, then
    area). Overlapping masks are painted largest first (small objects stay visible). Instance
    tokens are the image embedding averaged inside each mask; the scene token is the embedding
    averaged over the image (padding excluded). No instance found gives all-background masks and
    ``valid`` all False.

    **Propagation** (non-key frames). Soft instance labels are carried from frame to frame on
    thumbnails (longest side ``propagation_size``): each pixel takes the labels of the previous
    frame's pixels within ``propagation_radius`` thumbnail pixels, weighted by colour similarity
    (Gaussian, ``colour_sigma``) and distance; the labels are upsampled bilinearly and the most
    likely one is taken per pixel. Propagated instances keep the key frame's track ids and
    tokens; an instance is valid where it still has pixels. No new instance appears between key
    frames.

    **Tracking.** Key-frame instances get stream-wide ids from ``tracker`` (a
    :class:`~semlens.semantics.tracking.Tracker`: token cosine + mask IoU, greedy), which also
    sees the propagated masks, so ids carry across key frames and windows. Slots of a window are
    ordered by first appearance, then track id.

    Args:
        sam: a loaded ``segment_anything`` ``Sam`` (parts passed in; tests use tiny ones).
        name: the extractor's registry name (e.g. ``"sam-vit-b"``).
        tracker: the tracker to use (default ``Tracker()``).
    """

    def __init__(
        self,
        sam: Sam,
        *,
        name: str = "sam",
        max_instances: int = 16,
        points_per_side: int = 8,
        points_per_batch: int = 16,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.9,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        min_mask_fraction: float = 0.001,
        max_mask_fraction: float = 0.95,
        keyframe_threshold: float = 0.1,
        overlap: int | None = None,
        propagation_size: int = 128,
        propagation_radius: int = 4,
        colour_sigma: float = 0.1,
        tracker: Tracker | None = None,
    ) -> None:
        if max_instances < 1:
            raise ValueError(f"max_instances must be >= 1, got {max_instances}")
        if points_per_side < 1 or points_per_batch < 1:
            raise ValueError("points_per_side and points_per_batch must be >= 1")
        if overlap is not None and overlap < 0:
            raise ValueError(f"overlap must be >= 0 or None, got {overlap}")
        if propagation_size < 1 or propagation_radius < 0 or colour_sigma <= 0:
            raise ValueError("propagation_size >= 1, propagation_radius >= 0 and colour_sigma > 0 required")
        self.sam = sam.eval()
        self.name = name
        self.instance_dim = int(sam.prompt_encoder.embed_dim)
        self.global_dim = int(sam.prompt_encoder.embed_dim)
        self.max_instances = int(max_instances)
        self.points_per_side = int(points_per_side)
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.box_nms_thresh = float(box_nms_thresh)
        self.min_mask_fraction = float(min_mask_fraction)
        self.max_mask_fraction = float(max_mask_fraction)
        self.keyframe_threshold = float(keyframe_threshold)
        self.overlap = overlap
        self.propagation_size = int(propagation_size)
        self.propagation_radius = int(propagation_radius)
        self.colour_sigma = float(colour_sigma)
        self.tracker = tracker if tracker is not None else Tracker()
        self._grid = torch.as_tensor(build_point_grid(self.points_per_side), dtype=torch.float32)  # (P, 2) x, y
        self.last_keyframes: tuple[tuple[int, ...], ...] = ()
        self.reset()

    # -- public state ----------------------------------------------------------------------

    @property
    def image_size(self) -> int:
        """SAM's square input size: frames are resized (longest side) to it and padded."""
        return int(self.sam.image_encoder.img_size)

    @property
    def frames_seen(self) -> int:
        """Distinct stream frames processed since the last reset (shared frames count once)."""
        return self._frames_seen

    def reset(self) -> None:
        """Forget the stream: tracks, the previous window and the last key frame."""
        self.tracker.reset()
        self._prev: list[_FrameRecord] = []
        self._key_thumb: Tensor | None = None
        self._frames_seen = 0
        self._size: tuple[int, int] | None = None

    def to(self, device: torch.device | str) -> SamExtractor:
        """Move SAM to ``device`` (also done automatically for the frames' device)."""
        self.sam.to(device)
        return self

    # -- call ----------------------------------------------------------------------------------

    def __call__(self, frames: Tensor) -> Semantics:
        """Extract the semantics of ``B`` consecutive windows ``(B, T, 3, h, w)`` float in [0, 1]."""
        if frames.dim() != 5 or frames.shape[2] != 3 or not frames.is_floating_point():
            raise ValueError(f"frames should be (B, T, 3, h, w) float RGB in [0, 1], got {tuple(frames.shape)} {frames.dtype}")
        if frames.shape[0] == 0 or frames.shape[1] == 0:
            raise ValueError(f"frames has an empty batch or time dimension: {tuple(frames.shape)}")
        if self.sam.device != frames.device:
            self.sam.to(frames.device)
        outputs, keys = [], []
        with torch.no_grad():
            for b in range(frames.shape[0]):
                sem, window_keys = self._window(frames[b])
                outputs.append(sem)
                keys.append(window_keys)
        self.last_keyframes = tuple(keys)
        return Semantics.cat(outputs)

    # -- window ----------------------------------------------------------------------------

    def _window(self, clip: Tensor) -> tuple[Semantics, tuple[int, ...]]:
        """One window ``(T, 3, h, w)``: reuse the shared frames, analyse the new ones."""
        clip = clip.float().clamp(0.0, 1.0)
        t_len, _, h, w = clip.shape
        if self._size != (h, w):
            self.reset()
            self._size = (h, w)
        thumbs = self._thumbnails(clip)
        shared = self._shared_frames(thumbs)
        records = self._prev[len(self._prev) - shared:] if shared else []
        keys: list[int] = []
        prop: _Propagation | None = None
        for t in range(shared, t_len):
            thumb = thumbs[t]
            is_key = (
                t == shared
                or prop is None
                or self._key_thumb is None
                or float((thumb - self._key_thumb).abs().mean()) > self.keyframe_threshold
            )
            if is_key:
                record, prop = self._key_frame(clip[t], thumb)
                self._key_thumb = thumb
                keys.append(t)
            else:
                record, prop = self._propagate(prop, thumb, (h, w))
            records.append(record)
            self._frames_seen += 1
        self._prev = list(records)
        sem = window_semantics(
            [r.tracked for r in records],
            torch.stack([r.global_token for r in records]),
            max_slots=self.max_instances,
            instance_dim=self.instance_dim,
        )
        return sem, tuple(keys)

    def _thumbnails(self, clip: Tensor) -> Tensor:
        """``(T, 3, ph, pw)`` area-downsampled copies, longest side at most ``propagation_size``."""
        h, w = clip.shape[-2:]
        if max(h, w) <= self.propagation_size:
            return clip.clone()
        size = ResizeLongestSide.get_preprocess_shape(h, w, self.propagation_size)
        return F.interpolate(clip, size=size, mode="area")

    def _shared_frames(self, thumbs: Tensor) -> int:
        """How many leading frames of this window are the previous window's last frames."""
        prev = self._prev
        if not prev:
            return 0
        limit = min(len(prev), thumbs.shape[0])
        if self.overlap is not None:
            return min(self.overlap, limit)
        for k in range(limit, 0, -1):
            if all(torch.equal(thumbs[i], prev[len(prev) - k + i].thumb) for i in range(k)):
                return k
        return 0

    # -- key frames ------------------------------------------------------------------------

    def _encode(self, frame: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """Image embedding ``(1, C, g, g)`` of ``frame (3, h, w)`` and its resized size (nh, nw)."""
        h, w = frame.shape[-2:]
        size = ResizeLongestSide.get_preprocess_shape(h, w, self.image_size)
        dtype = self.sam.pixel_mean.dtype
        # Not ResizeLongestSide.apply_image_torch: in segment-anything 1.0 it computes the target
        # size from image.shape[0] and image.shape[1], the batch and channel sizes of a BCHW tensor
        # (a (1, 3, 40, 56) frame would become 21 x 64 instead of 46 x 64). Same size rule
        # (get_preprocess_shape) and interpolation, applied here to H and W.
        x = F.interpolate(frame[None].to(dtype) * 255.0, size=size, mode="bilinear", align_corners=False, antialias=True)
        emb = self.sam.image_encoder(self.sam.preprocess(x))
        return emb, size

    def _upscale(self, logits: Tensor, input_size: tuple[int, int], size: tuple[int, int]) -> Tensor:
        """SAM's ``postprocess_masks`` of low-res logits ``(K, L, L)`` -> ``(K, *size)``, in chunks
        (each chunk passes through the full input size)."""
        if logits.shape[0] == 0:
            return logits.new_zeros(0, *size)
        out = [
            self.sam.postprocess_masks(chunk[:, None], input_size, size)[:, 0]
            for chunk in logits.split(8)
        ]
        return torch.cat(out)

    def _detect(self, emb: Tensor, input_size: tuple[int, int], frame_size: tuple[int, int], thumb_size: tuple[int, int]) -> _Detections:
        """Point-grid prompts -> filtered, de-duplicated, ranked instance masks."""
        sam = self.sam
        h, w = frame_size
        device = emb.device
        coords = self._grid.to(device) * torch.tensor([w, h], dtype=torch.float32, device=device)
        coords = ResizeLongestSide(self.image_size).apply_coords_torch(coords, (h, w))
        dense_pe = sam.prompt_encoder.get_dense_pe()
        n_thumb = thumb_size[0] * thumb_size[1]
        min_area = max(1.0, self.min_mask_fraction * n_thumb)
        max_area = self.max_mask_fraction * n_thumb
        kept_logits, kept_masks, kept_scores = [], [], []
        for pts in coords.split(self.points_per_batch):
            labels = torch.ones(pts.shape[0], 1, dtype=torch.int, device=device)
            sparse, dense = sam.prompt_encoder(points=(pts[:, None, :], labels), boxes=None, masks=None)
            low, iou = sam.mask_decoder(
                image_embeddings=emb,
                image_pe=dense_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
            low, iou = low.flatten(0, 1), iou.flatten()
            keep = iou > self.pred_iou_thresh
            low, iou = low[keep], iou[keep]
            if low.shape[0] == 0:
                continue
            up = self._upscale(low, input_size, thumb_size)
            stability = calculate_stability_score(up, sam.mask_threshold, self.stability_score_offset)
            binary = up > sam.mask_threshold
            area = binary.flatten(1).sum(1)
            keep = (stability >= self.stability_score_thresh) & (area >= min_area) & (area <= max_area)
            kept_logits.append(low[keep])
            kept_masks.append(binary[keep])
            kept_scores.append(iou[keep])
        if not kept_logits or sum(x.shape[0] for x in kept_logits) == 0:
            side = sam.prompt_encoder.mask_input_size
            return _Detections(
                emb.new_zeros(0, *side), torch.zeros(0, *thumb_size, dtype=torch.bool, device=device), emb.new_zeros(0)
            )
        logits, masks, scores = torch.cat(kept_logits), torch.cat(kept_masks), torch.cat(kept_scores)
        keep = nms(batched_mask_to_box(masks).float(), scores.float(), self.box_nms_thresh)
        logits, masks, scores = logits[keep], masks[keep], scores[keep]
        # Rank by score, ties by larger area (two stable sorts), keep the best max_instances.
        by_area = torch.argsort(-masks.flatten(1).sum(1), stable=True)
        rank = by_area[torch.argsort(-scores[by_area], stable=True)][: self.max_instances]
        return _Detections(logits[rank], masks[rank], scores[rank])

    def _pool_tokens(self, emb: Tensor, logits: Tensor) -> Tensor:
        """Mask-pooled embeddings ``(K, C)`` from ``emb (1, C, g, g)`` and low-res logits ``(K, L, L)``
        (both in SAM's padded input frame)."""
        if logits.shape[0] == 0:
            return emb.new_zeros(0, emb.shape[1])
        g = emb.shape[-2:]
        weights = (logits > self.sam.mask_threshold).float()
        empty = weights.flatten(1).sum(1) == 0
        if bool(empty.any()):  # tiny masks vanish at low resolution: fall back to soft weights
            weights[empty] = torch.sigmoid(logits[empty].float())
        weights = F.adaptive_avg_pool2d(weights[:, None], g)[:, 0]  # (K, g, g)
        pooled = torch.einsum("kyx,cyx->kc", weights, emb[0].float())
        return pooled / weights.flatten(1).sum(1, keepdim=True).clamp_min(1e-8)

    def _key_frame(self, frame: Tensor, thumb: Tensor) -> tuple[_FrameRecord, _Propagation]:
        """Encode a key frame, find and track its instances."""
        h, w = frame.shape[-2:]
        thumb_size = (int(thumb.shape[-2]), int(thumb.shape[-1]))
        emb, input_size = self._encode(frame)
        det = self._detect(emb, input_size, (h, w), thumb_size)

        # Paint at thumbnail size (largest first); drop instances fully hidden by smaller ones.
        order = paint_order(det.thumb_masks)
        thumb_labels = labels_from_masks(det.thumb_masks, order)
        count = int(det.thumb_masks.shape[0])
        visible = torch.bincount(thumb_labels.flatten(), minlength=count + 1)[1:] > 0
        if not bool(visible.all()):
            det = _Detections(det.logits[visible], det.thumb_masks[visible], det.scores[visible])
            order = paint_order(det.thumb_masks)
            thumb_labels = labels_from_masks(det.thumb_masks, order)
            count = int(det.thumb_masks.shape[0])

        tokens = self._pool_tokens(emb, det.logits)
        patch = self.image_size // emb.shape[-1]
        gh, gw = math.ceil(input_size[0] / patch), math.ceil(input_size[1] / patch)
        global_token = emb[0, :, :gh, :gw].float().mean(dim=(1, 2))

        vis_masks = masks_from_labels(thumb_labels, count)
        track_ids = self.tracker.update(tokens, vis_masks)

        full = self._upscale(det.logits, input_size, (h, w)) > self.sam.mask_threshold
        labels = labels_from_masks(full, order)
        record = _FrameRecord(thumb, TrackedFrame(_compact(labels, count), track_ids, tokens), global_token)
        soft = F.one_hot(thumb_labels, count + 1).permute(2, 0, 1).float()
        return record, _Propagation(soft, thumb, track_ids, tokens, global_token)

    # -- propagation -----------------------------------------------------------------------

    def _argmax_upsampled(self, soft: Tensor, size: tuple[int, int]) -> Tensor:
        """Per-pixel most likely label of ``soft (C, ph, pw)`` upsampled bilinearly to ``size``
        (channels in chunks, to bound memory at large frame sizes)."""
        best = labels = None
        for start in range(0, soft.shape[0], 4):
            up = F.interpolate(soft[None, start:start + 4], size=size, mode="bilinear", align_corners=False)[0]
            value, index = up.max(0)
            index = index + start
            if best is None:
                best, labels = value, index
            else:
                better = value > best
                best = torch.where(better, value, best)
                labels = torch.where(better, index, labels)
        return labels

    def _propagate(self, prop: _Propagation, thumb: Tensor, size: tuple[int, int]) -> tuple[_FrameRecord, _Propagation]:
        """Masks of a non-key frame from the previous frame's soft labels."""
        count = int(prop.track_ids.shape[0])
        if count == 0:
            labels = torch.zeros(size, dtype=torch.long, device=thumb.device)
            soft = prop.soft
        else:
            soft = propagate_soft_labels(prop.soft, prop.thumb, thumb, self.propagation_radius, self.colour_sigma)
            labels = self._argmax_upsampled(soft, size)
        self.tracker.observe(prop.track_ids, masks_from_labels(soft.argmax(0), count))
        record = _FrameRecord(thumb, TrackedFrame(_compact(labels, count), prop.track_ids, prop.tokens), prop.global_token)
        return record, _Propagation(soft, thumb, prop.track_ids, prop.tokens, prop.global_token)


def build_sam_extractor(
    name: str | SamVariant = "sam-vit-b",
    checkpoint: str | os.PathLike[str] | None = None,
    *,
    image_size: int | None = None,
    device: torch.device | str | None = None,
    **options: Any,
) -> SamExtractor:
    """Build a :class:`SamExtractor` for a SAM variant.

    Args:
        name: ``"sam-vit-b"``, ``"sam-vit-l"``, ``"sam-vit-h"`` (or ``"vit_b"``...), a registered
            custom variant name, or a :class:`SamVariant`.
        checkpoint: path of the variant's ``.pth`` state dict. For official variants it is
            resolved by ``semlens.hub.resolve_sam_checkpoint(variant, checkpoint)`` (explicit path
            wins, else the Hugging Face cache, else a verified download); custom variants need it.
        image_size: SAM's input size (default: the variant's native 1024); see
            :func:`resize_sam_input`.
        device: where to put SAM now (it also follows the frames' device at call time).
        **options: keyword arguments of :class:`SamExtractor` (thresholds, ``max_instances``,
            ``overlap``, ``keyframe_threshold``, ...).

    Raises:
        ModelNotFoundError: unknown name, missing file, or no checkpoint for a custom variant.
        WeightsError: the checkpoint is corrupt, unsafe, or of another variant.
    """
    variant = get_sam_variant(name)
    path = checkpoint
    if variant.registry_key is not None:
        try:
            from semlens.hub import resolve_sam_checkpoint
        except ModuleNotFoundError as e:  # the hub is optional when a path is given
            if e.name != "semlens.hub" or checkpoint is None:
                raise
        else:
            path = resolve_sam_checkpoint(variant.name, checkpoint)
    if path is None:
        raise ModelNotFoundError(
            f"no checkpoint for the custom SAM variant {variant.name!r}: pass checkpoint=<path to .pth>"
        )
    sam = load_sam(variant, path)
    if image_size is not None:
        resize_sam_input(sam, image_size)
    if device is not None:
        sam.to(device)
    return SamExtractor(sam, name=variant.extractor_name, **options)
