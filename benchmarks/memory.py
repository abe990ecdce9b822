"""Peak memory of ``semlens upscale`` against the length of the video: it should stay flat.

Generates clips of 1x, 4x and 16x a base length (``--base 48``: 48, 192 and 768 frames) at
``--size`` (320x180) with PyAV (``tests/clips.py``), upscales each with the command line in a fresh
process (``python -m semlens_cli upscale ... --scale 4``) and reads that process's peak resident
set size from ``os.wait4`` (the kernel's ``ru_maxrss`` of exactly that child). Memory is flat when
the largest peak is within 10% of the smallest. The base is longer than the encoder's look-ahead
(libx264 ``medium`` buffers about 40 frames before its first packet), so the runs compare the
steady state, not the encoder filling its buffers.

    python benchmarks/memory.py --out benchmarks/results/memory.json
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _common import clips_module, machine, markdown_table, model_file, parse_size, write_json


def run_peak(command: list[str], log: Path) -> tuple[int, float, int]:
    """Run ``command`` (stderr to ``log``); (peak RSS bytes, seconds, exit code). Linux reports
    ``ru_maxrss`` in KiB, macOS in bytes."""
    start = time.perf_counter()
    with open(log, "wb") as err:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here; keep Popen consistent
    if process.returncode:
        print(log.read_text(errors="replace"), file=sys.stderr)
    unit = 1 if sys.platform == "darwin" else 1024
    return usage.ru_maxrss * unit, seconds, process.returncode


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="320x180", help="clip WIDTHxHEIGHT (default: %(default)s)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--codec", default="libx264", help="--codec passed to semlens upscale (default: %(default)s)")
    parser.add_argument("--preset", default="medium", help="--preset passed to semlens upscale (default: %(default)s)")
    parser.add_argument("--base", type=int, default=48,
                        help="base clip length in frames (default: 48, longer than the encoder's look-ahead)")
    parser.add_argument("--multiples", default="1,4,16", help="clip lengths as multiples of --base (default: 1,4,16)")
    parser.add_argument("--model", default=None, help="semlens model (default: shipped tiny, else random tiny)")
    parser.add_argument("--threads", type=int, default=0, help="--threads passed to semlens upscale (0 = all)")
    parser.add_argument("--workdir", default=None, help="keep clips and outputs here (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    width, height = parse_size(args.size)
    multiples = [int(m) for m in args.multiples.split(",")]

    with tempfile.TemporaryDirectory(prefix="semlens-memory-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model, note = model_file(args.model, args.scale, work)
        clips = clips_module()
        rows: list[dict[str, Any]] = []
        for multiple in multiples:
            frames = args.base * multiple
            clip = clips.make_clip(work / f"clip-{frames}.mp4", frames=frames, size=(width, height))
            out = work / f"up-{frames}.{'mkv' if args.codec == 'ffv1' else 'mp4'}"
            command = [sys.executable, "-m", "semlens_cli", "upscale", str(clip), str(out), "--model", model,
                       "--device", "cpu", "--quiet", "--overwrite", "--threads", str(args.threads),
                       "--codec", args.codec, "--preset", args.preset]
            print(f"upscaling {frames} frames ...", file=sys.stderr, flush=True)
            peak, seconds, code = run_peak(command, work / f"log-{frames}.txt")
            if code:
                raise SystemExit(f"semlens upscale failed with exit code {code} on {clip}")
            rows.append({"frames": frames, "peak_rss_bytes": peak, "seconds": seconds})

    low = min(r["peak_rss_bytes"] for r in rows)
    high = max(r["peak_rss_bytes"] for r in rows)
    flat = high <= 1.10 * low
    for r in rows:
        r["relative_to_smallest"] = r["peak_rss_bytes"] / low
    print(f"{width}x{height} -> x{args.scale}, {args.codec} {args.preset}; {note}\n")
    print(markdown_table(["frames", "peak RSS (MiB)", "vs smallest", "seconds"],
                         [[r["frames"], f"{r['peak_rss_bytes'] / 2**20:.0f}", f"{r['relative_to_smallest']:.3f}",
                           f"{r['seconds']:.1f}"] for r in rows]))
    print(f"\nflat within 10%: {'yes' if flat else 'no'} (largest / smallest peak = {high / low:.3f})")
    write_json(args.out, {"benchmark": "memory", "machine": machine(), "settings": vars(args), "note": note,
                          "input": [width, height], "scale": args.scale, "results": rows,
                          "max_over_min": high / low, "flat_within_10_percent": flat})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
