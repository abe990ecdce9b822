"""SPACE: the Semantics-Powered Attention Cross-Embedding block.

One SPACE block = GPS (scene-conditioned modulation) -> ISEE (pixel <-> instance-token attention)
-> a residual convolution block. The enhancer stacks ``K`` of them in each propagation direction.
"""

from __future__ import annotations

from torch import Tensor, nn

from semlens.enhancer.blocks import ResidualBlock
from semlens.enhancer.gps import GlobalPerspectiveShifter
from semlens.enhancer.isee import InstanceSpecificSemanticEmbedding, TilePooling

__all__ = ["SPACEBlock"]


class SPACEBlock(nn.Module):
    """GPS -> ISEE -> residual block on one frame's ``(B, C, h, w)`` features.

    Args:
        channels: feature channels ``C``.
        token_dim: token size ``D``.
        heads: ISEE attention heads.
        use_gps, use_isee: build (and run) GPS / ISEE; when off the part is skipped.
    """

    def __init__(self, channels: int, token_dim: int, heads: int, use_gps: bool = True, use_isee: bool = True) -> None:
        super().__init__()
        self.gps = GlobalPerspectiveShifter(token_dim, channels) if use_gps else None
        self.isee = InstanceSpecificSemanticEmbedding(channels, token_dim, heads) if use_isee else None
        self.body = ResidualBlock(channels)

    def forward(
        self, x: Tensor, tokens: Tensor, valid: Tensor, ids: Tensor | None, semantic: bool,
        pooling: TilePooling | None = None,
    ) -> tuple[Tensor, Tensor]:
        """``x`` ``(B, C, h, w)``; ``tokens`` ``(B, 1 + N, D)`` scene first; ``valid`` ``(B, 1 + N)``;
        ``ids`` ``(B, h, w)`` or ``None``; ``semantic`` False turns GPS into the identity (no scene
        token from an extractor); ``pooling`` is ISEE's :class:`~semlens.enhancer.isee.TilePooling` in a
        tiled run. Returns the new features and tokens."""
        if self.gps is not None and semantic:
            x = self.gps(x, tokens[:, 0])
        if self.isee is not None:
            x, tokens = self.isee(x, tokens, valid, ids, pooling)
        return self.body(x), tokens
