"""Peak memory of one enhancer window against the estimate that decides when frames are tiled.

For each case (frame size, window length ``T``, scale) a fresh process loads the shipped model,
extracts semantics for a random ``T``-frame window and runs the enhancer on it as the pipeline does
(the window's first and last 2 frames are context, the rest are emitted). The growth of the process's
peak RSS (``ru_maxrss``) during that forward pass is the window's measured activation memory (the
largest of ``--repeats`` fresh processes: identical runs differ with the allocator's layout); it is
set against :func:`semlens.tiling.estimate_window_bytes`, which must stay above it (it is meant to be
conservative) without being far above it (frames would be tiled for nothing).

    python benchmarks/window_memory.py --out benchmarks/results/window_memory.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from typing import Any

from _common import machine, markdown_table, write_json

CASES = [(320, 180, 4, 4), (320, 180, 12, 4), (320, 180, 24, 4), (640, 360, 12, 2), (640, 360, 24, 2)]

_CHILD = r"""
import json, resource, sys, torch
from semlens import SemanticLensUpscaler
from semlens.tiling import estimate_window_bytes
w, h, t, scale = (int(v) for v in sys.argv[1:5])
torch.set_num_threads(int(sys.argv[5]) or torch.get_num_threads())
up = SemanticLensUpscaler.from_pretrained(scale=scale, device="cpu")
c = up.model.config
x = torch.rand(1, t, 3, h, w, generator=torch.Generator().manual_seed(0))
with torch.inference_mode():
    semantics = up.extractor(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    up.model(x, semantics, (min(2, t - 1), max(min(2, t - 1) + 1, t - 2)))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
estimate = estimate_window_bytes(h, w, t, c.channels, scale=c.scale, radius=c.radius if c.use_image else 0,
                                 heads=c.heads)
print(json.dumps({"measured_bytes": (after - before) * 1024, "estimate_bytes": estimate, "channels": c.channels}))
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=0, help="torch threads in each run (0 = all)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="fresh processes per case; the largest growth is kept (default: 3)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    rows: list[dict[str, Any]] = []
    for w, h, t, scale in CASES:
        print(f"{w}x{h} T={t} x{scale} ...", file=sys.stderr, flush=True)
        runs = []
        for _ in range(args.repeats):
            done = subprocess.run([sys.executable, "-c", _CHILD, str(w), str(h), str(t), str(scale),
                                   str(args.threads)], check=True, capture_output=True, text=True)
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        result = max(runs, key=lambda r: r["measured_bytes"])
        pixels = w * h
        rows.append({"size": [w, h], "frames": t, "scale": scale, **result,
                     "measured_runs_bytes": [r["measured_bytes"] for r in runs],
                     "measured_bytes_per_pixel": result["measured_bytes"] / pixels,
                     "estimate_bytes_per_pixel": result["estimate_bytes"] / pixels,
                     "estimate_over_measured": result["estimate_bytes"] / max(1, result["measured_bytes"])})
    print(markdown_table(
        ["input", "T", "scale", "measured (MiB)", "estimate (MiB)", "measured B/px", "estimate / measured"],
        [[f"{r['size'][0]}x{r['size'][1]}", r["frames"], f"x{r['scale']}", f"{r['measured_bytes'] / 2**20:.0f}",
          f"{r['estimate_bytes'] / 2**20:.0f}", f"{r['measured_bytes_per_pixel']:.0f}",
          f"{r['estimate_over_measured']:.2f}"] for r in rows]))
    low = min(r["estimate_over_measured"] for r in rows)
    print(f"\nestimate covers every measured peak: {'yes' if low >= 1 else 'no'} (smallest ratio {low:.2f})")
    write_json(args.out, {"benchmark": "window_memory", "machine": machine(), "settings": vars(args),
                          "results": rows, "smallest_estimate_over_measured": low})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
