"""``GivenMasks``: an extractor built from instance masks the caller already has.

It is how experiments feed true masks, and how users feed masks from their own segmentation or
tracking tool: one ``(h, w)`` integer array per input frame (``0`` = background, ``k`` = instance
``k``, the same ``k`` for the same object in every frame). Instance ``k`` is slot ``k - 1`` with
track id ``k - 1`` in every window.

The extractor must know which frames of the stream each window holds: the pipeline tells it
(:meth:`GivenMasks.locate`, called before every window with the stream frame indices the window
reads, overlap and the reflected frames at shot ends included). Called without that, each call
takes the frames after the previous call's.

Besides the masks it gives the lite extractor's 8-d region descriptors (mean RGB, luma spread,
centroid, area, mean gradient) and scene statistics, computed over the given masks, so it also
drives models trained with the lite extractor's tokens; a model with pooled tokens
(``token_source="pooled"``) reads only the masks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from semlens.errors import InvalidInputError
from semlens.semantics.lite import (
    LITE_GLOBAL_DIM,
    LITE_INSTANCE_DIM,
    LiteExtractor,
    _gradient,
    _luma,
    region_sums,
)
from semlens.semantics.types import Semantics

__all__ = ["GivenMasks", "semantics_from_masks"]


def _as_mask(mask: Any, index: int) -> Tensor:
    """One given mask as a ``(h, w)`` int64 tensor (checked)."""
    if isinstance(mask, Tensor):
        tensor = mask.detach().cpu()
    else:
        array = np.asarray(mask)
        if array.dtype == object:
            raise InvalidInputError(f"mask {index} is not an integer array")
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.dim() != 2:
        raise InvalidInputError(f"mask {index} must be a (h, w) array of instance ids, got shape {tuple(tensor.shape)}")
    if tensor.is_floating_point() or tensor.is_complex() or tensor.dtype == torch.bool:
        raise InvalidInputError(f"mask {index} must hold integer instance ids, got {tensor.dtype}")
    tensor = tensor.long()
    if tensor.numel() and int(tensor.min()) < 0:
        raise InvalidInputError(f"mask {index} has negative ids; use 0 for background and k >= 1 for instance k")
    return tensor


class GivenMasks:
    """An extractor that gives the caller's per-frame instance masks.

    Args:
        masks: one ``(h, w)`` integer array (numpy or torch) per input frame, in stream order, at the
            input frame size: ``0`` = background, ``k >= 1`` = instance ``k`` (ids stable over time).
        max_instances: instance slots ``N``; default: the largest id of all masks (at least 1).
            Ids above ``N`` count as background.

    Use it as ``SemanticLensUpscaler.from_pretrained(name, extractor=GivenMasks(masks))``; the
    upscaler tells it which frames each window holds. Frames past the last mask are an error.
    """

    name = "given"
    instance_dim = LITE_INSTANCE_DIM
    global_dim = LITE_GLOBAL_DIM

    def __init__(self, masks: Sequence[Any], max_instances: int | None = None) -> None:
        self.masks = [_as_mask(m, i) for i, m in enumerate(masks)]
        if not self.masks:
            raise InvalidInputError("GivenMasks needs at least one mask")
        largest = max(int(m.max()) if m.numel() else 0 for m in self.masks)
        self.max_instances = max(1, largest if max_instances is None else int(max_instances))
        self._located: list[list[int]] | None = None
        self._cursor = 0

    def __len__(self) -> int:
        return len(self.masks)

    def locate(self, indices: Sequence[Sequence[int]]) -> None:
        """The stream frame indices of each row of the next call (``B`` rows of ``T`` indices)."""
        self._located = [list(map(int, row)) for row in indices]

    def reset(self) -> None:
        """A new shot: nothing to forget (instance ids are the caller's, stable over the stream).
        :meth:`rewind` starts a stream over from frame 0."""
        self._located = None

    def rewind(self) -> None:
        """Calls without :meth:`locate` start again at frame 0."""
        self._located = None
        self._cursor = 0

    def _indices(self, b: int, t: int) -> list[list[int]]:
        located, self._located = self._located, None
        if located is None:
            row = list(range(self._cursor, self._cursor + t))
            located = [row] * b
        if len(located) != b or any(len(row) != t for row in located):
            raise ValueError(f"GivenMasks was told {[len(r) for r in located]} frame indices for a call of "
                             f"{b} windows of {t} frames")
        self._cursor = max(max(row) for row in located) + 1
        return located

    def _mask(self, index: int, h: int, w: int) -> Tensor:
        if not 0 <= index < len(self.masks):
            raise InvalidInputError(f"GivenMasks holds {len(self.masks)} masks but frame {index} was asked for; "
                                    "give one mask per input frame")
        mask = self.masks[index]
        if tuple(mask.shape) != (h, w):
            raise InvalidInputError(f"mask {index} is {tuple(mask.shape)} but the frames are {(h, w)}; "
                                    "masks must have the input frame size")
        return mask

    @torch.no_grad()
    def __call__(self, frames: Tensor) -> Semantics:
        """``(B, T, 3, h, w)`` float RGB in [0, 1] -> :class:`Semantics` with the given masks."""
        b, t, _, h, w = frames.shape
        rows = self._indices(b, t)
        ids = torch.stack([torch.stack([self._mask(i, h, w) for i in row]) for row in rows]).to(frames.device)
        return semantics_from_masks(frames, ids, self.max_instances)


@torch.no_grad()
def semantics_from_masks(frames: Tensor, ids: Tensor, max_instances: int) -> Semantics:
    """:class:`Semantics` of ``frames`` ``(B, T, 3, h, w)`` float RGB in [0, 1] with the instance
    masks ``ids`` ``(B, T, h, w)`` int (``0`` background, ``k`` instance ``k`` in slot ``k - 1``;
    ids above ``max_instances`` count as background). Tokens are the lite extractor's 8-d region
    descriptors and scene statistics; slot ``k - 1`` has track id ``k - 1`` and is valid in the
    frames where its mask has pixels."""
    b, t, _, h, w = frames.shape
    n = max(1, int(max_instances))
    ids = ids.to(device=frames.device, dtype=torch.long)
    ids = torch.where(ids > n, torch.zeros_like(ids), ids)
    flat = frames.float().flatten(0, 1)  # (B*T, 3, h, w)
    assign = ids.flatten(0, 1).flatten(1)  # (B*T, hw), 0 = background
    tokens, valid = _region_tokens(flat, assign, n, h, w)
    scenes = LiteExtractor._scene_token(flat)
    return Semantics(
        masks=ids,
        instance_tokens=tokens.view(b, t, n, -1),
        global_tokens=scenes.view(b, t, -1),
        valid=valid.view(b, t, n),
        track_ids=torch.arange(n, device=frames.device).expand(b, -1).clone(),
    )


def _region_tokens(frames: Tensor, assign: Tensor, n: int, h: int, w: int) -> tuple[Tensor, Tensor]:
    """Lite-style descriptors ``(m, N, 8)`` of every instance of ``m`` frames and whether it has
    pixels ``(m, N)``: mean RGB, luma std, centroid (y, x) in [0, 1], 4 x area, 4 x mean gradient."""
    luma = _luma(frames)
    ys = torch.linspace(0, 1, h, device=frames.device).view(1, h, 1).expand_as(luma)
    xs = torch.linspace(0, 1, w, device=frames.device).view(1, 1, w).expand_as(luma)
    values = torch.stack([*frames.unbind(1), luma, luma.square(), _gradient(luma), ys, xs], dim=1).flatten(2)
    sums, count = region_sums(values, assign, n + 1)  # order-independent off the CPU
    sums, count = sums[..., 1:], count[:, 1:]  # drop the background
    mean = sums / count.clamp_min(1.0)[:, None]
    var_l = (mean[:, 4] - mean[:, 3] ** 2).clamp_min(0)
    area = count / (h * w)
    tokens = torch.cat([mean[:, :3].transpose(1, 2), var_l.sqrt()[..., None], mean[:, 6:8].transpose(1, 2),
                        area[..., None] * 4, mean[:, 5, :, None] * 4], dim=-1)
    return tokens, count > 0
