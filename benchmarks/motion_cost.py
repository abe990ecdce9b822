"""What IMAGE's motion-centred reach costs: the network's time per frame with ``motion_search`` R
against the same weights with the window at the query's position, in interleaved rounds.

    python benchmarks/motion_cost.py --size 320x180 --reach 8 --rounds 5 --threads 1 \
        --out benchmarks/results/motion_cost.json

A panning synthetic window (so block matching finds motion and the shifted reads happen), no
extractor, float32, one window of ``--frames`` frames per timing; the ratio of each round's two
times is reported (times drift on a shared machine, ratios measured back to back much less).
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from _common import machine, parse_size, set_threads, write_json

from semlens.enhancer import EnhancerConfig, PixelEnhancer


def panning_window(width: int, height: int, frames: int, step: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    scene = F.avg_pool2d(torch.rand(1, 3, height + 8, width + step * frames + 8, generator=g), 5, 1, 2)
    return torch.stack([scene[:, :, 4:4 + height, 4 + step * i:4 + step * i + width] for i in range(frames)], dim=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="320x180", help="LR frame size WxH")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--reach", type=int, default=8)
    parser.add_argument("--motion", type=int, default=4, help="pan per frame in LR pixels")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    width, height = parse_size(args.size)
    torch.manual_seed(0)
    plain = PixelEnhancer(EnhancerConfig.preset("tiny", scale=args.scale)).eval()
    reaching = PixelEnhancer(replace(plain.config, motion_search=args.reach)).eval()
    reaching.load_state_dict(plain.state_dict())
    x = panning_window(width, height, args.frames, args.motion)

    def timed(net: PixelEnhancer) -> float:
        with torch.inference_mode():
            start = time.perf_counter()
            net(x)
            return (time.perf_counter() - start) / args.frames

    timed(plain), timed(reaching)  # warm-up
    rounds = []
    for _ in range(args.rounds):
        a, b = timed(plain), timed(reaching)
        rounds.append({"plain_s_per_frame": a, "motion_search_s_per_frame": b, "ratio": b / a})
    ratio = statistics.median(r["ratio"] for r in rounds)
    print(f"{args.size} x{args.scale}, {args.frames} frames, reach {args.reach}: motion search / plain per round "
          + ", ".join(f"{r['ratio']:.3f}" for r in rounds) + f"; median {ratio:.3f}x")
    write_json(args.out, {"benchmark": "motion_cost", "machine": machine(), "settings": vars(args),
                          "rounds": rounds, "median_ratio": ratio})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
