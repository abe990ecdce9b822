"""Exporting a model to a Hub-ready folder (and pushing it).

The folder holds ``model.safetensors`` (config embedded), ``config.json`` and a ``README.md``
model card with the network configuration, the training recipe and the evaluation table when the
model's metadata has them (``meta["training"]``, ``meta["eval"]``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from semlens.errors import DownloadError, OutputError, OutputExistsError
from semlens.hub.fetch import hub_endpoint, is_offline, sha256_file
from semlens.hub.format import CONFIG_NAME, WEIGHTS_NAME, atomic_write_bytes, read_meta_file, write_folder
from semlens.hub.loading import load_model

__all__ = ["ExportResult", "export_model", "model_card"]

CARD_NAME = "README.md"


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote (and pushed).

    ``sha256`` is the weights file's; with ``repo_id`` and ``revision`` (the commit of the push)
    it is what a registry entry pins.
    """

    folder: Path
    weights: Path
    config: Path
    card: Path
    sha256: str
    parameters: int
    repo_id: str | None = None
    revision: str | None = None
    url: str | None = None


def _cell(value: Any) -> str:
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (dict, list)):
        text = json.dumps(value, sort_keys=True)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines


def _eval_table(evaluation: Any) -> list[str]:
    """``{"dataset": {"metric": value}}`` or ``[{"dataset": ..., "metric": value}, ...]``."""
    if isinstance(evaluation, Mapping) and all(isinstance(v, Mapping) for v in evaluation.values()):
        rows_in = [{"dataset": k, **dict(v)} for k, v in evaluation.items()]
    elif isinstance(evaluation, Sequence) and not isinstance(evaluation, str) and all(
        isinstance(r, Mapping) for r in evaluation
    ):
        rows_in = [dict(r) for r in evaluation]
    elif isinstance(evaluation, Mapping):
        rows_in = [dict(evaluation)]
    else:
        return [str(evaluation)]
    columns: list[str] = []
    for row in rows_in:
        columns += [k for k in row if k not in columns]
    return _table(columns, [[row.get(c, "") for c in columns] for row in rows_in])


def _recipe(training: Any) -> list[str]:
    if isinstance(training, Mapping):
        return _table(["setting", "value"], [[k, v] for k, v in training.items()])
    return [str(training)]


def model_card(meta: Mapping[str, Any], *, parameters: int, sha256: str, reference: str) -> str:
    """The README.md of an exported model (YAML front matter + markdown)."""
    name = str(meta.get("name", "semlens model"))
    scale = meta.get("scale")
    lines = [
        "---",
        "library_name: semlens",
        "license: apache-2.0",
        "pipeline_tag: image-to-image",
        "tags:",
        "- video-super-resolution",
        "- super-resolution",
        "- semantic-lens",
        "- semlens",
        "---",
        "",
        f"# {name}",
        "",
        str(meta.get("description") or f"Semantic Lens video super-resolution network (x{scale})."),
        "",
        "A reimplementation of Semantic Lens (Tang et al., *Semantic Lens: Instance-Centric Semantic "
        "Alignment for Video Super-Resolution*, AAAI 2024, arXiv 2312.07823) made with semlens.",
        "",
        "## Use",
        "",
        "```python",
        "from semlens import SemanticLensUpscaler",
        "",
        f'upscaler = SemanticLensUpscaler.from_pretrained("{reference}")',
        'upscaler.upscale_video("input.mp4", "output.mp4")',
        "```",
        "",
        "## Model",
        "",
        *_table(
            ["field", "value"],
            [
                ["scale", scale],
                ["parameters", f"{parameters:,}"],
                ["extractor (use the same at inference)", meta.get("extractor")],
                ["window / overlap (frames)", f"{meta.get('window')} / {meta.get('overlap')}"],
                ["file format", f"semlens format_version {meta.get('format_version')}"],
                [f"{WEIGHTS_NAME} sha256", f"`{sha256}`"],
            ],
        ),
        "",
        "Network configuration (`EnhancerConfig`):",
        "",
        *_table(["field", "value"], [[k, v] for k, v in dict(meta.get("enhancer", {})).items()]),
        "",
    ]
    if meta.get("training") is not None:
        lines += ["## Training recipe", "", *_recipe(meta["training"]), ""]
    if meta.get("eval") is not None:
        lines += ["## Evaluation", "", *_eval_table(meta["eval"]), ""]
    return "\n".join(lines)


def _card_text(card: str | os.PathLike[str] | None) -> str | None:
    if card is None:
        return None
    text = os.fspath(card)
    if "\n" not in text and len(text) < 4096 and Path(text).expanduser().is_file():
        return Path(text).expanduser().read_text(encoding="utf-8")
    return text


def export_model(
    checkpoint_or_model_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    push: str | None = None,
    card: str | os.PathLike[str] | None = None,
    *,
    name: str | None = None,
    commit_message: str | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write a Hub-ready folder for a model and optionally push it.

    ``checkpoint_or_model_path`` is anything :func:`semlens.hub.load_model` accepts (a training
    checkpoint ``.pth`` with its config, a ``.safetensors``, a model folder, a registry name or a
    repo id); the weights are loaded strictly first, so a broken model is never exported.
    ``out_dir`` receives ``model.safetensors``, ``config.json`` and ``README.md`` (``card``: the
    card's markdown text or a path to it; generated when ``None``). ``push`` is a Hub repo id
    (created if needed) to upload the folder to with ``HfApi().upload_folder``. ``name`` renames
    the model in its config. An ``out_dir`` that already holds one of the three files is refused
    (:class:`~semlens.errors.OutputExistsError`) unless ``overwrite``; other files in it are kept.
    """
    folder = Path(out_dir).expanduser()
    existing = [n for n in (WEIGHTS_NAME, CONFIG_NAME, CARD_NAME) if (folder / n).exists() or (folder / n).is_symlink()]
    if existing and not overwrite:
        raise OutputExistsError(f"{str(folder / existing[0])!r} already exists; pass overwrite=True (--overwrite) "
                                f"to replace the model files in {str(folder)!r} or choose another folder")
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"output {str(folder)!r} exists and is a file; choose a folder path")
    loaded = load_model(checkpoint_or_model_path)
    meta = dict(loaded.meta)
    if name is not None:
        meta["name"] = name
    state = {k: v.detach().cpu().contiguous().clone() for k, v in loaded.model.state_dict().items()}
    write_folder(folder, state, meta)
    weights, config = folder / WEIGHTS_NAME, folder / CONFIG_NAME
    read_meta_file(config)  # what we wrote must read back
    digest = sha256_file(weights)
    parameters = sum(t.numel() for t in state.values())
    text = _card_text(card) or model_card(
        meta, parameters=parameters, sha256=digest, reference=push or f"./{folder.name}"
    )
    card_path = folder / CARD_NAME
    atomic_write_bytes(card_path, text.encode("utf-8"))
    result = ExportResult(folder=folder, weights=weights, config=config, card=card_path, sha256=digest,
                          parameters=parameters)
    if push is None:
        return result
    return _push(result, push, commit_message or f"Upload {meta.get('name')} (semlens export)")


def _push(result: ExportResult, repo_id: str, message: str) -> ExportResult:
    if is_offline():
        raise DownloadError(f"cannot push to {repo_id}: HF_HUB_OFFLINE is set; unset it (the folder {result.folder} is written)")
    from huggingface_hub import HfApi

    api = HfApi(endpoint=hub_endpoint())
    try:
        api.create_repo(repo_id, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(result.folder),
            commit_message=message,
            allow_patterns=[WEIGHTS_NAME, CONFIG_NAME, CARD_NAME],
        )
    except Exception as exc:
        reason = " ".join(str(exc).split())[:200]
        raise DownloadError(
            f"upload of {result.folder} to {repo_id} failed: {type(exc).__name__}: {reason}; "
            "check the network and that you are logged in (`hf auth login`), then retry"
        ) from None
    revision = getattr(info, "oid", None)
    url = getattr(info, "commit_url", None) or f"{api.endpoint}/{repo_id}"
    return ExportResult(
        folder=result.folder, weights=result.weights, config=result.config, card=result.card,
        sha256=result.sha256, parameters=result.parameters, repo_id=repo_id, revision=revision, url=url,
    )
