"""Parameters and FLOPs of every enhancer preset (320x180 input, one 12-frame window).

    python benchmarks/configs.py [--size 320x180] [--frames 12] [--out results/configs.json]

FLOPs are counted with ``torch.utils.flop_counter`` (convolutions and matrix products; the
elementwise work of IMAGE is not counted) and given per network frame and per output frame of a
window of ``--frames`` frames that emits ``frames - 2 * overlap`` (overlap 2).
"""

from __future__ import annotations

import argparse

import torch
from _common import parse_size, write_json
from torch.utils.flop_counter import FlopCounterMode

from semlens.enhancer import PRESETS, EnhancerConfig, PixelEnhancer
from semlens.semantics.lite import LiteExtractor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--overlap", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    w, h = parse_size(args.size)
    rows = []
    x = torch.rand(1, args.frames, 3, h, w)
    sem = LiteExtractor()(x)
    emitted = args.frames - 2 * args.overlap
    for name in PRESETS:
        for scale in (2, 4):
            model = PixelEnhancer(EnhancerConfig.preset(name, scale=scale)).eval()
            counter = FlopCounterMode(display=False)
            with torch.inference_mode(), counter:
                model(x, sem, (args.overlap, args.frames - args.overlap))  # what a window emits
            total = counter.get_total_flops()
            whole = FlopCounterMode(display=False)
            with torch.inference_mode(), whole:
                model(x, sem)
            rows.append({"preset": name, "scale": scale, "parameters": sum(p.numel() for p in model.parameters()),
                         "gflops_per_network_frame": whole.get_total_flops() / args.frames / 1e9,
                         "gflops_per_output_frame": total / emitted / 1e9})
    print(f"| preset | scale | parameters | GFLOPs / network frame | GFLOPs / output frame ({args.size}, window {args.frames}) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['preset']} | x{r['scale']} | {r['parameters']:,} | {r['gflops_per_network_frame']:.2f} | "
              f"{r['gflops_per_output_frame']:.2f} |")
    write_json(args.out, {"size": args.size, "frames": args.frames, "overlap": args.overlap, "rows": rows})


if __name__ == "__main__":
    main()
