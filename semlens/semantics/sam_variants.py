"""The SAM variants: architecture hyper-parameters and the names that resolve to them.

This is the one table of SAM variant names (``sam-vit-b``, ``vit_b``, ``vit-b`` ...): the
extractor and the model hub both resolve names here. Importing it is cheap (no model code).
"""

from __future__ import annotations

from dataclasses import dataclass

from semlens.errors import ModelNotFoundError

__all__ = ["SAM_VARIANTS", "SamVariant", "get_sam_variant", "register_sam_variant"]


@dataclass(frozen=True)
class SamVariant:
    """Architecture hyper-parameters of one SAM model (what a checkpoint must match).

    ``registry_key`` set: the model is built by ``segment_anything``'s ``sam_model_registry``
    (official variants; the other fields then describe that architecture). ``registry_key`` None:
    built from ``segment_anything``'s classes with these fields (custom or tiny test variants).
    ``image_size`` is the encoder's native square input (its positional embedding size).
    """

    name: str
    encoder_embed_dim: int
    encoder_depth: int
    encoder_num_heads: int
    encoder_global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    mask_in_chans: int = 16
    decoder_depth: int = 2
    decoder_mlp_dim: int = 2048
    decoder_num_heads: int = 8
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    num_multimask_outputs: int = 3
    registry_key: str | None = None

    @property
    def extractor_name(self) -> str:
        """The extractor name of this variant: ``vit_b`` -> ``sam-vit-b``."""
        return "sam-" + self.name.replace("_", "-")


SAM_VARIANTS: dict[str, SamVariant] = {
    "vit_b": SamVariant("vit_b", 768, 12, 12, (2, 5, 8, 11), registry_key="vit_b"),
    "vit_l": SamVariant("vit_l", 1024, 24, 16, (5, 11, 17, 23), registry_key="vit_l"),
    "vit_h": SamVariant("vit_h", 1280, 32, 16, (7, 15, 23, 31), registry_key="vit_h"),
}
"""Known variants by name. Filled here; :func:`register_sam_variant` adds custom ones."""


def register_sam_variant(variant: SamVariant, *, overwrite: bool = False) -> SamVariant:
    """Add ``variant`` to :data:`SAM_VARIANTS` (so names resolve and checkpoints are recognised)."""
    if variant.name in SAM_VARIANTS and not overwrite and SAM_VARIANTS[variant.name] != variant:
        raise ValueError(f"a different SAM variant named {variant.name!r} is already registered")
    SAM_VARIANTS[variant.name] = variant
    return variant


def get_sam_variant(name: str | SamVariant) -> SamVariant:
    """Resolve ``"sam-vit-b"``, ``"vit_b"``, ``"vit-b"`` (any case) or a :class:`SamVariant`."""
    if isinstance(name, SamVariant):
        return name
    key = name.strip().lower()
    for prefix in ("sam-", "sam_"):
        if key.startswith(prefix):
            key = key[len(prefix):]
    for candidate in (key, key.replace("-", "_")):
        if candidate in SAM_VARIANTS:
            return SAM_VARIANTS[candidate]
    known = ", ".join(v.extractor_name for v in SAM_VARIANTS.values())
    raise ModelNotFoundError(f"unknown SAM variant {name!r}; choose one of: {known}")
