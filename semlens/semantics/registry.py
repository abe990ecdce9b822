"""The extractor registry: names -> builders, filled in one place."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import Tensor

from semlens.semantics.sam_variants import SAM_VARIANTS
from semlens.semantics.types import InstanceExtractor, Semantics

__all__ = ["EXTRACTORS", "NoneExtractor", "build_extractor", "extractor_dims"]


class NoneExtractor:
    """No semantics: the enhancer runs without instances (GPS identity, ISEE scene-only, IMAGE unmasked)."""

    name = "none"
    instance_dim = 8
    global_dim = 8
    max_instances = 0

    def __call__(self, frames: Tensor) -> Semantics | None:
        return None

    def reset(self) -> None:
        pass


def _lite(**options: Any) -> InstanceExtractor:
    from semlens.semantics.lite import LiteExtractor

    return LiteExtractor(**options)


def _sam(variant: str) -> Callable[..., InstanceExtractor]:
    def build(**options: Any) -> InstanceExtractor:
        from semlens.semantics.sam import build_sam_extractor

        return build_sam_extractor(variant, **options)

    return build


EXTRACTORS: dict[str, Callable[..., InstanceExtractor]] = {
    "lite": _lite,
    "none": lambda **options: NoneExtractor(),
    # The official SAM variants: sam-vit-b, sam-vit-l, sam-vit-h.
    **{v.extractor_name: _sam(v.name) for v in SAM_VARIANTS.values() if v.registry_key is not None},
}


def build_extractor(name: str, **options: Any) -> InstanceExtractor:
    """Build a registered extractor by name (``lite``, ``none``, ``sam-vit-b``, ``sam-vit-l``, ``sam-vit-h``).

    The SAM extractors need ``checkpoint=<path to .pth>`` among the ``options``;
    ``semlens.hub.load_extractor`` builds any of them with the official checkpoint found for it."""
    try:
        builder = EXTRACTORS[name]
    except KeyError:
        raise ValueError(f"unknown extractor {name!r}; choose from {', '.join(EXTRACTORS)}") from None
    return builder(**options)


def extractor_dims(name: str) -> tuple[int, int]:
    """``(instance_dim, global_dim)`` of a named extractor, without building it."""
    if name.startswith("sam-"):
        return 256, 256
    if name == "lite":
        from semlens.semantics.lite import LITE_GLOBAL_DIM, LITE_INSTANCE_DIM

        return LITE_INSTANCE_DIM, LITE_GLOBAL_DIM
    if name == "none":
        return NoneExtractor.instance_dim, NoneExtractor.global_dim
    raise ValueError(f"unknown extractor {name!r}; choose from {', '.join(EXTRACTORS)}")
