"""SAM-derived instance extractor: Segment Anything on key frames, propagation and tracking between.

The parts live in their own modules and are importable from here too:

- :mod:`semlens.semantics.sam_variants`: :class:`SamVariant`, :data:`SAM_VARIANTS` (the official
  ``vit_b``, ``vit_l``, ``vit_h`` encoders plus any variant added with
  :func:`register_sam_variant`; tests use tiny ones) and :func:`get_sam_variant` (names);
- :mod:`semlens.semantics.sam_loading`: :func:`build_sam_model`, :func:`load_sam` (safe
  ``torch.load(..., weights_only=True)``, ``load_state_dict(strict=True)``; a checkpoint of another
  variant raises :class:`~semlens.errors.WeightsError` naming the variant the file looks like) and
  :func:`resize_sam_input` (run a loaded SAM at another input resolution);
- :mod:`semlens.semantics.sam_masks`: :class:`SamMaskGenerator`, the instances of one key frame;
- :mod:`semlens.semantics.sam_propagation`: :func:`propagate_soft_labels`, masks between key frames.

Checkpoints are always passed in as paths: finding or downloading the official ones is the hub's
part (``semlens.hub.load_extractor``); nothing here imports the hub.

This module holds the :class:`~semlens.semantics.types.InstanceExtractor` that ties them to the
tracker (:class:`SamExtractor`) and :func:`build_sam_extractor` (variant + checkpoint path ->
ready extractor).
"""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from torch import Tensor

from semlens.errors import ModelNotFoundError
from semlens.semantics.sam_loading import (
    build_sam_model,
    identify_sam_variant,
    load_sam,
    load_sam_weights,
    read_sam_checkpoint,
    resize_sam_input,
)
from semlens.semantics.sam_masks import KeyFrameInstances, SamMaskGenerator
from semlens.semantics.sam_propagation import argmax_upsampled, propagate_soft_labels
from semlens.semantics.sam_variants import SAM_VARIANTS, SamVariant, get_sam_variant, register_sam_variant
from semlens.semantics.tracking import TrackedFrame, Tracker, masks_from_labels, window_semantics
from semlens.semantics.types import Semantics

__all__ = [
    "SAM_VARIANTS",
    "KeyFrameInstances",
    "SamExtractor",
    "SamMaskGenerator",
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
class _Stream:
    """The state of one stream (one row of the batch): its tracks, the last window's frames, the
    thumbnail of its last key frame, how many frames it has seen and its frame size."""

    tracker: Tracker
    prev: list[_FrameRecord] = field(default_factory=list)
    key_thumb: Tensor | None = None
    frames_seen: int = 0
    size: tuple[int, int] | None = None


def _compact(labels: Tensor, count: int) -> Tensor:
    """Store a label map in the smallest integer dtype that holds ``count`` instances."""
    return labels.to(torch.uint8 if count < 256 else torch.int16 if count < 32768 else torch.int64)


class SamExtractor:
    """Instance extractor built on Segment Anything (SAM): masks, tokens and tracks of windows.

    **Cost.** SAM's image encoder is a ViT on a 1024 x 1024 input: seconds per image on a CPU for
    ViT-B, several times more for ViT-L/H (``python benchmarks/sam_encoder.py --variant vit_b``
    measures it on your machine), so it runs on *key frames only*; the other frames get their masks by
    cheap propagation. Lower ``image_size`` (see :func:`build_sam_extractor`) to trade mask
    quality for speed.

    **Call contract.** ``extractor(frames)`` takes ``(B, T, 3, h, w)`` float RGB in [0, 1] and
    returns :class:`Semantics` with masks ``(B, T, h, w)`` int64, instance tokens
    ``(B, T, N, 256)`` (``N = max_instances``), global tokens ``(B, T, 256)``, valid ``(B, T, N)``
    and track ids ``(B, N)``. As for every :class:`~semlens.semantics.types.InstanceExtractor`,
    the ``B`` rows are *independent streams*: row ``b`` continues row ``b`` of the previous call
    (its next window) and shares nothing with the other rows (tracks, ids, overlap, key frames); a
    call with another ``B`` starts new streams. Consecutive windows of one stream are passed one
    call after the other. ``reset()`` forgets every stream. SAM runs on the frames' device (the
    model is moved there on first use); tokens are float32.

    **Key frames** (where the image encoder runs): (1) the first frame of each window that was
    not already part of the previous window — the window's first frame, or the first frame after
    the overlap; (2) any later frame whose thumbnail differs from the last key frame's by a mean
    absolute difference above ``keyframe_threshold`` (RGB in [0, 1]; cuts and large motion).
    ``last_keyframes`` lists the key-frame positions of each row's window in the last call.

    **Overlap.** Frames shared with the previous window are never analysed again: their masks,
    tokens, scene tokens and track ids are reused as they were, so both windows agree on them.
    With ``overlap=None`` (default) the shared frames are *detected*: the longest run of the new
    window's first frames whose thumbnails are bitwise equal to the previous window's last
    frames (frames decoded once and passed twice compare equal; identical frames can safely share
    results). An integer ``overlap`` trusts the caller instead (the first ``overlap`` frames of
    every window after the first are the previous window's last ones). Note that ``overlap``
    counts *shared frames*: with :mod:`semlens.windows` (context ``O`` on each side of a window)
    consecutive windows share ``2 * O`` frames. A change of frame size resets the streams.

    **Key-frame instances** (:class:`~semlens.semantics.sam_masks.SamMaskGenerator`). A
    ``points_per_side`` x ``points_per_side`` grid of point prompts (``build_point_grid``) goes through SAM's prompt encoder and mask decoder (three masks per
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

    **Tracking.** Key-frame instances get stream-wide ids from the stream's tracker (a copy of
    ``tracker``, a :class:`~semlens.semantics.tracking.Tracker`: token cosine + mask IoU, greedy),
    which also sees the propagated masks, so ids carry across key frames and windows. Slots of a window are
    ordered by first appearance, then track id.

    Args:
        sam: a loaded ``segment_anything`` ``Sam`` (parts passed in; tests use tiny ones).
        name: the extractor's registry name (e.g. ``"sam-vit-b"``).
        tracker: the tracker settings (default ``Tracker()``); each stream tracks with its own
            copy of it (see :attr:`trackers`).
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
        if overlap is not None and overlap < 0:
            raise ValueError(f"overlap must be >= 0 or None, got {overlap}")
        if propagation_size < 1 or propagation_radius < 0 or colour_sigma <= 0:
            raise ValueError("propagation_size >= 1, propagation_radius >= 0 and colour_sigma > 0 required")
        self.sam = sam.eval()
        self.masks = SamMaskGenerator(
            self.sam, max_instances=max_instances, points_per_side=points_per_side,
            points_per_batch=points_per_batch, pred_iou_thresh=pred_iou_thresh,
            stability_score_thresh=stability_score_thresh, stability_score_offset=stability_score_offset,
            box_nms_thresh=box_nms_thresh, min_mask_fraction=min_mask_fraction, max_mask_fraction=max_mask_fraction,
        )
        self.name = name
        self.instance_dim = int(sam.prompt_encoder.embed_dim)
        self.global_dim = int(sam.prompt_encoder.embed_dim)
        self.max_instances = int(max_instances)
        self.keyframe_threshold = float(keyframe_threshold)
        self.overlap = overlap
        self.propagation_size = int(propagation_size)
        self.propagation_radius = int(propagation_radius)
        self.colour_sigma = float(colour_sigma)
        self._tracker = copy.deepcopy(tracker) if tracker is not None else Tracker()
        self._tracker.reset()
        self._streams: list[_Stream] = []
        self.last_keyframes: tuple[tuple[int, ...], ...] = ()
        self.reset()

    # -- public state ----------------------------------------------------------------------

    @property
    def image_size(self) -> int:
        """SAM's square input size: frames are resized (longest side) to it and padded."""
        return self.masks.image_size

    @property
    def frames_seen(self) -> int:
        """Distinct frames processed since the last reset, over all streams (frames shared by
        consecutive windows of a stream count once)."""
        return sum(stream.frames_seen for stream in self._streams)

    @property
    def trackers(self) -> tuple[Tracker, ...]:
        """The tracker of each stream (row of the batch), as of the last call."""
        return tuple(stream.tracker for stream in self._streams)

    def reset(self) -> None:
        """Forget every stream: tracks, previous windows and last key frames."""
        self._streams = []

    def _new_stream(self) -> _Stream:
        return _Stream(copy.deepcopy(self._tracker))

    def to(self, device: torch.device | str) -> SamExtractor:
        """Move SAM to ``device`` (also done automatically for the frames' device)."""
        self.sam.to(device)
        return self

    # -- call ----------------------------------------------------------------------------------

    def __call__(self, frames: Tensor) -> Semantics:
        """Extract the semantics of the next window ``(T, 3, h, w)`` of ``B`` independent streams,
        ``(B, T, 3, h, w)`` float in [0, 1]."""
        if frames.dim() != 5 or frames.shape[2] != 3 or not frames.is_floating_point():
            raise ValueError(f"frames should be (B, T, 3, h, w) float RGB in [0, 1], got {tuple(frames.shape)} {frames.dtype}")
        if frames.shape[0] == 0 or frames.shape[1] == 0:
            raise ValueError(f"frames has an empty batch or time dimension: {tuple(frames.shape)}")
        if self.sam.device != frames.device:
            self.sam.to(frames.device)
        if len(self._streams) != frames.shape[0]:
            self._streams = [self._new_stream() for _ in range(frames.shape[0])]
        outputs, keys = [], []
        with torch.no_grad():
            for stream, clip in zip(self._streams, frames, strict=True):
                sem, window_keys = self._window(stream, clip)
                outputs.append(sem)
                keys.append(window_keys)
        self.last_keyframes = tuple(keys)
        return Semantics.cat(outputs)

    # -- window ----------------------------------------------------------------------------

    def _window(self, stream: _Stream, clip: Tensor) -> tuple[Semantics, tuple[int, ...]]:
        """The next window ``(T, 3, h, w)`` of ``stream``: reuse the shared frames, analyse the new ones."""
        clip = clip.float().clamp(0.0, 1.0)
        t_len, _, h, w = clip.shape
        if stream.size != (h, w):
            stream.tracker.reset()
            stream.prev, stream.key_thumb, stream.frames_seen, stream.size = [], None, 0, (h, w)
        thumbs = self._thumbnails(clip)
        shared = self._shared_frames(stream.prev, thumbs)
        records = stream.prev[len(stream.prev) - shared:] if shared else []
        keys: list[int] = []
        prop: _Propagation | None = None
        for t in range(shared, t_len):
            thumb = thumbs[t]
            is_key = (
                t == shared
                or prop is None
                or stream.key_thumb is None
                or float((thumb - stream.key_thumb).abs().mean()) > self.keyframe_threshold
            )
            if is_key:
                record, prop = self._key_frame(stream.tracker, clip[t], thumb)
                stream.key_thumb = thumb
                keys.append(t)
            else:
                record, prop = self._propagate(stream.tracker, prop, thumb, (h, w))
            records.append(record)
            stream.frames_seen += 1
        stream.prev = list(records)
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

    def _shared_frames(self, prev: list[_FrameRecord], thumbs: Tensor) -> int:
        """How many leading frames of this window are the previous window's (``prev``) last frames."""
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

    def _key_frame(self, tracker: Tracker, frame: Tensor, thumb: Tensor) -> tuple[_FrameRecord, _Propagation]:
        """Find a key frame's instances and track them with ``tracker``."""
        found = self.masks(frame, (int(thumb.shape[-2]), int(thumb.shape[-1])))
        count = found.count
        track_ids = tracker.update(found.tokens, masks_from_labels(found.thumb_labels, count))
        tracked = TrackedFrame(_compact(found.labels, count), track_ids, found.tokens)
        record = _FrameRecord(thumb, tracked, found.global_token)
        soft = F.one_hot(found.thumb_labels, count + 1).permute(2, 0, 1).float()
        return record, _Propagation(soft, thumb, track_ids, found.tokens, found.global_token)

    # -- propagation -----------------------------------------------------------------------

    def _propagate(self, tracker: Tracker, prop: _Propagation, thumb: Tensor,
                   size: tuple[int, int]) -> tuple[_FrameRecord, _Propagation]:
        """Masks of a non-key frame from the previous frame's soft labels (``tracker`` sees them)."""
        count = int(prop.track_ids.shape[0])
        if count == 0:
            labels = torch.zeros(size, dtype=torch.long, device=thumb.device)
            soft = prop.soft
        else:
            soft = propagate_soft_labels(prop.soft, prop.thumb, thumb, self.propagation_radius, self.colour_sigma)
            labels = argmax_upsampled(soft, size)
        tracker.observe(prop.track_ids, masks_from_labels(soft.argmax(0), count))
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
        checkpoint: path of the variant's ``.pth`` state dict (required). For the official
            variants, ``semlens.hub.load_extractor`` finds it (the Hugging Face cache, else a
            verified download) and passes it here.
        image_size: SAM's input size (default: the variant's native 1024); see
            :func:`resize_sam_input`.
        device: where to put SAM now (it also follows the frames' device at call time).
        **options: keyword arguments of :class:`SamExtractor` (thresholds, ``max_instances``,
            ``overlap``, ``keyframe_threshold``, ...).

    Raises:
        ModelNotFoundError: unknown name, no checkpoint given, or a missing file.
        WeightsError: the checkpoint is corrupt, unsafe, or of another variant.
    """
    variant = get_sam_variant(name)
    if checkpoint is None:
        where = (
            f"; semlens.hub.load_extractor({variant.extractor_name!r}) finds the official one"
            if variant.registry_key is not None else ""
        )
        raise ModelNotFoundError(
            f"no checkpoint for the SAM variant {variant.name!r}: pass checkpoint=<path to .pth>{where}"
        )
    sam = load_sam(variant, checkpoint)
    if image_size is not None:
        resize_sam_input(sam, image_size)
    if device is not None:
        sam.to(device)
    return SamExtractor(sam, name=variant.extractor_name, **options)
