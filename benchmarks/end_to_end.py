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
and encoding add to the network's own time. The same fraction is also taken within each
end-to-end run (time outside the enhancer's forward calls / time inside them), which a machine
whose speed drifts between runs affects much less; the forward's time there against its
model-only time shows how much concurrent encoding slowed the network.

The stages run in rounds (``--repeats``; each round runs every stage once, in the same order), so
a slow spell of a shared machine hits all of them alike; each round gives its own overhead
fraction, and the median round is the result (the fastest time of each stage is shown too).
``encode only`` is ``VideoWriter`` writing the frames of the end-to-end run alone (same codec,
preset and crf): the encoder's share on its own.

    python benchmarks/end_to_end.py --repeats 3 --out benchmarks/results/end_to_end.json
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


class _ForwardClock:
    """Sums the wall time spent inside ``model``'s forward calls (every tile and pass) while active."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model, self.seconds, self._start = model, 0.0, 0.0
        self._hooks: list[Any] = []

    def __enter__(self) -> _ForwardClock:
        def before(*_: Any) -> None:
            self._start = time.perf_counter()

        def after(*_: Any) -> None:
            self.seconds += time.perf_counter() - self._start

        self._hooks = [self.model.register_forward_pre_hook(before), self.model.register_forward_hook(after)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for hook in self._hooks:
            hook.remove()


def _stamps(clip: Path) -> tuple[Any, list[tuple[int | None, int | None]]]:
    """The clip's ``VideoInfo`` and every frame's (pts, duration), for encoding its frames alone."""
    from semlens.io import open_source

    with open_source(clip) as reader:
        return reader.info, [(frame.pts, frame.duration) for frame in reader]


def _encode_only(frames: list[np.ndarray], info: Any, stamps: list[tuple[int | None, int | None]], clip: Path,
                 out: Path, args: argparse.Namespace) -> float:
    """Seconds for ``VideoWriter`` to encode ``frames`` (RGB) with the end-to-end run's settings."""
    from semlens.io import VideoWriter

    height, width = frames[0].shape[:2]
    start = time.perf_counter()
    with VideoWriter(out, width=width, height=height, source=info, source_path=clip, codec=args.codec,
                     crf=args.crf, preset=args.preset) as writer:
        for image, (pts, duration) in zip(frames, stamps, strict=True):
            writer.write(image, pts, duration=duration)
    return time.perf_counter() - start


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
    parser.add_argument("--repeats", type=int, default=3, help="rounds of every stage (default: 3)")
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
        info, stamps = _stamps(clip)
        count = len(frames)
        height, width = frames[0].shape[:2]
        print(f"{count} frames of {width}x{height} -> x{up.scale} ...", file=sys.stderr, flush=True)
        list(up.upscale_frames(frames[:2]))  # warm-up
        out = work / "out.mp4"
        rounds: list[dict[str, float]] = []
        windows = 0
        upscaled: list[np.ndarray] = []
        for r in range(max(1, args.repeats)):
            timing: dict[str, float] = {}
            with _ForwardClock(up.model) as clock:
                start = time.perf_counter()
                up.upscale_video(clip, out, codec=args.codec, preset=args.preset, crf=args.crf, overwrite=True)
                timing["end_to_end"] = time.perf_counter() - start
            timing["forward_in_run"] = clock.seconds
            start = time.perf_counter()
            upscaled = list(up.upscale_frames(frames))
            timing["in_memory"] = time.perf_counter() - start
            timing["model"], timing["extractor"], windows = _model_only(up, frames)
            start = time.perf_counter()
            _decode(clip)
            timing["decode"] = time.perf_counter() - start
            timing["encode"] = _encode_only(upscaled, info, stamps, clip, work / "encoded.mp4", args)
            timing["overhead"] = (timing["end_to_end"] - timing["model"]) / timing["model"]
            timing["overhead_in_run"] = (timing["end_to_end"] - clock.seconds) / clock.seconds
            rounds.append(timing)
            print(f"round {r + 1}: overhead {timing['overhead']:.1%}, in run {timing['overhead_in_run']:.1%} "
                  f"(end to end {timing['end_to_end']:.2f} s, model {timing['model']:.2f} s, "
                  f"forward in the run {clock.seconds:.2f} s)", file=sys.stderr, flush=True)

    def fastest(key: str) -> float:
        return min(t[key] for t in rounds)

    overheads = sorted(t["overhead"] for t in rounds)
    overhead = float(np.median(overheads))
    median_round = min(rounds, key=lambda t: abs(t["overhead"] - overhead))
    model = median_round["model"]
    rows = [
        ["end to end (upscale_video)", fastest("end_to_end"), count / fastest("end_to_end")],
        ["pipeline in memory (upscale_frames)", fastest("in_memory"), count / fastest("in_memory")],
        [f"model only ({windows} windows)", fastest("model"), count / fastest("model")],
        ["extractor on the same windows", fastest("extractor"), count / fastest("extractor")],
        ["decode only", fastest("decode"), count / fastest("decode")],
        [f"encode only (RGB frames, {args.codec} {args.preset})", fastest("encode"), count / fastest("encode")],
    ]
    print(f"{count} frames {width}x{height} -> x{up.scale}, window {up.settings.window}/{up.settings.overlap}, "
          f"{args.codec} {args.preset} crf {args.crf:g}; {note}; fastest of {len(rounds)} rounds\n")
    print(markdown_table(["stage", "seconds", "fps"], rows))
    print(f"\noverhead fraction (end to end - model) / model, per round: "
          f"{', '.join(f'{o:.1%}' for o in (t['overhead'] for t in rounds))}; median {overhead:.1%}")
    in_run = float(np.median([t["overhead_in_run"] for t in rounds]))
    inflation = float(np.median([t["forward_in_run"] / t["model"] for t in rounds]))
    print(f"within the end-to-end runs (time outside the enhancer's forward / inside it): median {in_run:.1%}; "
          f"the forward took {inflation:.3f}x its model-only time there")
    print(f"in the median round: outside the pipeline (decode, encode, remux) "
          f"{(median_round['end_to_end'] - median_round['in_memory']) / model:.1%} of model time; "
          f"encoding alone {median_round['encode'] / model:.1%}; extractor {median_round['extractor'] / model:.1%}")
    write_json(args.out, {
        "benchmark": "end_to_end", "machine": machine(), "settings": vars(args), "note": note,
        "frames": count, "input": [width, height], "scale": up.scale, "windows": windows,
        "rounds": rounds, "overhead_fraction_median": overhead, "overhead_fractions": overheads,
        "overhead_in_run_median": in_run, "forward_in_run_vs_model_median": inflation,
        "fastest": {key: fastest(key) for key in ("end_to_end", "in_memory", "model", "extractor", "decode", "encode")},
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
