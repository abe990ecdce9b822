"""The held-out object set: large objects with their true masks beside each clip."""

from __future__ import annotations

import av
import numpy as np

from semlens.train.valset import masks_path, write_object_set


def test_object_set_writes_clips_with_large_objects_and_their_masks(tmp_path) -> None:
    paths = write_object_set(tmp_path, frames=3, size=64)
    assert [p.name for p in paths] == ["coffee-objects.mkv", "rocket-objects.mkv"]
    for path in paths:
        masks = np.load(masks_path(path))
        assert masks.shape == (3, 64, 64) and masks.dtype == np.uint8
        assert (masks > 0).mean() > 0.1  # objects fill a good part of the frame
        with av.open(str(path)) as container:
            frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
        assert len(frames) == 3 and frames[0].shape == (64, 64, 3)
    # A pure function of its seeds: written again, the masks are the same.
    again = write_object_set(tmp_path / "again", frames=3, size=64)
    assert all(np.array_equal(np.load(masks_path(a)), np.load(masks_path(b))) for a, b in zip(paths, again))
