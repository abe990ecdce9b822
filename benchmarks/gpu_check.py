"""Checks of the GPU path on a CUDA device (run by hand: a few minutes on one GPU).

1. **precision**: the shipped x2 and x4 models on three frames of the example clip enlarged
   (bicubic) to 1280x720 and 1920x1080, under fp16 and bf16 autocast against float32: whether the
   output is finite, and how far it is from float32 (levels of 255, largest and mean).
2. **end to end**: ``upscale_video`` of the example clip on the device (frames, seconds).
3. **memory**: 1080p at x2 with windows of 12 frames and 4 windows per batch, the process capped at
   16 GiB (``torch.cuda.set_per_process_memory_fraction``) and the memory budget of a 16 GiB device:
   whether it finishes, the windows per batch and the tile it ended with, the peak allocation.
4. **compile**: ``from_pretrained(compile=True)`` on the example clip against the eager model: the
   largest output difference, the seconds of a first and a second pass, the graphs compiled.

    python benchmarks/gpu_check.py --out benchmarks/results/gpu_check.json

``--device cpu --quick`` runs the same code on tiny sizes (a smoke test of this script; its
numbers say nothing about a GPU). The JSON has every number; the table is a summary.
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
import torch.nn.functional as F
from _common import machine, markdown_table, write_json

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "examples" / "sample.mp4"
GIB = 1024**3


def _sample_frames(count: int) -> list[np.ndarray]:
    from semlens.io import open_source

    with open_source(SAMPLE) as reader:
        return [frame.image for _, frame in zip(range(count), reader)]


def _enlarge(frames: list[np.ndarray], width: int, height: int) -> list[np.ndarray]:
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=(height, width), mode="bicubic", align_corners=False).clamp(0, 255).round()
    return list(y.to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy())


def check_precision(device: str, sizes: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """Raw network output under each autocast dtype against float32, per model and size."""
    from semlens import SemanticLensUpscaler
    from semlens.pipeline import to_tensor

    rows = []
    base = _sample_frames(3)
    for name in ("semlens-tiny-x2", "semlens-tiny-x4"):
        ref_up = SemanticLensUpscaler.from_pretrained(name, device=device, dtype="fp32")
        for width, height in sizes:
            x, _ = to_tensor(_enlarge(base, width, height), ref_up.device)
            with torch.inference_mode():
                semantics = ref_up.extractor(x)
                ref = ref_up.model(x, semantics).float()
            for dtype in ("fp16", "bf16"):
                row: dict[str, Any] = {"model": name, "input": [width, height], "dtype": dtype}
                try:
                    up = SemanticLensUpscaler.from_pretrained(name, device=device, dtype=dtype)
                except ValueError as exc:  # bf16 on a GPU without it
                    rows.append({**row, "error": str(exc)})
                    continue
                with torch.inference_mode(), torch.autocast(device_type=up.device.type, dtype=up.dtype):
                    y = up.model(x, semantics).float()
                diff = (y.clamp(0, 1) - ref.clamp(0, 1)).abs() * 255
                rows.append({**row, "finite": bool(torch.isfinite(y).all()),
                             "max_levels": float(diff.nan_to_num(255.0).max()),
                             "mean_levels": float(diff.nan_to_num(255.0).mean())})
                del y, diff
            del ref, x, semantics
    return rows


def check_end_to_end(device: str, max_frames: int | None) -> dict[str, Any]:
    from semlens import SemanticLensUpscaler

    up = SemanticLensUpscaler.from_pretrained("semlens-tiny-x4", device=device)
    with tempfile.TemporaryDirectory() as tmp:
        result = up.upscale_video(SAMPLE, Path(tmp) / "out.mp4", max_frames=max_frames)
    return {"device": str(up.device), "dtype": str(up.dtype), "frames": result.frames,
            "seconds": round(result.seconds, 2), "fps": round(result.fps, 2)}


def check_memory(device: str, size: tuple[int, int], frames: int, cap_gib: float) -> dict[str, Any]:
    """Upscale ``frames`` frames of ``size`` with 4 windows per batch under a memory cap."""
    import semlens.pipeline as pipeline
    from semlens import SemanticLensUpscaler
    from semlens.errors import SemlensError

    seen: list[tuple[int, int | None]] = []
    original = pipeline.WindowRunner._enhance

    def spy(self: Any, chunk: Any, emit: Any) -> Any:
        out = original(self, chunk, emit)
        seen.append((len(chunk), self.tile))
        return out

    pipeline.WindowRunner._enhance = spy  # type: ignore[method-assign]
    row: dict[str, Any] = {"input": list(size), "frames": frames, "cap_gib": cap_gib}
    try:
        up = SemanticLensUpscaler.from_pretrained("semlens-tiny-x2", device=device, window=12, batch_windows=4)
        if up.device.type == "cuda":
            total = torch.cuda.get_device_properties(up.device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gib * GIB / total), up.device)
            torch.cuda.reset_peak_memory_stats(up.device)
        up.settings.memory_budget = int(0.6 * cap_gib * GIB)
        clip = _enlarge(_sample_frames(12), *size)
        stream = (clip[i % len(clip)] for i in range(frames))
        started = time.perf_counter()
        done = sum(1 for _ in up.upscale_frames(stream))
        row.update(done=done, seconds=round(time.perf_counter() - started, 2))
        if up.device.type == "cuda":
            row["peak_gib"] = round(torch.cuda.max_memory_allocated(up.device) / GIB, 2)
    except SemlensError as exc:
        row["error"] = str(exc)
    finally:
        pipeline.WindowRunner._enhance = original  # type: ignore[method-assign]
        if torch.cuda.is_available():
            torch.cuda.set_per_process_memory_fraction(1.0)
    row["batches"] = [{"windows": n, "tile": tile} for n, tile in seen]
    return row


def check_compile(device: str, frames: int, backend: str | None) -> dict[str, Any]:
    from torch._dynamo.utils import counters

    from semlens import SemanticLensUpscaler
    from semlens.enhancer.compiling import compile_network

    clip = _sample_frames(frames)
    eager = SemanticLensUpscaler.from_pretrained("semlens-tiny-x4", device=device)
    ref = np.stack(list(eager.upscale_frames(clip))).astype(np.int16)
    up = SemanticLensUpscaler.from_pretrained("semlens-tiny-x4", device=device)
    torch._dynamo.reset()
    counters.clear()
    compile_network(up.model, **({"backend": backend} if backend else {}))
    times = []
    for _ in range(2):
        started = time.perf_counter()
        out = np.stack(list(up.upscale_frames(clip))).astype(np.int16)
        times.append(round(time.perf_counter() - started, 2))
    return {"frames": frames, "backend": backend or "inductor", "first_pass_s": times[0], "second_pass_s": times[1],
            "graphs": int(counters["stats"]["unique_graphs"]),
            "max_levels_vs_eager": int(np.abs(out - ref).max())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the script")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device; use --device cpu --quick for a smoke test", file=sys.stderr)
        return 2
    quick = args.quick
    sizes = [(96, 54), (128, 72)] if quick else [(1280, 720), (1920, 1080)]
    results: dict[str, Any] = {"benchmark": "gpu_check", "machine": machine(), "quick": quick}
    if torch.cuda.is_available() and args.device.startswith("cuda"):
        results["gpu"] = torch.cuda.get_device_name(torch.device(args.device))
    results["precision"] = check_precision(args.device, sizes)
    results["end_to_end"] = check_end_to_end(args.device, 6 if quick else None)
    results["memory"] = check_memory(args.device, (128, 72) if quick else (1920, 1080), 20 if quick else 44, 16.0)
    results["compile"] = check_compile(args.device, 6 if quick else 24, "eager" if quick else None)
    rows = [[r["model"], f"{r['input'][0]}x{r['input'][1]}", r["dtype"],
             r.get("error") or f"finite={r['finite']} max={r['max_levels']:.2f} mean={r['mean_levels']:.3f}"]
            for r in results["precision"]]
    print(markdown_table(["model", "input", "dtype", "vs fp32 (levels of 255)"], rows))
    print("end to end:", results["end_to_end"])
    print("memory:", {k: v for k, v in results["memory"].items() if k != "batches"},
          "batches:", results["memory"]["batches"][:6])
    print("compile:", results["compile"])
    if args.out:
        write_json(args.out, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
