"""Where the time per pixel goes as frames grow: the network's operators at two or more sizes.

``benchmarks/sizes.py`` shows the time per input pixel growing with the frame size although the
network is fully convolutional (its work per pixel is constant). This script runs the shipped
model of ``--scale`` (a random tiny model when its weights are not installed) once on a
``--frames``-frame window of random frames at each size of ``--sizes``, with the lite extractor's
semantics, under the PyTorch profiler, and reports per operator the self CPU time per input pixel
and its ratio to the first size's: operators whose ratio is well above 1 lose time to the size
itself (memory traffic once the feature maps leave the caches), not to more work.

    python benchmarks/op_profile.py --scale 2 --sizes 320x180,1280x720 --threads 1 \
        --out benchmarks/results/op_profile-x2.json
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from _common import load_upscaler, machine, markdown_table, parse_size, set_threads, write_json


def profile_size(up: Any, width: int, height: int, frames: int) -> dict[str, Any]:
    """One window at ``width x height``: wall seconds and self CPU seconds per operator."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, frames, 3, height, width, generator=g)
    up.extractor.reset()
    semantics = up.extractor(x)
    with torch.no_grad():
        up.model(x[..., :64, :64], None)  # one-time costs off the clock
        start = time.perf_counter()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            up.model(x, semantics)
        seconds = time.perf_counter() - start
    ops = {e.key: e.self_cpu_time_total / 1e6 for e in prof.key_averages()}
    return {"size": [width, height], "seconds": seconds, "ops": ops}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=2, choices=(2, 4))
    parser.add_argument("--sizes", default="320x180,1280x720",
                        help="input sizes WIDTHxHEIGHT, comma-separated; the first is the reference")
    parser.add_argument("--frames", type=int, default=3, help="frames in the window (default: 3)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--top", type=int, default=10, help="operators listed (by time at the largest size)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    if len(sizes) < 2 or args.frames < 1:
        raise SystemExit("give at least two sizes and --frames of at least 1")
    up, note = load_upscaler(None, args.scale)
    runs = []
    for w, h in sizes:
        print(f"{w}x{h} x{args.scale}, {args.frames} frames ...", file=sys.stderr, flush=True)
        runs.append(profile_size(up, w, h, args.frames))
    pixels = [args.frames * w * h for w, h in sizes]
    largest = runs[-1]["ops"]
    top = sorted(largest, key=lambda k: -largest[k])[: args.top]
    rows = []
    for op in top:
        per_px = [1e9 * r["ops"].get(op, 0.0) / n for r, n in zip(runs, pixels)]
        share = largest[op] / sum(largest.values())
        rows.append([op, *[f"{v:.0f}" for v in per_px], f"{per_px[-1] / per_px[0]:.2f}" if per_px[0] else "-",
                     f"{100 * share:.1f}%"])
    wall = [1e9 * r["seconds"] / n for r, n in zip(runs, pixels)]
    rows.append(["whole window (wall)", *[f"{v:.0f}" for v in wall], f"{wall[-1] / wall[0]:.2f}", "100%"])
    names = [f"{w}x{h} ns/px" for w, h in sizes]
    print(markdown_table(["operator", *names, "ratio last/first", "share at largest"], rows))
    if args.out:
        write_json(args.out, {"benchmark": "op_profile", "machine": machine(), "model": note, "scale": args.scale,
                              "frames": args.frames, "threads": args.threads, "runs": runs,
                              "wall_ns_per_pixel": dict(zip(names, wall))})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
