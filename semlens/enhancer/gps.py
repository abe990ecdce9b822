"""GPS: the Global Perspective Shifter.

The scene (global) token of a frame is turned by a small MLP into per-channel affine parameters
``(gamma, beta)`` that modulate the frame's pixel features: ``f * (1 + gamma) + beta``. This shifts
the whole feature map towards the scene's "perspective" (lighting, colour cast, kind of scene).
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["GlobalPerspectiveShifter"]


class GlobalPerspectiveShifter(nn.Module):
    """Scene-token conditioned channel modulation.

    Args:
        token_dim: size of the (projected) scene token.
        channels: channels of the modulated features.
    """

    def __init__(self, token_dim: int, channels: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(token_dim, token_dim), nn.GELU(), nn.Linear(token_dim, 2 * channels))
        nn.init.normal_(self.mlp[2].weight, std=1e-3)  # start close to the identity
        nn.init.zeros_(self.mlp[2].bias)

    def forward(self, features: Tensor, scene: Tensor) -> Tensor:
        """``features`` ``(B, C, h, w)``, ``scene`` ``(B, token_dim)`` -> ``(B, C, h, w)``."""
        gamma, beta = self.mlp(scene).chunk(2, dim=-1)
        return features * (1 + gamma[:, :, None, None]) + beta[:, :, None, None]
