"""Writes the EMA weights of a finished run as a self-describing semlens model file."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from semlens.enhancer import PixelEnhancer
from semlens.windows import check_window

__all__ = ["save_trained", "model_metadata", "inference_window", "export_checkpoint", "set_inference_window",
           "machine_description"]


def inference_window(train_frames: int, window: int | None = None, overlap: int | None = None) -> tuple[int, int]:
    """The inference ``(window, overlap)`` to record: ``window`` defaults to the training clip length,
    ``overlap`` to up to 2 frames on each side (fewer for short windows, none for single frames).
    Raises ``ValueError`` for a window that emits no frame."""
    if train_frames < 1:
        raise ValueError(f"the training clip length must be at least 1 frame, got {train_frames}")
    window = train_frames if window is None else window
    overlap = max(0, min(2, (window - 1) // 2)) if overlap is None else overlap
    check_window(window, overlap)
    return window, overlap


def _weights_sha256(source: str) -> str | None:
    """sha256 of the weights file ``source`` names (None when it cannot be found any more)."""
    from semlens.errors import SemlensError
    from semlens.hub import resolve
    from semlens.hub.fetch import sha256_file

    try:
        return sha256_file(resolve(source).weights)
    except (SemlensError, OSError):
        return None


def machine_description(device: torch.device) -> str:
    """Where weights are trained, for their record: the GPU's name, or the CPU's threads."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}"


def _machine(model: PixelEnhancer) -> str:
    param = next(model.parameters(), None)
    return machine_description(param.device if param is not None else torch.device("cpu"))


def model_metadata(model: PixelEnhancer, cfg: Any, elapsed: float, window: int | None = None,
                   overlap: int | None = None, iteration: int | None = None) -> dict[str, Any]:
    """The ``semlens_config`` of a trained model.

    ``train_frames`` is the clip length the network was trained on. ``window`` / ``overlap`` are the
    defaults used at inference: those given (e.g. a window checked with ``semlens eval --window``),
    else the training clip length (:func:`inference_window`); ``window_basis`` says which.
    """
    train_frames = int(cfg.frames)
    lineage = {}
    if getattr(cfg, "init", None):  # the warm start's exact weights, for the card's lineage
        lineage["init_sha256"] = _weights_sha256(cfg.init)
    given = window is not None or overlap is not None
    window, overlap = inference_window(train_frames, window, overlap)
    return {
        "format": "semlens",
        "format_version": 1,
        "scale": model.config.scale,
        "enhancer": model.config.to_dict(),
        "extractor": cfg.extractor,
        "window": window,
        "overlap": overlap,
        "train_frames": train_frames,
        "window_basis": "given at export" if given else "training clip length",
        "training": {
            **asdict(cfg),
            "wall_time_seconds": round(elapsed, 1),
            "iterations_done": int(cfg.iterations if iteration is None else iteration),
            **lineage,
            "machine": _machine(model),
        },
    }


def save_trained(path: Path, model: PixelEnhancer, cfg: Any, elapsed: float, window: int | None = None,
                 overlap: int | None = None, iteration: int | None = None) -> None:
    """Write ``model``'s weights with :func:`model_metadata` as a safetensors file at ``path``
    (``iteration``: where the run stood, for a checkpoint exported before the end)."""
    meta = model_metadata(model, cfg, elapsed, window, overlap, iteration)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"semlens_config": json.dumps(meta)})


def export_checkpoint(checkpoint: Path, out: Path, window: int | None = None, overlap: int | None = None) -> Path:
    """Write the EMA weights of a training checkpoint (``checkpoint.pt`` of a running or stopped
    run) as a model file, so that every checkpoint can be evaluated like a finished model."""
    from semlens.train.loop import TrainConfig, build_model

    state = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
    cfg = TrainConfig.from_dict(state["train_config"])
    model = build_model(cfg)
    model.load_state_dict(state["ema"])
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp")
    save_trained(tmp, model, cfg, float(state["elapsed"]), window, overlap, iteration=int(state["iteration"]))
    tmp.replace(out)
    return out


def set_inference_window(model_file: Path, out: Path, window: int | None = None, overlap: int | None = None) -> Path:
    """Write the semlens model file ``model_file`` again as ``out`` with another default inference
    window and/or overlap (each kept when not given): the same tensors, byte for byte, and the same
    record of its training; ``window_basis`` says the setting was given at export."""
    from safetensors import safe_open

    model_file, out = Path(model_file), Path(out)
    with safe_open(str(model_file), framework="pt") as f:
        header = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    if "semlens_config" not in header:
        raise ValueError(f"{model_file}: not a semlens model file (no semlens_config)")
    meta = json.loads(header["semlens_config"])
    window = int(meta["window"]) if window is None else window
    overlap = int(meta["overlap"]) if overlap is None else overlap
    check_window(window, overlap)
    meta.update(window=window, overlap=overlap, window_basis="given at export")
    tmp = out.with_name(out.name + ".tmp")
    save_file(tensors, str(tmp), metadata={**header, "semlens_config": json.dumps(meta)})
    tmp.replace(out)
    return out


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(
        description="Export the EMA weights of a training checkpoint as a model file, or write a model file "
                    "(.safetensors) again with another default --window / --overlap (the same tensors).")
    parser.add_argument("checkpoint", type=Path, help="checkpoint.pt of a run, or a semlens .safetensors model")
    parser.add_argument("out", type=Path)
    parser.add_argument("--window", type=int, default=None)
    parser.add_argument("--overlap", type=int, default=None)
    args = parser.parse_args(argv)
    if args.checkpoint.suffix.lower() == ".safetensors":
        print(set_inference_window(args.checkpoint, args.out, args.window, args.overlap))
    else:
        print(export_checkpoint(args.checkpoint, args.out, args.window, args.overlap))


if __name__ == "__main__":
    main()
