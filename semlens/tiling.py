"""Spatial tiling: run the enhancer on overlapping tiles of a window and feather them together.

Large frames (or small devices) do not fit one window of full frames through the network, so the
frames are cut into square tiles of ``tile`` low-resolution pixels, neighbouring tiles sharing
``overlap`` pixels. Each tile goes through the model with its crop of the instance masks (the
instance and scene tokens are per window, not per pixel, and stay whole). The upscaled tiles are
blended with a linear ramp (feathering) across every shared band, so no seam is visible.

How large must the overlap be? An output pixel depends on the input pixels inside the network's
receptive field, and a tile's output is exact only where that field stays inside the tile.
:func:`receptive_radius` gives the theoretical bound: 3x3 convolutions add 1 pixel each, IMAGE its
search radius ``r`` per propagation step, and the recurrent propagation adds one step per frame, so
the bound grows with depth and with the window (31 LR pixels for the tiny model and 3 frames, 121
for 12 frames). The *effective* reach is much shorter, because the residual branches are scaled
down and IMAGE's attention favours small displacements: a random tiny model's tiles agree with
whole frames within 1/255 with 8 pixels of overlap (``tests/test_tiling.py``). Trained models reach
further: with 96-pixel tiles sharing 24 pixels (6 of context)
the shipped x4 model on the example clip is still up to 2.63/255 off (``python
benchmarks/tiling.py``). So each shared band is split: its outer quarter on either side
is context only (weight 0: those outputs saw zero padding where the frame goes on) and the linear
ramp spans its middle half. Rule: the context, a quarter of ``tile_overlap``, should cover the
effective reach. :data:`DEFAULT_TILE_OVERLAP` (40: 10 pixels of context and a 20-pixel ramp) is
what the committed measurements on the example clip support (``python benchmarks/tiling.py``,
``benchmarks/results/tiling.json``): with 96-pixel tiles the shipped models stay within 1/255 of
whole frames (0.50/255 at x4, 0.06/255 at x2); with 64-pixel tiles x2 does (0.05/255) but x4 is up
to 1.09/255 off, and with less overlap 64-pixel x4 tiles are up to 1.18, 12.1 and 16.9/255 off (24,
16 and 8 pixels). x2 is within 1/255 from 24 pixels of overlap on; 8 is enough for random models.
Tiles between 64 and 96 pixels were not measured. The automatic tile and the out-of-memory retry
never go below :func:`smallest_tile` (twice the overlap: 80 pixels by default), and the upscaler
refuses a tile that cannot hold the overlap, so the overlap is never cut silently.

One part of the network is not local at all: ISEE pools each instance's pixels over the whole
frame into its token, at every SPACE block of every propagation step, and the tokens reach every
pixel. A tile alone would pool only the instance's pixels inside it (more than 1/255 off for
16-pixel tiles with the random tiny model, ``tests/test_tiling.py``; up to 28/255 with the shipped
x4 model and 96-pixel tiles, ``python benchmarks/tiling.py --passes 1``). So with ISEE the tiles are run twice: the first pass
gathers, for every pooling call, each tile's sums over the part of the frame it owns (shared bands
split in the middle); the second pass pools its own part live and adds the other tiles' sums from
the first pass (:class:`~semlens.enhancer.isee.TilePooling`). The other tiles' sums are then off
only by how their tokens were off in the first pass, a second-order error: the tiled output is
within 1/255 of the untiled one (tested). The gathering pass skips reconstruction, so tiling with
ISEE costs a little under twice the network time; it is used only when whole frames do not fit.
A model with pooled tokens (``token_source="pooled"``) pools its shallow features over each
instance's mask and over the frame the same way, through the same exchange, before propagating:
those features do not depend on the tokens, so after the gathering pass its tokens are the whole
frame's (exact where each tile's owned part lies farther than the shallow features' reach from
the tile's edge, which a quarter-overlap context guarantees).

:func:`auto_tile_size` estimates the network's peak activation memory and picks a tile that fits a
budget (after the whole-frame tensors that no tile shrinks, :func:`whole_frame_bytes`); unless one
is given, the budget follows the machine (:func:`default_memory_budget`: half the available RAM on
a CPU, free device memory on a GPU), so whole frames go through whenever they fit;
:func:`tiled_forward_with_retry` halves the tile on an out-of-memory error instead of failing (or
dropping frames), down to :func:`smallest_tile`. The streaming pipeline
(:class:`semlens.pipeline.WindowRunner`) first lowers the windows batched together, then the tile,
and keeps what fitted.
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from semlens.enhancer import EnhancerConfig, PixelEnhancer
from semlens.enhancer.isee import TilePooling
from semlens.errors import SemlensError
from semlens.semantics.types import Semantics

__all__ = [
    "attempt",
    "auto_tile_for",
    "auto_tile_size",
    "available_memory_bytes",
    "default_memory_budget",
    "estimate_window_bytes",
    "is_out_of_memory",
    "oom_message",
    "parse_memory_size",
    "receptive_radius",
    "release_memory",
    "smaller_tile",
    "smallest_tile",
    "tile_starts",
    "tiled_forward",
    "tiled_forward_with_retry",
    "whole_frame_bytes",
    "windows_per_pass",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

GIB = 1024**3
MIN_TILE = 16
"""The smallest tile the out-of-memory retry tries, whatever the overlap (:func:`smallest_tile`)."""

DEFAULT_TILE_OVERLAP = 40
"""LR pixels neighbouring tiles share unless told otherwise: its outer quarters (context) must
cover how far the shipped models reach. Measured on the example clip: within 1/255 of whole frames
with 96-pixel tiles, 1.09/255 with 64-pixel tiles at x4 (``benchmarks/results/tiling.json``)."""

POOLING_PASSES = 2
"""Passes over the tiles when the enhancer has ISEE: one gathers the pooled sums, one produces the
output (see :func:`tiled_forward`)."""

CONTEXT_FRACTION = 0.25
"""Share of each overlap band, on either side, that is context only (never blended in)."""

_SAFETY = 1.25  # measured CPU peaks vary from run to run with the allocator; stay on the safe side


# -- geometry -------------------------------------------------------------------------------------

def tile_starts(size: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``[0, size)`` with at least ``overlap``
    shared pixels between neighbours. Every tile has the full length (the last one is moved back to
    end at ``size``); a tile of ``size`` or more gives ``[0]``."""
    if tile >= size:
        return [0]
    stride = tile - overlap
    if stride < 1:
        raise ValueError(f"tile overlap {overlap} must be smaller than the tile {tile}")
    starts = list(range(0, size - tile, stride))
    starts.append(size - tile)
    return starts


def _ramp(starts: list[int], index: int, tile: int, scale: int, device: torch.device) -> Tensor:
    """``(scale * tile,)`` float weights of tile ``index`` along one axis: 1 inside, and across each
    band shared with a neighbour a linear ramp from 0 (the tile's edge side) to 1.

    The outer quarter of a shared band of ``n`` pixels is context only (weight 0: those outputs saw
    zero padding where the frame goes on), the ramp spans the middle half, the inner quarter has
    weight 1. The two tiles' ramps over one band sum to one. Weights are 0 only where the
    neighbour has weight 1, so every covered pixel is defined.
    """
    n = scale * tile
    j = torch.arange(n, device=device, dtype=torch.float32) + 0.5
    weight = torch.ones(n, device=device)
    start = starts[index]
    if index > 0:
        weight = torch.minimum(weight, _rise(j, scale * (starts[index - 1] + tile - start)))
    if index + 1 < len(starts):
        weight = torch.minimum(weight, _rise(n - j, scale * (start + tile - starts[index + 1])))
    return weight


def _rise(distance: Tensor, shared: int) -> Tensor:
    """Weights by HR ``distance`` from a tile edge inside a band of ``shared`` HR pixels."""
    if shared <= 0:
        return torch.ones_like(distance)
    margin = shared * CONTEXT_FRACTION
    return ((distance - margin) / (shared - 2 * margin)).clamp(0.0, 1.0)


def _crop(semantics: Semantics | None, y0: int, y1: int, x0: int, x1: int) -> Semantics | None:
    if semantics is None:
        return None
    # Contiguous: the network slices frames out of it, and a compiled stage then sees the same layout
    # for every tile (see semlens.enhancer.compiling).
    return Semantics(masks=semantics.masks[..., y0:y1, x0:x1].contiguous(), instance_tokens=semantics.instance_tokens,
                     global_tokens=semantics.global_tokens, valid=semantics.valid, track_ids=semantics.track_ids)


def _owned(starts: list[int], index: int, tile: int) -> tuple[int, int]:
    """The part ``[lo, hi)`` of tile ``index`` (in tile coordinates) that it owns in the partition of
    the axis among the tiles: every shared band is split at its middle."""
    start = starts[index]
    lo = 0 if index == 0 else (starts[index - 1] + tile + start) // 2 - start
    hi = tile if index + 1 == len(starts) else (start + tile + starts[index + 1]) // 2 - start
    return lo, hi


def _pools_over_frames(model: PixelEnhancer) -> bool:
    """Whether ``model`` is the enhancer with ISEE or with pooled tokens (whose token pooling reads
    whole frames)."""
    config = getattr(model, "config", None)
    return isinstance(config, EnhancerConfig) and (config.use_isee or config.pooled_tokens)


def tiled_forward(model: PixelEnhancer, x: Tensor, semantics: Semantics | None, tile: int,
                  tile_overlap: int, emit: tuple[int, int] | None = None, passes: int | None = None) -> Tensor:
    """Run ``model`` on overlapping square tiles of ``x`` and feather the results together.

    Args:
        model: the enhancer (anything with ``scale`` and the enhancer's call contract, ``emit`` included).
        x: ``(B, T, 3, h, w)`` float RGB in [0, 1].
        semantics: the window's semantics (masks ``(B, T, h, w)``; cropped per tile, tokens kept
            whole) or ``None``.
        tile: tile side in LR pixels; ``<= 0`` or at least the frame's size runs the model once on
            whole frames (same result as calling it directly).
        tile_overlap: LR pixels shared by neighbouring tiles (clamped to ``tile - 1``); the blend
            ramp spans the shared band. See the module docstring for how it relates to the
            receptive field.
        emit: ``(first, stop)``: only frames ``first .. stop - 1`` of the window are returned (the
            model's ``emit``); ``None`` = all.
        passes: runs over the tiles. With ISEE the token pooling must see the whole frame: each
            pass but the last only gathers every tile's pooled sums (no reconstruction), and the
            next pass pools its own pixels plus the other tiles' sums of the pass before
            (:class:`~semlens.enhancer.isee.TilePooling`). ``None`` = :data:`POOLING_PASSES` for
            the enhancer with ISEE, 1 for anything else.

    Returns:
        ``(B, n, 3, s*h, s*w)`` float32 (not clamped), ``s = model.scale``, ``n`` the emitted frames.
    """
    b, t, c, h, w = x.shape
    if tile <= 0 or (tile >= h and tile >= w):
        return model(x, semantics, emit)
    pooled = _pools_over_frames(model)
    passes = (POOLING_PASSES if pooled else 1) if passes is None else passes
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    n = t if emit is None else emit[1] - emit[0]
    overlap = max(0, min(tile_overlap, tile - 1))
    if overlap < tile_overlap and (tile < h or tile < w):
        logger.warning("%d-pixel tiles cannot share %d pixels: the overlap is cut to %d, which may show seams "
                       "(tiles of at least %d keep it)", tile, tile_overlap, overlap, smallest_tile(tile_overlap))
    th, tw = min(tile, h), min(tile, w)
    rows = tile_starts(h, th, overlap)
    cols = tile_starts(w, tw, overlap)
    tiles = [(i, y0, k, x0) for i, y0 in enumerate(rows) for k, x0 in enumerate(cols)]
    s = int(model.scale)
    out = torch.zeros(b, n, c, s * h, s * w, device=x.device, dtype=torch.float32)
    weight = torch.zeros(s * h, s * w, device=x.device, dtype=torch.float32)
    col_ramps = [_ramp(cols, i, tw, s, x.device) for i in range(len(cols))]
    outside: list[list[tuple[Tensor, Tensor]] | None] = [None] * len(tiles)
    owned: list[Tensor] = []
    for i, _, k, _ in tiles if pooled else []:
        (r0, r1), (c0, c1) = _owned(rows, i, th), _owned(cols, k, tw)
        owned.append(torch.zeros(th, tw, device=x.device))
        owned[-1][r0:r1, c0:c1] = 1.0
    # IMAGE's block matching runs once on the whole frame; each tile reads its crop of the fields.
    fields = model.motion_fields(x, semantics, None if emit is None else emit[1]) \
        if isinstance(model, PixelEnhancer) else None
    for run in range(passes):
        last = run == passes - 1
        records: list[list[tuple[Tensor, Tensor]]] = []
        for j, (i, y0, k, x0) in enumerate(tiles):
            inputs = (x[..., y0:y0 + th, x0:x0 + tw], _crop(semantics, y0, y0 + th, x0, x0 + tw), emit)
            extra = {} if fields is None else {
                "motion": {pair: f[..., y0:y0 + th, x0:x0 + tw] for pair, f in fields.items()}}
            if not pooled:
                part = model(*inputs, **extra)
            else:
                pooling = TilePooling(owned[j], outside[j], want_output=last)
                part = model(*inputs, pooling=pooling, **extra)
                records.append(pooling.recorded)
            if last:
                wmap = _ramp(rows, i, th, s, x.device)[:, None] * col_ramps[k][None, :]
                region = (..., slice(s * y0, s * (y0 + th)), slice(s * x0, s * (x0 + tw)))
                out[region].add_(part.float() * wmap)
                weight[region].add_(wmap)
            del part
        if not last and pooled:
            outside = _others(records)
    return out.div_(weight)


def _others(records: list[list[tuple[Tensor, Tensor]]]) -> list[list[tuple[Tensor, Tensor]] | None]:
    """Per tile and pooling call: the sums and areas every *other* tile recorded."""
    calls = len(records[0])
    if any(len(r) != calls for r in records):
        raise RuntimeError("tiles made different numbers of pooling calls")
    totals = [(sum(r[call][0] for r in records), sum(r[call][1] for r in records)) for call in range(calls)]
    return [[(totals[call][0] - r[call][0], totals[call][1] - r[call][1]) for call in range(calls)]
            for r in records]


# -- how far a pixel reaches -------------------------------------------------------------------------

def receptive_radius(config: EnhancerConfig, frames: int) -> int:
    """Theoretical receptive-field radius (LR pixels) of an output frame of a ``frames``-frame
    window: the largest distance at which an input pixel can change an output pixel through the
    convolutional and IMAGE paths (ISEE's token pooling reaches the whole tile and is left out).

    3x3 convolutions add one pixel, a residual block two, IMAGE its search radius ``r`` (plus its
    motion-centred reach ``motion_search``) per propagation step; the backward pass accumulates over the window, the forward pass then adds
    its own steps on top, so the bound grows linearly with ``frames``. It is an upper bound: the
    effective reach of a trained or freshly initialised model is much shorter.
    """
    if frames < 1:
        raise ValueError("frames must be >= 1")
    r = config.radius + config.motion_search if config.use_image else 0
    feats = 1 + 2 * config.extract_blocks
    align = feats + r  # IMAGE's keys come from the neighbour's features
    back_blocks, fwd_blocks = 2 * config.backward_blocks, 2 * config.forward_blocks
    backward = [0] * frames
    reach = feats + back_blocks
    backward[-1] = reach
    for i in range(frames - 2, -1, -1):
        reach = max(feats, align, reach + r) + back_blocks
        backward[i] = reach
    reach = max(feats, backward[0]) + fwd_blocks
    widest = reach
    for i in range(1, frames):
        reach = max(feats, align, reach + r, backward[i]) + fwd_blocks
        widest = max(widest, reach)
    return widest + 2  # the two 3x3 reconstruction convolutions (the bilinear base reaches 1)


# -- memory ------------------------------------------------------------------------------------------

def estimate_window_bytes(h: int, w: int, t: int, channels: int, *, scale: int = 4, radius: int = 3,
                          instances: int = 16, heads: int = 4, bytes_per_value: int = 4) -> int:
    """Peak activation bytes of one forward pass of the enhancer on a ``(1, T, 3, h, w)`` window;
    ``bytes_per_value`` is the size of the activations' dtype (2 under float16/bfloat16 autocast).

    Per LR pixel and frame the network keeps the features and the backward states (2 tensors of
    ``C``; taken as 2.5 ``C`` for the allocator's slack), the input, the int64 instance ids and the
    upscaled output (``3 s^2``); per pixel it also needs one propagation step's temporaries (IMAGE
    about 2 ``(2r+1)^2`` maps, the SPACE block about 8 ``C``, ISEE's attention ``heads + 2`` per
    instance slot). The input and the output are float32 whatever the autocast dtype, and so is
    ISEE's softmax under autocast (it comes on top of the half-precision logits): those are counted
    at 4 bytes. Multiplied by a 1.25 safety factor, this stays above the peaks measured by
    ``python benchmarks/window_memory.py`` (tiny model, T = 4, 12, 24 at x4 and x2, float32) and
    within about twice the largest of them, so whole frames are not tiled for nothing.
    """
    k = (2 * radius + 1) ** 2
    slots = 1 + instances
    low = bytes_per_value
    per_frame = low * (5 * channels // 2 + 5) + 4 * (3 + 3 * scale * scale) + 8
    attention = heads * slots * (4 if low >= 4 else low + 4)
    per_step = low * (2 * k + 8 * channels + 2 * slots) + attention
    return int(_SAFETY * h * w * (t * per_frame + per_step))


def whole_frame_bytes(h: int, w: int, t: int, scale: int) -> int:
    """Bytes of the whole-frame tensors of ``t`` frames that no tile size shrinks: the input, the
    ids, the float32 output (the blended accumulator, or the network's own output), its blending
    weights and the converted copy made from it (all float32 except the int64 ids). Grows with the
    windows batched together: 4 windows of 12 1080p frames at x2 hold about 11.6 GB."""
    return h * w * (4 * 3 * t + 8 * t + 4 * (2 * 3 * t + 1) * scale * scale)



def windows_per_pass(h: int, w: int, t: int, scale: int, budget_bytes: int, windows: int) -> int:
    """How many (at most ``windows``) ``T``-frame windows of ``h x w`` frames go through the network
    together so that their whole-frame tensors (:func:`whole_frame_bytes`, which tiling cannot
    shrink) take at most half of ``budget_bytes``, the other half being left to the network's
    activations. At least 1 (beyond that the out-of-memory retry takes over)."""
    n = max(1, windows)
    while n > 1 and whole_frame_bytes(h, w, n * t, scale) > budget_bytes // 2:
        n -= 1
    return n


def _work(h: int, w: int, tile: int, overlap: int) -> int:
    """LR pixels pushed through the network when ``h x w`` frames are cut into ``tile`` tiles."""
    th, tw = min(tile, h), min(tile, w)
    ov = min(overlap, tile - 1)
    return len(tile_starts(h, th, ov)) * th * len(tile_starts(w, tw, ov)) * tw


def auto_tile_size(h: int, w: int, t: int, channels: int, budget_bytes: int, *, scale: int = 4, radius: int = 3,
                   instances: int = 16, heads: int = 4, bytes_per_value: int = 4,
                   overlap: int = DEFAULT_TILE_OVERLAP, minimum: int = 32) -> int:
    """The tile side (LR pixels) for a ``T``-frame window of ``h x w`` frames to fit ``budget_bytes``
    of activations, or ``0`` when whole frames fit (no tiling needed).

    The estimate is :func:`estimate_window_bytes` (conservative: network structure plus slack); the
    keyword defaults are the larger configurations (x4, IMAGE radius 3, 16 instances, 4 heads) so a
    call with only the positional arguments errs on the side of tiling. Whole-frame tensors that
    tiling cannot shrink (input, ids, the blended output) are taken off the budget first (but at
    most half of it: beyond that the budget cannot be met and the OOM retry takes over). Among the
    tiles that fit, the one that pushes the fewest pixels through the network (tiles overlap by
    ``overlap``) is chosen, so a frame slightly too big is cut into two balanced tiles, not a big
    and a sliver. The result is at least ``minimum`` and :func:`smallest_tile` (twice ``overlap``:
    the overlap is kept whole).
    """
    minimum = max(minimum, smallest_tile(overlap))
    kwargs = dict(scale=scale, radius=radius, instances=instances, heads=heads, bytes_per_value=bytes_per_value)
    if estimate_window_bytes(h, w, t, channels, **kwargs) <= budget_bytes:
        return 0
    per_pixel = estimate_window_bytes(1, 1, t, channels, **kwargs)
    room = max(budget_bytes - whole_frame_bytes(h, w, t, scale), budget_bytes // 2)
    pixels = room // per_pixel
    short = min(h, w)
    largest = math.isqrt(pixels)
    if largest >= short:  # tiles are clipped to the short side: use the room along the long side
        largest = pixels // short
    largest = min(largest, max(h, w) - 1)
    if largest <= minimum:
        return minimum
    return min(range(largest, minimum - 1, -1), key=lambda side: (_work(h, w, side, overlap), -side))


MIN_CPU_BUDGET = GIB
"""The automatic budget on a CPU is never below this (a machine short of memory still gets tiles
of a useful size; the out-of-memory retry covers the rest)."""

FALLBACK_CPU_BUDGET = 2 * GIB
"""The automatic budget on a CPU where the available memory cannot be read."""

MEMINFO = Path("/proc/meminfo")
CGROUP = Path("/sys/fs/cgroup")


def available_memory_bytes() -> int | None:
    """Bytes of RAM this process can take without swapping: ``MemAvailable`` of ``/proc/meminfo``
    (Linux), else the free physical pages (``os.sysconf``), lowered to the room left under the
    memory limit of the process's control group when there is one (a container given less than
    the host has; page cache the kernel can drop counts as room). ``None`` where nothing is known."""
    available = _meminfo_available()
    if available is None:
        try:
            pages, size = os.sysconf("SC_AVPHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
            available = pages * size if pages > 0 and size > 0 else None
        except (AttributeError, ValueError, OSError):
            available = None
    room = _cgroup_room()
    if room is not None:
        available = room if available is None else min(available, room)
    return available


def _meminfo_available() -> int | None:
    try:
        for line in MEMINFO.read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("MemAvailable:"):
                fields = line.split()
                return int(fields[1]) * (1024 if fields[2:3] == ["kB"] else 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cgroup_room() -> int | None:
    """The memory limit of the process's control group (v2 ``memory.max``, else v1
    ``memory/memory.limit_in_bytes``) less what it uses, not counting inactive page cache;
    ``None`` without a limit."""
    for limit_name, usage_name, folder, cache_key in (
            ("memory.max", "memory.current", CGROUP, "inactive_file"),
            ("memory.limit_in_bytes", "memory.usage_in_bytes", CGROUP / "memory", "total_inactive_file")):
        try:
            limit_text = (folder / limit_name).read_text().strip()
            usage = int((folder / usage_name).read_text().strip())
        except (OSError, ValueError):
            continue
        if not limit_text.isdigit() or int(limit_text) >= 1 << 60:  # "max", or v1's "no limit"
            return None
        cache = 0
        try:
            for line in (folder / "memory.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == cache_key:
                    cache = int(value)
        except (OSError, ValueError):
            pass
        return max(0, int(limit_text) - max(0, usage - cache))
    return None


def default_memory_budget(device: torch.device, share: float = 1.0) -> int:
    """Activation budget when none is given, following the machine: on a CUDA device
    ``share * min(0.6 * total, 0.9 * free)`` of its memory (free as ``torch.cuda.mem_get_info``
    reports it, plus what this process's caching allocator holds unused); on a CPU ``share`` of
    half the available RAM (:func:`available_memory_bytes`; 2 GiB where that is unknown), never
    below 1 GiB. The rest of the memory is the margin for everything else (decoded and encoded
    frames, other programs). ``share`` is the fraction of the device this process may use (a Ray
    task given half a GPU: 0.5, so that two such tasks stay within the budget together). The
    budget depends on what is free when it is read: :class:`~semlens.pipeline.WindowRunner` reads
    it once per run, and an explicit budget (``memory_budget=``, ``--memory-budget``) makes the
    choice between whole frames and tiles the same on every run."""
    if not 0 < share <= 1:
        raise ValueError(f"the device share must be in (0, 1], got {share}")
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        free, _ = torch.cuda.mem_get_info(device)
        free += max(0, torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
        return int(share * min(0.6 * total, 0.9 * free))
    available = available_memory_bytes()
    whole = FALLBACK_CPU_BUDGET if available is None else available // 2
    return max(MIN_CPU_BUDGET, int(share * whole))


_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


def parse_memory_size(text: str | int) -> int:
    """A memory size as bytes: plain bytes (``2147483648``) or a number with a unit, ``K``, ``M``,
    ``G`` or ``T``, optionally followed by ``B`` or ``iB`` (``512M``, ``4G``, ``1.5GiB``, ``4 GB``;
    case does not matter). Every unit is a power of 1024. ``ValueError`` for anything else and for
    sizes below one byte."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = float(text)
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([kmgtKMGT]?)(?:i?[bB])?\s*", str(text))
        if match is None:
            raise ValueError(f"{text!r} is not a memory size; use bytes or a number with K, M, G or T "
                             "(e.g. 512M, 4G, 1.5GiB)")
        value = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if not math.isfinite(value) or value < 1:
        raise ValueError(f"a memory size must be at least one byte, got {text!r}")
    return int(value)


def auto_tile_for(model: PixelEnhancer, x: Tensor, budget_bytes: int, dtype: torch.dtype | None = None,
                  overlap: int = DEFAULT_TILE_OVERLAP) -> int:
    """:func:`auto_tile_size` for ``model`` on the window ``x`` ``(B, T, 3, h, w)`` with the
    model's own configuration; ``dtype`` is the autocast dtype (``None`` = float32), ``overlap`` the
    tile overlap that will be used. The tile is never below :func:`smallest_tile` (twice the
    overlap), so the overlap is kept whole."""
    b, t, _, h, w = x.shape
    config: EnhancerConfig | None = getattr(model, "config", None)
    if config is None:  # an unknown wrapper: assume the large defaults
        config = EnhancerConfig.preset("base")
    size = 2 if dtype in (torch.float16, torch.bfloat16) else 4
    return auto_tile_size(h, w, b * t, config.channels, budget_bytes, scale=config.scale,
                          radius=config.radius if config.use_image else 0, heads=config.heads,
                          bytes_per_value=size, overlap=overlap)


# -- out-of-memory retry ----------------------------------------------------------------------------

_OOM_TYPES: tuple[type[BaseException], ...] = (MemoryError,) + (
    (torch.OutOfMemoryError,) if hasattr(torch, "OutOfMemoryError") else ())
_OOM_WORDS = ("out of memory", "can't allocate memory", "cannot allocate memory")


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` reports an exhausted device or host allocator (CUDA OOM, the CPU allocator's
    ``can't allocate memory``, or Python's :class:`MemoryError`)."""
    if isinstance(exc, _OOM_TYPES):
        return True
    return isinstance(exc, RuntimeError) and any(word in str(exc).lower() for word in _OOM_WORDS)


def release_memory(device: torch.device) -> None:
    """Hand the caching allocator's free blocks back after an out-of-memory error (CUDA only)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()



def smallest_tile(tile_overlap: int, min_tile: int = MIN_TILE) -> int:
    """The smallest tile the automatic size and the out-of-memory retry use with ``tile_overlap``:
    twice the overlap (and at least ``min_tile``), so the overlap is never cut to make tiles
    advance: below that the run fails and says so."""
    return max(min_tile, 2 * tile_overlap)


def smaller_tile(current: int, h: int, w: int, tile_overlap: int, min_tile: int = MIN_TILE) -> int | None:
    """The tile to try after running out of memory with ``current`` (``0`` = whole frames): half
    of it (of the longer side for whole frames), but not below :func:`smallest_tile`; ``None`` when
    ``current`` already is that small."""
    side = current if 0 < current < max(h, w) else max(h, w)
    floor = smallest_tile(tile_overlap, min_tile)
    if side <= floor:
        return None
    return max(side // 2, floor)


def oom_message(tile: int, error: str, device: torch.device, dtype: torch.dtype | None, tile_overlap: int,
                min_tile: int = MIN_TILE) -> str:
    """The final out-of-memory error's text: what was tried and what may help, without advice
    that is already followed (``--dtype fp16`` when a half-precision dtype is on, ...)."""
    what = f"{tile}-pixel tiles and one window per batch" if tile else "whole frames and one window per batch"
    hints = ["a shorter --window"]
    if device.type == "cuda" and dtype not in (torch.float16, torch.bfloat16):
        hints.append("--dtype fp16 (or bf16)")
    if smallest_tile(tile_overlap, min_tile) > min_tile:
        hints.append(f"a smaller --tile-overlap (tiles stop at {smallest_tile(tile_overlap, min_tile)} pixels, "
                     f"twice the overlap of {tile_overlap})")
    hints.append("free memory used by other programs" + (" on the GPU" if device.type == "cuda" else ""))
    return f"out of memory even with {what} ({error}); try " + ", ".join(hints)


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def attempt(fn: Callable[..., T], *args: Any) -> tuple[bool, T | None, str]:
    """``fn(*args)`` as ``(True, value, "")``, or ``(False, None, first line of the error)`` when it ran
    out of memory; other errors pass. The failed call's frames (and the tensors they hold) are gone
    when this returns, so :func:`release_memory` can free them."""
    try:
        return True, fn(*args), ""
    except Exception as exc:  # only out-of-memory errors are caught, see below
        if not is_out_of_memory(exc):
            raise
        message = _first_line(exc)
    return False, None, message


def _autocast_dtype(device: torch.device) -> torch.dtype | None:
    if torch.is_autocast_enabled(device.type):
        return torch.get_autocast_dtype(device.type)
    return None


def tiled_forward_with_retry(model: PixelEnhancer, x: Tensor, semantics: Semantics | None, tile: int,
                             tile_overlap: int, *, min_tile: int = MIN_TILE,
                             emit: tuple[int, int] | None = None) -> Tensor:
    """:func:`tiled_forward`, halving the tile after every out-of-memory error (``tile <= 0`` tries
    whole frames first, then half the longer side). Every frame is still produced; the tile does not
    go below :func:`smallest_tile` (twice ``tile_overlap``: the overlap is never cut to make tiles
    advance), and when that does not fit either a :class:`~semlens.errors.SemlensError` says so.
    """
    h, w = x.shape[-2:]
    current = tile if 0 < tile < max(h, w) else 0
    while True:
        ok, y, message = attempt(tiled_forward, model, x, semantics, current, tile_overlap, emit)
        if ok:
            assert y is not None
            return y
        release_memory(x.device)
        smaller = smaller_tile(current, h, w, tile_overlap, min_tile)
        if smaller is None:
            raise SemlensError(oom_message(current or max(h, w), message, x.device, _autocast_dtype(x.device),
                                           tile_overlap, min_tile)) from None
        logger.warning("out of memory with %s; retrying with %d-pixel tiles",
                       f"{current}-pixel tiles" if current else "whole frames", smaller)
        current = smaller
