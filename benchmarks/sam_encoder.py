"""Seconds per image of SAM's image encoder (random weights: cost only) at its 1024 x 1024 input.

    python benchmarks/sam_encoder.py [--variant vit_b] [--repeats 3] [--out results/sam_encoder.json]

This is why the SAM extractors run the encoder on key frames only. The model is built from
``segment_anything``'s own registry without a checkpoint (no download); the median of
``--repeats`` timed runs after one warm-up run is reported with every run.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import machine, set_threads, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variant", default="vit_b", choices=["vit_b", "vit_l", "vit_h"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    threads = set_threads(args.threads)
    from segment_anything import sam_model_registry

    torch.manual_seed(0)
    encoder = sam_model_registry[args.variant](checkpoint=None).image_encoder.eval()
    side = encoder.img_size
    x = torch.randn(1, 3, side, side)
    runs = []
    with torch.inference_mode():
        encoder(x)  # warm-up
        for _ in range(max(1, args.repeats)):
            start = time.perf_counter()
            encoder(x)
            runs.append(time.perf_counter() - start)
    median = statistics.median(runs)
    print(f"SAM {args.variant} image encoder, {side}x{side}, {threads} threads: median {median:.2f} s per image "
          f"(runs: {', '.join(f'{r:.2f}' for r in runs)})")
    write_json(args.out, {"benchmark": "sam_encoder", "machine": machine(), "variant": args.variant,
                          "input": [side, side], "threads": threads, "seconds_per_image_runs": runs,
                          "seconds_per_image_median": median})


if __name__ == "__main__":
    main()
