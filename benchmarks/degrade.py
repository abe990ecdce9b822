"""Cost of the training degradations against a training step, per batch.

    python benchmarks/degrade.py [--patch 40] [--frames 7] [--batch 8] [--batches 10] [--out results/degrade.json]

Times ``ClipSampler.batch_at`` on the built-in training photos with clean BI and with the random
real-footage mix (``semlens train --degradation random``: blur, noise, x264/x265 round trips), and
one training step of the tiny model (forward, backward, optimizer) on such a batch, in interleaved
rounds; medians. The ratio (degradation overhead / step) says whether the data path needs a cache.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _common import machine, set_threads, write_json

from semlens.train.data import TRAIN_PHOTOS, ClipSampler, load_photo
from semlens.train.degrade import RandomDegradation
from semlens.train.loop import TrainConfig, build_model, charbonnier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=4)
    parser.add_argument("--patch", type=int, default=40)
    parser.add_argument("--frames", type=int, default=7)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    threads = set_threads(args.threads)
    photos = [load_photo(p) for p in TRAIN_PHOTOS]
    common = dict(scale=args.scale, patch=args.patch, frames=args.frames, batch=args.batch, seed=0)
    clean = ClipSampler(photos, [], **common)
    mixed = ClipSampler(photos, [], **common, degradation=RandomDegradation())
    model = build_model(TrainConfig(scale=args.scale, frames=args.frames))
    optim = torch.optim.AdamW(model.parameters(), lr=1e-4)

    def step(batch) -> None:
        loss = charbonnier(model(batch.lr, None), batch.hr)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()

    rounds = []
    step(clean.batch_at(0))  # warm-up
    for i in range(args.batches):
        t0 = time.perf_counter()
        a = clean.batch_at(i)
        t1 = time.perf_counter()
        mixed.batch_at(i)
        t2 = time.perf_counter()
        step(a)
        t3 = time.perf_counter()
        rounds.append({"bi_batch": t1 - t0, "random_batch": t2 - t1, "train_step": t3 - t2})
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    overhead = med["random_batch"] - med["bi_batch"]
    print(f"per batch of {args.batch} clips x {args.frames} frames, LR {args.patch}x{args.patch}, {threads} threads:")
    print(f"  clean BI batch {med['bi_batch']:.3f} s, random-mix batch {med['random_batch']:.3f} s, "
          f"training step {med['train_step']:.3f} s; degradation overhead / step = {overhead / med['train_step']:.3f}")
    write_json(args.out, {"benchmark": "degrade", "machine": machine(), "settings": vars(args), "rounds": rounds,
                          "median": med, "overhead_vs_step": overhead / med["train_step"]})


if __name__ == "__main__":
    main()
