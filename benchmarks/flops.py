"""FLOPs and parameters of the tiny model, and how much of the machine's convolution speed it uses.

- FLOPs per output frame of the enhancer at 320x180 -> x4 (``--size``, ``--scale``), counted with
  ``torch.utils.flop_counter.FlopCounterMode`` on one window of ``--window`` frames (12) and divided
  by the frames a window emits (``window - 2 * overlap`` = 8), so the window overlap is included.
  The counter sees convolutions and matrix products (2 FLOPs per multiply-add); IMAGE's shifted
  products and its weighted sum are elementwise and invisible to it, so they are added from the
  layer sizes (``2 (2r+1)^2 (A + C)`` per pixel and alignment) and reported apart.
- Parameters of the enhancer and of the extractor (0 for the weight-free lite extractor).
- The machine's 3x3 convolution throughput: a plain 64 -> 64 convolution on a ``--conv-batch`` x
  64 x 180 x 320 batch; and the fraction of it that the tiny model reaches (counted FLOPs per
  second of its bare forward on the same window).

    python benchmarks/flops.py --out benchmarks/results/flops.json
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
from _common import (
    best_of,
    load_upscaler,
    machine,
    markdown_table,
    parameters,
    parse_size,
    pattern_frames,
    set_threads,
    write_json,
)
from torch.utils.flop_counter import FlopCounterMode


def _count(fn: Any) -> tuple[int, dict[str, int]]:
    counter = FlopCounterMode(display=False)
    with counter:
        fn()
    per_op: dict[str, int] = {}
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        per_op[str(op)] = int(flops)
    return int(counter.get_total_flops()), per_op


def _image_flops(config: Any, h: int, w: int, t: int) -> int:
    """Elementwise FLOPs of IMAGE on one window: ``2 (t - 1)`` alignments (backward and forward), each
    ``(2r+1)^2`` shifted dot products of ``align_dim`` and weighted sums of ``channels``."""
    if not config.use_image:
        return 0
    k = (2 * config.radius + 1) ** 2
    return 2 * (t - 1) * h * w * k * 2 * (config.align_dim + config.channels)


def _conv_throughput(h: int, w: int, batch: int, repeats: int) -> tuple[float, int]:
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).eval()
    x = torch.rand(batch, 64, h, w)
    flops = 2 * batch * 64 * 64 * 9 * h * w
    with torch.inference_mode():
        conv(x[:1])
        seconds, _ = best_of(lambda: conv(x), repeats)
    return flops / seconds, flops


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="320x180", help="input WIDTHxHEIGHT (default: %(default)s)")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--model", default=None, help="semlens model (default: shipped tiny, else random tiny)")
    parser.add_argument("--conv-batch", type=int, default=4, help="batch of the reference convolution (default: 4)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    width, height = parse_size(args.size)

    up, note = load_upscaler(args.model, args.scale)
    model, settings = up.model, up.settings
    t, emitted = settings.window, settings.window - 2 * settings.overlap
    frames = pattern_frames(t, width, height)
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float().div_(255).unsqueeze(0)
    with torch.inference_mode():
        up.extractor.reset()
        extractor_flops, _ = _count(lambda: up.extractor(x))
        up.extractor.reset()
        semantics = up.extractor(x)
        emit = (settings.overlap, t - settings.overlap)  # what a window in the stream computes
        enhancer_flops, per_op = _count(lambda: model(x, semantics, emit))
        model(x[:, :2], semantics.frames(slice(0, 2)))  # warm-up
        seconds, runs = best_of(lambda: model(x, semantics, emit), args.repeats)
    image = _image_flops(model.config, height, width, t)
    conv_rate, conv_flops = _conv_throughput(height, width, args.conv_batch, args.repeats)
    model_rate = enhancer_flops / seconds
    params_enhancer, params_extractor = parameters(model), parameters(up.extractor)
    per_frame = enhancer_flops / emitted
    with torch.inference_mode():  # the whole window (every frame propagated and reconstructed)
        whole_flops, _ = _count(lambda: model(x, semantics))
    bare_per_frame = whole_flops / t

    rows = [
        ["enhancer FLOPs / output frame (counted, incl. window overlap)", f"{per_frame / 1e9:.3f} G"],
        ["enhancer FLOPs / network frame (counted, no overlap)", f"{bare_per_frame / 1e9:.3f} G"],
        ["IMAGE elementwise FLOPs / output frame (estimated, not counted)", f"{image / emitted / 1e9:.3f} G"],
        ["extractor FLOPs / output frame (counted)", f"{extractor_flops / emitted / 1e9:.4f} G"],
        ["FLOPs per output pixel (counted)", f"{per_frame / (width * height * args.scale ** 2):.0f}"],
        ["params: enhancer", f"{params_enhancer:,}"],
        ["params: extractor", f"{params_extractor:,}"],
        ["bare forward, one window", f"{seconds:.3f} s ({seconds / emitted:.3f} s / output frame)"],
        ["tiny model throughput (counted FLOPs / s)", f"{model_rate / 1e9:.2f} GFLOP/s"],
        [f"3x3 conv 64->64 throughput ({args.conv_batch}x64x{height}x{width})", f"{conv_rate / 1e9:.2f} GFLOP/s"],
        ["fraction of the conv throughput reached", f"{model_rate / conv_rate:.1%}"],
    ]
    print(f"{width}x{height} -> x{args.scale}, window {t} emitting {emitted}; {note}\n")
    print(markdown_table(["quantity", "value"], rows))
    top = sorted(per_op.items(), key=lambda kv: -kv[1])[:6]
    print("\ncounted FLOPs by operator (one window): " + ", ".join(f"{k} {v / 1e9:.2f} G" for k, v in top))
    write_json(args.out, {
        "benchmark": "flops", "machine": machine(), "settings": vars(args), "note": note,
        "input": [width, height], "scale": args.scale, "window": t, "emitted_per_window": emitted,
        "enhancer_flops_per_window": enhancer_flops, "enhancer_flops_per_output_frame": per_frame,
        "image_elementwise_flops_per_output_frame": image / emitted,
        "extractor_flops_per_output_frame": extractor_flops / emitted, "flops_by_operator": per_op,
        "params_enhancer": params_enhancer, "params_extractor": params_extractor,
        "bare_forward_seconds": seconds, "bare_forward_runs": runs,
        "model_flops_per_second": model_rate, "conv_flops_per_second": conv_rate, "conv_flops": conv_flops,
        "fraction_of_conv_throughput": model_rate / conv_rate,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
