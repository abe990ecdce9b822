"""Train a model of the real-footage recipe on a GPU within a fixed number of minutes.

The shipped tiny models were trained on two CPU cores; the ``base`` preset (7.2 M parameters)
needs a GPU. A GPU lent for a few minutes is best spent on one call of this script: it measures
the seconds per step of the recipe on the machine (a short probe run, thrown away), sizes the run
so that its whole cosine schedule fits the minutes given, trains it (bf16 autocast, the clips filmed
on the GPU, batches and semantics made by ``--data-workers`` threads), and writes next to the float32
weights a float16 copy small enough to come back from a lent machine (``base`` x4: 28.9 MB in float32, 14.5 MB in
float16; the loader casts it back to float32). A JSON summary (steps, seconds per step, sha256 of
both files) is printed and written as ``summary.json``.

    python scripts/gpu_train.py runs/base-x4 --scale 4 --minutes 7
    python scripts/gpu_train.py runs/base-x2 --scale 2 --minutes 7

Recipe (the x4 default's, at the sizes the issue asks for: LR patches of 64, clips of 12 frames):
``--degradation random:compress=0.6,crf=18-30,blur=0,noise=0 --token-source pooled
--motion-search 8 --max-motion 5``, window 12 / overlap 1 recorded in the weights. ``--init``
warm-starts from any model of the same preset and scale (a previous run of this script).

On a machine without the training packages (the GPU image has no PyAV, scikit-video or
segment-anything), they travel as wheels in ``.whl`` and are installed first::

    # here, once (pip reaches the registries; the GPU machine reaches nothing):
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl av==18.1.0
    python3 -m pip download --no-deps -d .whl segment-anything scikit-video
    # there (``.whl`` carried; scripts/gpu_session.sh does this and the GPU checks too):
    python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD

``--smoke`` runs the same code on the CPU at toy sizes (a check of this script, no result).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RECIPE = "random:compress=0.6,crf=18-30,blur=0,noise=0"


def steps_for(seconds: float, sec_per_step: float, floor: int = 50) -> int:
    """How many steps of ``sec_per_step`` fit in ``seconds`` (at least ``floor``)."""
    if sec_per_step <= 0:
        raise ValueError("sec_per_step must be positive")
    return max(floor, int(seconds / sec_per_step))


def probe_seconds(cfg: Any, steps: int, sampler: Any, **train_args: Any) -> float:
    """Median seconds per step of ``cfg`` over a short throw-away run (its first steps, which pay
    for kernel selection and the data threads' start, left out)."""
    from semlens.train.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        probe = replace(cfg, iterations=10**6, checkpoint_every=10**6, init=None)
        train(probe, tmp, sampler=sampler, quiet=True, stop_after=steps, **train_args)
        times = [json.loads(line)["sec_per_iter"] for line in (Path(tmp) / "log.jsonl").read_text().splitlines()]
    skip = min(len(times) - 1, max(1, steps // 3))
    return statistics.median(times[skip:])


def half_copy(model_file: Path, out: Path) -> Path:
    """``model_file`` with its floating tensors in float16, the same metadata."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(model_file), framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    save_file(tensors, str(out), metadata=meta)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--scale", type=int, choices=(2, 4), default=4)
    parser.add_argument("--preset", default="base")
    parser.add_argument("--minutes", type=float, default=7.0, help="training time, the probe not counted")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--lr", type=float, default=4e-4)
    parser.add_argument("--init", default=None)
    parser.add_argument("--probe", type=int, default=12, help="steps of the timing probe")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="auto")
    parser.add_argument("--data-workers", type=int, default=12)
    parser.add_argument("--copy-to", type=Path, default=None,
                        help="also copy the float16 weights, log and summary into this folder")
    parser.add_argument("--smoke", action="store_true", help="toy sizes on the CPU: a check of this script")
    args = parser.parse_args(argv)

    from semlens.hub.fetch import sha256_file
    from semlens.train.card import summarize_run
    from semlens.train.export import machine_description
    from semlens.train.loop import TrainConfig, default_sampler, train, train_device

    if args.smoke:
        args.device, args.batch, args.patch, args.frames, args.probe, args.data_workers = "cpu", 2, 16, 3, 3, 2
    device, amp_dtype = train_device(args.device, args.amp)
    cfg = TrainConfig(scale=args.scale, preset=args.preset, iterations=1, batch=args.batch, patch=args.patch,
                      frames=args.frames, lr=args.lr, warmup=1, checkpoint_every=100, degradation=RECIPE,
                      token_source="pooled", init=args.init, motion_search=8, max_motion=5.0)
    run_args = {"device": device, "amp": args.amp, "data_workers": args.data_workers}
    # the batches depend on neither the iterations nor the schedule; the clips are filmed on the GPU
    sampler = default_sampler(cfg, device)
    t0 = time.perf_counter()
    sec = probe_seconds(cfg, args.probe, sampler, **run_args)
    probe_wall = time.perf_counter() - t0
    steps = steps_for(args.minutes * 60, sec, floor=4 if args.smoke else 50)
    cfg = replace(cfg, iterations=steps, warmup=max(1, min(100, steps // 10)),
                  checkpoint_every=max(1, steps // 5))
    print(f"probe: {sec:.3f} s/step on {device} ({'bf16' if amp_dtype else 'float32'}); training {steps} steps",
          flush=True)
    final = train(cfg, args.out_dir, sampler=sampler, quiet=False, window=12, overlap=1, **run_args)
    half = half_copy(final, args.out_dir / "model-fp16.safetensors")
    summary = {
        "command": "python scripts/gpu_train.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "device": str(device),
        "machine": machine_description(device),
        "amp": "bf16" if amp_dtype else "none",
        "probe_sec_per_step": sec,
        "probe_wall_seconds": round(probe_wall, 1),
        **summarize_run(args.out_dir),  # configuration, steps, wall time, losses, the weights' sha256
        "weights_fp16": {"file": half.name, "bytes": half.stat().st_size, "sha256": sha256_file(half)},
    }
    (args.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.copy_to is not None:
        args.copy_to.mkdir(parents=True, exist_ok=True)
        for name in ("model-fp16.safetensors", "log.jsonl", "summary.json"):
            shutil.copy2(args.out_dir / name, args.copy_to / name)
    print(json.dumps({k: v for k, v in summary.items() if k not in ("train_config", "smooth_loss_curve")}, indent=2))
    return summary


if __name__ == "__main__":
    main()
