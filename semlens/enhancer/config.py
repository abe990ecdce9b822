"""The enhancer's configuration: a dataclass that round-trips to JSON and is saved with weights."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from semlens.enhancer.motion import MOTION_SEARCH_LIMIT

__all__ = ["EnhancerConfig", "PRESETS", "TOKEN_SOURCES"]

#: Where the enhancer's tokens come from (see :class:`EnhancerConfig`).
TOKEN_SOURCES = ("extractor", "pooled")


@dataclass(frozen=True)
class EnhancerConfig:
    """Hyper-parameters of :class:`~semlens.enhancer.PixelEnhancer`.

    ``token_source`` says where the instance and scene tokens come from:

    - ``"extractor"``: the extractor's own tokens; ``instance_dim`` and ``global_dim`` are their
      sizes (the network projects them to ``token_dim``), so the model only accepts extractors
      with those sizes (the one it was trained with, or ``none``).
    - ``"pooled"``: the network makes them itself, pooling its shallow features over each
      instance's mask (and the scene token over the whole frame); it reads only the extractor's
      masks, validity and slots, so any extractor drives it. ``instance_dim`` and ``global_dim``
      are then unused.

    ``motion_search`` is IMAGE's reach beyond its window, in low-resolution pixels per frame: a
    block-matching estimate (:mod:`~semlens.enhancer.motion`, no weights) centres IMAGE's window on
    the motion it finds up to that distance; ``0`` keeps the window at the query's position.
    ``instance_motion`` makes that estimate per instance: inside each block, the pixels of each
    instance of the extractor's masks are matched on their own, so an object and the background
    behind it each get their own displacement (with one instance, or no extractor, it is the block
    estimate).

    ``mask_occlusion`` lets the masks say where a neighbour cannot help: for every pixel, IMAGE's
    view of the aligned neighbour through the instance ids (whether any pixel of the query's
    instance is in reach, and what share of the window is) goes to each propagation step's fusion,
    which scales the aligned states and shifts its output by it (:mod:`~semlens.enhancer.image`).
    Where an object uncovers background, or covers it, the neighbour's pixels belong to another
    instance: features alone do not say so, the masks do. With one instance the maps are constant.

    ``use_image``, ``use_gps`` and ``use_isee`` switch the paper's three parts off one at a time for
    ablations.
    """

    scale: int = 4
    channels: int = 32
    extract_blocks: int = 1
    backward_blocks: int = 2
    forward_blocks: int = 2
    radius: int = 2
    align_dim: int = 16
    token_dim: int = 32
    heads: int = 2
    instance_dim: int = 8
    global_dim: int = 8
    use_image: bool = True
    use_gps: bool = True
    use_isee: bool = True
    token_source: str = "extractor"
    motion_search: int = 0
    instance_motion: bool = False
    mask_occlusion: bool = False

    def __post_init__(self) -> None:
        if self.scale not in (2, 3, 4):
            raise ValueError(f"scale must be 2, 3 or 4, got {self.scale}")
        if self.token_dim % self.heads:
            raise ValueError(f"token_dim {self.token_dim} is not divisible by heads {self.heads}")
        for name in ("channels", "radius", "align_dim", "token_dim", "instance_dim", "global_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be positive")
        if self.token_source not in TOKEN_SOURCES:
            raise ValueError(f"token_source must be one of {', '.join(TOKEN_SOURCES)}, got {self.token_source!r}")
        if not 0 <= self.motion_search <= MOTION_SEARCH_LIMIT:
            raise ValueError(f"motion_search must be within 0..{MOTION_SEARCH_LIMIT}, got {self.motion_search}")

    @property
    def pooled_tokens(self) -> bool:
        """Whether the network pools its own tokens over the masks (any extractor fits it)."""
        return self.token_source == "pooled"

    @property
    def size_multiple(self) -> int:
        """Frames are padded to a multiple of this (the network never downsamples, so 1)."""
        return 1

    def to_dict(self) -> dict[str, Any]:
        """The fields as a dict; ``token_source``, ``motion_search``, ``instance_motion`` and
        ``mask_occlusion`` only when they are not at their defaults, so models saved before the
        options existed have the same configuration."""
        data = asdict(self)
        if data["token_source"] == "extractor":
            del data["token_source"]
        if data["motion_search"] == 0:
            del data["motion_search"]
        if not data["instance_motion"]:
            del data["instance_motion"]
        if not data["mask_occlusion"]:
            del data["mask_occlusion"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnhancerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown enhancer config keys: {', '.join(unknown)}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> EnhancerConfig:
        return cls.from_dict(json.loads(text))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> EnhancerConfig:
        """A named configuration (``tiny`` for CPUs, ``base`` for GPUs) with overrides."""
        try:
            base = PRESETS[name]
        except KeyError:
            raise ValueError(f"unknown enhancer preset {name!r}; choose from {', '.join(PRESETS)}") from None
        return replace(base, **overrides)


PRESETS: dict[str, EnhancerConfig] = {
    "tiny": EnhancerConfig(channels=32, extract_blocks=1, backward_blocks=1, forward_blocks=2, radius=2,
                           align_dim=16, token_dim=32, heads=2),
    "base": EnhancerConfig(channels=128, extract_blocks=4, backward_blocks=8, forward_blocks=8, radius=3,
                           align_dim=32, token_dim=64, heads=4),
}
