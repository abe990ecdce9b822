"""The data that flows from an instance extractor to the pixel enhancer."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["Semantics", "InstanceExtractor", "empty_semantics", "locate_frames"]


@dataclass
class Semantics:
    """Instances, events and scenes of a window of frames.

    Layouts (``B`` windows, one per stream, see :class:`InstanceExtractor`; ``T`` frames, ``N``
    instance slots, ``h x w`` the frame size):

    - ``masks``: ``(B, T, h, w)`` int64 ids. ``0`` is background (the scene), ``k >= 1`` is the
      pixel's instance, stored in slot ``k - 1``.
    - ``instance_tokens``: ``(B, T, N, D)`` float, one token per slot and frame.
    - ``global_tokens``: ``(B, T, G)`` float, one scene token per frame.
    - ``valid``: ``(B, T, N)`` bool, whether the slot's instance is visible in that frame.
    - ``track_ids``: ``(B, N)`` int64, the track id of each slot in its row's stream (``-1``
      unused); ids of different rows are unrelated.

    A slot is the same instance in every frame of the window (an *event*): slot ``n`` of frame
    ``t`` and slot ``n`` of frame ``t + 1`` belong to the same track.
    """

    masks: Tensor
    instance_tokens: Tensor
    global_tokens: Tensor
    valid: Tensor
    track_ids: Tensor

    def __post_init__(self) -> None:
        b, t, h, w = self.masks.shape
        n = self.instance_tokens.shape[2]
        if self.instance_tokens.shape[:2] != (b, t):
            raise ValueError(f"instance_tokens {tuple(self.instance_tokens.shape)} vs masks {(b, t, h, w)}")
        if self.global_tokens.shape[:2] != (b, t):
            raise ValueError(f"global_tokens {tuple(self.global_tokens.shape)} vs masks {(b, t, h, w)}")
        if tuple(self.valid.shape) != (b, t, n):
            raise ValueError(f"valid {tuple(self.valid.shape)} should be {(b, t, n)}")
        if tuple(self.track_ids.shape) != (b, n):
            raise ValueError(f"track_ids {tuple(self.track_ids.shape)} should be {(b, n)}")

    @property
    def num_instances(self) -> int:
        return int(self.instance_tokens.shape[2])

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> Semantics:
        """Move every tensor to ``device``; float tensors are also cast to ``dtype`` if given."""
        moved = {}
        for f in fields(self):
            value: Tensor = getattr(self, f.name)
            if dtype is not None and value.is_floating_point():
                moved[f.name] = value.to(device=device, dtype=dtype)
            else:
                moved[f.name] = value.to(device=device)
        return Semantics(**moved)

    def index(self, sl: slice | int) -> Semantics:
        """Select windows along the batch dimension (keeps the batch dimension)."""
        if isinstance(sl, int):
            sl = slice(sl, sl + 1)
        return Semantics(**{f.name: getattr(self, f.name)[sl] for f in fields(self)})

    @staticmethod
    def concat(parts: list[Semantics]) -> Semantics:
        """Stack windows along the batch dimension. Windows with fewer instance slots are padded with
        slots that are never valid, never referenced by a mask and have track id ``-1``: the
        enhancer gives them no weight, so each window's result is unchanged."""
        n = max(p.num_instances for p in parts)

        def pad(p: Semantics) -> Semantics:
            extra = n - p.num_instances
            if extra == 0:
                return p
            b, t, _, d = p.instance_tokens.shape
            tokens = torch.cat([p.instance_tokens, p.instance_tokens.new_zeros(b, t, extra, d)], dim=2)
            valid = torch.cat([p.valid, p.valid.new_zeros(b, t, extra)], dim=2)
            ids = torch.cat([p.track_ids, p.track_ids.new_full((b, extra), -1)], dim=1)
            return Semantics(masks=p.masks, instance_tokens=tokens, global_tokens=p.global_tokens, valid=valid,
                             track_ids=ids)

        padded = [pad(p) for p in parts]
        return Semantics(**{f.name: torch.cat([getattr(p, f.name) for p in padded]) for f in fields(Semantics)})

    def frames(self, sl: slice) -> Semantics:
        """Select frames along the time dimension (``track_ids`` is shared by all frames)."""
        return Semantics(
            masks=self.masks[:, sl],
            instance_tokens=self.instance_tokens[:, sl],
            global_tokens=self.global_tokens[:, sl],
            valid=self.valid[:, sl],
            track_ids=self.track_ids,
        )

    @staticmethod
    def cat(items: list[Semantics]) -> Semantics:
        """Concatenate along the batch dimension (same T, h, w, N and token sizes)."""
        return Semantics(**{f.name: torch.cat([getattr(s, f.name) for s in items]) for f in fields(Semantics)})


def empty_semantics(
    batch: int, frames: int, height: int, width: int, instance_dim: int, global_dim: int,
    device: torch.device | str = "cpu",
) -> Semantics:
    """Semantics with no instances (one empty slot) and zero scene tokens: what ``none`` gives."""
    return Semantics(
        masks=torch.zeros(batch, frames, height, width, dtype=torch.long, device=device),
        instance_tokens=torch.zeros(batch, frames, 1, instance_dim, device=device),
        global_tokens=torch.zeros(batch, frames, global_dim, device=device),
        valid=torch.zeros(batch, frames, 1, dtype=torch.bool, device=device),
        track_ids=torch.full((batch, 1), -1, dtype=torch.long, device=device),
    )


@runtime_checkable
class InstanceExtractor(Protocol):
    """Turns windows of frames into :class:`Semantics`, keeping track ids across windows.

    ``__call__`` takes ``(B, T, 3, h, w)`` float RGB in [0, 1] and returns Semantics whose masks are
    ``(B, T, h, w)``.

    **The batch dimension holds independent streams.** Row ``b`` of a call is the next window of
    stream ``b``: it continues row ``b`` of the previous call and shares nothing with the other
    rows (regions, tracks and track ids are per stream), so unrelated clips can be extracted in one
    call. A call whose ``B`` differs from the previous call's starts ``B`` new streams. The
    consecutive windows of one stream are passed one call after the other, in order, and may
    overlap; an instance keeps its track id across them. ``reset()`` forgets every stream (new
    clip or scene cut).

    An extractor that needs to know *which* frames of the stream a call holds (masks given per
    frame, :class:`~semlens.semantics.GivenMasks`) also has ``locate(indices)``: the pipeline
    calls it before each call with the stream frame index of every frame of every row (``B`` lists
    of ``T`` indices, overlap and reflected frames at shot ends included); see
    :func:`locate_frames`. Extractors without it are never told.
    """

    name: str
    instance_dim: int
    global_dim: int
    max_instances: int

    def __call__(self, frames: Tensor) -> Semantics: ...

    def reset(self) -> None: ...


def locate_frames(extractor: object, indices: list[list[int]]) -> None:
    """Tell ``extractor`` the stream frame indices of the rows of its next call, if it has a
    ``locate`` method (see :class:`InstanceExtractor`)."""
    locate = getattr(extractor, "locate", None)
    if callable(locate):
        locate(indices)
