"""semlens: video super-resolution with Semantic Lens (instance-centric semantic alignment)."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["SemanticLensUpscaler", "list_models", "__version__"]


def __getattr__(name: str):  # lazy: importing semlens stays cheap
    if name == "SemanticLensUpscaler":
        from semlens.upscaler import SemanticLensUpscaler

        return SemanticLensUpscaler
    if name == "list_models":
        from semlens.hub import list_models

        return list_models
    raise AttributeError(f"module 'semlens' has no attribute {name!r}")
