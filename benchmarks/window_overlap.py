"""Which inference window and overlap: quality on held-out clips against the work and memory they take.

    python -m semlens.train.valset runs/valset
    python benchmarks/window_overlap.py runs/valset --model semlens-tiny-x4 --settings 12/2,12/1,16/1,20/1
        [--degradation x264:crf=23] [--max-frames 60] [--out benchmarks/results/window-overlap/x4.json]

A window of ``W`` frames with ``O`` frames of context on each side emits ``W - 2 O`` of them. The
network runs a backward pass over all ``W`` frames and a forward pass up to the last emitted one
(``W - O`` frames), so in a long video every emitted frame costs ``(2 W - O) / (W - 2 O)``
propagation steps (12/2: 2.75; 12/1: 2.3; the least possible is 2), and ``W / (W - 2 O)`` runs of
the per-frame stages (feature extraction, block matching, the extractor). Peak memory grows with
``W`` (``semlens.tiling.estimate_window_bytes``, given here for a 1280x720 input at the model's
scale, relative to the first setting). Each setting is scored like ``semlens eval --window W
--overlap O`` (PSNR-Y, SSIM-Y, tPSNR-Y), the same weights in every row.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _common import machine, markdown_table, set_threads, write_json

from semlens.evaluate import evaluate, find_clips
from semlens.tiling import estimate_window_bytes
from semlens.train.degrade import parse_degradation
from semlens.upscaler import SemanticLensUpscaler


def steps_per_frame(window: int, overlap: int) -> float:
    """Propagation steps per emitted frame in a long video."""
    return (2 * window - overlap) / (window - 2 * overlap)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", type=Path, help="held-out clip or folder (python -m semlens.train.valset DIR)")
    parser.add_argument("--model", default=None, help="model name or file (default: the shipped model of --scale)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--settings", default="12/2,12/1,16/1,20/1", help="comma-separated WINDOW/OVERLAP pairs")
    parser.add_argument("--degradation", default="bi")
    parser.add_argument("--max-frames", type=int, default=60)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    set_threads(args.threads)
    chain = parse_degradation(args.degradation)
    clips = find_clips(args.clips)
    settings = [tuple(int(v) for v in s.split("/")) for s in args.settings.split(",")]
    rows, results = [], []
    base_bytes = None
    for window, overlap in settings:
        up = SemanticLensUpscaler.from_pretrained(args.model, scale=None if args.model else args.scale, device="cpu",
                                                  dtype="fp32", window=window, overlap=overlap)
        key = f"{window}/{overlap}"
        report = evaluate(clips, up.scale, {key: up.upscale_frames}, max_frames=args.max_frames, degradation=chain)
        cfg = up.model.config
        bytes_720p = estimate_window_bytes(720, 1280, window, cfg.channels, scale=up.scale, radius=cfg.radius)
        base_bytes = base_bytes or bytes_720p
        per_clip = {c["clip"]: c["psnr"][key] for c in report["clips"]}
        result = {"window": window, "overlap": overlap, "steps_per_frame": steps_per_frame(window, overlap),
                  "frame_stages_per_frame": window / (window - 2 * overlap),
                  "memory_vs_first": bytes_720p / base_bytes, "psnr": per_clip,
                  "mean_psnr": report["mean"]["psnr"][key], "mean_ssim": report["mean"]["ssim"][key],
                  "mean_tpsnr": report["mean"]["tpsnr"][key]}
        results.append(result)
        rows.append([key, f"{result['steps_per_frame']:.3g}", f"{result['frame_stages_per_frame']:.3g}",
                     f"{result['memory_vs_first']:.2f}", *(f"{v:.3f}" for v in per_clip.values()),
                     f"{result['mean_psnr']:.3f}", f"{result['mean_ssim']:.4f}", f"{result['mean_tpsnr']:.3f}"])
        print(f"{key}: mean PSNR-Y {result['mean_psnr']:.3f} dB", flush=True)
        name = up.name
    header = ["window/overlap", "steps / frame", "frame stages / frame", "memory (720p)",
              *[c["clip"] for c in report["clips"]], "mean PSNR-Y", "mean SSIM-Y", "mean tPSNR-Y"]
    print(markdown_table(header, rows))
    write_json(args.out, {"benchmark": "window_overlap", "machine": machine(), "model": name,
                          "degradation": chain.text(), "max_frames": args.max_frames, "results": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
