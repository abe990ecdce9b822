"""Semantic extraction: instances, events and scenes of a window of frames."""

from semlens.semantics.given import GivenMasks
from semlens.semantics.registry import EXTRACTORS, NoneExtractor, build_extractor, extractor_dims
from semlens.semantics.types import InstanceExtractor, Semantics, empty_semantics, locate_frames

__all__ = ["Semantics", "InstanceExtractor", "empty_semantics", "locate_frames", "GivenMasks", "EXTRACTORS", "NoneExtractor", "build_extractor",
           "extractor_dims"]
