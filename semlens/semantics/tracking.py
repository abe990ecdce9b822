"""Greedy instance tracking across frames and windows, and window -> slot assembly.

Pure torch (no scipy, no model): everything here can be tested on synthetic masks.

Vocabulary and layouts:

- a *detection* is one instance found in one frame: a token ``(D,)`` float and a binary mask
  ``(h, w)`` bool; a frame's detections are stacked as tokens ``(K, D)`` and masks ``(K, h, w)``;
- a *track* is one instance followed through the stream; it has a stream-wide integer id
  (``0, 1, 2, ...`` in order of creation, never reused until :meth:`Tracker.reset`);
- a *label map* is ``(h, w)`` integer: ``0`` background, ``k >= 1`` the frame's instance ``k - 1``
  (one instance per pixel, so overlapping masks are resolved when painting, see
  :func:`labels_from_masks`);
- a *slot* is one row of the :class:`~semlens.semantics.types.Semantics` tensors of a window: the
  same track in every frame of the window.

Matching (:func:`assign_track_ids`): the score of a (track, detection) pair is
``token_weight * cosine(tokens) + (1 - token_weight) * IoU(masks)``; pairs under ``min_score`` are
never matched; the remaining pairs are taken greedily by decreasing score (ties: older track
first, then lower detection index), each track and detection at most once. Unmatched detections
open new tracks, in detection order. Everything is deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from semlens.semantics.types import Semantics

__all__ = [
    "TrackedFrame",
    "Tracker",
    "assign_track_ids",
    "greedy_match",
    "labels_from_masks",
    "masks_from_labels",
    "mask_iou",
    "match_scores",
    "paint_order",
    "window_semantics",
]


@dataclass
class TrackedFrame:
    """The tracked instances of one frame.

    - ``labels``: ``(h, w)`` integer label map (any integer dtype): ``0`` background, ``k >= 1``
      instance ``k - 1`` of this frame;
    - ``track_ids``: ``(K,)`` int64, the track id of each instance (distinct);
    - ``tokens``: ``(K, D)`` float, the token of each instance.
    """

    labels: Tensor
    track_ids: Tensor
    tokens: Tensor

    def __post_init__(self) -> None:
        if self.labels.dim() != 2:
            raise ValueError(f"labels should be (h, w), got {tuple(self.labels.shape)}")
        if self.track_ids.dim() != 1 or self.tokens.dim() != 2:
            raise ValueError(
                f"track_ids should be (K,) and tokens (K, D), got {tuple(self.track_ids.shape)} "
                f"and {tuple(self.tokens.shape)}"
            )
        if self.tokens.shape[0] != self.track_ids.shape[0]:
            raise ValueError(f"{self.tokens.shape[0]} tokens for {self.track_ids.shape[0]} track ids")


def paint_order(masks: Tensor) -> Tensor:
    """Painting order ``(K,)`` int64 of binary masks ``(K, h, w)``: decreasing area, ties in index
    order (painting in this order puts small masks on top of large ones)."""
    areas = masks.bool().flatten(1).sum(1)
    return torch.argsort(-areas, stable=True)


def labels_from_masks(masks: Tensor, order: Tensor | None = None) -> Tensor:
    """Paint binary masks ``(K, h, w)`` into a label map ``(h, w)`` int64 (``k + 1`` = mask ``k``).

    Masks are painted in ``order`` (default :func:`paint_order`: largest first), so where masks
    overlap the smaller one wins and a small object in front of a large one stays visible.
    """
    if masks.dim() != 3:
        raise ValueError(f"masks should be (K, h, w), got {tuple(masks.shape)}")
    k, h, w = masks.shape
    labels = torch.zeros(h, w, dtype=torch.long, device=masks.device)
    if k == 0:
        return labels
    masks = masks.bool()
    if order is None:
        order = paint_order(masks)
    for i in order.tolist():
        labels[masks[i]] = i + 1
    return labels


def masks_from_labels(labels: Tensor, count: int) -> Tensor:
    """Binary masks ``(count, h, w)`` bool of a label map ``(h, w)`` (mask ``k`` = label ``k + 1``)."""
    ids = torch.arange(1, count + 1, device=labels.device, dtype=labels.dtype)
    return labels.unsqueeze(0) == ids.view(-1, 1, 1)


def mask_iou(a: Tensor, b: Tensor) -> Tensor:
    """Pairwise IoU ``(M, K)`` float of binary masks ``a (M, h, w)`` and ``b (K, h, w)``."""
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"mask sizes differ: {tuple(a.shape[1:])} vs {tuple(b.shape[1:])}")
    fa = a.flatten(1).float()
    fb = b.flatten(1).float()
    inter = fa @ fb.T
    union = fa.sum(1, keepdim=True) + fb.sum(1).unsqueeze(0) - inter
    return torch.where(union > 0, inter / union.clamp_min(1.0), torch.zeros_like(inter))


def match_scores(
    prev_tokens: Tensor, prev_masks: Tensor, tokens: Tensor, masks: Tensor, token_weight: float = 0.5
) -> Tensor:
    """Scores ``(M, K)`` float: ``token_weight * cos + (1 - token_weight) * IoU``.

    ``prev_tokens (M, D)``, ``prev_masks (M, h, w)`` bool, ``tokens (K, D)``, ``masks (K, h, w)`` bool.
    """
    cos = F.normalize(prev_tokens.float(), dim=-1) @ F.normalize(tokens.float(), dim=-1).T
    return token_weight * cos + (1.0 - token_weight) * mask_iou(prev_masks, masks)


def greedy_match(scores: Tensor, min_score: float) -> Tensor:
    """Greedy one-to-one matching on ``scores (M, K)``.

    Returns ``(K,)`` int64: for each column (detection) the matched row (track), or ``-1``. Pairs
    are taken by decreasing score; ties go to the lower row, then the lower column. Pairs scoring
    under ``min_score`` are never matched.
    """
    m, k = scores.shape
    matched = torch.full((k,), -1, dtype=torch.long)
    if m == 0 or k == 0:
        return matched.to(scores.device)
    flat = scores.detach().float().flatten().cpu()
    order = torch.argsort(-flat, stable=True).tolist()
    rows_used: set[int] = set()
    values = flat.tolist()
    for idx in order:
        if values[idx] < min_score:
            break  # sorted: everything after is lower
        r, c = divmod(idx, k)
        if r in rows_used or matched[c] >= 0:
            continue
        matched[c] = r
        rows_used.add(r)
        if len(rows_used) == min(m, k):
            break
    return matched.to(scores.device)


def assign_track_ids(
    prev_tokens: Tensor,
    prev_masks: Tensor,
    prev_ids: Tensor,
    tokens: Tensor,
    masks: Tensor,
    next_id: int,
    *,
    token_weight: float = 0.5,
    min_score: float = 0.5,
) -> tuple[Tensor, int]:
    """Give the current detections track ids by greedy matching against the previous instances.

    Previous frame: ``prev_tokens (M, D)``, ``prev_masks (M, h, w)`` bool, ``prev_ids (M,)`` int64.
    Current frame: ``tokens (K, D)``, ``masks (K, h, w)`` bool. Returns ``(ids (K,) int64,
    next_id)``: matched detections take their track's id, the others get ``next_id, next_id + 1,
    ...`` in detection order.
    """
    scores = match_scores(prev_tokens, prev_masks, tokens, masks, token_weight)
    rows = greedy_match(scores, min_score)
    ids = torch.empty(rows.shape[0], dtype=torch.long, device=tokens.device)
    for c, r in enumerate(rows.tolist()):
        if r >= 0:
            ids[c] = int(prev_ids[r])
        else:
            ids[c] = next_id
            next_id += 1
    return ids, next_id


class Tracker:
    """Streaming greedy tracker: keeps the live tracks and gives each frame's detections ids.

    State per track: id, token ``(D,)`` (exponential moving average of its detections' tokens,
    weight ``token_momentum`` on the old value), last binary mask ``(h, w)`` and the frame it was
    last seen in. Every :meth:`update` or :meth:`observe` call is one frame; a track not seen for
    more than ``max_age`` frames is dropped (a later detection of it gets a new id).

    Args:
        token_weight: weight of the token cosine similarity in the score (the IoU gets the rest).
        min_score: minimum score for a match.
        max_age: frames a track survives without being seen.
        token_momentum: weight of the old token when a track's token is updated.
    """

    def __init__(
        self,
        *,
        token_weight: float = 0.5,
        min_score: float = 0.5,
        max_age: int = 30,
        token_momentum: float = 0.5,
    ) -> None:
        if not 0.0 <= token_weight <= 1.0:
            raise ValueError(f"token_weight must be in [0, 1], got {token_weight}")
        if not 0.0 <= token_momentum < 1.0:
            raise ValueError(f"token_momentum must be in [0, 1), got {token_momentum}")
        if max_age < 0:
            raise ValueError(f"max_age must be >= 0, got {max_age}")
        self.token_weight = float(token_weight)
        self.min_score = float(min_score)
        self.max_age = int(max_age)
        self.token_momentum = float(token_momentum)
        self.reset()

    def reset(self) -> None:
        """Forget every track and restart ids at 0 (new stream or scene cut)."""
        self.frame = -1
        self.next_id = 0
        self.ids: Tensor | None = None  # (M,) int64
        self.tokens: Tensor | None = None  # (M, D) float
        self.masks: Tensor | None = None  # (M, h, w) bool
        self.last_seen: Tensor | None = None  # (M,) int64

    @property
    def num_tracks(self) -> int:
        """Number of live tracks."""
        return 0 if self.ids is None else int(self.ids.shape[0])

    def _check_size(self, masks: Tensor) -> None:
        if self.masks is not None and self.masks.shape[1:] != masks.shape[1:]:
            raise ValueError(
                f"mask size changed from {tuple(self.masks.shape[1:])} to {tuple(masks.shape[1:])}; "
                "call reset() when a new stream starts"
            )

    def _drop_stale(self) -> None:
        if self.ids is None:
            return
        keep = (self.frame - self.last_seen) <= self.max_age
        if not bool(keep.all()):
            self.ids, self.tokens = self.ids[keep], self.tokens[keep]
            self.masks, self.last_seen = self.masks[keep], self.last_seen[keep]

    def update(self, tokens: Tensor, masks: Tensor) -> Tensor:
        """Track one new frame's detections: ``tokens (K, D)`` float, ``masks (K, h, w)`` bool.

        Returns ``(K,)`` int64 track ids (distinct). Matched tracks take the detection's mask and
        a blended token; unmatched detections open new tracks.
        """
        if tokens.dim() != 2 or masks.dim() != 3 or tokens.shape[0] != masks.shape[0]:
            raise ValueError(f"tokens (K, D) and masks (K, h, w) expected, got {tuple(tokens.shape)}, {tuple(masks.shape)}")
        self._check_size(masks)
        self.frame += 1
        masks = masks.bool()
        if self.ids is None or self.ids.numel() == 0:
            k = tokens.shape[0]
            ids = torch.arange(self.next_id, self.next_id + k, dtype=torch.long, device=tokens.device)
            self.next_id += k
            self.ids, self.tokens, self.masks = ids.clone(), tokens.detach().float().clone(), masks.clone()
            self.last_seen = torch.full((k,), self.frame, dtype=torch.long, device=tokens.device)
            self._drop_stale()
            return ids
        ids, self.next_id = assign_track_ids(
            self.tokens, self.masks, self.ids, tokens, masks, self.next_id,
            token_weight=self.token_weight, min_score=self.min_score,
        )
        position = {int(t): i for i, t in enumerate(self.ids.tolist())}
        new_rows, rows, cols = [], [], []
        for c, tid in enumerate(ids.tolist()):
            i = position.get(tid)
            if i is None:
                new_rows.append(c)
            else:
                rows.append(i)
                cols.append(c)
        if rows:
            r = torch.tensor(rows, dtype=torch.long, device=self.ids.device)
            c_ = torch.tensor(cols, dtype=torch.long, device=tokens.device)
            blended = self.token_momentum * self.tokens[r] + (1.0 - self.token_momentum) * tokens[c_].float()
            self._set_rows(r, tokens=blended, masks=masks[c_])
        if new_rows:
            sel = torch.tensor(new_rows, dtype=torch.long, device=tokens.device)
            self.ids = torch.cat([self.ids, ids[sel]])
            self.tokens = torch.cat([self.tokens, tokens[sel].detach().float()])
            self.masks = torch.cat([self.masks, masks[sel]])
            self.last_seen = torch.cat(
                [self.last_seen, torch.full((len(new_rows),), self.frame, dtype=torch.long, device=tokens.device)]
            )
        self._drop_stale()
        return ids

    def observe(self, track_ids: Tensor, masks: Tensor) -> None:
        """Record one frame whose instances already carry ids (e.g. masks propagated from a key
        frame): ``track_ids (K,)`` int64, ``masks (K, h, w)`` bool. Updates the masks and
        last-seen frame of the known tracks with non-empty masks; tokens are kept. Ids the tracker
        does not know are ignored."""
        if track_ids.dim() != 1 or masks.dim() != 3 or track_ids.shape[0] != masks.shape[0]:
            raise ValueError(f"track_ids (K,) and masks (K, h, w) expected, got {tuple(track_ids.shape)}, {tuple(masks.shape)}")
        self._check_size(masks)
        self.frame += 1
        if self.ids is not None:
            position = {int(t): i for i, t in enumerate(self.ids.tolist())}
            seen = masks.flatten(1).any(1).tolist()
            pairs = [(position[int(t)], c) for c, t in enumerate(track_ids.tolist()) if int(t) in position and seen[c]]
            if pairs:
                r = torch.tensor([p[0] for p in pairs], dtype=torch.long, device=self.ids.device)
                c_ = torch.tensor([p[1] for p in pairs], dtype=torch.long, device=masks.device)
                self._set_rows(r, masks=masks[c_].bool())
        self._drop_stale()

    def _set_rows(self, rows: Tensor, *, masks: Tensor, tokens: Tensor | None = None) -> None:
        """Refresh tracks ``rows``: new masks (and tokens), seen in the current frame. Out of place
        (``index_put``), so state made under ``torch.inference_mode`` can be updated outside it."""
        self.masks = self.masks.index_put((rows,), masks.to(self.masks.device))
        if tokens is not None:
            self.tokens = self.tokens.index_put((rows,), tokens.to(self.tokens.device, self.tokens.dtype))
        now = torch.full((rows.shape[0],), self.frame, dtype=torch.long, device=self.last_seen.device)
        self.last_seen = self.last_seen.index_put((rows,), now)


def window_semantics(
    frames: Sequence[TrackedFrame],
    global_tokens: Tensor,
    max_slots: int,
    instance_dim: int,
) -> Semantics:
    """Turn the tracked frames of one window into slot-aligned :class:`Semantics` (``B = 1``).

    Args:
        frames: ``T`` tracked frames of the window, in order, all with the same ``(h, w)``.
        global_tokens: ``(T, G)`` float scene tokens.
        max_slots: ``N``, the number of slots of the output (fixed, so windows stack).
        instance_dim: ``D``, the token size (needed when no frame has an instance).

    Slots: the tracks that have pixels somewhere in the window, ordered by the first frame they
    have pixels in, then by track id; the first ``max_slots`` get slots, the rest are painted as
    background. Output masks are rewritten to slot ids (``slot + 1``); ``valid[t, n]`` is true
    exactly where slot ``n`` has pixels in frame ``t``; tokens of absent slots are zeros; unused
    slots have track id ``-1``.
    """
    if len(frames) == 0:
        raise ValueError("a window needs at least one frame")
    if global_tokens.dim() != 2 or global_tokens.shape[0] != len(frames):
        raise ValueError(f"global_tokens should be (T={len(frames)}, G), got {tuple(global_tokens.shape)}")
    if max_slots < 1:
        raise ValueError(f"max_slots must be >= 1, got {max_slots}")
    device = frames[0].labels.device
    h, w = frames[0].labels.shape
    # First appearance of each track (frame index, track id) among instances with pixels.
    first_seen: dict[int, int] = {}
    present_per_frame: list[list[bool]] = []
    for t, fr in enumerate(frames):
        if tuple(fr.labels.shape) != (h, w):
            raise ValueError(f"frame {t} labels {tuple(fr.labels.shape)} vs {(h, w)}")
        k = int(fr.track_ids.shape[0])
        counts = torch.bincount(fr.labels.reshape(-1).long(), minlength=k + 1)[1 : k + 1]
        present = (counts > 0).tolist()
        present_per_frame.append(present)
        for tid, p in zip(fr.track_ids.tolist(), present):
            if p and tid not in first_seen:
                first_seen[tid] = t
    ordered = sorted(first_seen, key=lambda tid: (first_seen[tid], tid))[:max_slots]
    slot_of = {tid: n for n, tid in enumerate(ordered)}

    n_slots, n_frames = max_slots, len(frames)
    masks = torch.zeros(n_frames, h, w, dtype=torch.long, device=device)
    tokens = torch.zeros(n_frames, n_slots, instance_dim, device=device)
    valid = torch.zeros(n_frames, n_slots, dtype=torch.bool, device=device)
    for t, fr in enumerate(frames):
        k = int(fr.track_ids.shape[0])
        lut = torch.zeros(k + 1, dtype=torch.long, device=device)
        for i, (tid, p) in enumerate(zip(fr.track_ids.tolist(), present_per_frame[t])):
            n = slot_of.get(tid)
            if n is None or not p:
                continue
            lut[i + 1] = n + 1
            tokens[t, n] = fr.tokens[i].to(device=device, dtype=tokens.dtype)
            valid[t, n] = True
        masks[t] = lut[fr.labels.long()]
    track_ids = torch.full((n_slots,), -1, dtype=torch.long, device=device)
    if ordered:
        track_ids[: len(ordered)] = torch.tensor(ordered, dtype=torch.long, device=device)
    return Semantics(
        masks=masks.unsqueeze(0),
        instance_tokens=tokens.unsqueeze(0),
        global_tokens=global_tokens.to(device=device, dtype=torch.float32).unsqueeze(0),
        valid=valid.unsqueeze(0),
        track_ids=track_ids.unsqueeze(0),
    )
