"""``--compile``: ``torch.compile`` on the enhancer's per-frame stages, not on the whole network
(see :func:`compile_network`)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from torch import nn

from semlens.enhancer.blocks import ResidualBlock
from semlens.enhancer.gps import GlobalPerspectiveShifter
from semlens.enhancer.image import ImplicitMaskedAlignment
from semlens.enhancer.isee import InstanceSpecificSemanticEmbedding

__all__ = ["compile_network", "compiled_stages", "is_compiled"]


def compiled_stages(model: nn.Module) -> list[nn.Module]:
    """The modules :func:`compile_network` compiles in ``model`` (a
    :class:`~semlens.enhancer.PixelEnhancer`): the shallow feature extractor, IMAGE's alignment,
    GPS, ISEE's attention (its owner module), the SPACE blocks' residual bodies and the
    reconstruction."""
    kinds = (ImplicitMaskedAlignment, GlobalPerspectiveShifter, InstanceSpecificSemanticEmbedding, ResidualBlock)
    found: list[nn.Module] = [m for m in (getattr(model, "extract", None), getattr(model, "upsample", None))
                              if isinstance(m, nn.Module)]
    inside = {id(sub) for m in found for sub in m.modules()}
    found += [m for m in model.modules() if isinstance(m, kinds) and id(m) not in inside]
    return found


def compile_network(model: nn.Module, **options: Any) -> nn.Module:
    """Compile ``model``'s per-frame stages with ``torch.compile`` (``options``, e.g. ``backend``,
    are passed on; ``dynamic=True`` unless given) and return ``model`` itself, its weights and
    state-dict keys unchanged.

    The whole network is not compiled: its forward loops over the window's frames in Python, so a
    compiled whole would be traced again for every window length, emitted range, batch size, tile
    size and tiling pass (each one a new graph, and past torch's cache limit of 8 silently eager).
    Each stage here sees one frame's (or tile's) tensors whatever the window, traced with dynamic
    sizes and without "duck sizing" (which would tie sizes that happen to be equal, such as a
    square tile's sides), so tile and frame sizes, emitted ranges and window counts add no graph.
    What still does: a batch of one window against several (torch specialises sizes of 1), the
    first frame of a window against the others (its views start at offset 0) and whole frames
    against tiles; a few graphs per stage in all, made during the first windows. ISEE's token
    pooling stays eager: it takes the tiling's pooling state and runs in float32.
    """
    import torch

    options.setdefault("dynamic", True)
    for module in compiled_stages(model):
        name = "attend" if hasattr(module, "attend") else "forward"  # ISEE: the attention only
        setattr(module, name, _shape_stable(torch.compile(getattr(module, name), **options)))
    model.semlens_compiled = True  # read by is_compiled
    return model


def is_compiled(model: nn.Module) -> bool:
    """Whether ``model`` went through :func:`compile_network` (or is a ``torch.compile`` wrapper)."""
    return bool(getattr(model, "semlens_compiled", False)) or hasattr(model, "_orig_mod")


def _shape_stable(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` traced (when it is) without duck sizing."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        with _no_duck_sizing():
            return fn(*args, **kwargs)

    return call


def _no_duck_sizing() -> contextlib.AbstractContextManager[Any]:
    try:
        from torch.fx.experimental import _config as fx_config

        return fx_config.patch(use_duck_shape=False)  # type: ignore[no-any-return]
    except (ImportError, AttributeError):  # a torch without the switch: duck sizing stays
        return contextlib.nullcontext()
