"""Export to a Hub-ready folder, and push to the fake Hub (plain commit API)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from hubserver import FakeHub, fake_hub_env, tiny_model

from semlens.errors import DownloadError, WeightsError
from semlens.hub import export_model, load_model, save_model
from semlens.hub.format import read_safetensors_meta


@pytest.fixture
def fake_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with fake_hub_env(tmp_path, monkeypatch) as hub:
        yield hub


@pytest.fixture(scope="module")
def model():
    return tiny_model(scale=2, seed=11)


@pytest.fixture
def checkpoint(tmp_path: Path, model) -> Path:
    """A training checkpoint: state dict + semlens config with recipe and eval table."""
    meta = json.loads((save_model(tmp_path / "ref", model, {"name": "semlens-exp-x2"}) / "config.json").read_text())
    meta["training"] = {"iterations": 300000, "lr": 2e-4, "crop": 64, "dataset": "REDS"}
    meta["eval"] = {"Vid4": {"psnr": 26.71, "ssim": 0.81}, "REDS4": {"psnr": 30.2, "ssim": 0.86}}
    path = tmp_path / "ckpt" / "last.pth"
    path.parent.mkdir()
    torch.save({"model": model.state_dict(), "semlens_config": meta, "optimizer_step": 7}, path)
    return path


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_export_round_trip(tmp_path: Path, checkpoint: Path, model) -> None:
    out = tmp_path / "export dir"
    result = export_model(checkpoint, out)
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert result.repo_id is None and result.parameters == sum(p.numel() for p in model.state_dict().values())
    config = json.loads((out / "config.json").read_text())
    assert config == read_safetensors_meta(out / "model.safetensors")
    assert config["training"]["dataset"] == "REDS" and config["name"] == "semlens-exp-x2"
    assert _same(load_model(out).model.state_dict(), model.state_dict())

    card = (out / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: semlens\n")
    assert "## Training recipe" in card and "| iterations | 300000 |" in card
    assert "| dataset | psnr | ssim |" in card and "| Vid4 | 26.71 | 0.81 |" in card
    assert result.sha256 in card


def test_export_with_own_card_and_name(tmp_path: Path, checkpoint: Path) -> None:
    card = tmp_path / "card.md"
    card.write_text("# my card\n")
    result = export_model(checkpoint, tmp_path / "out", card=str(card), name="renamed")
    assert result.card.read_text() == "# my card\n"
    assert load_model(tmp_path / "out").name == "renamed"
    export_model(checkpoint, tmp_path / "out2", card="# inline card\n")
    assert (tmp_path / "out2" / "README.md").read_text() == "# inline card\n"


def test_export_refuses_broken_weights(tmp_path: Path, checkpoint: Path) -> None:
    obj = torch.load(checkpoint, weights_only=True)
    del obj["model"]["extract.0.weight"]
    torch.save(obj, checkpoint)
    with pytest.raises(WeightsError, match="missing key"):
        export_model(checkpoint, tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_push_then_load_from_the_hub(fake_hub: FakeHub, tmp_path: Path, checkpoint: Path, model) -> None:
    result = export_model(checkpoint, tmp_path / "out", push="me/semlens-exp-x2")
    assert result.repo_id == "me/semlens-exp-x2"
    assert result.revision == fake_hub.repos["me/semlens-exp-x2"].refs["main"]
    files = fake_hub.repos["me/semlens-exp-x2"].commits[result.revision]
    assert sorted(files) == ["README.md", "config.json", "model.safetensors"]
    assert files["model.safetensors"] == (tmp_path / "out" / "model.safetensors").read_bytes()
    posts = [p for m, p in fake_hub.requests if m == "POST"]
    assert "/api/repos/create" in posts and any(p.endswith("/commit/main") for p in posts)
    assert "Bearer hf_fake_token_for_tests" in fake_hub.auth_headers

    assert _same(load_model("me/semlens-exp-x2").model.state_dict(), model.state_dict())
    pinned = load_model(f"me/semlens-exp-x2@{result.revision}")
    assert _same(pinned.model.state_dict(), model.state_dict()) and pinned.name == "semlens-exp-x2"


def test_push_failure_is_a_clear_error(fake_hub: FakeHub, tmp_path: Path, checkpoint: Path) -> None:
    fake_hub.down = True
    with pytest.raises(DownloadError, match="upload of .* to me/x failed") as exc:
        export_model(checkpoint, tmp_path / "out", push="me/x")
    assert "\n" not in str(exc.value)
    assert (tmp_path / "out" / "model.safetensors").is_file()  # the folder is kept
