"""End-to-end speed of ``upscale_video`` against the network alone, on the same clip.

On a generated clip (``--size`` 320x180, ``--frames`` 24, PyAV, ``tests/clips.py``) or ``--input``:

- ``end to end``: ``SemanticLensUpscaler.upscale_video`` (decode, scene cuts, extract, enhance,
  encode with ``--codec``/``--preset``/``--crf``, remux), wall clock;
- ``pipeline in memory``: ``upscale_frames`` on frames decoded beforehand (extract + enhance +
  conversions, no decode or encode);
- ``model only``: the enhancer's forward on exactly the windows the pipeline runs (same window,
  overlap and tiling), summed; the extractor's time on those windows is given apart;
- ``decode only``: reading every frame.

overhead fraction = (end to end - model only) / model only: what decode, extraction, conversions
and encoding add to the network's own time.

    python benchmarks/end_to_end.py --out benchmarks/results/end_to_end.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from _common import (
    best_of,
    clips_module,
    load_upscaler,
    machine,
    markdown_table,
    parse_size,
    set_threads,
    write_json,
)


def _decode(path: Path) -> list[np.ndarray]:
    from semlens.io import open_source

    with open_source(path) as reader:
        return [frame.image for frame in reader]


def _model_only(up: Any, frames: list[np.ndarray]) -> tuple[float, float, int]:
    """(enhancer seconds, extractor seconds, windows) over the windows the pipeline would run."""
    from semlens.pipeline import to_tensor
    from semlens.tiling import auto_tile_for, default_memory_budget, tiled_forward_with_retry
    from semlens.windows import WindowScheduler

    s = up.settings
    scheduler: WindowScheduler[np.ndarray] = WindowScheduler(s.window, s.overlap)
    groups = [pair for frame in frames for pair in scheduler.push(frame)]
    groups += list(scheduler.finish())
    up.extractor.reset()
    model_seconds = extractor_seconds = 0.0
    with torch.inference_mode():
        for window, group in groups:
            x, _ = to_tensor(group, s.device)
            emit = (window.emit_offset, window.emit_offset + window.stop - window.start)  # as the pipeline does
            start = time.perf_counter()
            semantics = up.extractor(x)
            extractor_seconds += time.perf_counter() - start
            start = time.perf_counter()
            tile = s.tile
            if tile == 0:
                budget = s.memory_budget if s.memory_budget is not None else default_memory_budget(s.device)
                tile = auto_tile_for(up.model, x, budget, s.dtype, s.tile_overlap)
            tiled_forward_with_retry(up.model, x, semantics, tile, s.tile_overlap, emit=emit)
            model_seconds += time.perf_counter() - start
    return model_seconds, extractor_seconds, len(groups)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", default=None, help="a video to use instead of a generated clip")
    parser.add_argument("--size", default="320x180", help="generated clip WIDTHxHEIGHT (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=24, help="generated clip length (default: 24)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--model", default=None, help="semlens model (default: shipped tiny, else random tiny)")
    parser.add_argument("--codec", default="libx264")
    parser.add_argument("--preset", default="medium")
    parser.add_argument("--crf", type=float, default=18)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    up, note = load_upscaler(args.model, args.scale)

    with tempfile.TemporaryDirectory(prefix="semlens-e2e-") as tmp:
        work = Path(tmp)
        if args.input:
            clip = Path(args.input)
        else:
            width, height = parse_size(args.size)
            clip = clips_module().make_clip(work / "clip.mp4", frames=args.frames, size=(width, height), audio=True)
        frames = _decode(clip)
        count = len(frames)
        height, width = frames[0].shape[:2]
        print(f"{count} frames of {width}x{height} -> x{up.scale} ...", file=sys.stderr, flush=True)
        list(up.upscale_frames(frames[:2]))  # warm-up
        out = work / "out.mp4"
        end_to_end, e2e_runs = best_of(lambda: up.upscale_video(clip, out, codec=args.codec, preset=args.preset,
                                                                crf=args.crf, overwrite=True), args.repeats)
        in_memory, memory_runs = best_of(lambda: list(up.upscale_frames(frames)), args.repeats)
        model_runs = [_model_only(up, frames) for _ in range(max(1, args.repeats))]
        model, extractor, windows = min(model_runs)
        decode, _ = best_of(lambda: _decode(clip), args.repeats)

    overhead = (end_to_end - model) / model
    rows = [
        ["end to end (upscale_video)", end_to_end, count / end_to_end],
        ["pipeline in memory (upscale_frames)", in_memory, count / in_memory],
        [f"model only ({windows} windows)", model, count / model],
        ["extractor on the same windows", extractor, count / extractor if extractor else None],
        ["decode only", decode, count / decode],
    ]
    print(f"{count} frames {width}x{height} -> x{up.scale}, window {up.settings.window}/{up.settings.overlap}, "
          f"{args.codec} {args.preset} crf {args.crf:g}; {note}\n")
    print(markdown_table(["stage", "seconds", "fps"], rows))
    print(f"\noverhead fraction (end to end - model) / model: {overhead:.1%}")
    print(f"of which outside the pipeline (decode, encode, remux): {(end_to_end - in_memory) / model:.1%} of model time")
    write_json(args.out, {
        "benchmark": "end_to_end", "machine": machine(), "settings": vars(args), "note": note,
        "frames": count, "input": [width, height], "scale": up.scale, "windows": windows,
        "end_to_end_seconds": end_to_end, "end_to_end_runs": e2e_runs, "end_to_end_fps": count / end_to_end,
        "in_memory_seconds": in_memory, "in_memory_runs": memory_runs, "model_seconds": model,
        "extractor_seconds": extractor, "decode_seconds": decode, "overhead_fraction": overhead,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
