"""Instance masks of a key frame from Segment Anything: point prompts, filtering, tokens.

:class:`SamMaskGenerator` runs SAM's image encoder on one frame, prompts its mask decoder with a
grid of points, keeps the confident, stable, de-duplicated masks, paints them into label maps and
pools the image embedding inside each mask (the instance tokens) and over the image (the scene
token). Tracking and propagation are the extractor's business (:mod:`semlens.semantics.sam`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.amg import batched_mask_to_box, build_point_grid, calculate_stability_score
from segment_anything.utils.transforms import ResizeLongestSide
from torch import Tensor
from torchvision.ops import nms

from semlens.semantics.tracking import labels_from_masks, paint_order

__all__ = ["KeyFrameInstances", "SamMaskGenerator"]


@dataclass
class KeyFrameInstances:
    """The ``K`` instances found on one key frame, best first.

    - ``labels``: ``(h, w)`` int64 label map of the full frame (``0`` background, ``k + 1``
      instance ``k``), masks painted largest first so that small ones stay visible;
    - ``thumb_labels``: ``(ph, pw)`` int64, the same at thumbnail size (every instance has pixels
      there: instances hidden by smaller ones are dropped);
    - ``tokens``: ``(K, C)`` float32, the image embedding averaged inside each mask;
    - ``global_token``: ``(C,)`` float32, the embedding averaged over the image (padding excluded).
    """

    labels: Tensor
    thumb_labels: Tensor
    tokens: Tensor
    global_token: Tensor

    @property
    def count(self) -> int:
        return int(self.tokens.shape[0])


@dataclass
class _Detections:
    """Instances found on a key frame, best first: low-res logits (K, L, L) in SAM's padded input
    frame, binary masks at thumbnail size (K, ph, pw), predicted IoU scores (K,)."""

    logits: Tensor
    thumb_masks: Tensor
    scores: Tensor

    def select(self, keep: Tensor) -> _Detections:
        return _Detections(self.logits[keep], self.thumb_masks[keep], self.scores[keep])


class SamMaskGenerator:
    """Key-frame instances from SAM (see :class:`~semlens.semantics.sam.SamExtractor` for the
    meaning of the thresholds).

    A ``points_per_side`` x ``points_per_side`` grid of point prompts (``build_point_grid``) goes
    through SAM's prompt encoder and mask decoder (three masks per point, batches of
    ``points_per_batch`` points); masks are kept when the predicted IoU is above
    ``pred_iou_thresh``, the stability score above ``stability_score_thresh`` and the area between
    ``min_mask_fraction`` and ``max_mask_fraction`` of the frame; duplicates are removed by box NMS
    (``box_nms_thresh``) and the best ``max_instances`` are kept (by predicted IoU, then area).
    """

    def __init__(
        self,
        sam: Sam,
        *,
        max_instances: int = 16,
        points_per_side: int = 8,
        points_per_batch: int = 16,
        pred_iou_thresh: float = 0.8,
        stability_score_thresh: float = 0.9,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        min_mask_fraction: float = 0.001,
        max_mask_fraction: float = 0.95,
    ) -> None:
        if max_instances < 1:
            raise ValueError(f"max_instances must be >= 1, got {max_instances}")
        if points_per_side < 1 or points_per_batch < 1:
            raise ValueError("points_per_side and points_per_batch must be >= 1")
        self.sam = sam
        self.max_instances = int(max_instances)
        self.points_per_side = int(points_per_side)
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.box_nms_thresh = float(box_nms_thresh)
        self.min_mask_fraction = float(min_mask_fraction)
        self.max_mask_fraction = float(max_mask_fraction)
        self._grid = torch.as_tensor(build_point_grid(self.points_per_side), dtype=torch.float32)  # (P, 2) x, y

    @property
    def image_size(self) -> int:
        """SAM's square input size: frames are resized (longest side) to it and padded."""
        return int(self.sam.image_encoder.img_size)

    def __call__(self, frame: Tensor, thumb_size: tuple[int, int]) -> KeyFrameInstances:
        """Instances of ``frame (3, h, w)`` float RGB in [0, 1]; ``thumb_size`` is the size of the
        thumbnail the masks are also painted at (for tracking and propagation)."""
        h, w = frame.shape[-2:]
        emb, input_size = self.encode(frame)
        det = self.detect(emb, input_size, (h, w), thumb_size)

        # Paint at thumbnail size (largest first); drop instances fully hidden by smaller ones.
        order = paint_order(det.thumb_masks)
        thumb_labels = labels_from_masks(det.thumb_masks, order)
        count = int(det.thumb_masks.shape[0])
        visible = torch.bincount(thumb_labels.flatten(), minlength=count + 1)[1:] > 0
        if not bool(visible.all()):
            det = det.select(visible)
            order = paint_order(det.thumb_masks)
            thumb_labels = labels_from_masks(det.thumb_masks, order)

        tokens = self.pool_tokens(emb, det.logits)
        patch = self.image_size // emb.shape[-1]
        gh, gw = math.ceil(input_size[0] / patch), math.ceil(input_size[1] / patch)
        global_token = emb[0, :, :gh, :gw].float().mean(dim=(1, 2))
        full = self.upscale(det.logits, input_size, (h, w)) > self.sam.mask_threshold
        return KeyFrameInstances(labels_from_masks(full, order), thumb_labels, tokens, global_token)

    def encode(self, frame: Tensor) -> tuple[Tensor, tuple[int, int]]:
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

    def upscale(self, logits: Tensor, input_size: tuple[int, int], size: tuple[int, int]) -> Tensor:
        """SAM's ``postprocess_masks`` of low-res logits ``(K, L, L)`` -> ``(K, *size)``, in chunks
        (each chunk passes through the full input size)."""
        if logits.shape[0] == 0:
            return logits.new_zeros(0, *size)
        out = [
            self.sam.postprocess_masks(chunk[:, None], input_size, size)[:, 0]
            for chunk in logits.split(8)
        ]
        return torch.cat(out)

    def detect(self, emb: Tensor, input_size: tuple[int, int], frame_size: tuple[int, int],
               thumb_size: tuple[int, int]) -> _Detections:
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
            up = self.upscale(low, input_size, thumb_size)
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
        det = _Detections(torch.cat(kept_logits), torch.cat(kept_masks), torch.cat(kept_scores))
        det = det.select(nms(batched_mask_to_box(det.thumb_masks).float(), det.scores.float(), self.box_nms_thresh))
        # Rank by score, ties by larger area (two stable sorts), keep the best max_instances.
        by_area = torch.argsort(-det.thumb_masks.flatten(1).sum(1), stable=True)
        return det.select(by_area[torch.argsort(-det.scores[by_area], stable=True)][: self.max_instances])

    def pool_tokens(self, emb: Tensor, logits: Tensor) -> Tensor:
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
