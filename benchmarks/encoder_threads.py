"""libx264 on frame threads (semlens's setting) against slice threads (PyAV's default), end to end.

``upscale_video`` on a generated clip (``--size`` 320x180, ``--frames`` 96, x4, libx264 medium crf
18), in ``--pairs`` interleaved pairs (the order alternates from pair to pair, so a slow spell of a
shared machine hits both settings alike). With slice threads x264 encodes inside each ``write()``
call while the network waits; with frame threads it encodes on its own threads while the network
goes on. Reported per pair: both wall times and the saving of frame threads; and the file sizes.

    python benchmarks/encoder_threads.py --out benchmarks/results/encoder_threads.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _common import clips_module, load_upscaler, machine, markdown_table, parse_size, set_threads, write_json


def _run(up: Any, clip: Path, out: Path, thread_type: str) -> float:
    import semlens.io as io

    base = io.VideoWriter

    class Writer(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["options"] = {**(kwargs.get("options") or {}), "thread_type": thread_type}
            super().__init__(*args, **kwargs)

    io.VideoWriter = Writer  # upscale_video imports it from semlens.io when called
    try:
        start = time.perf_counter()
        up.upscale_video(clip, out, overwrite=True)
        return time.perf_counter() - start
    finally:
        io.VideoWriter = base


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="320x180", help="generated clip WIDTHxHEIGHT (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=96, help="generated clip length (default: 96)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--model", default=None, help="semlens model (default: shipped tiny, else random tiny)")
    parser.add_argument("--pairs", type=int, default=3, help="interleaved pairs of runs (default: 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    up, note = load_upscaler(args.model, args.scale)
    rows, pairs = [], []
    with tempfile.TemporaryDirectory(prefix="semlens-x264-") as tmp:
        work = Path(tmp)
        width, height = parse_size(args.size)
        clip = clips_module().make_clip(work / "clip.mp4", frames=args.frames, size=(width, height), audio=True)
        list(up.upscale_frames([np.zeros((height, width, 3), np.uint8)] * 2))  # warm-up
        sizes: dict[str, int] = {}
        for k in range(max(1, args.pairs)):
            order = ["frame", "slice"] if k % 2 == 0 else ["slice", "frame"]
            seconds = {}
            for kind in order:
                out = work / f"{kind}.mp4"
                seconds[kind] = _run(up, clip, out, kind)
                sizes[kind] = out.stat().st_size
                print(f"pair {k + 1}: {kind} threads {seconds[kind]:.2f} s", file=sys.stderr, flush=True)
            saving = 1 - seconds["frame"] / seconds["slice"]
            pairs.append({"slice_seconds": seconds["slice"], "frame_seconds": seconds["frame"], "saving": saving})
            rows.append([k + 1, seconds["slice"], seconds["frame"], f"{saving:.1%}"])
    print(f"{args.frames} frames {args.size} -> x{up.scale}, upscale_video, libx264 medium crf 18; {note}\n")
    print(markdown_table(["pair", "slice threads (s)", "frame threads (s)", "saving"], rows))
    print(f"\nfile sizes: slice {sizes['slice']} bytes, frame {sizes['frame']} bytes")
    write_json(args.out, {"benchmark": "encoder_threads", "machine": machine(), "settings": vars(args),
                          "note": note, "pairs": pairs, "bytes": sizes})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
