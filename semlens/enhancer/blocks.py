"""Convolutional building blocks shared by the enhancer's parts."""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["MASKED_LOGIT", "ResidualBlock", "residual_stack"]

#: The logit given to masked attention positions. ``exp(-1e4)`` is exactly 0 in float32, so they
#: get no weight at all, and unlike ``-inf`` it is finite in float16 (a fully masked row stays finite).
MASKED_LOGIT = -1.0e4


class ResidualBlock(nn.Module):
    """``x + conv(lrelu(conv(x)))`` on ``(B, C, h, w)`` features, without normalisation."""

    def __init__(self, channels: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.act = nn.LeakyReLU(0.1, inplace=True)
        self.res_scale = res_scale
        for conv in (self.conv1, self.conv2):  # keep the residual branch small at the start
            nn.init.kaiming_normal_(conv.weight, a=0.1)
            conv.weight.data.mul_(0.1)
            nn.init.zeros_(conv.bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(self.act(self.conv1(x))) * self.res_scale


def residual_stack(channels: int, count: int) -> nn.Sequential:
    """``count`` residual blocks in sequence (an identity when ``count`` is 0)."""
    return nn.Sequential(*[ResidualBlock(channels) for _ in range(count)])
