"""The semlens model file format and safe, strict loading (no network)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from hubserver import tiny_model

from semlens.errors import ModelNotFoundError, WeightsError
from semlens.hub import load_model, resolve, save_model
from semlens.hub.format import META_KEY, read_safetensors_meta, read_weights


@pytest.fixture(scope="module")
def model_x2():
    return tiny_model(scale=2, seed=1)


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def test_safetensors_round_trip_embeds_the_config(tmp_path: Path, model_x2) -> None:
    path = save_model(tmp_path / "m.safetensors", model_x2, {"name": "mine", "window": 8, "overlap": 1})
    meta = read_safetensors_meta(path)
    assert meta is not None
    assert meta["format"] == "semlens" and meta["format_version"] == 1
    assert meta["name"] == "mine" and meta["scale"] == 2 and meta["extractor"] == "lite"
    assert meta["enhancer"] == model_x2.config.to_dict()

    loaded = load_model(path)
    assert _same_state(loaded.model, model_x2)
    assert not loaded.model.training
    assert (loaded.name, loaded.scale, loaded.window, loaded.overlap) == ("mine", 2, 8, 1)
    assert loaded.config == model_x2.config
    assert loaded.spec is None and loaded.path == path


def test_folder_round_trip(tmp_path: Path, model_x2) -> None:
    folder = save_model(tmp_path / "my model é", model_x2, {"name": "folder"})
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((folder / "config.json").read_text())
    assert config == read_safetensors_meta(folder / "model.safetensors")
    assert _same_state(load_model(folder).model, model_x2)
    assert _same_state(load_model(str(folder)).model, model_x2)
    assert not list(folder.glob("*partial*"))


def test_pth_state_dict_with_config_next_to_it(tmp_path: Path, model_x2) -> None:
    pth = tmp_path / "net.pth"
    torch.save(model_x2.state_dict(), pth)
    with pytest.raises(WeightsError, match="no semlens config") as exc:
        load_model(pth)
    _one_line(exc)
    meta = json.loads((save_model(tmp_path / "ref", model_x2) / "config.json").read_text())
    (tmp_path / "net.json").write_text(json.dumps(meta))
    assert _same_state(load_model(pth).model, model_x2)


def test_training_checkpoint_pth_with_embedded_meta(tmp_path: Path, model_x2) -> None:
    meta = json.loads((save_model(tmp_path / "ref", model_x2, {"name": "ckpt"}) / "config.json").read_text())
    ckpt = tmp_path / "step_100.pth"
    torch.save({"model": model_x2.state_dict(), "semlens_config": meta, "step": 100}, ckpt)
    loaded = load_model(ckpt)
    assert loaded.name == "ckpt" and _same_state(loaded.model, model_x2)


def test_pickle_carrying_code_is_refused(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pth"
    torch.save({"weight": torch.zeros(2), "payload": Payload()}, evil)
    (tmp_path / "evil.json").write_text("{}")
    with pytest.raises(WeightsError, match="refused to load") as exc:
        load_model(evil)
    text = _one_line(exc)
    assert "io.open" in text and "\x1b" not in text
    assert not marker.exists(), "the pickle's code was executed"


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bad-header", "empty"])
def test_corrupt_safetensors_is_a_clear_error(tmp_path: Path, model_x2, damage: str) -> None:
    good = save_model(tmp_path / "good.safetensors", model_x2).read_bytes()
    data = {
        "garbage": bytes(range(256)) * 64,
        "truncated": good[: len(good) - 1000],
        "bad-header": good[:8] + b"{not json" + good[17:],
        "empty": b"",
    }[damage]
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data)
    with pytest.raises(WeightsError, match="safetensors") as exc:
        load_model(bad)
    text = _one_line(exc)
    assert str(bad) in text


def test_header_lying_about_offsets_is_caught(tmp_path: Path, model_x2) -> None:
    good = save_model(tmp_path / "good.safetensors", model_x2).read_bytes()
    (length,) = struct.unpack("<Q", good[:8])
    header = json.loads(good[8 : 8 + length])
    first = next(k for k in header if k != "__metadata__")
    header[first]["data_offsets"][1] += 4  # overlaps the next tensor / runs past the end
    raw = json.dumps(header).encode()
    bad = tmp_path / "lying.safetensors"
    bad.write_bytes(struct.pack("<Q", len(raw)) + raw + good[8 + length :])
    with pytest.raises(WeightsError) as exc:
        load_model(bad)
    _one_line(exc)


def test_corrupt_pth_is_a_clear_error(tmp_path: Path, model_x2) -> None:
    pth = tmp_path / "cut.pth"
    torch.save(model_x2.state_dict(), pth)
    pth.write_bytes(pth.read_bytes()[:5000])
    with pytest.raises(WeightsError, match="corrupt or truncated") as exc:
        read_weights(pth)
    _one_line(exc)


def test_strict_keys_list_missing_and_unexpected(tmp_path: Path, model_x2) -> None:
    state = dict(model_x2.state_dict())
    removed = sorted(state)[:7]
    for key in removed:
        del state[key]
    state["extra.weight"] = torch.zeros(3)
    meta = json.loads((save_model(tmp_path / "ref", model_x2) / "config.json").read_text())
    pth = tmp_path / "partial.pth"
    torch.save(state, pth)
    (tmp_path / "partial.json").write_text(json.dumps(meta))
    with pytest.raises(WeightsError) as exc:
        load_model(pth)
    text = _one_line(exc)
    assert "7 missing key(s)" in text and "1 unexpected key(s): extra.weight" in text
    assert removed[0] in text and "(2 more)" in text


def test_wrong_architecture_names_the_configs(tmp_path: Path, model_x2) -> None:
    # A folder whose config.json declares another network than the weights' embedded config.
    folder = save_model(tmp_path / "folder", model_x2)
    declared = json.loads((folder / "config.json").read_text())
    declared["enhancer"]["channels"] = 16
    (folder / "config.json").write_text(json.dumps(declared))
    with pytest.raises(WeightsError, match="architecture mismatch") as exc:
        load_model(folder)
    assert "channels 32->16" in _one_line(exc)

    # A .pth whose config (next to it) is not the network the weights come from.
    pth = tmp_path / "x2.pth"
    torch.save(model_x2.state_dict(), pth)
    declared["enhancer"]["channels"] = 32
    declared["enhancer"]["instance_dim"] = 16
    (tmp_path / "x2.json").write_text(json.dumps(declared))
    with pytest.raises(WeightsError, match="architecture mismatch") as exc:
        load_model(pth)
    text = _one_line(exc)
    assert '"instance_dim":16' in text and "shape" in text


def _with_embedded_config(tmp_path: Path, model, name: str, **changes) -> Path:
    """A copy of ``model``'s file (same tensors) whose embedded config's network has ``changes``."""
    good = save_model(tmp_path / "good.safetensors", model).read_bytes()
    (length,) = struct.unpack("<Q", good[:8])
    header = json.loads(good[8 : 8 + length])
    meta = json.loads(header["__metadata__"][META_KEY])
    meta["enhancer"].update(changes)
    header["__metadata__"][META_KEY] = json.dumps(meta)
    raw = json.dumps(header).encode()
    bad = tmp_path / name / "model.safetensors"
    bad.parent.mkdir()
    bad.write_bytes(struct.pack("<Q", len(raw)) + raw + good[8 + length :])
    return bad


@pytest.fixture
def real_builds(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The devices a PixelEnhancer is built on during the test (``meta`` builds allocate nothing)."""
    from semlens.enhancer import PixelEnhancer

    devices: list[str] = []
    original = PixelEnhancer.__init__

    def spy(self, config) -> None:
        devices.append(torch.empty(0).device.type)
        original(self, config)

    monkeypatch.setattr(PixelEnhancer, "__init__", spy)
    return devices


def test_a_config_out_of_bounds_is_refused_before_building(tmp_path: Path, model_x2, real_builds) -> None:
    # Tensors unchanged, the embedded config asks for 200,000 channels: building that network
    # would allocate terabytes. Refused from the header alone, nothing built.
    bad = _with_embedded_config(tmp_path, model_x2, "m2", channels=200_000)
    with pytest.raises(WeightsError, match="channels=200000, outside the accepted 1..1024") as exc:
        load_model(bad)
    assert str(bad) in _one_line(exc)
    assert real_builds == []
    for field, value in (("heads", 0), ("forward_blocks", 10**6), ("radius", 2.5), ("use_isee", "yes")):
        with pytest.raises(WeightsError, match=field):
            load_model(_with_embedded_config(tmp_path, model_x2, f"bad-{field}", **{field: value}))
    assert real_builds == []


def test_tensor_shapes_are_checked_against_the_config_before_building(
    tmp_path: Path, model_x2, real_builds
) -> None:
    # Within bounds, but not the network the tensors come from: caught on the meta device.
    bad = _with_embedded_config(tmp_path, model_x2, "wider", channels=48)
    with pytest.raises(WeightsError, match="architecture mismatch.*shape") as exc:
        load_model(bad)
    _one_line(exc)
    assert real_builds and set(real_builds) == {"meta"}
    real_builds.clear()
    load_model(save_model(tmp_path / "fine.safetensors", model_x2))  # a good file is built once, for real
    assert real_builds.count("cpu") == 1


def test_a_crafted_file_is_exit_7_on_the_command_line(tmp_path: Path, model_x2) -> None:
    from clips import make_clip
    from conftest import assert_one_line_error, invoke_cli

    bad = _with_embedded_config(tmp_path, model_x2, "m2", channels=200_000)
    src = make_clip(tmp_path / "in.mp4", frames=2, size=(16, 16))
    code, _, stderr = invoke_cli(["upscale", src, tmp_path / "out.mp4", "--model", bad, "--device", "cpu", "-q"])
    assert code == WeightsError.exit_code == 7
    assert_one_line_error(stderr, contains="channels=200000")


def test_config_from_a_newer_semlens_is_refused(tmp_path: Path, model_x2) -> None:
    from safetensors.torch import save_file

    meta = json.loads((save_model(tmp_path / "ref", model_x2) / "config.json").read_text())
    meta["format_version"] = 99
    path = tmp_path / "future.safetensors"
    save_file({k: v.contiguous() for k, v in model_x2.state_dict().items()}, str(path), {META_KEY: json.dumps(meta)})
    with pytest.raises(WeightsError, match="upgrade semlens"):
        load_model(path)


def test_save_refuses_mismatched_metadata(tmp_path: Path, model_x2) -> None:
    other = tiny_model(scale=4).config.to_dict()
    with pytest.raises(WeightsError, match="scale 2->4|scale 4->2"):
        save_model(tmp_path / "m.safetensors", model_x2, {"enhancer": other})
    with pytest.raises(WeightsError, match="safetensors only"):
        save_model(tmp_path / "m.pth", model_x2)


def test_resolve_rejects_unknown_sources(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="known: semlens-tiny-x4") as exc:
        resolve("no-such-model")
    _one_line(exc)
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve(str(tmp_path / "missing.safetensors"))
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve(tmp_path / "missing-folder")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelNotFoundError, match="model.safetensors"):
        resolve(tmp_path / "empty")
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(WeightsError, match="unknown weights format"):
        resolve(tmp_path / "notes.txt")
