"""Models by name: registry, resolution, verified download, safe file format and export.

The public names live here; the parts are:

- :mod:`semlens.hub.specs`: every model semlens knows by name (:class:`ModelSpec`);
- :mod:`semlens.hub.fetch`: verified downloads into the Hugging Face cache;
- :mod:`semlens.hub.format`: the self-describing weights file format and strict loading;
- :mod:`semlens.hub.loading`: resolving a source (name, path, repo id) and building the network;
- :mod:`semlens.hub.export`: writing (and pushing) a Hub-ready model folder.

Each part imports only the ones listed before it.
"""

from semlens.hub.export import ExportResult, export_model
from semlens.hub.format import save_model
from semlens.hub.loading import (
    LoadedModel,
    ModelInfo,
    ResolvedModel,
    bundled_path,
    download,
    list_models,
    load_extractor,
    load_model,
    resolve,
    resolve_sam_checkpoint,
)
from semlens.hub.specs import DEFAULT_MODEL, DEFAULT_MODELS, ModelSpec, get_spec, registry

__all__ = [
    "DEFAULT_MODEL",
    "DEFAULT_MODELS",
    "ModelSpec",
    "ModelInfo",
    "ResolvedModel",
    "LoadedModel",
    "ExportResult",
    "registry",
    "get_spec",
    "list_models",
    "resolve",
    "load_model",
    "save_model",
    "export_model",
    "download",
    "resolve_sam_checkpoint",
    "load_extractor",
    "bundled_path",
]
