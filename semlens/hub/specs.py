"""The model registry: every model semlens knows by name, described once, in one place.

A :class:`ModelSpec` pins everything needed to fetch, verify and build a model (the approach of
timm's ``PretrainedCfg`` and sam2's ``HF_MODEL_ID_TO_FILENAMES``): the network's configuration,
the extractor it was trained with, the recommended window, and where the weights live (a file
bundled in the package data ``semlens.weights`` and/or a Hugging Face repo pinned to a revision,
with the file's sha256).

All specs are created by :func:`_register_all`; nothing else adds to the registry. The registry is
built on first use, so importing this module stays cheap.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from semlens.errors import ModelNotFoundError

__all__ = [
    "ModelSpec",
    "DEFAULT_MODEL",
    "DEFAULT_MODELS",
    "SAM_REPO_ID",
    "ALIASES",
    "registry",
    "lookup",
    "get_spec",
    "sam_spec",
    "known_names",
]

#: The shipped model used for each scale when none is named: trained for real footage (compressed
#: video); the ``-bi`` models are for clean bicubic downscales and benchmarks.
DEFAULT_MODELS: Mapping[int, str] = MappingProxyType({4: "semlens-tiny-x4", 2: "semlens-tiny-x2"})

#: Former names, still accepted wherever a model name is (not listed): the real-footage models were
#: called ``-real`` while the defaults were the clean-input models, now ``-bi``.
ALIASES: Mapping[str, str] = MappingProxyType({"semlens-tiny-x4-real": "semlens-tiny-x4",
                                               "semlens-tiny-x2-real": "semlens-tiny-x2"})
#: The model :meth:`SemanticLensUpscaler.from_pretrained` uses when neither a model nor a scale is named.
DEFAULT_MODEL = DEFAULT_MODELS[4]

#: Hub mirror of the official Segment Anything checkpoints (folder ``checkpoints/``).
SAM_REPO_ID = "ybelkada/segment-anything"

_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")

Kind = Literal["enhancer", "extractor"]


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to fetch, verify and build one named model.

    ``kind`` is ``"enhancer"`` for upscaling models (a :class:`~semlens.enhancer.PixelEnhancer`)
    and ``"extractor"`` for extractor weights (the SAM checkpoints). For an enhancer, ``enhancer``
    is the ``EnhancerConfig.to_dict()`` of the network and ``extractor`` the extractor it was
    trained with; for a SAM checkpoint, ``variant`` is the ``segment_anything.sam_model_registry``
    type (``"vit_b"``) and ``extractor`` the extractor name that uses it (``"sam-vit-b"``).

    Weights live in a file bundled with the package (``bundled``: a file name inside the package
    data ``semlens.weights``) and/or on the Hugging Face Hub (``repo_id`` + ``revision`` +
    ``filename``). ``sha256`` (hex) and ``size`` (bytes) are checked when known. When only a rough
    size is known, ``approx_size`` (bytes, rounded) is shown as such and never checked.
    """

    name: str
    kind: Kind
    description: str
    scale: int | None = None
    enhancer: Mapping[str, Any] | None = field(default=None, hash=False)
    extractor: str = "lite"
    window: int = 12
    overlap: int = 2
    bundled: str | None = None
    repo_id: str | None = None
    revision: str | None = None
    filename: str | None = None
    sha256: str | None = None
    size: int | None = None
    variant: str | None = None
    approx_size: int | None = None

    def __post_init__(self) -> None:
        if not _NAME_RE.match(self.name):
            raise ValueError(f"model name {self.name!r} must be lowercase letters, digits, '.', '_' or '-'")
        if self.kind not in ("enhancer", "extractor"):
            raise ValueError(f"{self.name}: kind must be 'enhancer' or 'extractor', got {self.kind!r}")
        if self.kind == "enhancer":
            if self.enhancer is None or self.scale is None:
                raise ValueError(f"{self.name}: an enhancer spec needs 'scale' and 'enhancer'")
            if self.enhancer.get("scale") != self.scale:
                raise ValueError(f"{self.name}: scale {self.scale} differs from the network's {self.enhancer.get('scale')}")
            # A read-only view, so the frozen spec cannot be changed through its config.
            object.__setattr__(self, "enhancer", MappingProxyType(dict(self.enhancer)))
        elif self.variant is None:
            raise ValueError(f"{self.name}: an extractor spec needs 'variant'")
        if self.window < 1 or not 0 <= self.overlap < self.window:
            raise ValueError(f"{self.name}: need window >= 1 and 0 <= overlap < window")
        if self.bundled is None and self.repo_id is None:
            raise ValueError(f"{self.name}: weights must be bundled or on the Hub")
        if self.repo_id is not None:
            if not self.filename or not self.revision:
                raise ValueError(f"{self.name}: a Hub location needs 'filename' and 'revision'")
            if not _COMMIT_RE.match(self.revision) and self.sha256 is None:
                raise ValueError(f"{self.name}: an unpinned revision ({self.revision!r}) needs a sha256")
        if self.approx_size is not None and self.size is not None:
            raise ValueError(f"{self.name}: give the exact 'size' or an 'approx_size', not both")
        if self.sha256 is not None and not _SHA256_RE.match(self.sha256):
            raise ValueError(f"{self.name}: sha256 must be 64 lowercase hex digits")

    @property
    def is_remote(self) -> bool:
        """Whether the weights can be downloaded from the Hub."""
        return self.repo_id is not None

    def enhancer_dict(self) -> dict[str, Any]:
        """The network configuration as a plain dict (for ``EnhancerConfig.from_dict``)."""
        if self.enhancer is None:
            raise ValueError(f"{self.name} is not an enhancer model")
        return dict(self.enhancer)


_REGISTRY: dict[str, ModelSpec] | None = None


def _register_all() -> dict[str, ModelSpec]:
    """Create every spec. This is the one place where models are registered."""
    from semlens.enhancer.config import EnhancerConfig
    from semlens.semantics.sam_variants import SAM_VARIANTS

    # sha256 of the shipped files (checked when they are loaded).
    # The clean-input (-bi) models pool their own tokens and centre IMAGE on block-matched motion
    # (warm-started from the first defaults, which read the lite extractor's tokens:
    # benchmarks/results/bi/first-*).
    bi_sha256 = {
        2: "f8a83715adcca5e006fa175d93d5c51324e3cbe27427f16106644cf82fe4738b",
        4: "86de3e55c2c2282117988896bc7ac01b146621e852ed8325115e22e210373359",
    }

    def bundled_tiny(name: str, description: str, scale: int, window: int, sha256: str | None, overlap: int = 2,
                     **config: Any) -> ModelSpec:
        # Weights produced by semlens.train and shipped in the package (weights/ in the repo), trained
        # with the weight-free "lite" extractor. No Hub copy exists yet: once one is pushed
        # (`semlens export ... --push`), add repo_id + the commit + filename + sha256 here.
        return ModelSpec(
            name=name,
            kind="enhancer",
            description=description,
            scale=scale,
            # Built exactly as semlens.train builds it (preset + the extractor's token sizes, or pooled).
            enhancer=EnhancerConfig.preset("tiny", scale=scale, **config).to_dict(),
            extractor="lite",
            window=window,
            overlap=overlap,
            bundled=f"{name}.safetensors",
            sha256=sha256,
        )

    def tiny_bi(scale: int) -> ModelSpec:
        return bundled_tiny(f"semlens-tiny-x{scale}-bi",
                            f"Tiny Semantic Lens network (x{scale}) for clean bicubic downscales and benchmarks, any extractor",
                            scale, 12, bi_sha256[scale], overlap=1, token_source="pooled", motion_search=8)

    def sam(variant: str, filename: str, size: int | None, sha256: str, approx_size: int | None = None) -> ModelSpec:
        name = SAM_VARIANTS[variant].extractor_name  # "sam-vit-b": names come from the variant table
        return ModelSpec(
            name=name,
            kind="extractor",
            description=f"Segment Anything ViT-{name.rsplit('-', 1)[1].upper()} checkpoint (official, Hub mirror)",
            extractor=name,
            variant=variant,
            repo_id=SAM_REPO_ID,
            # No commit of the mirror is known to us, so the branch is pinned; the sha256 (the
            # official checkpoint's) is what guarantees the file, whatever the branch serves.
            revision="main",
            filename=f"checkpoints/{filename}",
            sha256=sha256,
            size=size,
            approx_size=approx_size,
        )

    # The defaults, for real footage: warm-started from the -bi models and trained with clips
    # compressed by libx264/libx265 (x4: `random:compress=0.6,crf=18-30,blur=0,noise=0`; x2 the
    # mild mix with blur and noise, `...,blur=0.2,noise=0.3`). The cards say how and what they
    # replaced; the first runs with the harsher `random` mix are in benchmarks/results/real/first-*.
    default_sha256 = {2: "97b16408068fdc7678728ebd1bfaf114fda26e645b45447b9aceecf11955b9da",
                      4: "8d69f60155e8dd4fc79582c94e58f02444f9a8642fc538ef7757e25bc9c624ef"}
    # Trained on clips of 10 frames; the inference window each file records (window, overlap).
    default_window = {2: (12, 1), 4: (12, 1)}

    def tiny(scale: int) -> ModelSpec:
        # Pooled tokens (any extractor drives it) and IMAGE's window centred on block-matched motion.
        return bundled_tiny(f"semlens-tiny-x{scale}",
                            f"Tiny Semantic Lens network (x{scale}) for real footage (compressed video), any extractor",
                            scale, default_window[scale][0], default_sha256[scale], overlap=default_window[scale][1],
                            token_source="pooled", motion_search=8)

    specs = [
        tiny(4),
        tiny(2),
        tiny_bi(4),
        tiny_bi(2),
        sam("vit_b", "sam_vit_b_01ec64.pth", 375_042_383,
            "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912"),
        # Only "about 1.25 GB" is known for ViT-L: shown as approximate, never checked (the sha256 is).
        sam("vit_l", "sam_vit_l_0b3195.pth", None,
            "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", approx_size=1_250_000_000),
        sam("vit_h", "sam_vit_h_4b8939.pth", 2_564_550_879,
            "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"),
    ]
    table: dict[str, ModelSpec] = {}
    for spec in specs:
        if spec.name in table or spec.name in ALIASES:
            raise ValueError(f"model {spec.name} is registered twice")
        table[spec.name] = spec
    missing = sorted(target for target in ALIASES.values() if target not in table)
    if missing:
        raise ValueError(f"aliases point at unregistered models: {', '.join(missing)}")
    return table


def registry() -> dict[str, ModelSpec]:
    """The registry: model name -> :class:`ModelSpec` (built on first use)."""
    global _REGISTRY
    if _REGISTRY is None:
        _REGISTRY = _register_all()
    return _REGISTRY


def known_names(kind: Kind | None = None) -> list[str]:
    """Registered names, optionally of one kind, in registration order."""
    return [name for name, spec in registry().items() if kind is None or spec.kind == kind]


def lookup(name: str) -> ModelSpec | None:
    """The spec registered under ``name`` or under the model a former name (:data:`ALIASES`)
    now calls, else None."""
    table = registry()
    return table.get(name) or table.get(ALIASES.get(name, ""))


def get_spec(name: str) -> ModelSpec:
    """The spec registered under ``name`` (or a former name of it); :class:`ModelNotFoundError`
    listing the known names."""
    spec = lookup(name)
    if spec is None:
        raise ModelNotFoundError(f"unknown model {name!r}; known models: {', '.join(known_names())}")
    return spec


def sam_spec(variant: str) -> ModelSpec:
    """The SAM checkpoint spec of ``variant``: ``"vit_b"``, ``"vit-b"``, ``"sam-vit-b"`` or any
    name :func:`semlens.semantics.sam_variants.get_sam_variant` resolves (the one table of SAM
    variant names)."""
    from semlens.semantics.sam_variants import get_sam_variant

    try:
        spec = registry().get(get_sam_variant(variant).extractor_name)
    except ModelNotFoundError:
        spec = None
    if spec is None or spec.kind != "extractor":
        variants = ", ".join(s.variant or "" for s in registry().values() if s.kind == "extractor")
        raise ModelNotFoundError(f"unknown SAM variant {variant!r}; choose from {variants}")
    return spec
