"""IMAGE in strips of rows: the alignment's time per call with each strip budget against the
whole frame at once, at several frame sizes, in interleaved rounds.

    python benchmarks/image_strips.py --sizes 320x180,640x360,1280x720 --budgets 1M,2M,4M \
        --rounds 7 --threads 1 --out benchmarks/results/image_strips.json

On a CPU at inference :class:`~semlens.enhancer.ImplicitMaskedAlignment` attends in strips of
about ``semlens.enhancer.image._STRIP_BYTES`` of the aligned values, so that each strip's logits,
attention and output stay in the caches across its 25 displacements. This script times one call
(random 32-channel channels-last features, the tiny preset's IMAGE, instance ids with one object)
with each budget and with the whole frame (a budget larger than the frame), back to back in each
round; it reports per size the median time per budget and its ratio to the whole frame's.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import machine, markdown_table, parse_size, set_threads, write_json

from semlens.enhancer import EnhancerConfig, ImplicitMaskedAlignment
from semlens.enhancer import image as image_module


def _bytes(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    text = text.strip().upper()
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="320x180,640x360,1280x720", help="LR frame sizes WxH, comma-separated")
    parser.add_argument("--budgets", default="1M,2M,4M", help="strip budgets in bytes (K/M suffixes)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    config = EnhancerConfig.preset("tiny", scale=4)
    torch.manual_seed(0)
    align = ImplicitMaskedAlignment(config.channels, config.align_dim, config.radius).eval()
    budgets = {"whole frame": 1 << 50, **{b: _bytes(b) for b in args.budgets.split(",")}}
    shipped = image_module._STRIP_BYTES
    results = []
    try:
        for size in args.sizes.split(","):
            width, height = parse_size(size)
            g = torch.Generator().manual_seed(0)
            ref, sup, value = (torch.randn(1, config.channels, height, width, generator=g)
                               .contiguous(memory_format=torch.channels_last) for _ in range(3))
            ids = torch.zeros(1, height, width, dtype=torch.long)
            ids[:, height // 4:height // 2, width // 4:width // 2] = 1
            times: dict[str, list[float]] = {name: [] for name in budgets}
            with torch.inference_mode():
                for budget in budgets.values():  # warm-up
                    image_module._STRIP_BYTES = budget
                    align(ref, sup, value, ids, ids)
                for _ in range(args.rounds):
                    for name, budget in budgets.items():
                        image_module._STRIP_BYTES = budget
                        start = time.perf_counter()
                        align(ref, sup, value, ids, ids)
                        times[name].append(time.perf_counter() - start)
            whole = statistics.median(times["whole frame"])
            for name in budgets:
                med = statistics.median(times[name])
                results.append({"size": size, "budget": name, "median_seconds": med, "ratio_to_whole": med / whole,
                                "seconds": times[name]})
    finally:
        image_module._STRIP_BYTES = shipped
    print(markdown_table(["size", "strips", "median ms per call", "vs whole frame"],
                         [[r["size"], r["budget"], r["median_seconds"] * 1000, r["ratio_to_whole"]] for r in results]))
    write_json(args.out, {"benchmark": "image_strips", "machine": machine(), "threads": threads,
                          "shipped_budget_bytes": shipped, "settings": vars(args), "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
