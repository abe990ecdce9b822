"""The Pixel Enhancer: Semantic Lens's restoration network."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from semlens.enhancer.blocks import residual_stack
from semlens.enhancer.config import EnhancerConfig
from semlens.enhancer.image import REACH_MAPS, ImplicitMaskedAlignment, no_reach_maps
from semlens.enhancer.isee import EventAggregator, TilePooling
from semlens.enhancer.motion import ShiftPlan, block_offsets
from semlens.enhancer.space import SPACEBlock
from semlens.enhancer.tokens import MaskPooledTokens
from semlens.semantics.types import Semantics

__all__ = ["PixelEnhancer"]


class _Direction(nn.Module):
    """One propagation direction: IMAGE alignment of the previous hidden state, fusion, K SPACE blocks.

    With ``mask_occlusion`` the fusion also reads the reach maps of the ``inputs - 1`` aligned
    states (:meth:`ImplicitMaskedAlignment.reach_maps`): a 1x1 convolution of them scales each
    state (by ``1 + tanh``) and shifts the fusion's output. It starts at zero, so a network
    warm-started from weights without it computes exactly what they did.
    """

    def __init__(self, config: EnhancerConfig, inputs: int, blocks: int) -> None:
        super().__init__()
        c = config.channels
        self.align = ImplicitMaskedAlignment(c, config.align_dim, config.radius) if config.use_image else None
        self.fuse = nn.Conv2d(inputs * c, c, 1)
        self.occlusion: nn.Conv2d | None = None
        if config.mask_occlusion:
            self.occlusion = nn.Conv2d((inputs - 1) * REACH_MAPS, inputs * c, 1)
            nn.init.zeros_(self.occlusion.weight)
            nn.init.zeros_(self.occlusion.bias)
        self.blocks = nn.ModuleList(
            SPACEBlock(c, config.token_dim, config.heads, config.use_gps, config.use_isee) for _ in range(blocks)
        )


class PixelEnhancer(nn.Module):
    """Restores a window of low-resolution frames through instance-centric semantic alignment.

    Call contract: ``frames`` ``(B, T, 3, h, w)`` float RGB in [0, 1] and the window's
    :class:`~semlens.semantics.Semantics` (or ``None`` when there is no extractor) give
    ``(B, T, 3, s*h, s*w)`` float RGB (not clamped). Any ``h, w >= 1`` and ``T >= 1``.

    Structure: shallow features per frame -> backward then forward propagation over the window
    (each step: IMAGE aligns the neighbour's hidden state to this frame, a 1x1 fusion, K SPACE
    blocks = GPS + ISEE + residual block) -> reconstruction (conv, pixel shuffle) + the bilinearly
    upsampled input.
    """

    def __init__(self, config: EnhancerConfig) -> None:
        super().__init__()
        self.config = config
        c, d = config.channels, config.token_dim
        self.extract = nn.Sequential(nn.Conv2d(3, c, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
                                     residual_stack(c, config.extract_blocks))
        if config.pooled_tokens:
            self.pooled = MaskPooledTokens(c, d)
        else:
            self.instance_proj = nn.Linear(config.instance_dim, d)
            self.scene_proj = nn.Linear(config.global_dim, d)
        self.scene_default = nn.Parameter(torch.zeros(d))
        self.events = EventAggregator(d)
        self.backward_branch = _Direction(config, 2, config.backward_blocks)
        self.forward_branch = _Direction(config, 3, config.forward_blocks)
        s = config.scale
        self.upsample = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(c, 3 * s * s, 3, padding=1), nn.PixelShuffle(s),
        )
        self.act = nn.LeakyReLU(0.1, inplace=True)

    @property
    def scale(self) -> int:
        return self.config.scale

    def _tokens(self, semantics: Semantics | None, b: int, t: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """Scene + instance tokens ``(B, T, 1 + N, D)`` and their validity ``(B, T, 1 + N)``."""
        if semantics is None:
            tokens = self.scene_default.to(like.dtype).expand(b, t, 1, -1)
            return tokens, torch.ones(b, t, 1, dtype=torch.bool, device=like.device)
        inst = self.instance_proj(semantics.instance_tokens.to(like.dtype))
        inst = self.events(inst, semantics.valid)
        scene = (self.scene_proj(semantics.global_tokens.to(like.dtype)) + self.scene_default.to(like.dtype)).unsqueeze(2)
        ones = torch.ones(b, t, 1, dtype=torch.bool, device=like.device)
        return torch.cat([scene, inst], dim=2), torch.cat([ones, semantics.valid.bool()], dim=2)

    def _pooled_tokens(self, feats: list[Tensor], semantics: Semantics | None,
                       pooling: TilePooling | None) -> tuple[Tensor, Tensor]:
        """Tokens pooled from the shallow features ``feats`` (one ``(B, C, h, w)`` per frame) over
        the masks: as :meth:`_tokens`. A slot is valid where the extractor says so and its mask has
        pixels; without semantics only the scene token is there."""
        slots = semantics.num_instances if semantics is not None else 0
        scenes, insts, present = [], [], []
        for i, f in enumerate(feats):
            ids = semantics.masks[:, i] if semantics is not None else None
            scene, inst, has = self.pooled(f, ids, slots, pooling)
            scenes.append(scene)
            insts.append(inst)
            present.append(has)
        like = feats[0]
        scene = (torch.stack(scenes, dim=1).to(like.dtype) + self.scene_default.to(like.dtype)).unsqueeze(2)
        b, t = scene.shape[:2]
        ones = torch.ones(b, t, 1, dtype=torch.bool, device=like.device)
        if semantics is None:
            return scene, ones
        valid = torch.stack(present, dim=1) & semantics.valid.bool()
        inst = self.events(torch.stack(insts, dim=1).to(like.dtype), valid)
        return torch.cat([scene, inst], dim=2), torch.cat([ones, valid], dim=2)

    def _check(self, frames: Tensor, semantics: Semantics | None) -> None:
        if frames.dim() != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be (B, T, 3, h, w), got {tuple(frames.shape)}")
        if semantics is not None:
            b, t, _, h, w = frames.shape
            if tuple(semantics.masks.shape) != (b, t, h, w):
                raise ValueError(f"semantics masks {tuple(semantics.masks.shape)} do not match frames {(b, t, h, w)}")
            if self.config.pooled_tokens:  # the extractor's own tokens are not read
                return
            if semantics.instance_tokens.shape[-1] != self.config.instance_dim:
                raise ValueError(f"instance tokens have {semantics.instance_tokens.shape[-1]} dims, the network "
                                 f"expects {self.config.instance_dim} (a model trained with another extractor?)")
            if semantics.global_tokens.shape[-1] != self.config.global_dim:
                raise ValueError(f"global tokens have {semantics.global_tokens.shape[-1]} dims, the network "
                                 f"expects {self.config.global_dim} (a model trained with another extractor?)")

    def _step(self, branch: _Direction, inputs: list[Tensor], maps: list[Tensor], tokens: Tensor,
              valid: Tensor, ids: Tensor | None, semantic: bool,
              pooling: TilePooling | None) -> tuple[Tensor, Tensor]:
        """``inputs``: this frame's features, then the aligned states; ``maps``: the reach maps of
        each aligned state (read only with ``mask_occlusion``)."""
        if branch.occlusion is None:
            x = self.act(branch.fuse(torch.cat(inputs, dim=1)))
        else:
            c = self.config.channels
            mod = branch.occlusion(torch.cat(maps, dim=1))
            states = [inputs[0]] + [state * (1 + torch.tanh(mod[:, k * c:(k + 1) * c]))
                                    for k, state in enumerate(inputs[1:])]
            x = self.act(branch.fuse(torch.cat(states, dim=1)) + mod[:, -c:])
        for block in branch.blocks:
            x, tokens = block(x, tokens, valid, ids, semantic, pooling)
        return x, tokens

    def _aligned(self, branch: _Direction, ref: Tensor, sup: Tensor, hidden: Tensor,
                 ref_ids: Tensor | None, sup_ids: Tensor | None,
                 motion: ShiftPlan | None = None) -> tuple[Tensor, Tensor | None]:
        """``hidden`` aligned to this frame, and its reach maps (None unless the branch reads them)."""
        if branch.align is None:
            return hidden, (no_reach_maps(hidden) if branch.occlusion is not None else None)
        if motion is not None:  # centre IMAGE's window on the block-matched motion
            sup, hidden = motion(sup), motion(hidden)
            sup_ids = None if sup_ids is None else motion(sup_ids)
        maps = branch.align.reach_maps(ref_ids, sup_ids, hidden) if branch.occlusion is not None else None
        return branch.align(ref, sup, hidden, ref_ids, sup_ids), maps

    def _offsets(self, frames: Tensor, i: int, j: int, ids: Tensor | None = None,
                 given: dict[tuple[int, int], Tensor] | None = None) -> ShiftPlan | None:
        """How to shift frame ``j``'s tensors by the block-matched motion from frame ``i`` to it
        (None when IMAGE is off, has no reach beyond its window, or nothing moved); ``ids`` (the
        instance ids of the window) make it per instance when the configuration asks for that.
        ``given`` holds fields already made (a tile's crop of the whole frame's)."""
        if not self._reaches:
            return None
        offsets = given[(i, j)] if given is not None else self._field(frames, i, j, ids)
        return ShiftPlan(offsets) if bool(offsets.any()) else None

    @property
    def _reaches(self) -> bool:
        """Whether IMAGE is on and centres its window on block-matched motion."""
        return self.config.motion_search > 0 and self.config.use_image

    def _field(self, frames: Tensor, i: int, j: int, ids: Tensor | None) -> Tensor:
        """The block-matched field from frame ``i`` to frame ``j`` (per instance of ``ids`` when the
        configuration asks for that)."""
        ref_ids = ids[:, i] if (ids is not None and self.config.instance_motion) else None
        return block_offsets(frames[:, i], frames[:, j], self.config.motion_search, ref_ids)

    def motion_fields(self, frames: Tensor, semantics: Semantics | None = None,
                      stop: int | None = None) -> dict[tuple[int, int], Tensor] | None:
        """The block-matched fields ``(i, j) -> (B, 2, h, w)`` that a forward pass over ``frames``
        (emitting up to frame ``stop``) uses, or None when IMAGE has no reach. A tiled run makes
        them once on the whole frame and gives each tile its crop (``forward(..., motion=...)``):
        blocks matched inside a tile would not see the frame around it."""
        if not self._reaches:
            return None
        t = frames.shape[1]
        stop = t if stop is None else stop
        ids = semantics.masks if semantics is not None else None
        pairs = [(i, i + 1) for i in range(t - 1)] + [(i, i - 1) for i in range(1, stop)]
        return {(i, j): self._field(frames, i, j, ids) for i, j in pairs}

    def forward(self, frames: Tensor, semantics: Semantics | None = None,
                emit: tuple[int, int] | None = None, pooling: TilePooling | None = None,
                motion: dict[tuple[int, int], Tensor] | None = None) -> Tensor:
        """Restore the window; ``emit = (first, stop)`` returns only frames ``first .. stop - 1`` of it
        (identical to slicing the full output: every frame still informs the propagation, but the
        forward pass stops at the last emitted frame and only emitted frames are reconstructed).

        ``pooling`` is for tiled runs (:func:`semlens.tiling.tiled_forward`): ``frames`` are a tile
        of the window and the token pooling (ISEE's, and a pooled model's own tokens) takes the rest
        of the frame from it. When it wants no
        output (a gathering pass), nothing is reconstructed and an empty tensor is returned.
        ``motion``, for tiled runs too, gives the tile's crop of the whole frame's motion fields
        (:meth:`motion_fields`) instead of matching blocks inside the tile."""
        self._check(frames, semantics)
        b, t, _, h, w = frames.shape
        first, stop = (0, t) if emit is None else emit
        if not 0 <= first < stop <= t:
            raise ValueError(f"emit range {emit} is not inside a window of {t} frames")
        # Per-frame stages run one frame at a time: the activations stay cache-sized and the peak
        # memory of a window does not grow with T (batched large convolutions are slower on CPUs).
        feats = [self.extract(frames[:, i].contiguous(memory_format=torch.channels_last)) for i in range(t)]
        if self.config.pooled_tokens:
            tokens, valid = self._pooled_tokens(feats, semantics, pooling)
        else:
            tokens, valid = self._tokens(semantics, b, t, frames)
        ids = semantics.masks if semantics is not None else None
        # A pooled model always has its scene token (GPS is on even without an extractor).
        semantic = semantics is not None or self.config.pooled_tokens
        masked_ids = ids if (ids is not None and self.config.use_image) else None

        def frame_ids(i: int) -> Tensor | None:
            return None if ids is None else ids[:, i]

        def align_ids(i: int) -> Tensor | None:
            return None if masked_ids is None else masked_ids[:, i]

        # Backward propagation (last frame to first).
        backward: list[Tensor] = [feats[0]] * t
        occlusion = self.config.mask_occlusion
        # The backward states' reach maps, for the forward steps that read those states.
        backward_maps: list[Tensor | None] = [None] * t
        hidden = torch.zeros_like(feats[0])
        memory = torch.zeros_like(tokens[:, 0])
        for i in reversed(range(t)):
            if i == t - 1:
                aligned, maps = hidden, (no_reach_maps(hidden) if occlusion else None)
            else:
                aligned, maps = self._aligned(
                    self.backward_branch, feats[i], feats[i + 1], hidden, align_ids(i), align_ids(i + 1),
                    self._offsets(frames, i, i + 1, ids, motion))
            backward_maps[i] = maps
            x, tok = self._step(self.backward_branch, [feats[i], aligned], [maps], tokens[:, i] + memory,
                                valid[:, i], frame_ids(i), semantic, pooling)
            memory = tok - tokens[:, i]
            backward[i] = hidden = x

        # Forward propagation (first frame to last), seeing the backward state of each frame; each
        # frame is reconstructed as soon as its state is final and written into the output in place,
        # and the states no later step reads are released (the window's peak memory stays low).
        s = self.config.scale
        output = pooling is None or pooling.want_output
        in_place = not torch.is_grad_enabled()  # out= writes do not record gradients
        out = frames.new_empty(b, stop - first, 3, s * h, s * w) if in_place and output else None
        per_frame: list[Tensor] = []
        done = frames.new_empty(0)  # stands in for a released state
        hidden = torch.zeros_like(feats[0])
        for i in range(stop):
            if i == 0:
                aligned, maps = hidden, (no_reach_maps(hidden) if occlusion else None)
            else:
                aligned, maps = self._aligned(
                    self.forward_branch, feats[i], feats[i - 1], hidden, align_ids(i), align_ids(i - 1),
                    self._offsets(frames, i, i - 1, ids, motion))
            x, tok = self._step(self.forward_branch, [feats[i], aligned, backward[i]], [maps, backward_maps[i]],
                                tokens[:, i] + memory, valid[:, i], frame_ids(i), semantic, pooling)
            backward_maps[i] = None
            memory = tok - tokens[:, i]
            hidden = x
            if i >= first and output:
                # The channels-last kernel gives the same values, faster on a CPU.
                base = F.interpolate(frames[:, i].contiguous(memory_format=torch.channels_last), scale_factor=s,
                                     mode="bilinear", align_corners=False)
                if out is not None:
                    torch.add(self.upsample(x), base, out=out[:, i - first])
                else:
                    per_frame.append(self.upsample(x) + base)
            backward[i] = done
            if i > 0:
                feats[i - 1] = done
        if not output:
            return frames.new_empty(0)
        return out if out is not None else torch.stack(per_frame, dim=1)
