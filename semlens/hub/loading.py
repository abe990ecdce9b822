"""Finding and loading models: resolution of a source, verified download and strict loading.

``resolve(source)`` finds the weights of a model; ``load_model(source)`` builds the
:class:`~semlens.enhancer.PixelEnhancer` and loads them strictly. A *source* is one of:

- a registry name (``semlens-tiny-x4``; see :func:`list_models`), looked up in this order: the
  file bundled with the package, the Hugging Face cache, a download pinned to the spec's revision;
- a local ``.safetensors`` file (config embedded, or ``config.json`` / ``<stem>.json`` next to it),
  a ``.pth`` state dict with such a JSON next to it, or a folder with ``config.json`` +
  ``model.safetensors``;
- a Hub repo id ``user/repo`` or ``user/repo@revision`` holding ``config.json`` +
  ``model.safetensors``.

An existing path always wins over a repo id; a registry name wins over a same-named folder in the
current directory (write ``./name`` for the folder). The file format is described in
:mod:`semlens.hub.format`, download rules in :mod:`semlens.hub.fetch`, the registry in
:mod:`semlens.hub.specs`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from semlens.errors import ModelNotFoundError, WeightsError
from semlens.hub.fetch import ProgressCallback, cached_file, fetch_file, sha256_file, snapshot_commit
from semlens.hub.format import (
    CONFIG_NAME,
    TORCH_SUFFIXES,
    WEIGHTS_NAME,
    check_shapes,
    describe_config_difference,
    expected_shapes,
    load_strict,
    read_meta_file,
    read_safetensors_meta,
    read_weights,
    safetensors_parameter_count,
    stored_shapes,
)
from semlens.hub.specs import DEFAULT_MODELS, ModelSpec, known_names, lookup, registry, sam_spec

if TYPE_CHECKING:
    from semlens.enhancer import EnhancerConfig, PixelEnhancer
    from semlens.semantics import InstanceExtractor

__all__ = [
    "ModelInfo",
    "ResolvedModel",
    "LoadedModel",
    "list_models",
    "resolve",
    "load_model",
    "download",
    "resolve_sam_checkpoint",
    "load_extractor",
    "bundled_path",
]

Origin = Literal["path", "bundled", "cached", "downloaded"]
Status = Literal["bundled", "cached", "remote", "missing"]

_REPO_RE = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[\w.-]+)(?:@(?P<rev>[\w./-]+))?$")


@dataclass(frozen=True)
class ModelInfo:
    """One line of :func:`list_models`.

    ``status``: ``"bundled"`` (shipped in the package), ``"cached"`` (in the Hugging Face cache),
    ``"remote"`` (downloadable), ``"missing"`` (registered but no weights anywhere; only listed
    with ``include_unavailable=True``). ``parameters`` is ``None`` for extractor checkpoints;
    ``size`` is the file size in bytes when known exactly; otherwise ``approx_size`` may give a
    rounded size (e.g. 1.25 GB for a file whose exact size is not pinned). ``any_extractor``: the
    network pools its own tokens, so any extractor drives it (``extractor`` is its default one).
    """

    name: str
    kind: str
    scale: int | None
    parameters: int | None
    extractor: str
    status: Status
    size: int | None
    description: str
    default: bool = False
    approx_size: int | None = None
    any_extractor: bool = False


@dataclass(frozen=True)
class ResolvedModel:
    """Where a model's files are: ``weights`` (.safetensors or .pth), the ``config`` JSON next to
    it if any, the registry ``spec`` (``None`` for paths and repo ids) and how it was found."""

    weights: Path
    config: Path | None
    spec: ModelSpec | None
    origin: Origin
    source: str


@dataclass
class LoadedModel:
    """A ready network: ``model`` (in eval mode, on the requested device), its semlens config
    ``meta`` (see :mod:`semlens.hub.format`), the registry ``spec`` if loaded by name, and the
    weights ``path``."""

    model: PixelEnhancer
    meta: dict[str, Any]
    spec: ModelSpec | None
    path: Path

    @property
    def config(self) -> EnhancerConfig:
        """The network's :class:`~semlens.enhancer.EnhancerConfig`."""
        return self.model.config

    @property
    def name(self) -> str:
        return str(self.meta.get("name") or (self.spec.name if self.spec else self.path.stem))

    @property
    def scale(self) -> int:
        return int(self.meta["scale"])

    @property
    def extractor(self) -> str:
        """The extractor the network was trained with (use the same one at inference)."""
        return str(self.meta["extractor"])

    @property
    def window(self) -> int:
        return int(self.meta["window"])

    @property
    def overlap(self) -> int:
        return int(self.meta["overlap"])


# ---------------------------------------------------------------------------------------------
# Where files are
# ---------------------------------------------------------------------------------------------


def _weights_root() -> Any:
    """The package data folder of bundled weights (``semlens.weights``; the repo's ``weights/``)."""
    return resources.files("semlens.weights")


def bundled_path(spec: ModelSpec) -> Path | None:
    """The file shipped in ``semlens.weights`` for ``spec``, if it really exists."""
    if spec.bundled is None:
        return None
    try:
        entry = _weights_root().joinpath(spec.bundled)
        if entry.is_file():
            return Path(str(entry))
    except (ModuleNotFoundError, FileNotFoundError, NotADirectoryError):
        return None
    return None


def _spec_cached(spec: ModelSpec) -> Path | None:
    if spec.repo_id is None or spec.filename is None or spec.revision is None:
        return None
    return cached_file(spec.repo_id, spec.filename, spec.revision)


def _spec_status(spec: ModelSpec) -> Status:
    if bundled_path(spec) is not None:
        return "bundled"
    if _spec_cached(spec) is not None:
        return "cached"
    return "remote" if spec.is_remote else "missing"


def _fetch_spec(spec: ModelSpec, progress: ProgressCallback | None = None, force: bool = False) -> tuple[Path, Origin]:
    assert spec.repo_id and spec.filename and spec.revision
    path, origin = fetch_file(
        spec.repo_id, spec.filename, spec.revision,
        label=spec.name, sha256=spec.sha256, size=spec.size, progress=progress, force=force,
    )
    return path, "cached" if origin == "cached" else "downloaded"


def _resolve_spec(spec: ModelSpec, progress: ProgressCallback | None = None) -> ResolvedModel:
    if spec.kind != "enhancer":
        raise ModelNotFoundError(
            f"{spec.name} holds extractor weights, not an upscaling model; use it as the extractor "
            f"(extractor='{spec.extractor}') with a model from: {', '.join(known_names('enhancer'))}"
        )
    bundled = bundled_path(spec)
    if bundled is not None:
        if spec.sha256 is not None:
            if sha256_file(bundled) != spec.sha256:
                raise WeightsError(f"{bundled}: the bundled weights of {spec.name} fail their sha256 check; reinstall semlens")
        return ResolvedModel(bundled, None, spec, "bundled", spec.name)
    if not spec.is_remote:
        raise ModelNotFoundError(
            f"{spec.name} is registered but its weights are not installed (the bundled file "
            f"{spec.bundled} is missing from semlens.weights); reinstall semlens or pass a weights file"
        )
    path, origin = _fetch_spec(spec, progress)
    return ResolvedModel(path, None, spec, origin, spec.name)


def _sidecar_config(weights: Path) -> Path | None:
    for candidate in (weights.with_suffix(".json"), weights.parent / CONFIG_NAME):
        if candidate.is_file() and candidate != weights:
            return candidate
    return None


def _resolve_path(path: Path, source: str) -> ResolvedModel:
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        config = path / CONFIG_NAME
        if not weights.is_file():
            raise ModelNotFoundError(f"{path} is a folder without {WEIGHTS_NAME}; a model folder holds {CONFIG_NAME} + {WEIGHTS_NAME}")
        return ResolvedModel(weights, config if config.is_file() else None, None, "path", source)
    suffix = path.suffix.lower()
    if suffix != ".safetensors" and suffix not in TORCH_SUFFIXES:
        raise WeightsError(f"{path}: unknown weights format (expected .safetensors, a .pth state dict, or a model folder)")
    return ResolvedModel(path, _sidecar_config(path), None, "path", source)


def _resolve_repo(repo_id: str, revision: str, source: str, progress: ProgressCallback | None = None,
                  force: bool = False) -> ResolvedModel:
    """Both files of a model repo, from one commit: ``revision`` (a branch) is resolved to a commit
    with the weights, and ``config.json`` is taken from that same commit. Each file is checked
    against the id the Hub reports for it (see :mod:`semlens.hub.fetch`)."""
    weights, origin = fetch_file(repo_id, WEIGHTS_NAME, revision, label=source, progress=progress, force=force)
    commit = snapshot_commit(weights) or revision
    config, _ = fetch_file(repo_id, CONFIG_NAME, commit, label=source, progress=progress, force=force)
    return ResolvedModel(weights, config, None, "cached" if origin == "cached" else "downloaded", source)


def _looks_like_path(text: str) -> bool:
    return (
        os.sep in text
        or (os.altsep is not None and os.altsep in text)
        or text.startswith((".", "~"))
        or Path(text).suffix.lower() in (".safetensors", ".json", *TORCH_SUFFIXES)
    )


def resolve(source: str | os.PathLike[str], *, progress: ProgressCallback | None = None) -> ResolvedModel:
    """Find the weights of ``source`` (registry name, path, or Hub repo id ``user/repo[@rev]``),
    downloading them if needed (and allowed). See the module docstring for the order."""
    if isinstance(source, os.PathLike):
        path = Path(source)
        if not path.exists():
            raise ModelNotFoundError(f"model path {path} does not exist")
        return _resolve_path(path, str(source))
    text = str(source).strip()
    if not text:
        raise ModelNotFoundError(f"empty model name; known models: {', '.join(known_names())}")
    path = Path(text).expanduser()
    spec = lookup(text)
    if path.exists() and (spec is None or _looks_like_path(text)):
        return _resolve_path(path, text)
    if spec is not None:
        return _resolve_spec(spec, progress)
    match = _REPO_RE.match(text)
    if match and path.suffix.lower() not in (".safetensors", *TORCH_SUFFIXES):
        return _resolve_repo(match["repo"], match["rev"] or "main", text, progress)
    if _looks_like_path(text):
        raise ModelNotFoundError(f"model path {text} does not exist")
    raise ModelNotFoundError(
        f"unknown model {text!r}: not a registered name (known: {', '.join(known_names())}), "
        "an existing file or folder, or a Hub repo id (user/repo[@revision])"
    )


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------


def _choose_meta(resolved: ResolvedModel, embedded: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The config to build the network from, and the other config recorded for the weights
    (compared against it), from: the embedded one, the JSON next to the file, the registry spec."""
    where = str(resolved.weights)
    sidecar = read_meta_file(resolved.config) if resolved.config is not None else None
    spec = resolved.spec
    declared: dict[str, Any] | None = None
    if sidecar is not None:
        declared = sidecar
    elif spec is not None and spec.enhancer is not None:
        declared = {
            "name": spec.name, "scale": spec.scale, "enhancer": spec.enhancer_dict(),
            "extractor": spec.extractor, "window": spec.window, "overlap": spec.overlap,
        }
    if embedded is not None and declared is not None and dict(embedded["enhancer"]) != dict(declared["enhancer"]):
        what = f"registry entry {spec.name}" if sidecar is None and spec is not None else str(resolved.config)
        raise WeightsError(
            f"{where}: architecture mismatch between the weights' embedded config and the {what} "
            f"(weights vs declared: {describe_config_difference(embedded['enhancer'], declared['enhancer'])})"
        )
    meta = embedded or declared
    if meta is None:
        raise WeightsError(
            f"{where}: no semlens config found (none embedded, no {CONFIG_NAME} or {resolved.weights.stem}.json next to it); "
            "save models with semlens.hub.save_model or add the config JSON"
        )
    meta = dict(meta)
    if spec is not None:
        if meta.get("extractor") != spec.extractor:
            raise WeightsError(f"{where}: trained with extractor {meta.get('extractor')!r} but {spec.name} declares {spec.extractor!r}")
        meta.setdefault("name", spec.name)
    other = declared if embedded is not None else None
    return meta, other


def load_model(source: str | os.PathLike[str], device: str | Any = "cpu", *,
               progress: ProgressCallback | None = None) -> LoadedModel:
    """Resolve ``source`` and build its :class:`~semlens.enhancer.PixelEnhancer` with the weights
    loaded strictly, in eval mode on ``device``.

    Raises :class:`ModelNotFoundError` (cannot resolve), :class:`DownloadError` (network or
    checksum) or :class:`WeightsError` (corrupt, truncated, unsafe or mismatched weights).
    """
    from semlens.enhancer import EnhancerConfig, PixelEnhancer

    resolved = resolve(source, progress=progress)
    where = str(resolved.weights)
    # The file is untrusted: its config (values checked against CONFIG_LIMITS when read) and its
    # tensor names and shapes (a safetensors header; a .pth file is loaded safely first) must agree
    # before the network is built, so a bad file cannot make the loader allocate without limit.
    state: dict[str, Any] | None = None
    if resolved.weights.suffix.lower() == ".safetensors":
        found = stored_shapes(resolved.weights)
        embedded = read_safetensors_meta(resolved.weights)
    else:
        state, embedded = read_weights(resolved.weights)
        found = {k: tuple(v.shape) for k, v in state.items()}
    meta, other = _choose_meta(resolved, embedded)
    config = EnhancerConfig.from_dict(dict(meta["enhancer"]))
    file_config = dict(other["enhancer"]) if other else None
    check_shapes(expected_shapes(config.to_dict()), found, where=where, config=config.to_dict(),
                 file_config=file_config)
    if state is None:
        state, _ = read_weights(resolved.weights)
    model = PixelEnhancer(config)
    load_strict(model, state, where=where, config=config.to_dict(), file_config=file_config)
    model.eval()
    model.to(device)
    return LoadedModel(model=model, meta=meta, spec=resolved.spec, path=resolved.weights)


# ---------------------------------------------------------------------------------------------
# Listing and downloading
# ---------------------------------------------------------------------------------------------


def _count_parameters(spec: ModelSpec, path: Path | None) -> int | None:
    if spec.kind != "enhancer":
        return None
    if path is not None and path.suffix == ".safetensors":
        try:
            return safetensors_parameter_count(path)
        except WeightsError:
            pass
    total = 0
    for shape in expected_shapes(spec.enhancer_dict()).values():  # no memory, no initialisation cost
        count = 1
        for dim in shape:
            count *= dim
        total += count
    return total


def list_models(*, include_extractors: bool = False, include_unavailable: bool = False) -> list[ModelInfo]:
    """The registered models whose weights exist (bundled or cached) or can be downloaded.

    Upscaling models only by default; ``include_extractors`` adds the SAM checkpoints, and
    ``include_unavailable`` also lists registered models without weights (status ``"missing"``).
    Never touches the network.
    """
    infos = []
    for spec in registry().values():
        if spec.kind == "extractor" and not include_extractors:
            continue
        status = _spec_status(spec)
        if status == "missing" and not include_unavailable:
            continue
        path = bundled_path(spec) if status == "bundled" else _spec_cached(spec) if status == "cached" else None
        size = path.stat().st_size if path is not None else spec.size
        infos.append(
            ModelInfo(
                name=spec.name, kind=spec.kind, scale=spec.scale, parameters=_count_parameters(spec, path),
                extractor=spec.extractor, status=status, size=size, description=spec.description,
                default=spec.name in DEFAULT_MODELS.values(), approx_size=None if size is not None else spec.approx_size,
                any_extractor=(spec.enhancer or {}).get("token_source") == "pooled",
            )
        )
    return infos


def download(name: str, *, progress: ProgressCallback | None = None, force: bool = False) -> ResolvedModel:
    """Make ``name`` available offline: a registry name (SAM checkpoints included, e.g.
    ``sam-vit-b``) or a Hub repo id ``user/repo[@rev]``. Bundled models need nothing and are
    returned as they are; ``force`` downloads again even if cached."""
    text = name.strip()
    spec = lookup(text)
    if spec is None and _REPO_RE.match(text) is None:
        try:
            spec = sam_spec(text)  # "vit_b" and friends
        except ModelNotFoundError:
            raise ModelNotFoundError(
                f"unknown model {text!r}: not a registered name (known: {', '.join(known_names())}) "
                "or a Hub repo id (user/repo[@revision])"
            ) from None
    if spec is None:
        match = _REPO_RE.match(text)
        assert match is not None
        resolved = _resolve_repo(match["repo"], match["rev"] or "main", text, progress, force)
        assert resolved.config is not None
        read_meta_file(resolved.config)
        return resolved
    if spec.kind == "enhancer" and bundled_path(spec) is not None:
        return _resolve_spec(spec)
    if not spec.is_remote:
        return _resolve_spec(spec)  # raises: registered, not installed, nowhere to download
    path, origin = _fetch_spec(spec, progress, force)
    return ResolvedModel(path, None, spec, origin, spec.name)


def resolve_sam_checkpoint(variant: str, path: str | os.PathLike[str] | None = None, *,
                           progress: ProgressCallback | None = None) -> Path:
    """The local path of the SAM checkpoint ``variant`` (``"vit_b"``, ``"vit_l"``, ``"vit_h"``).

    An explicit ``path`` wins (it must exist; it is not checksummed, so fine-tuned checkpoints
    work); otherwise the Hugging Face cache, otherwise a download, both checked against the
    official sha256. Offline and not cached raises :class:`ModelNotFoundError` naming
    ``semlens download sam-vit-X``.
    """
    spec = sam_spec(variant)
    if path is not None:
        explicit = Path(path).expanduser()
        if not explicit.is_file():
            raise ModelNotFoundError(f"SAM checkpoint {explicit} does not exist; omit the path to use `semlens download {spec.name}`")
        return explicit
    found, _ = _fetch_spec(spec, progress)
    return found


def load_extractor(name: str, checkpoint: str | os.PathLike[str] | None = None, *,
                   progress: ProgressCallback | None = None, **options: Any) -> InstanceExtractor:
    """Build the extractor ``name`` (``lite``, ``none``, ``sam-vit-b``, ...) ready to run.

    A SAM extractor gets the path from :func:`resolve_sam_checkpoint` (``checkpoint`` wins, else
    the Hugging Face cache, else a verified download); ``options`` go to
    :func:`semlens.semantics.build_extractor`.
    """
    from semlens.semantics import EXTRACTORS, build_extractor

    if name.startswith("sam-") and name in EXTRACTORS:
        options["checkpoint"] = resolve_sam_checkpoint(name, checkpoint, progress=progress)
    elif checkpoint is not None:
        raise ValueError(f"the extractor {name!r} takes no checkpoint")
    return build_extractor(name, **options)
