"""What short shots cost: seconds per emitted frame of clips of a few frames (a single image, a shot
of 3 or 5 frames between cuts) against a clip of several windows, with the shipped model's window.

    python benchmarks/short_shots.py --lengths 1,3,5,24 --size 320x180 --scale 4 --rounds 3 --threads 1 \
        --out benchmarks/results/short_shots.json

Each clip is one shot of pattern frames (moving squares on a gradient, no cut) upscaled with
``upscale_frames`` (extractor and windows as shipped); the fastest of ``--rounds`` runs is reported.
Also printed: the frames each clip's windows read (``semlens.windows.plan_windows``), the work the
network does for it.
"""

from __future__ import annotations

import argparse
import time

from _common import (
    load_upscaler,
    machine,
    markdown_table,
    parse_size,
    pattern_frames,
    set_threads,
    write_json,
)

from semlens.windows import plan_windows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", default="1,3,5,24")
    parser.add_argument("--size", default="320x180")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--model", default=None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    width, height = parse_size(args.size)
    up, note = load_upscaler(args.model, args.scale)
    window, overlap = up.settings.window, up.settings.overlap
    list(up.upscale_frames(pattern_frames(2, width, height)))  # warm-up
    rows, results = [], []
    for length in (int(v) for v in args.lengths.split(",")):
        frames = pattern_frames(length, width, height)
        runs = []
        for _ in range(args.rounds):
            start = time.perf_counter()
            out = list(up.upscale_frames(frames))
            runs.append(time.perf_counter() - start)
        assert len(out) == length
        read = sum(len(w.indices) for w in plan_windows(length, window, overlap))
        best = min(runs)
        results.append({"frames": length, "frames_read": read, "seconds": best, "runs": runs,
                        "seconds_per_frame": best / length})
        rows.append([length, read, best, best / length])
    print(f"{note}, window {window} / overlap {overlap}, {width}x{height} x{args.scale}, {threads} torch threads")
    print(markdown_table(["frames", "frames read", "seconds", "s / frame"], rows))
    write_json(args.out, {"machine": machine(), "model": note, "window": window, "overlap": overlap,
                          "size": args.size, "scale": args.scale, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
