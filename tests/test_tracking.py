"""Tracking on synthetic moving squares: ids survive frames, window seams and crossings."""

from __future__ import annotations

import torch

from semlens.semantics.tracking import (
    TrackedFrame,
    Tracker,
    greedy_match,
    labels_from_masks,
    mask_iou,
    masks_from_labels,
    window_semantics,
)

H = W = 32
SIZE = 8
RED = torch.tensor([1.0, 0.0, 0.0, 0.1])
BLUE = torch.tensor([0.0, 0.0, 1.0, 0.1])
GREEN = torch.tensor([0.0, 1.0, 0.0, 0.1])


def square(x: int, y: int, size: int = SIZE) -> torch.Tensor:
    m = torch.zeros(H, W, dtype=torch.bool)
    m[max(y, 0) : max(y + size, 0), max(x, 0) : max(x + size, 0)] = True
    return m


def moving_scene(t: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """Three squares: red moving right, blue moving down, green still (name, token, mask)."""
    return [
        ("red", RED, square(1 + t, 2)),
        ("blue", BLUE, square(20, 1 + 2 * t if t < 10 else 21)),
        ("green", GREEN, square(2, 22)),
    ]


def track_frames(
    tracker: Tracker, scenes: list[list[tuple[str, torch.Tensor, torch.Tensor]]]
) -> list[dict[str, int]]:
    """Feed frames to the tracker; return name -> track id for each frame."""
    out = []
    for dets in scenes:
        tokens = torch.stack([d[1] for d in dets])
        masks = torch.stack([d[2] for d in dets])
        ids = tracker.update(tokens, masks)
        out.append({d[0]: int(i) for d, i in zip(dets, ids.tolist())})
    return out


def test_labels_from_masks_small_on_top_and_roundtrip() -> None:
    big, small = square(0, 0, 16), square(4, 4, 4)
    labels = labels_from_masks(torch.stack([small, big]))
    assert labels.dtype == torch.long
    assert int(labels[5, 5]) == 1  # the small square stays visible over the big one
    assert int(labels[0, 0]) == 2
    assert int(labels[20, 20]) == 0
    back = masks_from_labels(labels, 2)
    assert torch.equal(back[0], small)
    assert torch.equal(back[1], big & ~small)
    assert labels_from_masks(torch.zeros(0, H, W, dtype=torch.bool)).eq(0).all()


def test_mask_iou_values() -> None:
    a = torch.stack([square(0, 0), square(16, 16)])
    b = torch.stack([square(4, 0), square(0, 0)])
    iou = mask_iou(a, b)
    assert torch.allclose(iou[0], torch.tensor([32 / 96, 1.0]))
    assert torch.allclose(iou[1], torch.tensor([0.0, 0.0]))


def test_greedy_match_best_first_and_gated() -> None:
    scores = torch.tensor([[0.9, 0.8], [0.85, 0.2], [0.1, 0.3]])
    # (0,0) is taken first, then row 1 cannot take col 0 and (1,1)=0.2 is under the gate;
    # (2,1)=0.3 is under the gate too.
    assert greedy_match(scores, 0.5).tolist() == [0, -1]
    assert greedy_match(scores, 0.25).tolist() == [0, 2]
    assert greedy_match(torch.zeros(0, 3), 0.5).tolist() == [-1, -1, -1]


def test_moving_squares_keep_ids_in_a_stream() -> None:
    tracker = Tracker()
    per_frame = track_frames(tracker, [moving_scene(t) for t in range(12)])
    assert all(f == per_frame[0] for f in per_frame)
    assert sorted(per_frame[0].values()) == [0, 1, 2]
    assert tracker.num_tracks == 3


def test_detection_order_does_not_change_ids() -> None:
    tracker = Tracker()
    scenes = [moving_scene(t) for t in range(8)]
    scenes = [s if t % 2 == 0 else s[::-1] for t, s in enumerate(scenes)]
    per_frame = track_frames(tracker, scenes)
    assert all(f == per_frame[0] for f in per_frame)


def _crossing_scenes() -> list[list[tuple[str, torch.Tensor, torch.Tensor]]]:
    # Red moves right, blue moves left on the same row; at t = 5 they coincide exactly, then
    # separate. Blue (the older track) is listed first before the crossing and last from the
    # crossing on, so that masks and index order alone would swap them.
    scenes = []
    for t in range(11):
        dets = [("blue", BLUE, square(22 - 2 * t, 10)), ("red", RED, square(2 + 2 * t, 10))]
        scenes.append(dets if t < 5 else dets[::-1])
    assert torch.equal(scenes[5][0][2], scenes[5][1][2])
    return scenes


def test_crossing_squares_do_not_swap() -> None:
    per_frame = track_frames(Tracker(), _crossing_scenes())
    assert all(f == per_frame[0] for f in per_frame), per_frame


def test_crossing_squares_swap_without_tokens() -> None:
    # Control: with masks only, the tie at the crossing goes to the older track, which swaps.
    per_frame = track_frames(Tracker(token_weight=0.0, min_score=0.1), _crossing_scenes())
    assert per_frame[-1]["red"] == per_frame[0]["blue"]


def test_unseen_track_is_dropped_after_max_age() -> None:
    tracker = Tracker(max_age=2)
    first = tracker.update(RED[None], square(4, 4)[None])
    empty_tokens, empty_masks = torch.zeros(0, 4), torch.zeros(0, H, W, dtype=torch.bool)
    tracker.update(empty_tokens, empty_masks)
    again = tracker.update(RED[None], square(4, 4)[None])
    assert again.tolist() == first.tolist()  # gone one frame: kept
    for _ in range(3):
        tracker.update(empty_tokens, empty_masks)
    assert tracker.num_tracks == 0
    late = tracker.update(RED[None], square(4, 4)[None])
    assert late.tolist() == [first.item() + 1]


def test_observe_refreshes_masks_for_later_matching() -> None:
    tracker = Tracker(token_weight=0.0, min_score=0.3)
    ids = tracker.update(RED[None], square(0, 0)[None])
    # The square moves far; observe() carries the mask along (as propagation does).
    for x in (6, 12, 18):
        tracker.observe(ids, square(x, 0)[None])
    assert tracker.update(RED[None], square(20, 0)[None]).tolist() == ids.tolist()


def _frame_of(dets: list[tuple[str, torch.Tensor, torch.Tensor]], ids: torch.Tensor) -> TrackedFrame:
    masks = torch.stack([d[2] for d in dets])
    return TrackedFrame(labels=labels_from_masks(masks), track_ids=ids, tokens=torch.stack([d[1] for d in dets]))


def run_windows(window: int, overlap: int, total: int, scene=moving_scene):
    """Overlapping windows fed in order, the shared frames reused as the extractor does."""
    tracker = Tracker()
    done: list[TrackedFrame] = []
    outputs = []
    start = 0
    while start + window <= total:
        frames = done[start:start + overlap] if start else []
        for t in range(start + len(frames), start + window):
            dets = scene(t)
            ids = tracker.update(torch.stack([d[1] for d in dets]), torch.stack([d[2] for d in dets]))
            tf = _frame_of(dets, ids)
            done.append(tf)
            frames.append(tf)
        sem = window_semantics(frames, torch.zeros(window, 5), max_slots=4, instance_dim=4)
        outputs.append((start, sem))
        start += window - overlap
    return outputs


def _id_at(sem, t: int, y: int, x: int) -> int:
    slot = int(sem.masks[0, t, y, x])
    return -1 if slot == 0 else int(sem.track_ids[0, slot - 1])


def test_ids_survive_overlapping_windows() -> None:
    outputs = run_windows(window=6, overlap=2, total=18)
    assert [s for s, _ in outputs] == [0, 4, 8, 12]
    names = {}
    for start, sem in outputs:
        assert sem.masks.shape == (1, 6, H, W)
        for t in range(6):
            for name, _, mask in moving_scene(start + t):
                ys, xs = torch.nonzero(mask, as_tuple=True)
                tid = _id_at(sem, t, int(ys[0]) + 1, int(xs[0]) + 1)
                assert tid >= 0
                assert names.setdefault(name, tid) == tid, (start, t, name)
    assert sorted(names.values()) == [0, 1, 2]


def test_overlapping_windows_are_deterministic() -> None:
    a = run_windows(window=5, overlap=1, total=13)
    b = run_windows(window=5, overlap=1, total=13)
    for (_, x), (_, y) in zip(a, b):
        assert torch.equal(x.masks, y.masks) and torch.equal(x.track_ids, y.track_ids)
        assert torch.equal(x.instance_tokens, y.instance_tokens) and torch.equal(x.valid, y.valid)


def test_window_semantics_slots() -> None:
    # Track 7 appears in frame 1, tracks 3 and 5 in frame 0: slots ordered (first frame, id).
    f0 = TrackedFrame(
        labels_from_masks(torch.stack([square(0, 0), square(10, 10)])),
        torch.tensor([5, 3]),
        torch.stack([RED, BLUE]),
    )
    f1 = TrackedFrame(
        labels_from_masks(torch.stack([square(20, 20), square(1, 0)])),
        torch.tensor([7, 5]),
        torch.stack([GREEN, RED * 2]),
    )
    g = torch.arange(6.0).view(2, 3)
    sem = window_semantics([f0, f1], g, max_slots=4, instance_dim=4)
    assert sem.track_ids.tolist() == [[3, 5, 7, -1]]
    assert sem.valid.tolist() == [[[True, True, False, False], [False, True, True, False]]]
    assert torch.equal(sem.instance_tokens[0, 0, 0], BLUE)
    assert torch.equal(sem.instance_tokens[0, 1, 1], RED * 2)
    assert sem.instance_tokens[0, 1, 0].eq(0).all()  # absent: zero token
    assert torch.equal(sem.global_tokens[0], g)
    for t in range(2):
        present = set(sem.masks[0, t].unique().tolist()) - {0}
        assert present == {n + 1 for n in range(4) if sem.valid[0, t, n]}
    assert int(sem.masks[0, 0, 12, 12]) == 1 and int(sem.masks[0, 1, 22, 22]) == 3

    # Only two slots: the track first seen last (7) is dropped and painted as background.
    small = window_semantics([f0, f1], g, max_slots=2, instance_dim=4)
    assert small.track_ids.tolist() == [[3, 5]]
    assert int(small.masks[0, 1, 22, 22]) == 0
    assert int(small.masks.max()) == 2


def test_window_semantics_without_instances() -> None:
    empty = TrackedFrame(torch.zeros(H, W, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0, 4))
    sem = window_semantics([empty, empty], torch.zeros(2, 3), max_slots=3, instance_dim=4)
    assert sem.masks.eq(0).all() and not sem.valid.any()
    assert sem.track_ids.tolist() == [[-1, -1, -1]]
    assert sem.instance_tokens.shape == (1, 2, 3, 4)
