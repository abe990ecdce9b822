"""Peak memory of ``semlens upscale`` against the length of the video: it should stay flat.

Generates clips of 1x, 4x and 16x a base length (``--base 96``: 96, 384 and 1536 frames) at
``--size`` (320x180) with PyAV (``tests/clips.py``), upscales each with the command line in a fresh
process (``python -m semlens_cli upscale ... --scale 4``) and reads that process's peak resident
set size from ``os.wait4`` (the kernel's ``ru_maxrss`` of exactly that child).

The peak of identical runs is not identical: where glibc's heap places and keeps freed blocks
depends on address-space randomisation, thread timing and Python's hash seed, so two runs of the
same clip can peak 10% or more apart (the "run spread" column measures it). A single run per
length cannot tell a 10% trend from that noise, so every length is run ``--repeats`` times (in
rounds over the lengths) and memory is flat when the largest *median* peak is within 10% of the
smallest. The largest single peak is reported against the 1.5 GB budget.

Some memory legitimately fills during the first frames and then stays: the encoder's look-ahead
buffers (libx264 ``medium`` holds about 50 frames of 1280x720 before it is in its steady state)
and the allocator's heap around them. The "encoder alone" column shows that part: how much the
peak RSS of a process grows while it only encodes the same number of upscaled-size frames with the
same settings. The base is long enough for both to have settled, so the runs compare steady
states; a run with a short base (``--base 24 --multiples 1,2,4,8,16``) shows where the plateau
starts.

    python benchmarks/memory.py --out benchmarks/results/memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
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


_ENCODER_ALONE = r"""
import json, sys
import numpy as np
from semlens.io.writer import VideoWriter
path, frames, width, height, codec, preset = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), \
    sys.argv[5], sys.argv[6]


def rss(key):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) * 1024 for line in status if line.startswith(key + ":"))


rng = np.random.default_rng(0)
tile = rng.integers(0, 256, (height // 4, width // 4, 3), dtype=np.uint8)
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # reset the peak (VmHWM): the imports before this do not count
before = rss("VmRSS")
with VideoWriter(path, width=width, height=height, codec=codec, preset=preset) as writer:
    for i in range(frames):
        writer.write(np.kron(np.roll(tile, i, axis=1), np.ones((4, 4, 1), dtype=np.uint8)), None)
print(json.dumps({"growth": rss("VmHWM") - before}))
"""


def _encoder_growth(path: Path, frames: int, width: int, height: int, codec: str, preset: str) -> int | None:
    """Peak RSS growth of a process that only encodes ``frames`` frames (Linux; else ``None``)."""
    if not sys.platform.startswith("linux"):
        return None
    done = subprocess.run([sys.executable, "-c", _ENCODER_ALONE, str(path), str(frames), str(width), str(height),
                           codec, preset], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"encoding {frames} frames alone failed:\n{done.stderr}")
    return int(json.loads(done.stdout.strip().splitlines()[-1])["growth"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="320x180", help="clip WIDTHxHEIGHT (default: %(default)s)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--codec", default="libx264", help="--codec passed to semlens upscale (default: %(default)s)")
    parser.add_argument("--preset", default="medium", help="--preset passed to semlens upscale (default: %(default)s)")
    parser.add_argument("--base", type=int, default=96,
                        help="base clip length in frames (default: 96, past the encoder's start-up)")
    parser.add_argument("--multiples", default="1,4,16", help="clip lengths as multiples of --base (default: 1,4,16)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="runs per length, in rounds over the lengths; flatness is judged on the medians "
                             "(default: 3)")
    parser.add_argument("--model", default=None, help="semlens model (default: shipped tiny, else random tiny)")
    parser.add_argument("--threads", type=int, default=0, help="--threads passed to semlens upscale (0 = all)")
    parser.add_argument("--workdir", default=None, help="keep clips and outputs here (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    width, height = parse_size(args.size)
    multiples = [int(m) for m in args.multiples.split(",")]
    suffix = "mkv" if args.codec == "ffv1" else "mp4"

    with tempfile.TemporaryDirectory(prefix="semlens-memory-") as tmp:
        work = Path(args.workdir) if args.workdir else Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        model, note = model_file(args.model, args.scale, work)
        clips = clips_module()
        lengths = [args.base * multiple for multiple in multiples]
        rows: list[dict[str, Any]] = []
        for frames in lengths:
            clip = clips.make_clip(work / f"clip-{frames}.mp4", frames=frames, size=(width, height))
            growth = _encoder_growth(work / f"alone-{frames}.{suffix}", frames, width * args.scale,
                                     height * args.scale, args.codec, args.preset)
            rows.append({"frames": frames, "clip": clip, "peaks": [], "seconds": [],
                         "encoder_alone_growth_bytes": growth})
        for round_ in range(args.repeats):
            for row in rows:
                frames = row["frames"]
                out = work / f"up-{frames}.{suffix}"
                command = [sys.executable, "-m", "semlens_cli", "upscale", str(row["clip"]), str(out), "--model",
                           model, "--device", "cpu", "--quiet", "--overwrite", "--threads", str(args.threads),
                           "--codec", args.codec, "--preset", args.preset]
                print(f"round {round_ + 1}/{args.repeats}: upscaling {frames} frames ...", file=sys.stderr, flush=True)
                peak, seconds, code = run_peak(command, work / f"log-{frames}.txt")
                if code:
                    raise SystemExit(f"semlens upscale failed with exit code {code} on {row['clip']}")
                row["peaks"].append(peak)
                row["seconds"].append(seconds)

    for row in rows:
        del row["clip"]
        row["median_peak_rss_bytes"] = statistics.median(row["peaks"])
        row["spread"] = max(row["peaks"]) / min(row["peaks"])
    low = min(r["median_peak_rss_bytes"] for r in rows)
    high = max(r["median_peak_rss_bytes"] for r in rows)
    flat = high <= 1.10 * low
    largest = max(max(r["peaks"]) for r in rows)
    for r in rows:
        r["relative_to_smallest"] = r["median_peak_rss_bytes"] / low

    def mib(value: float | None) -> str:
        return "-" if value is None else f"{value / 2**20:.0f}"

    print(f"{width}x{height} -> x{args.scale}, {args.codec} {args.preset}; {note}\n")
    print(markdown_table(
        ["frames", "median peak RSS (MiB)", "vs smallest", "runs (MiB)", "run spread", "encoder alone, growth (MiB)"],
        [[r["frames"], mib(r["median_peak_rss_bytes"]), f"{r['relative_to_smallest']:.3f}",
          " / ".join(mib(p) for p in r["peaks"]), f"{r['spread']:.3f}", mib(r["encoder_alone_growth_bytes"])]
         for r in rows]))
    print(f"\nflat within 10%: {'yes' if flat else 'no'} (largest / smallest median peak = {high / low:.3f})")
    print(f"largest single peak: {mib(largest)} MiB ({largest / 1e9:.2f} GB; under 1.5 GB: "
          f"{'yes' if largest <= 1.5e9 else 'no'})")
    write_json(args.out, {"benchmark": "memory", "machine": machine(), "settings": vars(args), "note": note,
                          "input": [width, height], "scale": args.scale, "results": rows,
                          "max_over_min_median": high / low, "flat_within_10_percent": flat,
                          "largest_peak_bytes": largest})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
