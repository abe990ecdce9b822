"""The registry, list_models statuses and bundled weights."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import FrozenInstanceError, replace
from pathlib import Path

import pytest
import torch
from hubserver import FakeHub, fake_hub_env, serve_model, tiny_model

import semlens
from semlens.enhancer import EnhancerConfig
from semlens.errors import ModelNotFoundError, WeightsError
from semlens.hub import (
    DEFAULT_MODEL,
    ModelSpec,
    download,
    list_models,
    load_model,
    registry,
    resolve,
    save_model,
)
from semlens.hub.specs import DEFAULT_MODELS, get_spec, known_names, sam_spec

REPO_WEIGHTS = Path(__file__).resolve().parents[1] / "weights"


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with fake_hub_env(tmp_path, monkeypatch) as hub:
        yield hub


@pytest.fixture
def weights_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty stand-in for the package data folder ``semlens.weights``."""
    folder = tmp_path / "package-weights"
    folder.mkdir()
    monkeypatch.setattr("semlens.hub.loading._weights_root", lambda: folder)
    # Stand-in files are random models: drop the shipped files' sha256 pins for these tests.
    import dataclasses

    import semlens.hub.specs as hub_specs

    specs = {name: dataclasses.replace(spec, sha256=None) if spec.kind == "enhancer" else spec
             for name, spec in hub_specs.registry().items()}
    monkeypatch.setattr(hub_specs, "_REGISTRY", specs)
    return folder


def _status(infos: list, name: str) -> str | None:
    return next((i.status for i in infos if i.name == name), None)


def test_shipped_files_match_their_pinned_sha256() -> None:
    import hashlib

    for name in ("semlens-tiny-x4", "semlens-tiny-x2", "semlens-tiny-x2-bi", "semlens-tiny-x4-bi"):
        path = REPO_WEIGHTS / f"{name}.safetensors"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == get_spec(name).sha256
        assert load_model(name).name == name


def test_former_names_still_load_the_model_they_now_name() -> None:
    from semlens.hub.specs import ALIASES

    assert ALIASES == {"semlens-tiny-x4-real": "semlens-tiny-x4", "semlens-tiny-x2-real": "semlens-tiny-x2"}
    for old, new in ALIASES.items():
        assert get_spec(old) is get_spec(new)
        assert resolve(old).weights == resolve(new).weights and load_model(old).name == new
        assert old not in known_names() and old not in {i.name for i in list_models()}
    with pytest.raises(ModelNotFoundError, match="semlens-tiny-x4-bi"):
        get_spec("semlens-tiny-x4-clean")


def test_registry_entries_are_consistent() -> None:
    specs = registry()
    assert DEFAULT_MODEL in specs and specs[DEFAULT_MODEL].kind == "enhancer"
    for name in ("semlens-tiny-x4", "semlens-tiny-x2"):
        spec = specs[name]
        config = EnhancerConfig.from_dict(spec.enhancer_dict())
        assert config.scale == spec.scale == int(name[-1])
        assert spec.bundled == f"{name}.safetensors" and spec.extractor == "lite"
    sizes = {"vit_b": 375_042_383, "vit_l": None, "vit_h": 2_564_550_879}
    for variant, size in sizes.items():
        spec = sam_spec(variant)
        assert spec.repo_id == "ybelkada/segment-anything" and spec.revision == "main"
        assert spec.filename.startswith("checkpoints/sam_" + variant) and spec.filename.endswith(".pth")
        assert spec.size == size and len(spec.sha256 or "") == 64
    assert sam_spec("vit_h").sha256 == "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e"


def test_spec_is_frozen_and_validated() -> None:
    spec = get_spec("semlens-tiny-x4")
    with pytest.raises(FrozenInstanceError):
        spec.scale = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.enhancer["scale"] = 2  # type: ignore[index]
    with pytest.raises(ValueError, match="unpinned revision"):
        replace(spec, repo_id="a/b", revision="main", filename="model.safetensors", sha256=None)
    with pytest.raises(ValueError, match="differs from the network"):
        replace(spec, scale=2)
    with pytest.raises(ModelNotFoundError, match="semlens-tiny-x2"):
        get_spec("semlens-huge")


def test_shipped_models_are_listed_only_if_their_file_exists() -> None:
    infos = list_models(include_unavailable=True)
    for name in ("semlens-tiny-x4", "semlens-tiny-x2"):
        shipped = (REPO_WEIGHTS / f"{name}.safetensors").is_file()
        assert _status(infos, name) == ("bundled" if shipped else "missing")
        assert (_status(list_models(), name) is not None) == shipped
    assert semlens.list_models is list_models


def like_the_default(scale: int, seed: int = 0, **overrides: object):  # -> PixelEnhancer
    """A random network with the shipped defaults' architecture (pooled tokens, IMAGE's reach)."""
    return tiny_model(scale=scale, seed=seed, token_source="pooled", motion_search=8, **overrides)


def test_missing_bundled_file_is_a_clear_error(weights_dir: Path) -> None:
    assert _status(list_models(), "semlens-tiny-x4") is None
    with pytest.raises(ModelNotFoundError, match="not installed") as exc:
        load_model("semlens-tiny-x4")
    assert "\n" not in str(exc.value)


def test_bundled_model_loads_by_name(weights_dir: Path) -> None:
    model = like_the_default(scale=4, seed=5)
    save_model(weights_dir / "semlens-tiny-x4.safetensors", model, {"name": "semlens-tiny-x4"})
    info = next(i for i in list_models() if i.name == "semlens-tiny-x4")
    assert info.status == "bundled" and info.default
    assert info.parameters == sum(p.numel() for p in model.state_dict().values())
    loaded = load_model("semlens-tiny-x4")
    assert loaded.spec is get_spec("semlens-tiny-x4") and loaded.scale == 4
    assert all(torch.equal(a, b) for a, b in zip(loaded.model.state_dict().values(), model.state_dict().values()))
    assert resolve("semlens-tiny-x4").origin == "bundled"
    assert download("semlens-tiny-x4").origin == "bundled"


def test_bundled_file_that_differs_from_its_registry_entry(weights_dir: Path) -> None:
    other = like_the_default(scale=4, channels=16)
    save_model(weights_dir / "semlens-tiny-x4.safetensors", other, {"name": "semlens-tiny-x4"})
    with pytest.raises(WeightsError, match="registry entry semlens-tiny-x4") as exc:
        load_model("semlens-tiny-x4")
    assert "channels 16->32" in str(exc.value)


def test_registry_name_wins_over_a_same_named_folder(
    weights_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_model(weights_dir / "semlens-tiny-x4.safetensors", like_the_default(scale=4), {"name": "semlens-tiny-x4"})
    save_model(tmp_path / "semlens-tiny-x4", tiny_model(scale=4, seed=8), {"name": "local"})
    monkeypatch.chdir(tmp_path)
    assert resolve("semlens-tiny-x4").origin == "bundled"
    assert resolve("./semlens-tiny-x4").origin == "path"


def test_statuses_follow_the_cache(fake_hub: FakeHub, weights_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model(scale=2)
    commit, data = serve_model(fake_hub, "semlens-test/remote", model)
    spec = ModelSpec(
        name="semlens-remote-x2", kind="enhancer", description="test", scale=2, enhancer=model.config.to_dict(),
        repo_id="semlens-test/remote", revision=commit, filename="model.safetensors",
        sha256=hashlib.sha256(data).hexdigest(),
    )
    monkeypatch.setitem(registry(), spec.name, spec)
    before = len(fake_hub.requests)
    infos = list_models(include_extractors=True, include_unavailable=True)
    assert _status(infos, "semlens-remote-x2") == "remote"
    assert _status(infos, "sam-vit-b") == "remote"
    assert _status(infos, "semlens-tiny-x4") == "missing"
    assert _status(list_models(), "sam-vit-b") is None  # extractors only when asked
    assert _status(list_models(), "semlens-tiny-x4") is None
    assert len(fake_hub.requests) == before, "list_models must not touch the network"

    download(spec.name)
    info = next(i for i in list_models() if i.name == spec.name)
    assert info.status == "cached" and info.size == len(data)
    assert info.parameters == sum(p.numel() for p in model.state_dict().values())


#: sha256 of the first shipped defaults (lite-extractor tokens), the warm start of today's models;
#: their evaluations and card are in benchmarks/results/bi/first-*.
FIRST_DEFAULTS = {2: "e65056977f3eddf3bf8c29aa8cfc94122b9f08e111ab3718e9469c20d53ea6c4",
                  4: "85a652d9b91a9783315775974d96825f144ed1ed3385e68a95a031a97df5dfb5"}


def test_the_defaults_are_for_real_footage_and_take_any_extractor() -> None:
    from semlens.semantics import extractor_dims
    from semlens.upscaler import check_extractor_fits, default_model_name

    infos = {i.name: i for i in list_models()}
    for scale in (2, 4):
        assert default_model_name(scale) == f"semlens-tiny-x{scale}" == DEFAULT_MODELS[scale]
        loaded = load_model(f"semlens-tiny-x{scale}")
        config = loaded.model.config
        assert config.pooled_tokens and config.motion_search == 8 and loaded.scale == scale
        # Trained for compressed input: 60% of the clips through libx264/libx265 at CRF 18-30.
        assert loaded.meta["training"]["degradation"].startswith("random:compress=0.6,crf=18-30,")
        check_extractor_fits(loaded.model, "sam-vit-b", extractor_dims("sam-vit-b"))  # pooled: any extractor
        assert infos[f"semlens-tiny-x{scale}"].default and infos[f"semlens-tiny-x{scale}"].any_extractor
        spec = get_spec(f"semlens-tiny-x{scale}")
        assert (loaded.window, loaded.overlap) == (spec.window, spec.overlap)
        # Its lineage: warm-started from the -bi model, itself warm-started from the first default.
        # (The x2 run started before the rename, as --init semlens-tiny-x2, the -bi file's name then;
        # its file records that name and no sha256: the name was resolved when the run ended.)
        clean = load_model(f"semlens-tiny-x{scale}-bi")
        training = loaded.meta["training"]
        assert training["init"] in (f"semlens-tiny-x{scale}-bi", f"semlens-tiny-x{scale}")
        assert (training.get("init_sha256") or clean.spec.sha256) == clean.spec.sha256
        assert clean.meta["training"]["init_sha256"] == FIRST_DEFAULTS[scale]


def test_the_bi_models_are_trained_for_clean_input_with_pooled_tokens_and_reach() -> None:
    infos = {i.name: i for i in list_models()}
    for scale in (2, 4):
        loaded = load_model(f"semlens-tiny-x{scale}-bi")
        config, training = loaded.model.config, loaded.meta["training"]
        assert config.pooled_tokens and config.motion_search == 8 and not config.mask_occlusion
        assert training["degradation"] == "bi" and loaded.scale == scale
        assert not infos[f"semlens-tiny-x{scale}-bi"].default and infos[f"semlens-tiny-x{scale}-bi"].any_extractor
        # 12 frames with one of context on each side (benchmarks/window_overlap.py), as the registry says.
        spec = get_spec(f"semlens-tiny-x{scale}-bi")
        assert (loaded.window, loaded.overlap) == (spec.window, spec.overlap) == (12, 1)
