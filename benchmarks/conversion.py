"""Turning the enhancer's float output into what the encoder takes, per 720p frame.

- ``RGB bytes + swscale``: ``pipeline.to_frames`` (clamp, round, uint8 RGB on the device), then
  PyAV's ``reformat`` to yuv420p on the CPU (the path for writers that take RGB);
- ``YUV planes``: ``pipeline.to_planar`` (4:2:0 planes made on the device), then
  ``VideoFrame.from_ndarray`` (what ``upscale_video`` hands a libx264 writer).

Both on the same ``(T, 3, H, W)`` float batch (``--frames`` 10, ``--size`` 1280x720), in
``--rounds`` interleaved rounds; each includes a copy of the batch (the conversions work in place),
which is timed alone and subtracted.

    python benchmarks/conversion.py --out benchmarks/results/conversion.json
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import av
import numpy as np
import torch
from _common import machine, markdown_table, parse_size, set_threads, write_json


def main(argv: list[str] | None = None) -> int:
    from semlens.io import PlanarLayout
    from semlens.pipeline import to_frames, to_planar

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1280x720", help="output frame WIDTHxHEIGHT (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=10, help="frames per batch (default: 10)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    width, height = parse_size(args.size)
    x = torch.rand(args.frames, 3, height, width, generator=torch.Generator().manual_seed(0))
    layout = PlanarLayout("yuv420p", width, height, 8, True, 0.2126, 0.0722, full_range=False)

    def copy() -> Any:
        return x.clone()

    def rgb() -> Any:
        return [av.VideoFrame.from_ndarray(a, format="rgb24").reformat(format="yuv420p", dst_colorspace=1,
                                                                      dst_color_range=1)
                for a in to_frames(x.clone(), 255)]

    def planar() -> Any:
        return [av.VideoFrame.from_ndarray(a, format="yuv420p") for a in to_planar(x.clone(), layout)]

    stages: dict[str, Callable[[], Any]] = {"copy": copy, "rgb": rgb, "planar": planar}
    times: dict[str, list[float]] = {k: [] for k in stages}
    for fn in stages.values():
        fn()  # warm-up
    for _ in range(max(1, args.rounds)):
        for name, fn in stages.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) / args.frames)
    med = {k: float(np.median(v)) for k, v in times.items()}
    rgb_ms, planar_ms = (med["rgb"] - med["copy"]) * 1e3, (med["planar"] - med["copy"]) * 1e3
    print(f"{args.frames} frames {width}x{height}, median of {args.rounds} rounds, ms per frame\n")
    print(markdown_table(["conversion", "ms / frame"], [
        ["RGB bytes + swscale (to_frames, reformat)", rgb_ms],
        ["YUV planes (to_planar, from_ndarray)", planar_ms],
    ]))
    print(f"\nYUV planes take {planar_ms / rgb_ms:.2f}x the time of RGB bytes + swscale")
    write_json(args.out, {"benchmark": "conversion", "machine": machine(), "settings": vars(args),
                          "ms_per_frame": {"rgb_swscale": rgb_ms, "planar": planar_ms}, "rounds": times})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
