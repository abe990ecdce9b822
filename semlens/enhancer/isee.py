"""ISEE: the Instance-Specific Semantic Embedding Encoder.

Pixels attend to the window's instance tokens plus the scene token (multi-head cross-attention),
with a learned bias towards the token of the pixel's own instance, and the tokens are updated from
the pixels of their instance in return (two-way). Before that, the tokens of each instance are
aggregated along its track over the whole window (its *event*), so what is known about an instance
in any frame of the window reaches its pixels in every frame.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from semlens.enhancer.blocks import MASKED_LOGIT

__all__ = ["EventAggregator", "InstanceSpecificSemanticEmbedding", "TilePooling", "pool_sums"]


def pool_sums(own: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-slot pixel sums ``(B, N1, C)`` and pixel counts ``(B, N1)`` of ``x`` ``(B, C, hw)`` over the
    0/1 slot maps ``own`` ``(B, N1, hw)``, in float32 with autocast off.

    The sums grow with the frame: a slot covering a 1280x720 frame sums 921,600 pixels, and the
    shipped models' features make such sums reach 83,577 (lite extractor) to 178,184 (no extractor)
    at 720p, past float16's largest value (65,504). In float16 they would become ``inf`` and the
    tokens ``nan``; float32 holds them exactly enough at any frame size.
    """
    with torch.autocast(device_type=x.device.type, enabled=False):
        own32 = own.float()
        return torch.bmm(own32, x.float().transpose(1, 2)), own32.sum(dim=2)


class EventAggregator(nn.Module):
    """Builds per-frame instance tokens that carry their whole event (track) over the window.

    ``tokens`` ``(B, T, N, D)`` projected instance tokens and ``valid`` ``(B, T, N)`` give
    ``(B, T, N, D)``: each frame's token plus an MLP of the track's mean token over its valid frames.
    """

    def __init__(self, token_dim: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(2 * token_dim, token_dim), nn.GELU(), nn.Linear(token_dim, token_dim))

    def forward(self, tokens: Tensor, valid: Tensor) -> Tensor:
        weights = valid.to(tokens.dtype).unsqueeze(-1)  # (B, T, N, 1)
        count = weights.sum(dim=1, keepdim=True).clamp_min(1.0)
        event = (tokens * weights).sum(dim=1, keepdim=True) / count  # (B, 1, N, D)
        event = event.expand_as(tokens)
        return tokens + self.mlp(torch.cat([tokens, event], dim=-1)) * weights


class TilePooling:
    """Lets ISEE pool over the whole frame while the network runs on one tile of it.

    ISEE's token update averages each instance's pixels over the frame, at every SPACE block of
    every propagation step: the network's only read that is not local. A tiled run cuts the frame
    into tiles that *own* a partition of it (``owned``: a ``(h, w)`` 0/1 map in tile coordinates).
    Each pooling call then sums the instance's owned pixels of this tile and adds what the other
    tiles contributed to the same call (``outside``, one ``(sums, areas)`` pair per call, in call
    order, gathered in an earlier pass over the tiles). Every call also records this tile's own share
    (:attr:`recorded`) for the next pass. Without ``outside`` (the first pass) the tile pools all of
    its own pixels, the best guess before the rest of the frame is known.

    The pooled means then match the untiled network's up to how the other tiles' shares changed
    between passes, which shrinks with every pass (see :func:`semlens.tiling.tiled_forward`).
    """

    def __init__(self, owned: Tensor, outside: list[tuple[Tensor, Tensor]] | None = None,
                 want_output: bool = True) -> None:
        self.owned = owned
        self.outside = outside
        self.want_output = want_output
        """Whether the caller uses the network's output (a gathering pass does not: the enhancer
        then skips reconstruction)."""
        self.recorded: list[tuple[Tensor, Tensor]] = []

    def pool(self, own: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """``own`` ``(B, N1, hw)`` 0/1 and ``x`` ``(B, C, hw)`` -> the frame's per-slot sums ``(B, N1, C)``
        and pixel counts ``(B, N1)``, float32 whatever the input dtype (see :func:`pool_sums`)."""
        call = len(self.recorded)
        mine = own * self.owned.reshape(1, 1, -1).to(own.dtype)
        sums, area = pool_sums(mine, x)
        self.recorded.append((sums, area))
        if self.outside is None:
            return pool_sums(own, x)
        if call >= len(self.outside):
            raise RuntimeError("tile pooling: more pooling calls than in the gathering pass")
        other_sums, other_area = self.outside[call]
        return sums + other_sums.float(), area + other_area.float()


class InstanceSpecificSemanticEmbedding(nn.Module):
    """Two-way cross-attention between pixel features and instance/scene tokens.

    Args:
        channels: pixel feature channels ``C``.
        token_dim: token size ``D`` (divisible by ``heads``).
        heads: attention heads.
    """

    def __init__(self, channels: int, token_dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = token_dim // heads
        self.query = nn.Conv2d(channels, token_dim, 1)
        self.key = nn.Linear(token_dim, token_dim)
        self.value = nn.Linear(token_dim, token_dim)
        self.out = nn.Conv2d(token_dim, channels, 1)
        nn.init.normal_(self.out.weight, std=1e-2)
        nn.init.zeros_(self.out.bias)
        self.own_bias = nn.Parameter(torch.full((heads,), 2.0))
        self.token_update = nn.Sequential(nn.Linear(channels + token_dim, token_dim), nn.GELU(),
                                          nn.Linear(token_dim, token_dim))
        self.norm = nn.LayerNorm(token_dim)

    def forward(self, x: Tensor, tokens: Tensor, valid: Tensor, ids: Tensor | None,
                pooling: TilePooling | None = None) -> tuple[Tensor, Tensor]:
        """One frame.

        Args:
            x: ``(B, C, h, w)`` pixel features.
            tokens: ``(B, 1 + N, D)``: the scene token first, then the instance slots.
            valid: ``(B, 1 + N)`` bool (the scene token is always valid).
            ids: ``(B, h, w)`` int instance ids (0 = scene/background, k = slot k), or ``None``.
            pooling: when ``x`` is a tile of the frame, how the token update sees the whole frame.

        Returns:
            The updated features ``(B, C, h, w)`` and tokens ``(B, 1 + N, D)``.
        """
        b, _, h, w = x.shape
        n1 = tokens.shape[1]
        slots = torch.arange(n1, device=x.device).view(1, n1, 1)
        if ids is not None:
            own = ids.clamp(0, n1 - 1).reshape(b, 1, h * w) == slots  # (B, N1, hw)
        else:
            own = (slots == 0).expand(b, n1, h * w)
        own = own.to(x.dtype)
        x, normed = self.attend(x, tokens, valid, own)

        # Tokens <- their own pixels (mask pooling); the scene token pools the background. Sums and
        # means in float32 (:func:`pool_sums`); the means fit any dtype.
        if pooling is None:
            sums, area = pool_sums(own, x.flatten(2))
        else:
            sums, area = pooling.pool(own, x.flatten(2))
        pooled = (sums / area.clamp_min(1.0).unsqueeze(-1)).to(normed.dtype)
        update = self.token_update(torch.cat([pooled, normed], dim=-1))
        present = (area > 0) & valid
        tokens = tokens + update * present.unsqueeze(-1).to(x.dtype)
        return x, tokens

    def attend(self, x: Tensor, tokens: Tensor, valid: Tensor, own: Tensor) -> tuple[Tensor, Tensor]:
        """The pixels' attention to the tokens, given each pixel's slot map ``own`` ``(B, 1 + N, hw)``
        0/1: the updated features ``(B, C, h, w)`` and the normalised tokens ``(B, 1 + N, D)``. Its
        inputs are one frame's (or tile's) fresh tensors and it takes no pooling state, so it is the
        part of ISEE that :func:`semlens.enhancer.compiling.compile_network` compiles."""
        b, c, h, w = x.shape
        n1 = tokens.shape[1]
        normed = self.norm(tokens)
        # Pixels stay on the last axis throughout: no transposed copies of the (hw)-sized tensors.
        q = self.query(x).reshape(b, self.heads, self.head_dim, h * w)  # (B, H, d, hw)
        k = self.key(normed).view(b, n1, self.heads, self.head_dim).transpose(1, 2)  # (B, H, N1, d)
        v = self.value(normed).view(b, n1, self.heads, self.head_dim).permute(0, 2, 3, 1)  # (B, H, d, N1)
        logits = torch.matmul(k / math.sqrt(self.head_dim), q)  # (B, H, N1, hw)
        logits = logits + self.own_bias.to(x.dtype).view(1, -1, 1, 1) * own[:, None]
        logits = logits.masked_fill(~valid[:, None, :, None], MASKED_LOGIT)
        attn = torch.softmax(logits, dim=2)
        mixed = torch.matmul(v, attn).reshape(b, self.heads * self.head_dim, h, w)
        return x + self.out(mixed), normed
