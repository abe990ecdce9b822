"""The semlens model file format: reading and writing weights safely.

A semlens model is a ``.safetensors`` file whose ``__metadata__`` holds ``"semlens_config"``, a
JSON string::

    {"format": "semlens", "format_version": 1, "name": "semlens-tiny-x4", "scale": 4,
     "enhancer": EnhancerConfig.to_dict(), "extractor": "lite", "window": 12, "overlap": 2,
     ... optional: "description", "training" (the recipe), "eval" (metrics), ...}

A model *folder* (local or a Hub repo) holds ``config.json`` (the same JSON) and
``model.safetensors``. A ``.pth`` state dict is also accepted, with its config in a JSON file
next to it; it is only ever read with ``torch.load(..., weights_only=True)``.

Loading is strict: every key of the network must be in the file and nothing else, with the same
shapes; otherwise :class:`~semlens.errors.WeightsError` says which keys and configurations differ.
A file is untrusted input, so this is checked before the network is built: the config's values must
lie within :data:`CONFIG_LIMITS`, and the tensor names and shapes stored in the file (a safetensors
header is read without the data) must be those the config implies (:func:`expected_shapes`, which
builds the network on the ``meta`` device and allocates nothing).
"""

from __future__ import annotations

import json
import os
import pickle
import re
import struct
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from semlens.errors import WeightsError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "META_KEY",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "TORCH_SUFFIXES",
    "complete_meta",
    "validate_meta",
    "read_meta_file",
    "read_safetensors_meta",
    "safetensors_parameter_count",
    "read_weights",
    "CONFIG_LIMITS",
    "WINDOW_LIMIT",
    "stored_shapes",
    "expected_shapes",
    "check_shapes",
    "load_strict",
    "describe_config_difference",
    "save_model",
    "write_folder",
    "atomic_write_bytes",
]

FORMAT = "semlens"
FORMAT_VERSION = 1
#: Key of the JSON config inside the safetensors ``__metadata__``.
META_KEY = "semlens_config"
#: File names inside a model folder / Hub repo.
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
#: Suffixes read with ``torch.load(weights_only=True)``.
TORCH_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin")

_DEFAULTS: dict[str, Any] = {"extractor": "lite", "window": 12, "overlap": 2}

#: Accepted range of each integer field of a network configuration read from a file. The ``base``
#: preset (128 channels, 8 blocks per direction) is well inside; anything outside would make the
#: network (or its activations) unreasonably large and is refused before anything is built.
CONFIG_LIMITS: dict[str, tuple[int, int]] = {
    "scale": (2, 4),
    "channels": (1, 1024),
    "extract_blocks": (0, 64),
    "backward_blocks": (0, 64),
    "forward_blocks": (0, 64),
    "radius": (1, 8),
    "motion_search": (0, 32),
    "align_dim": (1, 1024),
    "token_dim": (1, 1024),
    "heads": (1, 64),
    "instance_dim": (1, 4096),
    "global_dim": (1, 4096),
}
_SWITCHES = ("use_image", "use_gps", "use_isee", "instance_motion", "mask_occlusion")
#: The longest recommended window (frames) a file may declare.
WINDOW_LIMIT = 512
# Keys of a training checkpoint (a dict) that may hold the state dict / the config, in order.
_STATE_KEYS = ("state_dict", "model", "params_ema", "params", "ema")
_META_KEYS = (META_KEY, "meta", "config")


def _one_line(text: object, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


# ---------------------------------------------------------------------------------------------
# The config (metadata)
# ---------------------------------------------------------------------------------------------


def complete_meta(meta: Mapping[str, Any] | None, model: nn.Module | None = None) -> dict[str, Any]:
    """Fill in ``format``/``format_version``, the network config of ``model`` (its ``.config``),
    ``scale`` and the defaults (``extractor="lite"``, ``window=12``, ``overlap=2``)."""
    out: dict[str, Any] = dict(meta or {})
    out["format"] = FORMAT
    out["format_version"] = FORMAT_VERSION
    config = getattr(model, "config", None) if model is not None else None
    if config is not None and hasattr(config, "to_dict"):
        net = config.to_dict()
        if "enhancer" in out and dict(out["enhancer"]) != net:
            raise WeightsError(
                f"the metadata's network config differs from the model's: {describe_config_difference(out['enhancer'], net)}"
            )
        out["enhancer"] = net
    if "enhancer" in out and "scale" not in out:
        out["scale"] = out["enhancer"].get("scale")
    for key, value in _DEFAULTS.items():
        out.setdefault(key, value)
    out.setdefault("name", "semlens-custom")
    return out


def validate_meta(meta: Any, where: str) -> dict[str, Any]:
    """Check a semlens config (parsed JSON) and return it; :class:`WeightsError` otherwise.

    ``where`` names the file it came from, for the message.
    """
    from semlens.enhancer.config import EnhancerConfig

    if not isinstance(meta, Mapping):
        raise WeightsError(f"{where}: the semlens config is not a JSON object")
    if meta.get("format") != FORMAT:
        raise WeightsError(f"{where}: not a semlens model config (format is {meta.get('format')!r}, expected 'semlens')")
    version = meta.get("format_version")
    if not isinstance(version, int) or version < 1:
        raise WeightsError(f"{where}: bad format_version {version!r}")
    if version > FORMAT_VERSION:
        raise WeightsError(
            f"{where}: made by a newer semlens (format_version {version}, this one reads {FORMAT_VERSION}); upgrade semlens"
        )
    if not isinstance(meta.get("enhancer"), Mapping):
        raise WeightsError(f"{where}: the config has no 'enhancer' network configuration")
    _check_limits(meta["enhancer"], where)
    try:
        config = EnhancerConfig.from_dict(dict(meta["enhancer"]))
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"{where}: invalid network configuration: {_one_line(exc)}") from None
    out = dict(meta)
    out.setdefault("scale", config.scale)
    if out["scale"] != config.scale:
        raise WeightsError(f"{where}: scale {out['scale']} differs from the network's scale {config.scale}")
    for key, value in _DEFAULTS.items():
        out.setdefault(key, value)
    window, overlap = out["window"], out["overlap"]
    if not (isinstance(window, int) and isinstance(overlap, int) and 1 <= window <= WINDOW_LIMIT
            and 0 <= overlap < window):
        raise WeightsError(f"{where}: bad window/overlap {window!r}/{overlap!r} (window 1..{WINDOW_LIMIT}, "
                           "0 <= overlap < window)")
    return out


def _check_limits(net: Mapping[str, Any], where: str) -> None:
    """Types and ranges of a network configuration from a file (see :data:`CONFIG_LIMITS`)."""
    for key, (low, high) in CONFIG_LIMITS.items():
        if key not in net:
            continue
        value = net[key]
        if not isinstance(value, int) or isinstance(value, bool):
            raise WeightsError(f"{where}: the network config's {key} is {_one_line(repr(value), 40)}, not an integer; "
                               "the file is damaged or was not made by semlens")
        if not low <= value <= high:
            raise WeightsError(f"{where}: the network config asks for {key}={value}, outside the accepted "
                               f"{low}..{high}; the file is damaged or was not made by semlens")
    for key in _SWITCHES:
        if key in net and not isinstance(net[key], bool):
            raise WeightsError(f"{where}: the network config's {key} is {_one_line(repr(net[key]), 40)}, not true/false")


def read_meta_file(path: Path) -> dict[str, Any]:
    """Read and check a ``config.json``."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise WeightsError(f"{path}: unreadable config ({_one_line(exc)})") from None
    return validate_meta(data, str(path))


def describe_config_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """The fields where two network configs differ, as ``key a->b`` pairs on one line."""
    keys = sorted(set(a) | set(b))
    diffs = [f"{k} {a.get(k, '<unset>')!r}->{b.get(k, '<unset>')!r}" for k in keys if a.get(k) != b.get(k)]
    return ", ".join(diffs) if diffs else "identical"


def _config_text(config: Mapping[str, Any]) -> str:
    return json.dumps(dict(config), sort_keys=True, separators=(",", ":"))


# ---------------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------------


def _safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor names, dtypes, shapes, ``__metadata__``),
    checked against the file's length; :class:`WeightsError` if the file is not safetensors."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                raise WeightsError(f"{path}: not a safetensors file (only {size} bytes); re-download or re-export it")
            (length,) = struct.unpack("<Q", head)
            if length > min(size - 8, 100_000_000):
                raise WeightsError(f"{path}: corrupt or truncated safetensors header; re-download or re-export it")
            raw = fh.read(length)
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read ({_one_line(exc)})") from None
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
    except (UnicodeDecodeError, ValueError):
        raise WeightsError(f"{path}: corrupt safetensors header (not JSON); re-download or re-export it") from None
    end = 0
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise WeightsError(f"{path}: corrupt safetensors header (tensor {key!r}); re-export it") from None
    if 8 + length + end != size:
        raise WeightsError(
            f"{path}: truncated or corrupt safetensors file ({size} bytes, header says {8 + length + end}); re-download or re-export it"
        )
    return header


def read_safetensors_meta(path: Path) -> dict[str, Any] | None:
    """The embedded semlens config of a safetensors file (checked), or ``None`` if it has none."""
    metadata = _safetensors_header(path).get("__metadata__") or {}
    text = metadata.get(META_KEY)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except (TypeError, json.JSONDecodeError):
        raise WeightsError(f"{path}: the embedded semlens config is not valid JSON") from None
    return validate_meta(data, str(path))


def stored_shapes(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a safetensors file, from its header only (no tensor is read)."""
    shapes: dict[str, tuple[int, ...]] = {}
    for key, info in _safetensors_header(path).items():
        if key == "__metadata__":
            continue
        shape = info.get("shape") if isinstance(info, Mapping) else None
        if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                                  for d in shape):
            raise WeightsError(f"{path}: corrupt safetensors header (shape of tensor {_one_line(key, 60)!r}); re-export it")
        shapes[key] = tuple(shape)
    return shapes


def expected_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of the :class:`~semlens.enhancer.PixelEnhancer` built from the
    network ``config``, built on the ``meta`` device: no memory is allocated, whatever the config."""
    import torch

    from semlens.enhancer import EnhancerConfig, PixelEnhancer

    with torch.device("meta"):
        model = PixelEnhancer(EnhancerConfig.from_dict(dict(config)))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def safetensors_parameter_count(path: Path) -> int:
    """Number of values stored in a safetensors file, read from its header only."""
    total = 0
    for key, info in _safetensors_header(path).items():
        if key != "__metadata__":
            count = 1
            for dim in info.get("shape", []):
                count *= int(dim)
            total += count
    return total


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    from safetensors.torch import load_file

    meta = read_safetensors_meta(path)  # also checks the header and the length
    try:
        state = load_file(str(path), device="cpu")
    except Exception as exc:  # safetensors raises its own SafetensorError for bad files
        raise WeightsError(f"{path}: corrupt safetensors file ({_one_line(exc, 120)}); re-download or re-export it") from None
    return state, meta


def _read_torch(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    import torch

    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)|Unsupported operand[^.\n]*", str(exc))
        what = f" (it references {found.group(1)})" if found and found.group(1) else ""
        raise WeightsError(
            f"{path}: refused to load: the file holds Python objects or code, not just tensors{what}; "
            "convert it to safetensors in an environment you trust"
        ) from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise WeightsError(f"{path}: corrupt or truncated PyTorch file ({_one_line(exc, 120)}); re-download or re-export it") from None
    if not isinstance(obj, Mapping):
        raise WeightsError(f"{path}: expected a state dict (a mapping of names to tensors), got {type(obj).__name__}")
    meta: dict[str, Any] | None = None
    for key in _META_KEYS:
        value = obj.get(key)
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                continue
        if isinstance(value, Mapping) and value.get("format") == FORMAT:
            meta = validate_meta(value, str(path))
            break
    state: Any = obj
    for key in _STATE_KEYS:
        if isinstance(obj.get(key), Mapping):
            state = obj[key]
            break
    tensors = {k: v for k, v in state.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise WeightsError(f"{path}: holds no tensors; is it a semlens checkpoint?")
    return tensors, meta


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """Read a weights file safely: ``(state_dict on CPU, embedded semlens config or None)``.

    ``.safetensors`` files are read with safetensors; ``.pth``/``.pt``/``.ckpt``/``.bin`` files
    with ``torch.load(map_location="cpu", weights_only=True)``, which refuses pickled code. A
    training checkpoint (a dict with ``state_dict``/``model``/``params_ema``... and
    ``semlens_config``/``meta``/``config``) is accepted too.
    """
    path = Path(path)
    if path.suffix.lower() in TORCH_SUFFIXES:
        return _read_torch(path)
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    raise WeightsError(f"{path}: unknown weights format (expected .safetensors, or a .pth state dict)")


# ---------------------------------------------------------------------------------------------
# Strict loading into a network
# ---------------------------------------------------------------------------------------------


def _key_list(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return f"{shown}, … ({len(keys) - limit} more)" if len(keys) > limit else shown


def check_shapes(
    own: Mapping[str, tuple[int, ...]],
    found: Mapping[str, tuple[int, ...]],
    *,
    where: str,
    config: Mapping[str, Any] | None = None,
    file_config: Mapping[str, Any] | None = None,
) -> None:
    """Raise :class:`WeightsError` unless the tensors ``found`` in a file (name -> shape) are
    exactly those of the network (``own``): no key missing or extra, every shape the same.

    ``config`` is the network config ``own`` comes from and ``file_config`` the one recorded for
    the weights (if known); both are named in the error when the architecture differs.
    """
    missing = sorted(set(own) - set(found))
    unexpected = sorted(set(found) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing key(s): {_key_list(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_key_list(unexpected)}")
        raise WeightsError(
            f"{where}: the weights do not match the network ({'; '.join(parts)}); "
            "was the file saved from a different model or semlens version?"
        )
    wrong = [f"{k} {tuple(found[k])} vs {tuple(own[k])}" for k in own if tuple(found[k]) != tuple(own[k])]
    if wrong:
        if config is not None and file_config is not None and dict(config) != dict(file_config):
            configs = (
                f"network config {_config_text(config)}; weights' config {_config_text(file_config)}"
                f" (differs in: {describe_config_difference(file_config, config)})"
            )
        elif config is not None:
            configs = (
                f"network config {_config_text(config)} (the config recorded with the weights); "
                "the weights come from another architecture"
            )
        else:
            configs = "the weights come from another architecture"
        raise WeightsError(
            f"{where}: architecture mismatch, {len(wrong)} tensor(s) differ in shape (file vs network: "
            f"{_key_list(wrong, 3)}); {configs}"
        )


def load_strict(
    model: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    where: str,
    config: Mapping[str, Any] | None = None,
    file_config: Mapping[str, Any] | None = None,
) -> None:
    """Load ``state`` into ``model`` with strict key and shape matching (see :func:`check_shapes`)."""
    check_shapes({k: tuple(v.shape) for k, v in model.state_dict().items()},
                 {k: tuple(v.shape) for k, v in state.items()}, where=where, config=config, file_config=file_config)
    model.load_state_dict(dict(state), strict=True)


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Created with mode 0666 less the umask, as any new file (mkstemp would make it private, 0600).
    tmp = path.parent / f".{path.name}.{os.urandom(4).hex()}.semlens-partial"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _state_for_saving(model: nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = model.state_dict() if hasattr(model, "state_dict") else dict(model)
    # Contiguous CPU copies: safetensors refuses views and tensors that share memory.
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in state.items()}


def _save_safetensors(path: Path, state: dict[str, torch.Tensor], meta: Mapping[str, Any]) -> None:
    from safetensors.torch import save

    data = save(state, metadata={"format": "pt", META_KEY: json.dumps(dict(meta), sort_keys=True)})
    atomic_write_bytes(path, data)


def write_folder(folder: Path, state: dict[str, torch.Tensor], meta: Mapping[str, Any]) -> Path:
    """Write ``config.json`` + ``model.safetensors`` (config embedded too) into ``folder``."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise WeightsError(f"{folder} exists and is not a folder")
    _save_safetensors(folder / WEIGHTS_NAME, state, meta)
    text = json.dumps(dict(meta), indent=2, sort_keys=True) + "\n"
    atomic_write_bytes(folder / CONFIG_NAME, text.encode("utf-8"))
    return folder


def save_model(
    path: str | os.PathLike[str],
    model: nn.Module | Mapping[str, torch.Tensor],
    meta: Mapping[str, Any] | None = None,
) -> Path:
    """Save a network with its semlens config.

    ``path`` ending in ``.safetensors`` gives one file with the config embedded; any other path
    is a folder that receives ``config.json`` and ``model.safetensors``. ``meta`` may be partial:
    the network config is taken from ``model.config`` (a :class:`PixelEnhancer`), and ``format``,
    ``scale`` and the defaults are filled in. Writes are atomic (temporary file + rename).
    Returns the path written.
    """
    target = Path(path)
    full = complete_meta(meta, model if hasattr(model, "state_dict") else None)
    full = validate_meta(full, str(target))
    state = _state_for_saving(model)
    if target.suffix.lower() == ".safetensors":
        _save_safetensors(target, state, full)
        return target
    if target.suffix.lower() in TORCH_SUFFIXES:
        raise WeightsError(f"{target}: semlens saves safetensors only; use a .safetensors path or a folder")
    return write_folder(target, state, full)
