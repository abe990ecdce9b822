"""Time per input pixel and peak memory of the pipeline at real frame sizes.

For every scale of ``--scales`` and input size of ``--sizes`` a fresh process (so that its peak RSS
is that size's alone) loads the shipped model of the scale (``semlens-tiny-x2`` / ``-x4``; a random
tiny model of the same architecture when those weights are not installed), makes ``--frames``
deterministic pattern frames (moving squares on a gradient: no scene cut, so every size runs the
same windows), warms up on one small window, and upscales the frames in memory with
``SemanticLensUpscaler.upscale_frames`` (the model's window and overlap, the lite extractor, the
memory budget of ``--memory-budget``, else the automatic one). Reported per size: seconds per frame,
nanoseconds per input pixel, that time relative to the first size of ``--sizes`` measured in the
same run (320x180 by default), the memory budget and the tiles the pipeline used (0 = whole
frames), the process's peak RSS (``ru_maxrss``) with its growth during the run, its user and
kernel CPU seconds and minor page faults (the kernel's share is the cost of mapping fresh memory:
``SEMLENS_TUNE_MALLOC=0`` in the environment measures glibc's default allocator, see
``semlens/runtime.py``).

    python benchmarks/sizes.py --out benchmarks/results/sizes.json

Smoke test of the script (seconds): ``python benchmarks/sizes.py --sizes 160x90 --scales 4 --frames 4 --threads 1``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _common import machine, markdown_table, parse_size, write_json

SIZES = "320x180,640x360,1280x720,1920x1080"


def child(spec: dict[str, Any]) -> dict[str, Any]:
    """One size in this (fresh) process: the measurements as a dict."""
    import resource

    import torch
    from _common import load_upscaler, pattern_frames, set_threads

    import semlens.tiling as tiling
    from semlens.runtime import tune_allocator

    set_threads(spec["threads"])
    up, note = load_upscaler(None, spec["scale"])
    if spec["memory_budget"] is not None:
        up.settings.memory_budget = spec["memory_budget"]
    w, h, n = spec["width"], spec["height"], spec["frames"]
    tiles: set[int] = set()
    original = tiling.tiled_forward

    def recorded(model: Any, x: Any, semantics: Any, tile: int, *args: Any, **kwargs: Any) -> Any:
        h_, w_ = x.shape[-2:]
        tiles.add(0 if tile <= 0 or (tile >= h_ and tile >= w_) else tile)
        return original(model, x, semantics, tile, *args, **kwargs)

    tiling.tiled_forward = recorded  # type: ignore[assignment]
    warm = pattern_frames(min(n, up.settings.window), 64, 48)
    for _ in up.upscale_frames(warm):  # one-time costs (thread pools, lazy imports) off the clock
        pass
    tiles.clear()
    frames = pattern_frames(n, w, h)
    budget = up.settings.memory_budget
    if budget is None:
        budget = tiling.default_memory_budget(torch.device("cpu"))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    before = usage.ru_maxrss
    start = time.perf_counter()
    count = sum(1 for _ in up.upscale_frames(frames))
    seconds = time.perf_counter() - start
    done = resource.getrusage(resource.RUSAGE_SELF)
    after = done.ru_maxrss  # KiB on Linux
    if count != n:
        raise SystemExit(f"expected {n} output frames, got {count}")
    return {"model": note, "window": up.settings.window, "overlap": up.settings.overlap,
            "memory_budget_bytes": budget, "memory_budget_given": spec["memory_budget"] is not None,
            "tiles": sorted(tiles), "seconds": seconds, "seconds_per_frame": seconds / n,
            "ns_per_input_pixel": 1e9 * seconds / (n * w * h),
            "peak_rss_bytes": after * 1024, "rss_growth_bytes": (after - before) * 1024,
            "cpu_user_seconds": done.ru_utime - usage.ru_utime, "cpu_system_seconds": done.ru_stime - usage.ru_stime,
            "minor_faults": done.ru_minflt - usage.ru_minflt,
            "allocator_tuned": tune_allocator(),
            "torch_threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=SIZES,
                        help=f"input sizes, WIDTHxHEIGHT, comma-separated; the first is the reference (default: {SIZES})")
    parser.add_argument("--scales", default="2,4", help="scales, comma-separated (default: 2,4)")
    parser.add_argument("--frames", type=int, default=12, help="frames upscaled per size (default: 12)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads in each run (0 = all)")
    parser.add_argument("--memory-budget", default=None,
                        help="memory budget of every run, e.g. 4G or bytes (default: the automatic one)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        print(json.dumps(child(json.loads(args.child))))
        return 0
    from semlens.tiling import parse_memory_size

    try:
        budget = None if args.memory_budget is None else parse_memory_size(args.memory_budget)
    except ValueError as exc:
        raise SystemExit(f"--memory-budget: {exc}") from None
    sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    try:
        scales = [int(s) for s in args.scales.split(",") if s.strip()]
    except ValueError:
        raise SystemExit(f"bad --scales {args.scales!r}; use e.g. 2,4") from None
    if not sizes or not scales or args.frames < 1 or any(s not in (2, 4) for s in scales):
        raise SystemExit("give at least one size, scales among 2 and 4, and --frames of at least 1")
    rows: list[dict[str, Any]] = []
    for scale in scales:
        reference: float | None = None
        for w, h in sizes:
            print(f"{w}x{h} x{scale}, {args.frames} frames ...", file=sys.stderr, flush=True)
            spec = {"width": w, "height": h, "scale": scale, "frames": args.frames, "threads": args.threads,
                    "memory_budget": budget}
            done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(spec)],
                                  check=True, stdout=subprocess.PIPE, text=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            reference = result["ns_per_input_pixel"] if reference is None else reference
            rows.append({"size": [w, h], "scale": scale, "frames": args.frames, **result,
                         "per_pixel_vs_reference": result["ns_per_input_pixel"] / reference})
    print(markdown_table(
        ["input", "scale", "s/frame", "ns/input px", f"per px vs {sizes[0][0]}x{sizes[0][1]}", "tiles",
         "budget (GiB)", "peak RSS (MiB)", "RSS growth (MiB)", "CPU user / kernel (s)"],
        [[f"{r['size'][0]}x{r['size'][1]}", f"x{r['scale']}", r["seconds_per_frame"], r["ns_per_input_pixel"],
          f"{r['per_pixel_vs_reference']:.2f}", ",".join(str(t) for t in r["tiles"]) or "-",
          f"{r['memory_budget_bytes'] / 2**30:.1f}", f"{r['peak_rss_bytes'] / 2**20:.0f}",
          f"{r['rss_growth_bytes'] / 2**20:.0f}", f"{r['cpu_user_seconds']:.1f} / {r['cpu_system_seconds']:.1f}"]
         for r in rows]))
    settings = {k: v for k, v in vars(args).items() if k != "child"}
    settings["SEMLENS_TUNE_MALLOC"] = os.environ.get("SEMLENS_TUNE_MALLOC")
    write_json(args.out, {"benchmark": "sizes", "machine": machine(), "settings": settings,
                          "reference_size": list(sizes[0]), "results": rows})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
