"""Time of the lite extractor against the tiny enhancer, per frame (the extractor's budget is 10%).

    python benchmarks/extractor.py [--size 320x180] [--frames 12] [--repeats 3] [--out results/extractor.json]

Both run on the same random window in the same process; the ratio is what counts (absolute times
drift on a shared machine). The fastest of ``--repeats`` runs is reported.
"""

from __future__ import annotations

import argparse

import torch
from _common import best_of, parse_size, set_threads, write_json

from semlens.enhancer import EnhancerConfig, PixelEnhancer
from semlens.semantics.lite import LiteExtractor


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    set_threads(args.threads)
    w, h = parse_size(args.size)
    torch.manual_seed(0)
    x = torch.rand(1, args.frames, 3, h, w)
    extractor = LiteExtractor()
    model = PixelEnhancer(EnhancerConfig.preset("tiny", scale=args.scale)).eval()

    def extract() -> None:
        extractor.reset()
        extractor(x)

    sem = extractor(x)
    with torch.inference_mode():
        t_extract = best_of(extract, args.repeats)[0] / args.frames
        t_enhance = best_of(lambda: model(x, sem), args.repeats)[0] / args.frames
    result = {"size": args.size, "frames": args.frames, "threads": torch.get_num_threads(),
              "lite_seconds_per_frame": t_extract, "tiny_enhancer_seconds_per_frame": t_enhance,
              "ratio": t_extract / t_enhance}
    print("| part | s / frame | ratio to enhancer |\n|---|---|---|")
    print(f"| lite extractor | {t_extract:.4f} | {t_extract / t_enhance:.3f} |")
    print(f"| tiny enhancer x{args.scale} | {t_enhance:.4f} | 1.000 |")
    write_json(args.out, result)


if __name__ == "__main__":
    main()
