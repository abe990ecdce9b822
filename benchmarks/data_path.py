"""Does the data path keep a training step fed? The same short training run twice on a device: with
the built-in sampler (clips filmed, degraded and given semantics by ``--workers`` data threads while
each step trains, as ``semlens train --data-workers N`` does), and with one batch made beforehand and
served again at every step (a data path that costs nothing). Their ratio is what the data cost the
step; 1.0 means the data threads keep up.

    python benchmarks/data_path.py --device cpu --preset tiny --patch 40 --frames 10 --batch 4 \
        --steps 20 --workers 1 --threads 1 --out benchmarks/results/data_path-cpu-tiny.json
    python benchmarks/data_path.py --device cpu --steps 0 --threads 1 --out benchmarks/results/data_path-cpu-base-batches.json
    python benchmarks/data_path.py --device cuda --preset base --steps 6 --workers 12 --out $OUT/data_path.json

The defaults are ``scripts/gpu_train.py``'s recipe (x4, LR patches of 64, clips of 12, batch 16,
the real-footage degradation). Also reported: the seconds of one batch made in the calling thread
(``batch_at``, then its semantics), the cost one data thread has to hide behind each step
(``--steps 0`` measures only this). Step times are the median of the run's steps after the first two
(``sec_per_iter`` of its log).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _common import machine, markdown_table, set_threads, write_json


class _Served:
    """A sampler that serves one prepared batch at every step."""

    def __init__(self, batch) -> None:
        self.batch = batch

    def batch_at(self, index: int):
        return self.batch


def _median_step(run: Path) -> float:
    steps = [json.loads(line)["sec_per_iter"] for line in (run / "log.jsonl").read_text().splitlines()]
    return statistics.median(steps[2:] if len(steps) > 4 else steps)


def main(argv: list[str] | None = None) -> int:
    from semlens.train.loop import TrainConfig, batch_maker, default_sampler, train, train_device

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", default="auto")
    parser.add_argument("--preset", default="base")
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--degradation", default="random:compress=0.6,crf=18-30,blur=0,noise=0")
    parser.add_argument("--steps", type=int, default=12, help="training steps per run (0: time the batches only)")
    parser.add_argument("--workers", default="1", help="comma-separated data-thread counts")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    threads = set_threads(args.threads)
    device, amp = train_device(args.device, args.amp)
    cfg = TrainConfig(scale=args.scale, preset=args.preset, iterations=max(1, args.steps), batch=args.batch,
                      patch=args.patch, frames=args.frames, warmup=1, checkpoint_every=max(1, args.steps),
                      degradation=args.degradation, token_source="pooled", motion_search=8, max_motion=5.0,
                      threads=args.threads)
    sampler = default_sampler(cfg, device)
    make = batch_maker(cfg, sampler, device)
    make(0)  # photos placed on the device, extractor loaded
    one = []
    for index in range(1, 4):
        start = time.perf_counter()
        batch = sampler.batch_at(index)
        middle = time.perf_counter()
        make(index)
        if device.type == "cuda":
            torch.cuda.synchronize()
        one.append((middle - start, time.perf_counter() - middle))
    batch_s = statistics.median(a for a, _ in one)
    with_semantics_s = statistics.median(b for _, b in one)
    print(f"{args.preset} x{args.scale}, batch {args.batch} x {args.frames} frames, LR patch {args.patch}, "
          f"on {device} (amp {amp}), {threads} torch threads")
    print(f"one batch in the calling thread: {batch_s:.3f} s to make, {with_semantics_s:.3f} s with semantics",
          flush=True)
    report = {"machine": machine(), "device": str(device), "amp": str(amp), "preset": args.preset,
              "scale": args.scale, "patch": args.patch, "frames": args.frames, "batch": args.batch,
              "degradation": args.degradation, "steps": args.steps,
              "one_batch_s": batch_s, "one_batch_with_semantics_s": with_semantics_s, "runs": []}

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        served = _Served(batch)
        for workers in (int(w) for w in args.workers.split(",") if args.steps > 0):
            train(cfg, Path(tmp) / f"served-{workers}", sampler=served, quiet=True, device=device,
                  amp=args.amp, data_workers=workers)
            train(cfg, Path(tmp) / f"built-in-{workers}", quiet=True, device=device, amp=args.amp,
                  data_workers=workers)
            fed = _median_step(Path(tmp) / f"served-{workers}")
            real = _median_step(Path(tmp) / f"built-in-{workers}")
            report["runs"].append({"workers": workers, "step_prepared_batch_s": fed, "step_built_in_data_s": real,
                                   "ratio": real / fed})
            rows.append([workers, fed, real, real / fed])
            print(f"{workers} data thread(s): step {fed:.3f} s with a batch ready, {real:.3f} s with the built-in "
                  f"data", flush=True)
    print(markdown_table(["data threads", "step, batch ready (s)", "step, built-in data (s)", "ratio"], rows))
    write_json(args.out, report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
