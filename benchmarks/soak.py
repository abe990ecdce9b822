"""Soak test: hundreds of windows through ``upscale_frames`` with no growth in memory or file handles.

    python benchmarks/soak.py [--frames 1200] [--size 64x36] [--window 6] [--overlap 1] [--out results/soak.json]

Frames are generated on the fly (nothing is kept), streamed through a random tiny x2 model, and
after every ``--every`` output frames the process's RSS (from /proc/self/statm) and the number of
open file descriptors (/proc/self/fd) are sampled. Growth is measured between the first sample taken
after warm-up and the last one.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import torch
from _common import parse_size, write_json

from semlens.enhancer import EnhancerConfig, PixelEnhancer
from semlens.upscaler import SemanticLensUpscaler


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=1200)
    parser.add_argument("--size", default="64x36")
    parser.add_argument("--window", type=int, default=6)
    parser.add_argument("--overlap", type=int, default=1)
    parser.add_argument("--every", type=int, default=100)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    w, h = parse_size(args.size)
    torch.manual_seed(0)
    model = PixelEnhancer(EnhancerConfig.preset("tiny", scale=2))
    up = SemanticLensUpscaler(model, "lite", window=args.window, overlap=args.overlap)
    rng = np.random.default_rng(0)

    def frames():
        for k in range(args.frames):
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            img[:, (k % w):(k % w) + 4] = 255
            yield img

    samples = []
    for i, _ in enumerate(up.upscale_frames(frames()), start=1):
        if i % args.every == 0:
            samples.append({"frames": i, "rss_mb": rss_mb(), "fds": fds()})
    windows = -(-args.frames // (args.window - 2 * args.overlap))
    base = samples[1] if len(samples) > 2 else samples[0]
    last = samples[-1]
    result = {"frames": args.frames, "windows": windows, "samples": samples,
              "rss_growth_mb": last["rss_mb"] - base["rss_mb"], "fd_growth": last["fds"] - base["fds"]}
    print(f"{args.frames} frames, {windows} windows of {args.window} ({args.size})")
    print("| frames | RSS MB | open fds |\n|---|---|---|")
    for s in samples:
        print(f"| {s['frames']} | {s['rss_mb']:.1f} | {s['fds']} |")
    print(f"RSS growth after warm-up: {result['rss_growth_mb']:+.1f} MB; fd growth: {result['fd_growth']:+d}")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
