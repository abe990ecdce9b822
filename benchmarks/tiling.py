"""How close tiled output is to untiled output with the shipped models, and what tiling costs.

For each shipped model (``--scales``) and each of ``--windows`` 12-frame windows of a real clip
(``--input``, default ``examples/sample.mp4``), the enhancer runs once on whole frames and then
tiled (:func:`semlens.tiling.tiled_forward`) for every ``--tiles`` x ``--overlaps`` pair, emitting
the 8 frames the stream emits. Reported per setting, over all windows: the largest and the mean
absolute difference of the clamped output in levels of 255, and the tiled time as a multiple of
the untiled time measured in the same run. ``--passes 1`` shows the tiles without the exchange of
ISEE's pooled sums.

The largest difference is what decides the default overlap: a trained model reaches further than
a random one, and the context share of every overlap band (a quarter of it on each side) has to
cover that reach.

    python benchmarks/tiling.py --out benchmarks/results/tiling.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch
from _common import load_upscaler, machine, markdown_table, set_threads, write_json

ROOT = Path(__file__).resolve().parent.parent


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=str(ROOT / "examples" / "sample.mp4"), help="a video (default: the example)")
    parser.add_argument("--scales", default="4,2", help="shipped models to measure (default: %(default)s)")
    parser.add_argument("--tiles", default="64,96", help="tile sides in LR pixels (default: %(default)s)")
    parser.add_argument("--overlaps", default="8,16,24,40", help="tile overlaps in LR pixels (default: %(default)s)")
    parser.add_argument("--passes", type=int, default=None, help="passes over the tiles (default: tiled_forward's)")
    parser.add_argument("--windows", type=int, default=2, help="12-frame windows, spread over the clip (default: 2)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--model", default=None, help="measure this model instead (needs a single --scales value)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    set_threads(args.threads)

    from semlens.io import open_source
    from semlens.pipeline import to_tensor
    from semlens.tiling import tiled_forward

    with open_source(args.input) as reader:
        frames = [frame.image for frame in reader]
    size = 12
    if len(frames) < size:
        raise SystemExit(f"{args.input} has {len(frames)} frames; at least {size} are needed")
    last = len(frames) - size
    starts = sorted({round(i * last / max(1, args.windows - 1)) for i in range(args.windows)})
    rows: list[dict[str, Any]] = []
    notes = []
    for scale in _ints(args.scales):
        up, note = load_upscaler(args.model, scale)
        notes.append(f"x{scale}: {note}")
        settings = [(tile, overlap) for tile in _ints(args.tiles) for overlap in _ints(args.overlaps)]
        stats = {key: {"max": 0.0, "sum": 0.0, "count": 0, "seconds": 0.0} for key in settings}
        whole_seconds = 0.0
        for start in starts:
            print(f"x{scale}: window at frame {start} ...", file=sys.stderr, flush=True)
            x, _ = to_tensor(frames[start:start + size], torch.device("cpu"))
            with torch.inference_mode():
                semantics = up.extractor(x)
                began = time.perf_counter()
                ref = up.model(x, semantics, (2, size - 2)).clamp_(0, 1)
                whole_seconds += time.perf_counter() - began
                for key in settings:
                    began = time.perf_counter()
                    y = tiled_forward(up.model, x, semantics, key[0], key[1], emit=(2, size - 2), passes=args.passes)
                    stats[key]["seconds"] += time.perf_counter() - began
                    diff = (y.clamp_(0, 1) - ref).abs_().mul_(255)
                    stats[key]["max"] = max(stats[key]["max"], diff.max().item())
                    stats[key]["sum"] += diff.sum().item()
                    stats[key]["count"] += diff.numel()
        for (tile, overlap), s in stats.items():
            rows.append({"scale": scale, "input": list(frames[0].shape[1::-1]), "tile": tile, "overlap": overlap,
                         "passes": args.passes, "max_levels": s["max"], "mean_levels": s["sum"] / s["count"],
                         "time_vs_whole": s["seconds"] / whole_seconds})
    print(markdown_table(
        ["scale", "input", "tile", "overlap", "max |diff| (/255)", "mean |diff| (/255)", "time vs whole frames"],
        [[f"x{r['scale']}", f"{r['input'][0]}x{r['input'][1]}", r["tile"], r["overlap"], f"{r['max_levels']:.2f}",
          f"{r['mean_levels']:.4f}", f"{r['time_vs_whole']:.2f}"] for r in rows]))
    for note in notes:
        print(f"\n{note}")
    write_json(args.out, {"benchmark": "tiling", "machine": machine(), "settings": vars(args), "notes": notes,
                          "window_starts": starts, "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
