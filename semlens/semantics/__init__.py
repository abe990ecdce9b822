"""Semantic extraction: instances, events and scenes of a window of frames."""

from semlens.semantics.registry import EXTRACTORS, NoneExtractor, build_extractor, extractor_dims
from semlens.semantics.types import InstanceExtractor, Semantics, empty_semantics

__all__ = ["Semantics", "InstanceExtractor", "empty_semantics", "EXTRACTORS", "NoneExtractor", "build_extractor",
           "extractor_dims"]
