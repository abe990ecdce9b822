"""Where the videos of a folder are upscaled: in this process, or by an executor (Ray, ...).

An executor is an object with a :meth:`FolderExecutor.run` method: it upscales ``(input, output)``
pairs with an upscaler and returns one result per pair, in order, as a local folder run does.
:meth:`~semlens.upscaler.SemanticLensUpscaler.upscale_folder` takes one (``executor=...``), or the
name of a registered one (``executor="ray"``).

This module sits below both the upscaler and the executors: it imports neither. An executor's
module registers its name here when it is imported (:func:`register_executor`); a name that is
not registered yet is looked up in :data:`PROVIDERS` (the module that registers it), which is
imported then. So the upscaler never imports :mod:`semlens.distributed`, which imports the upscaler.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

__all__ = ["FolderExecutor", "ExecutorFactory", "PROVIDERS", "register_executor", "get_executor",
           "executor_names"]


@runtime_checkable
class FolderExecutor(Protocol):
    """Upscales a folder's videos somewhere other than the calling process."""

    def run(self, up: Any, pairs: Sequence[tuple[Path, Path]], *, overwrite: bool = False,
            skip_existing: bool = False, on_start: Callable[[Path, Path], None] | None = None,
            on_result: Callable[[Any], None] | None = None,
            progress: Callable[[int, int | None], None] | None = None, **video_options: Any) -> list[Any]:
        """Upscale each ``(input, output)`` of ``pairs`` with the upscaler ``up``; return their
        :class:`~semlens.upscaler.UpscaleResult` in the order of ``pairs`` (a video that fails
        has ``status == "failed"`` and does not stop the others). ``video_options`` are those of
        :meth:`~semlens.upscaler.SemanticLensUpscaler.upscale_video`."""
        ...


#: builds the executor of a name from its options (``None``: the executor's defaults)
ExecutorFactory = Callable[[Any], FolderExecutor]

#: executor name -> the module that registers it when imported
PROVIDERS: dict[str, str] = {"ray": "semlens.distributed"}

_FACTORIES: dict[str, ExecutorFactory] = {}


def register_executor(name: str, factory: ExecutorFactory) -> None:
    """Make ``upscale_folder(executor=name, ...)`` use ``factory(options)``; replaces an earlier
    registration of ``name``. ``"local"`` is the calling process and cannot be registered."""
    if name == "local":
        raise ValueError("'local' is the calling process, not a registered executor")
    _FACTORIES[name] = factory


def executor_names() -> list[str]:
    """The names ``upscale_folder`` accepts: ``local``, then the registered and known executors."""
    return ["local", *sorted(set(_FACTORIES) | set(PROVIDERS))]


def get_executor(name: str, options: Any = None) -> FolderExecutor:
    """The executor registered as ``name``, built with ``options``; ``ValueError`` for a name
    that is not registered."""
    if name not in _FACTORIES and name in PROVIDERS:
        importlib.import_module(PROVIDERS[name])
    factory = _FACTORIES.get(name)
    if factory is None:
        names = ", ".join(repr(n) for n in executor_names())
        raise ValueError(f"unknown executor {name!r}; use one of {names} or an executor object")
    return factory(options)
