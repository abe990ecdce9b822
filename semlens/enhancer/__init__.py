"""The Pixel Enhancer (Semantic Lens's restoration network) and its parts.

- :mod:`~semlens.enhancer.image`: IMAGE, instance-masked attention pre-alignment.
- :mod:`~semlens.enhancer.gps`: GPS, the Global Perspective Shifter.
- :mod:`~semlens.enhancer.isee`: ISEE, the Instance-Specific Semantic Embedding Encoder.
- :mod:`~semlens.enhancer.space`: SPACE = GPS -> ISEE -> residual block.
- :mod:`~semlens.enhancer.network`: :class:`PixelEnhancer`, propagation and reconstruction.
"""

from semlens.enhancer.config import PRESETS, EnhancerConfig
from semlens.enhancer.gps import GlobalPerspectiveShifter
from semlens.enhancer.image import ImplicitMaskedAlignment
from semlens.enhancer.isee import EventAggregator, InstanceSpecificSemanticEmbedding
from semlens.enhancer.network import PixelEnhancer
from semlens.enhancer.space import SPACEBlock

__all__ = [
    "EnhancerConfig",
    "PRESETS",
    "PixelEnhancer",
    "ImplicitMaskedAlignment",
    "GlobalPerspectiveShifter",
    "InstanceSpecificSemanticEmbedding",
    "EventAggregator",
    "SPACEBlock",
]
