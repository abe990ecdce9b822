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

__all__ = ["save_trained", "model_metadata"]


def model_metadata(model: PixelEnhancer, cfg: Any, elapsed: float) -> dict[str, Any]:
    return {
        "format": "semlens",
        "format_version": 1,
        "scale": model.config.scale,
        "enhancer": model.config.to_dict(),
        "extractor": cfg.extractor,
        "window": 12,
        "overlap": 2,
        "training": {
            **asdict(cfg),
            "wall_time_seconds": round(elapsed, 1),
            "machine": f"{platform.machine()} {torch.get_num_threads()} threads, torch {torch.__version__}",
        },
    }


def save_trained(path: Path, model: PixelEnhancer, cfg: Any, elapsed: float) -> None:
    meta = model_metadata(model, cfg, elapsed)
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(tensors, str(path), metadata={"semlens_config": json.dumps(meta)})
