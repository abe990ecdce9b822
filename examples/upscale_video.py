"""Upscale one video x4 with the shipped default model, keeping audio and timing.

    python examples/upscale_video.py [INPUT] [OUTPUT]
"""

from __future__ import annotations

import sys
from pathlib import Path

from semlens import SemanticLensUpscaler


def main() -> None:
    here = Path(__file__).parent
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else here / "sample.mp4"
    dst = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("sample-x4.mp4")
    upscaler = SemanticLensUpscaler.from_pretrained(scale=4)  # offline: the weights ship with semlens

    def progress(done: int, total: int | None) -> None:
        print(f"\r{done}/{total or '?'} frames", end="", flush=True)

    result = upscaler.upscale_video(src, dst, crf=18, overwrite=True, progress=progress)
    print(f"\n{result.output}: {result.frames} frames in {result.seconds:.1f} s ({result.fps:.2f} fps)")

    # Frames from anywhere (numpy arrays, (H, W, 3) uint8 RGB) work too:
    import numpy as np

    frames = [np.zeros((36, 64, 3), np.uint8) for _ in range(3)]
    print([hr.shape for hr in upscaler.upscale_frames(frames)])


if __name__ == "__main__":
    main()
